//! Property tests: the shard's widget values against a naive oracle that keeps every
//! event, under out-of-order times, eviction, rejections, and widgets that come, change
//! and go mid-stream.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;

use livedash_engine::window::BUCKET_RELATIVE_ERROR;
use livedash_engine::{
    Aggregation, Detail, MetricEvent, QueryKey, Rejection, Shard, ShardConfig, Tags, Widget,
    WidgetSpec, WidgetValue, WindowSpec,
};
use proptest::prelude::*;
use uuid::Uuid;

const SKEW_MS: i64 = 5_000;
const WINDOWS: [u64; 4] = [1, 3, 10, 30];

#[derive(Debug, Clone)]
enum Op {
    Add(WidgetSpec),
    Update(usize, WidgetSpec),
    Remove(usize),
    Apply(Vec<(usize, Option<usize>, f64, i64)>),
    Advance(i64),
    Tick,
}

/// Most parts of one split, small so that tag values find it full.
const MAX_PARTS: usize = 3;
/// Most buckets of a distribution, small so that buckets merge.
const BUCKETS: usize = 6;

fn spec_strategy() -> impl Strategy<Value = WidgetSpec> {
    (
        0..3usize,
        prop::option::weighted(0.3, 0..3usize),
        prop::sample::select(WINDOWS.to_vec()),
        prop::sample::select(Aggregation::ALL.to_vec()),
        1..20u32,
        prop::option::weighted(0.4, prop::sample::select(vec!["host", "dc", "zone"])),
        prop::option::of(1..5u32),
    )
        .prop_map(
            |(metric, host, window, aggregation, refresh, group_by, top)| {
                let grouped = group_by.is_some() && aggregation != Aggregation::Histogram;
                WidgetSpec {
                    metric_name: format!("m{metric}"),
                    aggregation,
                    window_seconds: window,
                    refresh_interval_seconds: f64::from(refresh) / 10.0,
                    filter: host
                        .map(|h| Tags::from([("host".to_string(), format!("h{h}"))]))
                        .unwrap_or_default(),
                    display_config: Default::default(),
                    group_by: group_by.filter(|_| grouped).map(str::to_owned),
                    top: top.filter(|_| grouped),
                }
            },
        )
}

fn value_strategy() -> impl Strategy<Value = f64> {
    prop_oneof![
        (-1000i32..1000).prop_map(f64::from),
        // Few distinct values: many panes share the min and the max.
        (0i32..4).prop_map(f64::from),
        -1e6f64..1e6,
        1e-3f64..1e-1
    ]
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => spec_strategy().prop_map(Op::Add),
        1 => (any::<usize>(), spec_strategy()).prop_map(|(i, s)| Op::Update(i, s)),
        1 => any::<usize>().prop_map(Op::Remove),
        6 => prop::collection::vec(
            (0..3usize, prop::option::of(0..5usize), value_strategy(), -40_000i64..7_000),
            0..40
        )
        .prop_map(Op::Apply),
        3 => (0i64..4_000).prop_map(Op::Advance),
        2 => Just(Op::Tick),
    ]
}

struct OracleQuery {
    since: u64,
    widgets: u32,
    percentile_widgets: u32,
    histogram_since: u64,
    /// A split's parts: tag value to the index (in `Oracle::events`) of its first event.
    parts: HashMap<String, usize>,
}

/// Keeps every accepted event with the sequence number of the batch that brought it.
#[derive(Default)]
struct Oracle {
    now: i64,
    seq: u64,
    events: Vec<(u64, MetricEvent)>,
    widgets: Vec<Widget>,
    queries: HashMap<QueryKey, OracleQuery>,
}

impl Oracle {
    fn horizon(&self) -> i64 {
        self.widgets
            .iter()
            .map(|w| w.spec.window_seconds as i64 * 1000)
            .max()
            .unwrap_or(0)
    }

