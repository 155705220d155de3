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
        vec![(11_000, None), (12_000, Some(3.0)), (12_000, Some(3.0))]
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
