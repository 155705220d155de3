//! `--demo`, a front end of its own: a "livedash demo" dashboard and a few synthetic
//! series with tags (request latency per route, CPU per host, a queue depth, orders), made
//! through the same catalogue and ingest services as HTTP, every 100 ms, so a first run
//! shows live values at once.

use std::f64::consts::TAU;
use std::rc::Rc;
use std::time::Duration;

use livedash_engine::{DashboardUpdate, MetricEvent, NewDashboard, Tags};
use rand::Rng;
use serde_json::json;

use crate::catalogue::Edit;
use crate::clock::now_ms;
use crate::parse::Parsed;
use crate::service::{Services, catalogue};

const NAME: &str = "livedash demo";

pub fn widget(
    metric: &str,
    aggregation: &str,
    window: u64,
    refresh: f64,
    filter: serde_json::Value,
    display: serde_json::Value,
) -> serde_json::Value {
    json!({
        "metric_name": metric, "aggregation": aggregation, "window_seconds": window,
        "refresh_interval_seconds": refresh, "filter": filter, "display_config": display
    })
}

/// Creates dashboard `name` with `widgets` (specs as the API takes them), placed on the
/// web UI's 12-column grid three a row, unless a dashboard with that name exists.
pub async fn ensure_dashboard(
    svc: &Rc<Services>,
    name: &str,
    widgets: Vec<serde_json::Value>,
) -> Result<bool, catalogue::CatalogueError> {
    if catalogue::list(svc).await?.iter().any(|d| d.name == name) {
        return Ok(false);
    }
    let body = json!({ "name": name, "widgets": widgets });
    let new: NewDashboard = serde_json::from_value(body)
        .map_err(|e| crate::catalogue::Refusal::Invalid(e.to_string()))?;
    let Some(created) = catalogue::edit(svc, Edit::Create(new)).await? else {
        return Ok(false);
    };
    let items: serde_json::Map<String, serde_json::Value> = created
        .widgets
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let place = json!({"x": (i % 3) * 4, "y": (i / 3) * 3, "w": 4, "h": 3});
            (w.widget_id.to_string(), place)
        })
        .collect();
    let update = DashboardUpdate {
        name: name.to_owned(),
        layout: Some(json!({ "items": items })),
    };
    catalogue::edit(svc, Edit::Update(created.dashboard_id, update)).await?;
    Ok(true)
}

/// The demo's widgets.
fn demo_widgets() -> Vec<serde_json::Value> {
    vec![
        widget(
            "demo.http.latency_ms",
            "p99",
            60,
            1.0,
            json!({"route": "/checkout"}),
            json!({"chart": "line", "unit": "ms", "warn": 600, "crit": 900, "title": "checkout latency, p99"}),
        ),
        widget(
            "demo.http.latency_ms",
            "p50",
            60,
            1.0,
            json!({"route": "/search"}),
            json!({"chart": "line", "unit": "ms", "title": "search latency, p50"}),
        ),
        widget(
            "demo.http.latency_ms",
            "avg",
            60,
            0.5,
            json!({"route": "/checkout"}),
            json!({"chart": "stat", "unit": "ms", "warn": 250, "crit": 400, "title": "checkout latency, avg"}),
        ),
        widget(
            "demo.http.requests",
            "count",
            10,
            0.5,
            json!({}),
            json!({"chart": "stat", "title": "requests, last 10 s"}),
        ),
        widget(
            "demo.cpu.usage",
            "max",
            30,
            1.0,
            json!({"host": "web-1"}),
            json!({"chart": "gauge", "unit": "%", "min": 0, "max": 100, "warn": 70, "crit": 90, "title": "web-1 CPU, max"}),
        ),
        widget(
            "demo.cpu.usage",
            "avg",
            300,
            1.0,
            json!({}),
            json!({"chart": "line", "unit": "%", "title": "CPU, all hosts, avg"}),
        ),
        widget(
            "demo.queue.depth",
            "max",
            60,
            1.0,
            json!({}),
            json!({"chart": "line", "title": "queue depth, max"}),
        ),
        widget(
            "demo.orders.value",
            "sum",
            300,
            1.0,
            json!({}),
            json!({"chart": "stat", "unit": "$", "title": "order value, last 5 min"}),
        ),
        grouped(
            widget(
                "demo.http.latency_ms",
                "p99",
                60,
                1.0,
                json!({}),
                json!({"chart": "line", "unit": "ms", "title": "latency p99 by route"}),
            ),
            "route",
        ),
        widget(
            "demo.http.latency_ms",
            "histogram",
            60,
            1.0,
            json!({}),
            json!({"chart": "heatmap", "unit": "ms", "title": "latency distribution"}),
        ),
        grouped(
            widget(
                "demo.http.requests",
                "count",
                60,
                1.0,
                json!({}),
                json!({"chart": "bars", "title": "requests by route, last minute"}),
            ),
            "route",
        ),
    ]
}

