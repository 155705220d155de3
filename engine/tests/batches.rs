//! Property test: how events are batched, ordered and grouped does not change any value.
//! The same events (integer values, so sums are exact in any order) go to one shard as
//! one batch in arrival order, and to another in random splits, each shuffled and applied
//! grouped by query or in arrival order; every widget then reads the same on both.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use livedash_engine::{
    Aggregation, Grouping, MetricEvent, Shard, ShardConfig, Tags, Widget, WidgetSpec,
};
use proptest::prelude::*;
use uuid::Uuid;

const NOW: i64 = 1_800_000_000_000;

fn shard(widgets: &[Widget]) -> Shard {
    let mut s = Shard::new(ShardConfig {
        max_skew_ms: 5_000,
        history_len: 4,
        min_horizon_ms: 0,
        spread_ticks: true,
        ..ShardConfig::default()
    });
    for w in widgets {
        s.upsert_widget(w.clone(), NOW).unwrap();
    }
    s
}

fn widgets_strategy() -> impl Strategy<Value = Vec<Widget>> {
    prop::collection::vec(
        (
            0..4usize,
            prop::option::weighted(0.3, 0..2usize),
            prop::sample::select(vec![1u64, 10, 60]),
            prop::sample::select(Aggregation::ALL.to_vec()),
            any::<bool>(),
        ),
        1..12,
    )
    .prop_map(|specs| {
        specs
            .into_iter()
            .map(|(metric, host, window, aggregation, grouped)| {
                let grouped = grouped && aggregation != Aggregation::Histogram;
                let spec = WidgetSpec {
                    metric_name: format!("m{metric}"),
                    aggregation,
                    window_seconds: window,
                    refresh_interval_seconds: 1.0,
                    filter: host
                        .map(|h| Tags::from([("host".to_string(), format!("h{h}"))]))
                        .unwrap_or_default(),
                    display_config: Default::default(),
                    group_by: grouped.then(|| "zone".into()),
                    top: grouped.then_some(3),
                };
                Widget::new(Uuid::new_v4(), Uuid::new_v4(), spec)
            })
            .collect()
    })
}

fn events_strategy() -> impl Strategy<Value = Vec<MetricEvent>> {
    prop::collection::vec(
        (0..5usize, 0..3usize, -1000i32..1000, -70_000i64..5_000),
        0..400,
    )
    .prop_map(|raw| {
        raw.into_iter()
            .map(|(m, h, v, dt)| MetricEvent {
                metric_name: format!("m{m}"),
                value: f64::from(v),
                tags: Tags::from([
                    ("host".to_string(), format!("h{h}")),
                    ("zone".to_string(), format!("z{}", v.rem_euclid(4))),
                ]),
                event_time: NOW + dt,
            })
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn batching_order_and_grouping_change_no_value(
        widgets in widgets_strategy(),
        events in events_strategy(),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
        seed in any::<u64>(),
    ) {
        let mut whole = shard(&widgets);
        whole.apply_grouped(&events, NOW, Grouping::Never);
        let mut split = shard(&widgets);
        let mut at: Vec<usize> = cuts.iter().map(|c| c.index(events.len() + 1)).collect();
        at.push(0);
        at.push(events.len());
        at.sort_unstable();
        let mut rng = seed;
        for pair in at.windows(2) {
            let mut batch = events[pair[0]..pair[1]].to_vec();
            // A Fisher-Yates shuffle with a xorshift generator, from the seed.
            for i in (1..batch.len()).rev() {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                batch.swap(i, (rng % (i as u64 + 1)) as usize);
            }
            let grouping = [Grouping::Always, Grouping::Never][(rng % 2) as usize];
            split.apply_grouped(&batch, NOW, grouping);
        }
        for w in &widgets {
            let (a, b) = (whole.value(&w.widget_id, NOW), split.value(&w.widget_id, NOW));
            prop_assert_eq!(
                a.as_ref().map(|v| (v.value.map(f64::to_bits), v.count, v.latest_event_time, v.detail.clone())),
                b.as_ref().map(|v| (v.value.map(f64::to_bits), v.count, v.latest_event_time, v.detail.clone())),
                "{:?} {:?}: {:?} vs {:?}", w.spec.aggregation, w.spec.metric_name, a, b
            );
        }
        prop_assert_eq!(whole.stats(), split.stats());
    }
}