    fn acquire(&mut self, spec: &WidgetSpec) {
        let seq = self.seq;
        let q = self
            .queries
            .entry(QueryKey::of(spec))
            .or_insert(OracleQuery {
                since: seq,
                widgets: 0,
                percentile_widgets: 0,
                histogram_since: seq,
                parts: HashMap::new(),
            });
        q.widgets += 1;
        if spec.aggregation.is_percentile() {
            if q.percentile_widgets == 0 {
                q.histogram_since = seq;
            }
            q.percentile_widgets += 1;
        }
    }

    fn release(&mut self, spec: &WidgetSpec) {
        let key = QueryKey::of(spec);
        let Some(q) = self.queries.get_mut(&key) else {
            panic!("released unknown query")
        };
        q.widgets -= 1;
        if spec.aggregation.is_percentile() {
            q.percentile_widgets -= 1;
        }
        if q.widgets == 0 {
            self.queries.remove(&key);
        }
    }

    /// The live events of `spec`'s query (of its part for `part`: tag value and first
    /// event), as (batch, event).
    fn live(&self, spec: &WidgetSpec, part: Option<(&str, usize)>) -> Vec<&(u64, MetricEvent)> {
        let key = QueryKey::of(spec);
        let q = &self.queries[&key];
        let geometry = WindowSpec::for_window(spec.window_seconds, SKEW_MS);
        let current = self.now.div_euclid(geometry.pane_ms);
        self.events
            .iter()
            .enumerate()
            .filter(|(i, (seq, e))| {
                *seq > q.since
                    && e.metric_name == spec.metric_name
                    && key.matches(&e.tags)
                    && e.event_time.div_euclid(geometry.pane_ms) > current - geometry.panes
                    && part.is_none_or(|(value, first)| {
                        *i >= first
                            && spec
                                .group_by
                                .as_ref()
                                .is_some_and(|by| e.tags.get(by).map(String::as_str) == Some(value))
                    })
            })
            .map(|(_, ev)| ev)
            .collect()
    }

    /// A new event of a split query that its window counts: its part, made if there
    /// is room.
    fn part_event(&mut self, index: usize) {
        let e = &self.events[index].1;
        let seq = self.events[index].0;
        for (key, q) in &mut self.queries {
            let livedash_engine::Split::By(by) = &key.split else {
                continue;
            };
            let geometry = WindowSpec::for_window(key.window_seconds, SKEW_MS);
            let current = self.now.div_euclid(geometry.pane_ms);
            let in_window = e.event_time.div_euclid(geometry.pane_ms) > current - geometry.panes;
            if seq <= q.since
                || *key.metric != *e.metric_name
                || !key.matches(&e.tags)
                || !in_window
            {
                continue;
            }
            let Some(value) = e.tags.get(&**by) else {
                continue;
            };
            if !q.parts.contains_key(value) && q.parts.len() < MAX_PARTS {
                q.parts.insert(value.clone(), index);
            }
        }
    }

    /// Drops the parts whose window emptied (as a refresh does).
    fn prune_parts(&mut self) {
        let specs: Vec<WidgetSpec> = self
            .widgets
            .iter()
            .filter(|w| w.spec.group_by.is_some())
            .map(|w| w.spec.clone())
            .collect();
        for spec in specs {
            let key = QueryKey::of(&spec);
            let parts: Vec<(String, usize)> = self.queries[&key]
                .parts
                .iter()
                .map(|(v, i)| (v.clone(), *i))
                .collect();
            for (value, first) in parts {
                if self.live(&spec, Some((&value, first))).is_empty() {
                    self.queries.get_mut(&key).unwrap().parts.remove(&value);
                }
            }
        }
    }

