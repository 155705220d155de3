//! Tests of the shard state machine: rejections, refreshes, widgets.

use super::*;
use crate::model::{Aggregation, Tags, WidgetSpec};

/// A widget with the next id of a per-thread counter (ids are the caller's to mint).
fn widget(metric: &str, agg: Aggregation, window: u64, refresh: f64) -> Widget {
    thread_local!(static NEXT: std::cell::Cell<u128> = const { std::cell::Cell::new(1) });
    let id = NEXT.with(|n| n.replace(n.get() + 1));
    Widget::new(
        Uuid::from_u128(id),
        Uuid::nil(),
        WidgetSpec {
            metric_name: metric.into(),
            aggregation: agg,
            window_seconds: window,
            refresh_interval_seconds: refresh,
            filter: Tags::new(),
            display_config: Default::default(),
            group_by: None,
            top: None,
        },
    )
}

fn ev(metric: &str, value: f64, t: i64) -> MetricEvent {
    MetricEvent {
        metric_name: metric.into(),
        value,
        tags: Tags::new(),
        event_time: t,
    }
}

#[test]
fn rejects_and_counts_by_reason() {
    let mut s = Shard::new(ShardConfig::default());
    let w = widget("m", Aggregation::Sum, 600, 1.0);
    s.upsert_widget(w, 1_000_000).unwrap();
    assert_eq!(s.horizon_ms(), 600_000);
    let out = s.apply(
        &[
            ev("m", 1.0, 1_000_000),
            ev("m", 1.0, 399_999),
            ev("m", 1.0, 1_005_001),
            ev("x", 2.0, 1_000_000),
        ],
        1_000_000,
    );
    assert_eq!(out.accepted, 2);
    assert_eq!(
        out.rejected,
        vec![(1, Rejection::TooOld), (2, Rejection::TooFarAhead)]
    );
    let st = s.stats();
    assert_eq!(
        (
            st.accepted,
            st.unmatched,
            st.rejected_too_old,
            st.rejected_too_far_ahead
        ),
        (2, 1, 1, 1)
    );
}

#[test]
fn a_widget_is_behind_when_its_refresh_is_overdue() {
    let mut s = Shard::new(ShardConfig::default());
    let w = widget("m", Aggregation::Sum, 60, 1.0);
    let id = w.widget_id;
    s.upsert_widget(w, 10_000).unwrap();
    s.tick(10_000);
    assert_eq!(s.is_behind(&id, 12_000), Some(false));
    assert_eq!(s.is_behind(&id, 13_001), Some(true));
    s.tick(13_001);
    assert_eq!(s.is_behind(&id, 13_001), Some(false));
    assert_eq!(s.is_behind(&Uuid::new_v4(), 13_001), None);
}

#[test]
fn tick_pushes_changes_only_and_keeps_history() {
    let mut s = Shard::new(ShardConfig {
        history_len: 3,
        ..ShardConfig::default()
    });
    let w = widget("m", Aggregation::Max, 60, 0.5);
    let id = w.widget_id;
    s.upsert_widget(w, 10_000).unwrap();
    let first = s.tick(10_000);
    assert_eq!(first.len(), 1, "the first refresh always reports");
    assert_eq!(first[0].value, None);
    assert_eq!(s.next_due(), Some(10_500));
    assert!(s.tick(10_499).is_empty());
    assert!(s.tick(10_500).is_empty(), "still empty: nothing changed");
    s.apply(&[ev("m", 3.0, 10_600)], 10_600);
    let up = s.tick(11_000);
    assert_eq!(up.len(), 1);
    assert_eq!(up[0].value, Some(3.0));
    assert_eq!(up[0].latest_event_time, Some(10_600));
    s.tick(11_500);
    let h: Vec<_> = s.history(&id).unwrap().iter().copied().collect();
    assert_eq!(
        h,
        vec![(10_500, None), (11_000, Some(3.0)), (11_500, Some(3.0))]
    );
    // Far behind: missed refreshes are skipped, not replayed.
    assert_eq!(s.tick(100_000).len(), 1, "the value slid out of the window");
    assert_eq!(s.next_due(), Some(100_500));
}

#[test]
fn shared_query_and_updates() {
    let mut s = Shard::new(ShardConfig::default());
    let a = widget("m", Aggregation::Sum, 60, 1.0);
    let mut b = widget("m", Aggregation::Count, 60, 1.0);
    s.upsert_widget(a.clone(), 0).unwrap();
    s.apply(&[ev("m", 2.0, 0), ev("m", 5.0, 1)], 1);
    s.upsert_widget(b.clone(), 2).unwrap();
    assert_eq!(s.query_count(), 1);
    assert_eq!(
        s.value(&b.widget_id, 2).unwrap().value,
        Some(2.0),
        "b shares a's window"
    );
    b.spec.window_seconds = 30;
    s.upsert_widget(b.clone(), 3).unwrap();
    assert_eq!(s.query_count(), 2);
    assert_eq!(
        s.value(&b.widget_id, 3).unwrap().value,
        Some(0.0),
        "a new query starts empty"
    );
    b.spec.aggregation = Aggregation::P50;
    s.upsert_widget(b.clone(), 3).unwrap();
    s.apply(&[ev("m", 7.0, 4)], 4);
    assert_eq!(s.value(&b.widget_id, 4).unwrap().value, Some(7.0));
    assert_eq!(s.value(&a.widget_id, 4).unwrap().value, Some(14.0));
    assert!(s.remove_widget(&a.widget_id));
    assert!(!s.remove_widget(&a.widget_id));
    assert_eq!(s.query_count(), 1);
    let bad = Widget {
        spec: WidgetSpec {
            window_seconds: 0,
            ..b.spec.clone()
        },
        ..b.clone()
    };
    assert_eq!(s.upsert_widget(bad, 5), Err(ValidationError::Window(0)));
    assert_eq!(
        s.widget(&b.widget_id).unwrap().spec.window_seconds,
        30,
        "refused edits change nothing"
    );
}

