//! A realistic synthetic workload: many services' latency series, tagged, with producer
//! jitter so events arrive slightly out of order.

use livedash_engine::{Aggregation, MetricEvent, Tags, Widget, WidgetSpec};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, LogNormal};

const SERVICES: [&str; 20] = [
    "checkout",
    "cart",
    "search",
    "auth",
    "payments",
    "inventory",
    "shipping",
    "profile",
    "catalog",
    "pricing",
    "reviews",
    "ads",
    "email",
    "frontend",
    "gateway",
    "ledger",
    "fraud",
    "notify",
    "media",
    "session",
];
const SIGNALS: [&str; 5] = [
    "http.server.latency_ms",
    "http.client.latency_ms",
    "db.query_ms",
    "queue.lag_ms",
    "rpc.size_bytes",
];

/// `n` distinct metric names shaped like real ones, e.g. `checkout.i0042.http.server.latency_ms`.
pub fn metric_names(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let svc = SERVICES[i % SERVICES.len()];
            let signal = SIGNALS[(i / SERVICES.len()) % SIGNALS.len()];
            format!(
                "{svc}.i{:04}.{signal}",
                i / (SERVICES.len() * SIGNALS.len())
            )
        })
        .collect()
}

/// One widget per metric name, all with the same aggregation, window and refresh.
pub fn widgets(names: &[String], aggregation: Aggregation, window_seconds: u64) -> Vec<Widget> {
    let dashboard = uuid::Uuid::nil();
    names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            Widget::new(
                uuid::Uuid::from_u128(i as u128 + 1),
                dashboard,
                WidgetSpec {
                    metric_name: name.clone(),
                    aggregation,
                    window_seconds,
                    refresh_interval_seconds: 1.0,
                    filter: Tags::new(),
                    display_config: Default::default(),
                    group_by: None,
                    top: None,
                },
            )
        })
        .collect()
}

/// One event in compact form: which series, value, offset in the second, tag choices.
#[derive(Debug, Clone, Copy)]
pub struct CompactEvent {
    pub series: u32,
    pub value: f64,
    pub offset_ms: i32,
    pub host: u8,
    pub region: u8,
}

const HOSTS: usize = 16;
const REGIONS: [&str; 2] = ["eu-west", "us-east"];

/// One second of traffic: `per_series` events for every one of `series` series, stamped
/// within `[-300, 1000)` ms of the second's start (producer jitter), values log-normal
/// around 40, shuffled so consecutive events hit different series, as on the wire.
pub fn second_of_traffic(series: usize, per_series: usize, seed: u64) -> Vec<CompactEvent> {
    let mut rng = StdRng::seed_from_u64(seed);
    let latency = LogNormal::new(40f64.ln(), 0.8).unwrap_or_else(|_| unreachable!());
    let mut events: Vec<CompactEvent> = (0..series as u32)
        .flat_map(|s| std::iter::repeat_n(s, per_series))
        .map(|series| CompactEvent {
            series,
            value: latency.sample(&mut rng),
            offset_ms: rng.random_range(-300..1000),
            host: rng.random_range(0..HOSTS as u8),
            region: rng.random_range(0..REGIONS.len() as u8),
        })
        .collect();
    for i in (1..events.len()).rev() {
        events.swap(i, rng.random_range(0..=i));
    }
    events
}

/// Turns compact events into `MetricEvent`s stamped relative to `start_ms`, into `out`
/// (cleared first), allocating names and tags in order as a request parser would.
pub fn materialize(
    compact: &[CompactEvent],
    names: &[String],
    start_ms: i64,
    out: &mut Vec<MetricEvent>,
) {
    out.clear();
    out.extend(compact.iter().map(|c| MetricEvent {
        metric_name: names[c.series as usize].clone(),
        value: c.value,
        tags: Tags::from([
            ("host".to_string(), format!("host-{:02}", c.host)),
            ("region".to_string(), REGIONS[c.region as usize].to_string()),
        ]),
        event_time: start_ms + i64::from(c.offset_ms),
    }));
}