    /// The value of `spec`'s aggregation over `live`, with the sum of magnitudes.
    fn aggregate(&self, spec: &WidgetSpec, live: &[&(u64, MetricEvent)]) -> (Option<f64>, f64) {
        let q = &self.queries[&QueryKey::of(spec)];
        let values: Vec<f64> = live.iter().map(|(_, e)| e.value).collect();
        let count = values.len() as u64;
        let abs_sum: f64 = values.iter().map(|v| v.abs()).sum();
        let value = if matches!(
            spec.aggregation,
            Aggregation::Count | Aggregation::Histogram
        ) {
            Some(count as f64)
        } else if values.is_empty() {
            None
        } else {
            match spec.aggregation {
                Aggregation::Sum => Some(values.iter().sum()),
                Aggregation::Avg => Some(values.iter().sum::<f64>() / values.len() as f64),
                Aggregation::Min => values.iter().copied().reduce(f64::min),
                Aggregation::Max => values.iter().copied().reduce(f64::max),
                agg => {
                    let mut hv = histogram_values(live, q.histogram_since);
                    if hv.is_empty() {
                        None
                    } else {
                        hv.sort_by(f64::total_cmp);
                        let q = agg.quantile().unwrap();
                        let rank = ((q * hv.len() as f64).ceil() as usize).clamp(1, hv.len());
                        Some(hv[rank - 1])
                    }
                }
            }
        };
        (value, abs_sum)
    }

    fn expected(&self, w: &Widget) -> (Option<f64>, u64, Option<i64>, i64, f64) {
        let spec = &w.spec;
        let geometry = WindowSpec::for_window(spec.window_seconds, SKEW_MS);
        let current = self.now.div_euclid(geometry.pane_ms);
        let live = self.live(spec, None);
        let count = live.len() as u64;
        let latest = live.iter().map(|(_, e)| e.event_time).max();
        let window_end = (current + 1) * geometry.pane_ms;
        let (value, abs_sum) = self.aggregate(spec, &live);
        (value, count, latest, window_end, abs_sum)
    }
}

fn histogram_values(live: &[&(u64, MetricEvent)], since: u64) -> Vec<f64> {
    live.iter()
        .filter(|(seq, _)| *seq > since)
        .map(|(_, e)| e.value)
        .collect()
}

/// How far a computed `aggregation` may be from the exact one.
fn tolerance(aggregation: Aggregation, expected: f64, abs_sum: f64, count: u64) -> f64 {
    match aggregation {
        Aggregation::Sum => 1e-9 * (abs_sum + 1.0),
        Aggregation::Avg => 1e-9 * (abs_sum + 1.0) / count.max(1) as f64,
        a if a.is_percentile() => expected.abs() * BUCKET_RELATIVE_ERROR,
        _ => 0.0,
    }
}

/// A grouped widget's series and other total against the oracle's parts.
fn check_series(w: &Widget, got: &WidgetValue, oracle: &Oracle) -> Result<(), TestCaseError> {
    let spec = &w.spec;
    let q = &oracle.queries[&QueryKey::of(spec)];
    let (top, other) = got.series().expect("a grouped widget has series");
    let mut expected: Vec<(String, f64, f64, u64)> = Vec::new();
    for (value, first) in &q.parts {
        let live = oracle.live(spec, Some((value, *first)));
        if let (Some(v), abs_sum) = oracle.aggregate(spec, &live) {
            expected.push((value.clone(), v, abs_sum, live.len() as u64));
        }
    }
    prop_assert_eq!(top.len(), expected.len().min(spec.top_n()), "{:?}", spec);
    prop_assert!(
        top.windows(2).all(|p| p[0].1 >= p[1].1),
        "largest first: {:?}",
        top
    );
    for (tag, v) in top {
        let Some((_, e, abs_sum, count)) = expected.iter().find(|p| p.0 == *tag) else {
            return Err(TestCaseError::fail(format!("{tag} is no part: {spec:?}")));
        };
        let tol = tolerance(spec.aggregation, *e, *abs_sum, *count);
        prop_assert!((v - e).abs() <= tol, "{}: got {} expected {}", tag, v, e);
    }
    // Nothing left out is clearly larger than the smallest reported.
    if let Some(smallest) = top.last().map(|t| t.1) {
        for (tag, e, abs_sum, count) in &expected {
            let tol = tolerance(spec.aggregation, *e, *abs_sum, *count);
            prop_assert!(
                top.iter().any(|t| t.0 == *tag) || *e <= smallest + 2.0 * tol,
                "{} ({}) left out of {:?}",
                tag,
                e,
                top
            );
        }
    }
    if spec.aggregation.adds_up() {
        let whole_live = oracle.live(spec, None);
        let (whole, abs_sum) = oracle.aggregate(spec, &whole_live);
        let in_top: u64 = top
            .iter()
            .map(|t| expected.iter().find(|p| p.0 == t.0).map_or(0, |p| p.3))
            .sum();
        if whole_live.len() as u64 == in_top {
            prop_assert_eq!(other, None, "{:?}", spec);
        } else {
            let want = whole.unwrap_or(0.0) - top.iter().map(|t| t.1).sum::<f64>();
            let got_other = other.expect("events outside the top");
            prop_assert!(
                (got_other - want).abs() <= 2e-9 * (abs_sum + 1.0),
                "other: got {} expected {}",
                got_other,
                want
            );
        }
    } else {
        prop_assert_eq!(other, None);
    }
    Ok(())
}