/// The widget `w` moved to dashboard `dashboard`.
fn on_dashboard(mut w: Widget, dashboard: u128) -> Widget {
    w.dashboard_id = Uuid::from_u128(dashboard);
    w
}

#[test]
fn each_dashboard_ticks_at_its_own_phase() {
    let (d1, d2) = (0x1234_5678_9abc_def0_u128 << 40, 0xfeed_beef_u128 << 70);
    let a = on_dashboard(widget("a", Aggregation::Sum, 60, 1.0), d1);
    let b = on_dashboard(widget("b", Aggregation::Max, 60, 1.0), d1);
    let c = on_dashboard(widget("c", Aggregation::Sum, 60, 1.0), d2);
    let (pa, pc) = (a.tick_phase_ms(), c.tick_phase_ms());
    assert_eq!(pa, b.tick_phase_ms(), "one dashboard, one phase");
    assert_ne!(pa, pc, "these two dashboards hash apart");
    assert!((0..1000).contains(&pa) && (0..1000).contains(&pc));
    let mut s = Shard::new(ShardConfig::default());
    for w in [a, b, c] {
        s.upsert_widget(w, 100_000).unwrap();
    }
    assert_eq!(s.tick(100_000).len(), 3, "every first refresh runs at once");
    let mut due: Vec<i64> = s.schedule.keys().copied().collect();
    due.sort_unstable();
    let mut expected = vec![100_000 + pa, 100_000 + pc];
    expected.sort_unstable();
    assert_eq!(due, expected, "two deadlines: one per dashboard");
    assert_eq!(s.schedule[&(100_000 + pa)].len(), 2);
    // Each deadline runs its own dashboard's widgets only, then moves one interval on.
    let first = expected[0];
    assert_eq!(s.tick(first).len(), 0, "nothing changed, nothing reported");
    assert_eq!(s.next_due(), Some(expected[1]));
    s.tick(expected[1]);
    assert_eq!(s.next_due(), Some(first + 1000));
    // A shard that fell behind skips the missed deadlines but keeps the phase.
    s.tick(first + 5_500);
    let keys: Vec<i64> = s.schedule.keys().copied().collect();
    assert!(
        keys.iter()
            .all(|k| *k > first + 5_500 && *k <= first + 6_500)
    );
    assert!(
        keys.iter()
            .all(|k| (k - pa).rem_euclid(1000) == 0 || (k - pc).rem_euclid(1000) == 0)
    );
}

#[test]
fn aligned_ticks_fall_on_multiples_of_the_interval() {
    let mut s = Shard::new(ShardConfig {
        spread_ticks: false,
        ..ShardConfig::default()
    });
    let w = on_dashboard(widget("a", Aggregation::Sum, 60, 0.5), 0xabcdef << 64);
    assert_ne!(w.tick_phase_ms(), 0);
    s.upsert_widget(w, 100_123).unwrap();
    s.tick(100_123);
    assert_eq!(s.next_due(), Some(100_500));
}

#[test]
fn phases_cover_the_interval_uniformly() {
    let mut buckets = [0u32; 10];
    let mut id = 0x9e37_79b9_7f4a_7c15_u128;
    for _ in 0..10_000 {
        id = id.wrapping_mul(0x2545_f491_4f6c_dd1d).wrapping_add(1);
        let phase = crate::model::tick_phase_ms(&Uuid::from_u128(id), 1000);
        buckets[(phase / 100) as usize] += 1;
    }
    assert!(
        buckets.iter().all(|&n| (800..1200).contains(&n)),
        "{buckets:?}"
    );
    assert_eq!(crate::model::tick_phase_ms(&Uuid::from_u128(id), 1), 0);
}

#[test]
fn a_refresh_without_a_change_is_noted() {
    let mut s = Shard::new(ShardConfig::default());
    let (a, b) = (
        widget("a", Aggregation::Sum, 60, 1.0),
        widget("b", Aggregation::Sum, 60, 1.0),
    );
    let (ida, idb) = (a.widget_id, b.widget_id);
    s.upsert_widget(a, 10_000).unwrap();
    s.upsert_widget(b, 10_000).unwrap();
    let mut unchanged = Vec::new();
    assert_eq!(s.tick_noting(10_000, &mut unchanged).len(), 2);
    assert!(unchanged.is_empty(), "first refreshes report");
    s.apply(&[ev("a", 1.0, 10_500)], 10_500);
    let changed = s.tick_noting(11_000, &mut unchanged);
    assert_eq!(
        changed.iter().map(|v| v.widget_id).collect::<Vec<_>>(),
        [ida]
    );
    assert_eq!(unchanged, [idb]);
}
