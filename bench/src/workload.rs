//! A realistic synthetic workload: many services' latency series, tagged, with producer
//! jitter so events arrive slightly out of order.

use livedash_engine::{Aggregation, MetricEvent, Tags, Widget, WidgetSpec};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, LogNormal};

const SERVICES: [&str; 20] = [
    "checkout", "cart", "search", "auth", "payments", "inventory", "shipping", "profile",
    "catalog", "pricing", "reviews", "ads", "email", "frontend", "gateway", "ledger", "fraud",
    "notify", "media", "session",
];
const SIGNALS: [&str; 5] =
    ["http.server.latency_ms", "http.client.latency_ms", "db.query_ms", "queue.lag_ms", "rpc.size_bytes"];

/// `n` distinct metric names shaped like real ones, e.g. `checkout.i0042.http.server.latency_ms`.
pub fn metric_names(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let svc = SERVICES[i % SERVICES.len()];
            let signal = SIGNALS[(i / SERVICES.len()) % SIGNALS.len()];
            format!("{svc}.i{:04}.{signal}", i / (SERVICES.len() * SIGNALS.len()))
        })
        .collect()
}

/// One widget per metric name, all with the same aggregation, window and refresh.
pub fn widgets(names: &[String], aggregation: Aggregation, window_seconds: u64) -> Vec<Widget> {
    let dashboard = uuid::Uuid::nil();
    names
        .iter()
        .map(|name| {
            Widget::new(
                dashboard,
                WidgetSpec {
                    metric_name: name.clone(),
                    aggregation,
                    window_seconds,
                    refresh_interval_seconds: 1.0,
                    filter: Tags::new(),
                    display_config: Default::default(),
                },
            )
        })
        .collect()
}

/// One second of traffic: `per_series` events for every name, stamped within
/// `[start_ms - 300, start_ms + 1000)` (producer jitter), values log-normal around 40.
/// The batch is shuffled so consecutive events hit different series, as on the wire.
pub fn second_of_events(names: &[String], per_series: usize, start_ms: i64, seed: u64) -> Vec<MetricEvent> {
    let mut rng = StdRng::seed_from_u64(seed);
    let latency = LogNormal::new(40f64.ln(), 0.8).unwrap_or_else(|_| unreachable!());
    let hosts: Vec<String> = (0..16).map(|h| format!("host-{h:02}")).collect();
    let mut events = Vec::with_capacity(names.len() * per_series);
    for name in names {
        for _ in 0..per_series {
            let tags = Tags::from([
                ("host".to_string(), hosts[rng.random_range(0..hosts.len())].clone()),
                ("region".to_string(), if rng.random_bool(0.5) { "eu-west" } else { "us-east" }.into()),
            ]);
            events.push(MetricEvent {
                metric_name: name.clone(),
                value: latency.sample(&mut rng),
                tags,
                event_time: start_ms + rng.random_range(-300..1000),
            });
        }
    }
    for i in (1..events.len()).rev() {
        events.swap(i, rng.random_range(0..=i));
    }
    // Re-allocate in batch order, as a parser would: names and tags of consecutive
    // events sit next to each other in memory.
    events.iter().cloned().collect()
}

/// Moves every event of a batch `ms` later.
pub fn shift(events: &mut [MetricEvent], ms: i64) {
    for e in events {
        e.event_time += ms;
    }
}
