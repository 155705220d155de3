//! Helpers of the cluster-mode tests: a node on a private broker, waiting for a
//! condition, and reading partitions, counters and widget values.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use livedash_loadgen::broker::Broker;
use livedash_loadgen::redis::RedisServer;
use serde_json::{Value, json};

use super::{Client, ReplyExt, Server, now_ms};

pub const TOPIC: &str = "events";
pub const PARTITIONS: u32 = 4;

pub fn node(broker: &Broker, extra: &[&str]) -> Server {
    let brokers = broker.addr();
    let mut args = vec![
        "--shards",
        "2",
        "--kafka-brokers",
        &brokers,
        "--kafka-topic",
        TOPIC,
    ];
    args.extend_from_slice(extra);
    Server::start(&args)
}

/// A private broker with the test topic, a private Redis, and the arguments of a node
/// of consumer group `group` on both (2 shards).
pub fn cluster(group: &str) -> (Broker, RedisServer, Vec<String>) {
    let broker = Broker::start();
    broker.create_topic(TOPIC, PARTITIONS);
    let redis = RedisServer::start();
    let args = [
        "--shards",
        "2",
        "--kafka-brokers",
        &broker.addr(),
        "--kafka-topic",
        TOPIC,
        "--kafka-group",
        group,
        "--redis",
        &redis.url(),
    ]
    .map(String::from)
    .to_vec();
    (broker, redis, args)
}

/// Polls `f` until it returns `Some`, for at most `secs` seconds.
pub fn eventually<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let give_up = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < give_up, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn stats(c: &mut Client) -> Value {
    let r = c.get("/stats");
    assert_eq!(r.status, 200, "{}", r.error());
    r.json()
}

/// The partitions the node owns now.
pub fn owned(c: &mut Client) -> Vec<u32> {
    let mut out: Vec<u32> = stats(c)["shards"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| {
            s["kafka"]["partitions"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .map(|p| p["partition"].as_u64().unwrap() as u32)
        .collect();
    out.sort_unstable();
    out
}

/// A Kafka counter summed over the node's shards.
pub fn counter(c: &mut Client, name: &str) -> u64 {
    stats(c)["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["kafka"][name].as_u64().unwrap_or(0))
        .sum()
}

pub fn sum_widget(metric: &str) -> Value {
    json!({"metric_name": metric, "aggregation": "sum", "window_seconds": 300,
           "refresh_interval_seconds": 0.2})
}

/// The value of widget `i` of `dashboard` on the node of `c`, or the status it answered.
pub fn value(c: &mut Client, dashboard: &Value, i: usize) -> Result<Option<f64>, (u16, String)> {
    let path = format!(
        "/dashboards/{}/widgets/{}/snapshot",
        dashboard["dashboard_id"].as_str().unwrap(),
        dashboard["widgets"][i]["widget_id"].as_str().unwrap()
    );
    let r = c.get(&path);
    if r.status != 200 {
        return Err((r.status, r.error()));
    }
    Ok(r.json()["value"].as_f64())
}

/// Events with integer values over `metrics`, and each metric's sum.
pub fn batch(metrics: &[String], n: usize, seed: usize) -> (Value, BTreeMap<String, f64>) {
    let now = now_ms();
    let mut sums = BTreeMap::new();
    let events: Vec<Value> = (0..n)
        .map(|i| {
            let m = &metrics[(i * 7 + seed) % metrics.len()];
            let v = ((i * 31 + seed * 17) % 100) as f64;
            *sums.entry(m.clone()).or_insert(0.0) += v;
            json!({"metric_name": m, "value": v, "event_time": now - (i as i64 % 1000),
                   "tags": {"host": format!("h{}", i % 3)}})
        })
        .collect();
    (Value::Array(events), sums)
}

pub fn add(total: &mut BTreeMap<String, f64>, more: &BTreeMap<String, f64>) {
    for (m, v) in more {
        *total.entry(m.clone()).or_insert(0.0) += v;
    }
}