/// A `histogram` widget's distribution against the values its histogram saw.
fn check_distribution(w: &Widget, got: &WidgetValue, oracle: &Oracle) -> Result<(), TestCaseError> {
    let q = &oracle.queries[&QueryKey::of(&w.spec)];
    let live = oracle.live(&w.spec, None);
    let hv = histogram_values(&live, q.histogram_since);
    let Some(Detail::Distribution(d)) = got.detail.as_deref() else {
        return Err(TestCaseError::fail("a histogram widget has a distribution"));
    };
    prop_assert_eq!(d.count, hv.len() as u64);
    prop_assert_eq!(d.buckets.iter().map(|b| b.2).sum::<u64>(), d.count);
    prop_assert!(d.buckets.len() <= BUCKETS);
    for pair in d.buckets.windows(2) {
        prop_assert!(pair[0].1 <= pair[1].0, "{:?}", d.buckets);
    }
    for &(lo, hi, n) in &d.buckets {
        let inside = hv.iter().filter(|v| lo < **v && **v < hi).count() as u64;
        let within = hv.iter().filter(|v| lo <= **v && **v <= hi).count() as u64;
        prop_assert!(
            lo <= hi && inside <= n && n <= within,
            "{:?} {:?}",
            d.buckets,
            hv
        );
    }
    Ok(())
}

fn check(shard: &mut Shard, oracle: &mut Oracle) -> Result<(), TestCaseError> {
    oracle.prune_parts();
    for w in &oracle.widgets {
        let got = shard
            .value(&w.widget_id, oracle.now)
            .expect("widget is live");
        let (value, count, latest, window_end, abs_sum) = oracle.expected(w);
        let agg = w.spec.aggregation;
        prop_assert_eq!(got.count, count, "count of {:?}", w.spec);
        if w.spec.group_by.is_some() {
            check_series(w, &got, oracle)?;
        }
        if agg == Aggregation::Histogram {
            check_distribution(w, &got, oracle)?;
        }
        prop_assert_eq!(got.latest_event_time, latest);
        prop_assert_eq!(got.window_end, window_end);
        match (got.value, value) {
            (None, None) => {}
            (Some(g), Some(e)) => {
                let tolerance = tolerance(agg, e, abs_sum, count);
                prop_assert!(
                    (g - e).abs() <= tolerance,
                    "{}: got {} expected {} ({:?})",
                    agg,
                    g,
                    e,
                    w.spec
                );
            }
            (g, e) => prop_assert!(
                false,
                "{}: got {:?} expected {:?} ({:?})",
                agg,
                g,
                e,
                w.spec
            ),
        }
    }
    Ok(())
}

