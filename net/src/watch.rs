//! The node watching itself, a front end of its own on the catalogue shard: once a second
//! it reads every shard's counters, evaluates the alerts (`service::health`), and with
//! `--self-dashboard` turns the counters into events of a "livedash node" dashboard,
//! ingested through the same service as HTTP's, so a newcomer who opens the UI sees the
//! engine's own health live.

use std::rc::Rc;
use std::time::Duration;

use livedash_engine::MetricEvent;
use serde_json::json;

use crate::clock::now_ms;
use crate::demo::{ensure_dashboard, event, widget};
use crate::parse::Parsed;
use crate::service::Services;
use crate::service::catalogue::CatalogueError;
use crate::service::metrics::{Buckets, LATENCY_BOUNDS};
use crate::service::stats::{self, ShardStats};

const EVERY: Duration = Duration::from_secs(1);

/// What the self-dashboard is made from, summed over the shards.
#[derive(Debug, Clone)]
struct Totals {
    accepted: u64,
    rejected: u64,
    push_delay: Buckets,
    e2e: Buckets,
    streams: usize,
    /// The partition furthest behind, in seconds (cluster mode).
    behind_s: Option<f64>,
}

impl Totals {
    fn of(shards: &[ShardStats]) -> Self {
        let mut t = Totals {
            accepted: 0,
            rejected: 0,
            push_delay: Buckets::empty(LATENCY_BOUNDS),
            e2e: Buckets::empty(LATENCY_BOUNDS),
            streams: 0,
            behind_s: None,
        };
        for s in shards {
            t.accepted += s.accepted;
            let refused: u64 = crate::parse::RejectReason::ALL
                .iter()
                .map(|r| s.refused.get(*r))
                .sum();
            t.rejected += s.rejected_too_old + s.rejected_too_far_ahead + refused;
            t.push_delay.merge(&s.metrics.push_delay);
            t.e2e.merge(&s.metrics.e2e);
            t.streams += s.streams;
            let behind = s
                .kafka
                .iter()
                .flat_map(|k| &k.partitions)
                .filter_map(|p| p.behind_ms)
                .max();
            if let Some(ms) = behind {
                let secs = ms as f64 / 1000.0;
                t.behind_s = Some(t.behind_s.map_or(secs, |b: f64| b.max(secs)));
            }
        }
        t
    }
}

/// The self-dashboard's name and the `node` tag of its events: one per node in a
/// cluster (named by the URL it advertises), one standalone.
fn identity(svc: &Services) -> Option<(String, String)> {
    match &svc.cluster {
        None => Some(("livedash node".to_owned(), "standalone".to_owned())),
        Some(link) => {
            let url = link.shared.advertised.get()?;
            Some((format!("livedash node {url}"), url.clone()))
        }
    }
}

fn widgets(node: &str, kafka: bool) -> Vec<serde_json::Value> {
    let f = json!({ "node": node });
    let mut list = vec![
        widget(
            "livedash.events_per_second",
            "avg",
            10,
            1.0,
            f.clone(),
            json!({"chart": "line", "unit": "/s", "title": "events accepted per second"}),
        ),
        widget(
            "livedash.rejected_per_second",
            "avg",
            10,
            1.0,
            f.clone(),
            json!({"chart": "line", "unit": "/s", "warn": 1, "title": "events rejected per second"}),
        ),
        widget(
            "livedash.open_streams",
            "max",
            10,
            1.0,
            f.clone(),
            json!({"chart": "stat", "title": "open streams"}),
        ),
        widget(
            "livedash.push_delay_p99_ms",
            "max",
            10,
            1.0,
            f.clone(),
            json!({"chart": "line", "unit": "ms", "warn": 100, "crit": 500, "title": "push delay, p99"}),
        ),
        widget(
            "livedash.e2e_p99_ms",
            "max",
            10,
            1.0,
            f.clone(),
            json!({"chart": "line", "unit": "ms", "warn": 1000, "crit": 2000, "title": "event to browser, p99"}),
        ),
    ];
    if kafka {
        list.push(widget("livedash.kafka_behind_seconds", "max", 10, 1.0, f, json!({"chart": "line", "unit": "s", "warn": 5, "crit": 30, "title": "Kafka lag, worst partition"})));
    }
    list
}

/// The events of one second: rates from the difference with the previous second.
fn events(
    now: Totals,
    before: &Totals,
    seconds: f64,
    own: u64,
    node: &str,
    t: i64,
) -> Vec<MetricEvent> {
    let tags = [("node", node)];
    // The self-dashboard's own events are not the node's load.
    let accepted = now
        .accepted
        .saturating_sub(before.accepted)
        .saturating_sub(own);
    let mut out = vec![
        event(
            "livedash.events_per_second",
            accepted as f64 / seconds,
            &tags,
            t,
        ),
        event(
            "livedash.rejected_per_second",
            now.rejected.saturating_sub(before.rejected) as f64 / seconds,
            &tags,
            t,
        ),
        event("livedash.open_streams", now.streams as f64, &tags, t),
    ];
    // Latencies only for a second that had frames.
    if let Some(p99) = now.push_delay.since(&before.push_delay).quantile(0.99) {
        out.push(event("livedash.push_delay_p99_ms", p99 * 1000.0, &tags, t));
    }
    if let Some(p99) = now.e2e.since(&before.e2e).quantile(0.99) {
        out.push(event("livedash.e2e_p99_ms", p99 * 1000.0, &tags, t));
    }
    if let Some(behind) = now.behind_s {
        out.push(event("livedash.kafka_behind_seconds", behind, &tags, t));
    }
    out
}

/// Runs on the catalogue shard until the node stops.
pub async fn run(svc: Rc<Services>) {
    let mut made = !svc.config.self_dashboard;
    let mut previous: Option<(i64, Totals)> = None;
    let mut sent = 0u64;
    loop {
        if svc.stop.sleep(EVERY).await {
            return;
        }
        let Ok(shards) = stats::all_shards(&svc, false).await else {
            continue;
        };
        let now = now_ms();
        if svc.config.metrics {
            svc.health.evaluate(&svc.config, &shards, now);
        }
        if !svc.config.self_dashboard {
            continue;
        }
        let Some((name, node)) = identity(&svc) else {
            continue;
        };
        if !made {
            match ensure_dashboard(&svc, &name, widgets(&node, svc.kafka.is_some())).await {
                Ok(_) => made = true,
                // The catalogue is still loading (cluster mode, at start): next second.
                Err(CatalogueError::NotReady) => {}
                Err(e) => tracing::warn!(
                    "cannot create the self-dashboard {name:?} (retrying every second): {e}; \
                     start with --self-dashboard false to do without it"
                ),
            }
        }
        let totals = Totals::of(&shards);
        let Some((then, before)) = previous.replace((now, totals.clone())) else {
            continue;
        };
        let seconds = ((now - then) as f64 / 1000.0).max(0.001);
        let batch = events(totals, &before, seconds, sent, &node, now);
        sent = batch.len() as u64;
        if let Err(e) = svc.submit(Parsed::from_events(batch)).await {
            tracing::debug!("self-dashboard events not taken: {e}");
        }
    }
}
