//! Window benchmarks, livedash against the original design's sorted-set algorithm (same
//! events, same refresh schedule, same process):
//! - `window_ingest/{livedash,sorted_set}/<agg>`: 10,000 series with 5-minute windows at
//!   10 events/s each; one iteration is one second of traffic (100,000 events, metric-name
//!   lookup included) followed by the refresh of every widget.
//! - `window_refresh/{livedash,sorted_set}/<agg>`: one refresh of a query holding a full
//!   5-minute window at 10,000 events/s (3 million events), eviction included.
//! - `window_batches/<engine>/<agg>/<batch>`: `window_ingest`'s traffic handed over in
//!   batches of 100 to 100,000 events: livedash applying each batch in arrival order
//!   (`in_order`) and grouped by query (`grouped`; `Shard::apply` chooses by size), the
//!   sorted-set algorithm, and for sums the floor (`flat`: a flat ring of panes per
//!   metric, nothing of livedash's).

use std::time::{Duration, Instant};

use criterion::{
    BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};
use livedash_bench::flat::FlatSums;
use livedash_bench::sorted_set::SortedSetEngine;
use livedash_bench::workload::{
    CompactEvent, materialize, metric_names, second_of_traffic, widgets,
};
use livedash_engine::{Aggregation, Grouping, MetricEvent, Shard, ShardConfig};

const SERIES: usize = 10_000;
const PER_SERIES_PER_S: usize = 10;
const WINDOW_S: u64 = 300;
const START_MS: i64 = 1_764_000_000_000;
const HTTP_BATCH: usize = 1_000;
const BATCHES: [usize; 4] = [100, 1_000, 10_000, 100_000];
const AGGREGATIONS: [Aggregation; 3] = [Aggregation::Sum, Aggregation::Max, Aggregation::P99];

/// Rotating one-second traffic patterns, turned into events one request-sized batch at a
/// time (untimed), so the engine sees freshly parsed input as it would behind HTTP.
struct Traffic {
    names: Vec<String>,
    seconds: Vec<Vec<CompactEvent>>,
    batch: Vec<MetricEvent>,
    /// Events per `ingest` call.
    batch_size: usize,
}

impl Traffic {
    fn new(series: usize, per_series: usize) -> Self {
        let seconds = (0..4)
            .map(|i| second_of_traffic(series, per_series, 42 + i))
            .collect();
        Self {
            names: metric_names(series),
            seconds,
            batch: Vec::with_capacity(HTTP_BATCH),
            batch_size: HTTP_BATCH,
        }
    }

    fn events_per_second(&self) -> usize {
        self.seconds[0].len()
    }

    /// Feeds second `second` to `engine` at clock `now_ms`; returns the time spent inside
    /// the engine.
    fn feed<E: Engine>(&mut self, engine: &mut E, second: i64, now_ms: i64) -> Duration {
        let start = START_MS + second * 1000;
        let mut spent = Duration::ZERO;
        for chunk in self.seconds[(second % 4) as usize].chunks(self.batch_size) {
            materialize(chunk, &self.names, start, &mut self.batch);
            let t = Instant::now();
            engine.ingest(&self.batch, now_ms);
            spent += t.elapsed();
        }
        spent
    }
}

trait Engine {
    fn ingest(&mut self, events: &[MetricEvent], now_ms: i64);
    fn refresh(&mut self, now_ms: i64) -> usize;
}

impl Engine for Shard {
    fn ingest(&mut self, events: &[MetricEvent], now_ms: i64) {
        self.apply(events, now_ms);
    }

    fn refresh(&mut self, now_ms: i64) -> usize {
        self.tick(now_ms).len()
    }
}

impl Engine for SortedSetEngine {
    fn ingest(&mut self, events: &[MetricEvent], now_ms: i64) {
        self.apply(events, now_ms);
    }

    fn refresh(&mut self, now_ms: i64) -> usize {
        self.refresh_all(now_ms)
    }
}

/// A shard that applies every batch in one order, whatever its size.
struct Ordered(Shard, Grouping);

impl Engine for Ordered {
    fn ingest(&mut self, events: &[MetricEvent], now_ms: i64) {
        self.0.apply_grouped(events, now_ms, self.1);
    }

    fn refresh(&mut self, now_ms: i64) -> usize {
        self.0.tick(now_ms).len()
    }
}

impl Engine for FlatSums {
    fn ingest(&mut self, events: &[MetricEvent], now_ms: i64) {
        self.apply(events, now_ms);
    }

    fn refresh(&mut self, now_ms: i64) -> usize {
        FlatSums::refresh(self, now_ms)
    }
}

fn livedash(names: &[String], aggregation: Aggregation, window_s: u64) -> Shard {
    let mut shard = Shard::new(ShardConfig::default());
    for w in widgets(names, aggregation, window_s) {
        shard
            .upsert_widget(w, START_MS)
            .unwrap_or_else(|e| panic!("{e}"));
    }
    shard
}