fn run(ops: Vec<Op>, start: i64) -> Result<(), TestCaseError> {
    let config = ShardConfig {
        max_skew_ms: SKEW_MS,
        history_len: 4,
        min_horizon_ms: 0,
        spread_ticks: true,
        max_group_values: MAX_PARTS,
        max_group_windows: 1_000,
        distribution_buckets: BUCKETS,
    };
    let mut shard = Shard::new(config);
    let mut oracle = Oracle {
        now: start,
        ..Oracle::default()
    };
    for op in ops {
        oracle.seq += 1;
        match op {
            Op::Add(spec) => {
                let w = Widget::new(Uuid::new_v4(), Uuid::new_v4(), spec);
                oracle.acquire(&w.spec);
                shard
                    .upsert_widget(w.clone(), oracle.now)
                    .expect("valid widget");
                oracle.widgets.push(w);
            }
            Op::Update(i, spec) if !oracle.widgets.is_empty() => {
                let i = i % oracle.widgets.len();
                let old = oracle.widgets[i].spec.clone();
                oracle.acquire(&spec);
                oracle.release(&old);
                oracle.widgets[i].spec = spec;
                shard
                    .upsert_widget(oracle.widgets[i].clone(), oracle.now)
                    .expect("valid widget");
            }
            Op::Remove(i) if !oracle.widgets.is_empty() => {
                let w = oracle.widgets.remove(i % oracle.widgets.len());
                oracle.release(&w.spec);
                prop_assert!(shard.remove_widget(&w.widget_id));
            }
            Op::Update(..) | Op::Remove(_) => {}
            Op::Apply(raw) => {
                let events: Vec<MetricEvent> = raw
                    .into_iter()
                    .map(|(m, host, value, dt)| MetricEvent {
                        metric_name: format!("m{m}"),
                        value,
                        tags: host
                            .map(|h| {
                                Tags::from([
                                    ("host".into(), format!("h{h}")),
                                    ("dc".into(), format!("d{}", h % 2)),
                                ])
                            })
                            .unwrap_or_default(),
                        event_time: oracle.now + dt,
                    })
                    .collect();
                let outcome = shard.apply(&events, oracle.now);
                let horizon = oracle.horizon();
                let mut expected_rejections = vec![];
                for (i, e) in events.into_iter().enumerate() {
                    if e.event_time < oracle.now - horizon {
                        expected_rejections.push((i, Rejection::TooOld));
                    } else if e.event_time > oracle.now + SKEW_MS {
                        expected_rejections.push((i, Rejection::TooFarAhead));
                    } else {
                        oracle.events.push((oracle.seq, e));
                        oracle.part_event(oracle.events.len() - 1);
                    }
                }
                prop_assert_eq!(&outcome.rejected, &expected_rejections);
            }
            Op::Advance(ms) => oracle.now += ms,
            Op::Tick => {
                for update in shard.tick(oracle.now) {
                    let w = oracle
                        .widgets
                        .iter()
                        .find(|w| w.widget_id == update.widget_id)
                        .unwrap();
                    prop_assert_eq!(update.count, oracle.expected(w).1);
                }
            }
        }
        check(&mut shard, &mut oracle)?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn widgets_match_naive_oracle(
        ops in prop::collection::vec(op_strategy(), 1..60),
        start in 1_600_000_000_000i64..1_900_000_000_000,
    ) {
        run(ops, start)?;
    }
}

/// Values sliding through a long stretch of time keep matching the oracle (eviction,
/// ring wrap-around and the periodic sum rebuild all happen many times over).
#[test]
fn long_run_matches_oracle() {
    let mut ops = vec![];
    for window in WINDOWS {
        for agg in [
            Aggregation::Sum,
            Aggregation::Min,
            Aggregation::P90,
            Aggregation::Count,
        ] {
            ops.push(Op::Add(WidgetSpec {
                metric_name: "m0".into(),
                aggregation: agg,
                window_seconds: window,
                refresh_interval_seconds: 1.0,
                filter: Tags::new(),
                display_config: Default::default(),
                group_by: None,
                top: None,
            }));
        }
    }
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for step in 0..600 {
        let batch = (0..20)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let value = (x % 10_000) as f64 / 7.0 - 300.0;
                let dt = 500 - ((x >> 20) % 3_000) as i64;
                (
                    0usize,
                    None,
                    if i == 0 && step % 97 == 0 {
                        1e15
                    } else {
                        value
                    },
                    dt,
                )
            })
            .collect();
        ops.push(Op::Apply(batch));
        ops.push(Op::Advance(250));
        if step % 4 == 0 {
            ops.push(Op::Tick);
        }
    }
    run(ops, 1_700_000_000_123).unwrap();
}
