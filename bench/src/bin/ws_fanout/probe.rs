//! What `ws_fanout` reads off processes and frames, and the feeder that keeps every widget
//! changing.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use livedash_engine::MetricEvent;
use livedash_loadgen::client::{Client, now_ms};

pub(crate) fn rss_bytes(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("VmRSS:"))?.to_string();
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .map_or(0, |kb| kb * 1024)
}

pub(crate) fn sent_at(frame: &str) -> Option<i64> {
    let at = frame.find("\"sent_at\":")? + "\"sent_at\":".len();
    let digits: String = frame[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// User plus system CPU time of a process, in clock ticks (1/100 s).
pub(crate) fn cpu_ticks(pid: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let rest = s.rsplit_once(')')?.1.to_string();
            let fields: Vec<&str> = rest.split_whitespace().collect();
            Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
        })
        .unwrap_or(0)
}

pub(crate) fn percentile(sorted: &[i64], q: f64) -> i64 {
    if sorted.is_empty() {
        return -1;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// The p99 of sorted delays, at least 1 ms (so ratios stay finite).
pub(crate) fn p99(d: &[i64]) -> f64 {
    percentile(d, 0.99).max(1) as f64
}

/// p50, p99 and max of sorted delays, in ms.
pub(crate) fn spread(d: &[i64]) -> String {
    format!(
        "p50 {} ms, p99 {} ms, max {} ms over {} frames",
        percentile(d, 0.5),
        percentile(d, 0.99),
        d.last().copied().unwrap_or(-1),
        d.len()
    )
}

/// Keeps every widget changing: one batch per 200 ms with a fresh value for each metric.
pub(crate) fn feeder(
    addr: std::net::SocketAddr,
    metrics: Vec<String>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut conn = match Client::connect(addr) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("feeder cannot connect: {e}");
                return;
            }
        };
        let mut round = 0u64;
        while !stop.load(Ordering::Relaxed) {
            round += 1;
            let t = now_ms();
            let events: Vec<MetricEvent> = metrics
                .iter()
                .map(|m| MetricEvent {
                    metric_name: m.clone(),
                    value: round as f64,
                    tags: Default::default(),
                    event_time: t,
                })
                .collect();
            if let Err(e) = conn.ingest(&events) {
                eprintln!("feeder: {e}");
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    })
}

/// Scrapes `/metrics` `n` times, 250 ms apart, with every stream open and values
/// flowing; prints the node's work per scrape (`livedash_scrape_duration_seconds`: every
/// shard gathering its counters, and the scraped shard merging and encoding them), the
/// node's wall time (`livedash_scrape_wall_seconds`: waiting for busy shards included)
/// and the client's, beside `GET /healthz` on the same connection.
pub(crate) fn scrapes(addr: std::net::SocketAddr, n: usize) {
    let Ok(mut c) = Client::connect(addr) else {
        return;
    };
    let (mut node, mut node_wall, mut wall, mut health) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut bytes = 0;
    for _ in 0..n {
        let started = Instant::now();
        let Ok(reply) = c.send("GET", "/metrics", "text/plain", b"") else {
            return;
        };
        wall.push(started.elapsed().as_micros() as i64);
        bytes = reply.body.len();
        let text = String::from_utf8_lossy(&reply.body);
        let gauge = |name: &str| {
            text.lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .filter(|s| *s > 0.0)
                .map(|s| (s * 1e6) as i64)
        };
        node.extend(gauge("livedash_scrape_duration_seconds"));
        node_wall.extend(gauge("livedash_scrape_wall_seconds"));
        let started = Instant::now();
        if c.send("GET", "/healthz", "application/json", b"").is_err() {
            return;
        }
        health.push(started.elapsed().as_micros() as i64);
        std::thread::sleep(Duration::from_millis(250));
    }
    for v in [&mut node, &mut node_wall, &mut wall, &mut health] {
        v.sort_unstable();
    }
    let ms = |v: &[i64], q: f64| percentile(v, q) as f64 / 1000.0;
    println!(
        "  /metrics ({bytes} bytes): node work {:.2} ms p50, {:.2} ms max; node wall {:.2} ms p50, {:.2} ms max; client wall {:.2} ms p50, {:.2} ms max; /healthz wall {:.2} ms p50 (scrape/healthz {:.1}x)",
        ms(&node, 0.5),
        ms(&node, 1.0),
        ms(&node_wall, 0.5),
        ms(&node_wall, 1.0),
        ms(&wall, 0.5),
        ms(&wall, 1.0),
        ms(&health, 0.5),
        ms(&wall, 0.5) / ms(&health, 0.5).max(0.001)
    );
}
