//! Wire shapes of the data model: what JSON is accepted, what is refused, and the
//! canonical form written back.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use livedash_engine::{Aggregation, Dashboard, MetricEvent, Widget, WidgetSpec};
use serde_json::json;

#[test]
fn event_time_as_millis_or_rfc3339() {
    let a: MetricEvent = serde_json::from_value(json!({
        "metric_name": "api.latency_ms", "value": 12.5, "event_time": 1_764_424_800_250i64
    }))
    .unwrap();
    let b: MetricEvent = serde_json::from_value(json!({
        "metric_name": "api.latency_ms", "value": 12.5, "event_time": "2025-11-29T14:00:00.250Z"
    }))
    .unwrap();
    let c: MetricEvent = serde_json::from_value(json!({
        "metric_name": "api.latency_ms", "value": 12.5, "event_time": "2025-11-29T15:00:00.250+01:00"
    }))
    .unwrap();
    assert_eq!(a, b);
    assert_eq!(b, c);
    assert!(a.tags.is_empty());
    let bad = serde_json::from_value::<MetricEvent>(json!({
        "metric_name": "m", "value": 1, "event_time": "yesterday"
    }))
    .unwrap_err()
    .to_string();
    assert!(bad.contains("not an RFC 3339 timestamp"), "{bad}");
}

#[test]
fn tags_accept_scalars_and_refuse_nesting() {
    let e: MetricEvent = serde_json::from_value(json!({
        "metric_name": "m", "value": 1, "event_time": 5,
        "tags": {"host": "a", "core": 3, "canary": true}
    }))
    .unwrap();
    assert_eq!(e.tags["core"], "3");
    assert_eq!(e.tags["canary"], "true");
    let e: MetricEvent = serde_json::from_value(
        json!({"metric_name": "m", "value": 1, "event_time": 5, "tags": null}),
    )
    .unwrap();
    assert!(e.tags.is_empty());
    assert!(
        serde_json::from_value::<MetricEvent>(json!({
            "metric_name": "m", "value": 1, "event_time": 5, "tags": {"a": {"b": 1}}
        }))
        .is_err()
    );
}

#[test]
fn unknown_fields_are_refused() {
    let err = serde_json::from_value::<MetricEvent>(json!({
        "metric_name": "m", "value": 1, "event_time": 5, "valeu": 2
    }))
    .unwrap_err()
    .to_string();
    assert!(err.contains("unknown field `valeu`"), "{err}");
    let err = serde_json::from_value::<WidgetSpec>(json!({
        "metric_name": "m", "aggregation": "avg", "window_seconds": 60,
        "refresh_interval_seconds": 1, "windows_seconds": 5
    }))
    .unwrap_err()
    .to_string();
    assert!(err.contains("unknown field"), "{err}");
}

#[test]
fn widget_round_trip_and_aggregation_names() {
    let spec: WidgetSpec = serde_json::from_value(json!({
        "metric_name": "api.latency_ms", "aggregation": "p99", "window_seconds": 300,
        "refresh_interval_seconds": 0.5, "filter": {"region": "eu"},
        "display_config": {"chart": "line", "color": "#36c"}
    }))
    .unwrap();
    assert_eq!(spec.aggregation, Aggregation::P99);
    let d = uuid::Uuid::new_v4();
    let w = Widget::new(uuid::Uuid::from_u128(7), d, spec);
    assert_eq!(w.refresh_interval_ms(), 500);
    let v = serde_json::to_value(&w).unwrap();
    assert_eq!(v["aggregation"], "p99");
    assert_eq!(v["dashboard_id"], d.to_string());
    assert_eq!(v["filter"]["region"], "eu");
    let back: Widget = serde_json::from_value(v).unwrap();
    assert_eq!(back, w);
    for agg in Aggregation::ALL {
        let s = serde_json::to_value(agg).unwrap();
        assert_eq!(s, agg.as_str());
        assert_eq!(s.as_str().unwrap(), s.as_str().unwrap().to_lowercase());
    }
    assert!(serde_json::from_value::<Aggregation>(json!("median")).is_err());

    let dash = Dashboard {
        dashboard_id: d,
        name: "Checkout".into(),
        layout: json!({}),
        widgets: vec![w],
    };
    let back: Dashboard = serde_json::from_str(&serde_json::to_string(&dash).unwrap()).unwrap();
    assert_eq!(back, dash);
}