/// `spec` split by the values of tag `by`.
fn grouped(mut spec: serde_json::Value, by: &str) -> serde_json::Value {
    spec["group_by"] = json!(by);
    spec
}

pub fn event(metric: &str, value: f64, tags: &[(&str, &str)], t: i64) -> MetricEvent {
    let tags: Tags = tags
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    MetricEvent {
        metric_name: metric.to_string(),
        value,
        tags,
        event_time: t,
    }
}

/// Runs on shard 0 until the node stops.
pub async fn run(svc: Rc<Services>) {
    match ensure_dashboard(&svc, NAME, demo_widgets()).await {
        Ok(true) => tracing::info!("demo dashboard created"),
        Ok(false) => {}
        Err(e) => tracing::warn!(
            "cannot create the demo dashboard: {e}; create it by hand or restart with --demo"
        ),
    }
    let mut rng = rand::rng();
    let mut queue: f64 = 20.0;
    let routes = ["/", "/search", "/checkout", "/login"];
    let hosts = ["web-1", "web-2", "web-3"];
    while !svc.stop.is_set() {
        let now = now_ms();
        let phase = (now % 120_000) as f64 / 120_000.0 * TAU;
        let mut events = Vec::with_capacity(64);
        for _ in 0..rng.random_range(20..40) {
            let route = routes[rng.random_range(0..routes.len())];
            let base = if route == "/checkout" { 180.0 } else { 40.0 };
            let jitter: f64 = rng.random::<f64>().powi(4) * 900.0;
            let t = now - rng.random_range(0..100);
            events.push(event(
                "demo.http.latency_ms",
                base * (1.0 + 0.3 * phase.sin()) + jitter,
                &[("route", route)],
                t,
            ));
            events.push(event("demo.http.requests", 1.0, &[("route", route)], t));
        }
        for (i, host) in hosts.iter().enumerate() {
            let usage = 45.0 + 30.0 * (phase + i as f64).sin() + rng.random_range(-5.0..5.0);
            events.push(event(
                "demo.cpu.usage",
                usage.clamp(0.0, 100.0),
                &[("host", host)],
                now,
            ));
        }
        queue = (queue + rng.random_range(-3.0..3.2)).clamp(0.0, 500.0);
        events.push(event("demo.queue.depth", queue.round(), &[], now));
        if rng.random_bool(0.3) {
            events.push(event(
                "demo.orders.value",
                rng.random_range(5.0..250.0_f64).round(),
                &[],
                now,
            ));
        }
        match svc.submit(Parsed::from_events(events)).await {
            Ok(reply) if reply.rejected.is_empty() => {}
            Ok(reply) => tracing::warn!(
                "demo events rejected: {:?}; nothing to do unless it repeats: then check that the system clock has not stepped back (the demo stamps its events with it)",
                reply.rejected
            ),
            Err(e) => tracing::warn!(
                "demo events were not applied: {e}; the demo sends new ones every 100 ms: nothing to do unless it repeats: then check that the node's Kafka brokers and Redis are reachable, or look for a slow shard in livedash_tick_duration_seconds"
            ),
        }
        glommio::timer::sleep(Duration::from_millis(100)).await;
    }
}