fn sorted_set(names: &[String], aggregation: Aggregation, window_s: u64) -> SortedSetEngine {
    let mut engine = SortedSetEngine::default();
    for name in names {
        engine.add_query(name, aggregation, window_s);
    }
    engine
}

/// Fills the windows with `WINDOW_S` seconds of traffic (once, when the benchmark is
/// selected); then each iteration feeds the next second of traffic and refreshes every
/// widget at the second's end. The refresh is always timed, the feeding when `time_ingest`.
fn bench_seconds<E: Engine>(
    c: &mut Group<'_>,
    id: BenchmarkId,
    make: impl Fn() -> E,
    traffic: &mut Traffic,
    time_ingest: bool,
) {
    let mut state: Option<(E, i64)> = None;
    c.bench_function(id, |b| {
        let (engine, second) = state.get_or_insert_with(|| prefill(make(), traffic));
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let now = START_MS + (*second + 1) * 1000;
                let fed = traffic.feed(engine, *second, now - 1);
                if time_ingest {
                    total += fed;
                }
                let t = Instant::now();
                std::hint::black_box(engine.refresh(now));
                total += t.elapsed();
                *second += 1;
            }
            total
        })
    });
}

type Group<'a> = criterion::BenchmarkGroup<'a, criterion::measurement::WallTime>;

/// Runs `WINDOW_S` seconds of traffic through a new engine; returns it and the next second.
fn prefill<E: Engine>(mut engine: E, traffic: &mut Traffic) -> (E, i64) {
    for second in 0..WINDOW_S as i64 {
        traffic.feed(&mut engine, second, START_MS + (second + 1) * 1000);
    }
    (engine, WINDOW_S as i64)
}

/// One benchmark group: livedash then sorted_set for each aggregation, fed `per_series`
/// events per second on each of `series` series.
fn run_group(c: &mut Criterion, name: &str, series: usize, per_series: usize, time_ingest: bool) {
    let mut traffic = Traffic::new(series, per_series);
    let names = traffic.names.clone();
    let mut group = c.benchmark_group(name);
    if time_ingest {
        group.throughput(Throughput::Elements(traffic.events_per_second() as u64));
    }
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(if time_ingest { 10 } else { 20 });
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(if time_ingest { 5 } else { 3 }));
    for agg in AGGREGATIONS {
        let id = BenchmarkId::new("livedash", agg.as_str());
        bench_seconds(
            &mut group,
            id,
            || livedash(&names, agg, WINDOW_S),
            &mut traffic,
            time_ingest,
        );
        let id = BenchmarkId::new("sorted_set", agg.as_str());
        bench_seconds(
            &mut group,
            id,
            || sorted_set(&names, agg, WINDOW_S),
            &mut traffic,
            time_ingest,
        );
    }
    group.finish();
}

/// 10,000 series at 10 events/s each; times ingest plus the refresh of every widget.
fn window_ingest(c: &mut Criterion) {
    run_group(c, "window_ingest", SERIES, PER_SERIES_PER_S, true);
}

/// `window_ingest` by batch size: livedash in arrival order and grouped, the sorted-set
/// algorithm, and (sums) the floor.
fn window_batches(c: &mut Criterion) {
    let mut traffic = Traffic::new(SERIES, PER_SERIES_PER_S);
    let names = traffic.names.clone();
    let mut group = c.benchmark_group("window_batches");
    group.throughput(Throughput::Elements(traffic.events_per_second() as u64));
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(4));
    for batch in BATCHES {
        traffic.batch_size = batch;
        for agg in AGGREGATIONS {
            for (name, grouping) in [("in_order", Grouping::Never), ("grouped", Grouping::Always)] {
                let id = BenchmarkId::new(format!("{name}/{}", agg.as_str()), batch);
                let make = || Ordered(livedash(&names, agg, WINDOW_S), grouping);
                bench_seconds(&mut group, id, make, &mut traffic, true);
            }
            let id = BenchmarkId::new(format!("sorted_set/{}", agg.as_str()), batch);
            let make = || sorted_set(&names, agg, WINDOW_S);
            bench_seconds(&mut group, id, make, &mut traffic, true);
        }
        let id = BenchmarkId::new("flat/sum", batch);
        bench_seconds(
            &mut group,
            id,
            || FlatSums::new(&names, WINDOW_S),
            &mut traffic,
            true,
        );
    }
    group.finish();
}

/// One query, a full 5-minute window at 10,000 events/s; times the refresh that slides
/// the window over each new second (the second's events are fed untimed).
fn window_refresh(c: &mut Criterion) {
    run_group(c, "window_refresh", 1, 10_000, false);
}

criterion_group!(benches, window_ingest, window_refresh, window_batches);
criterion_main!(benches);
