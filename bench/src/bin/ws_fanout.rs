//! WebSocket fan-out: how many streams one node holds, what an idle stream costs the
//! server, and how long a refresh takes to reach every browser.
//!
//! Starts the release node (2 shards), creates dashboards refreshing every second, opens
//! a baseline of streams and then many streams from this process (loadgen's clients: a
//! few threads with an epoll loop each),
//! measures the server's resident memory per idle stream, then feeds events so every
//! widget changes every tick and records, per received `update` frame, the delay from the
//! tick (the refresh deadline, a multiple of the interval) to the frame's arrival.
//! Last, it measures the loopback floor of the same fan-out (`livedash_bench::floor`)
//! and reports the node's p99 delay as a ratio to it.
//!
//! `cargo build --release --bin livedash && cargo run --release -p livedash-bench --bin ws_fanout`

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use clap::Parser;
use livedash_bench::floor;
use livedash_bench::node::start_node;
use livedash_engine::{MetricEvent, NewDashboard};
use livedash_loadgen::client::{Client, now_ms};
use livedash_loadgen::sockets::{self, OnText, Plan};
use livedash_loadgen::stats::Stats;
use serde_json::{Value, json};

#[derive(Debug, Parser)]
struct Args {
    /// Streams in the measured run.
    #[arg(long, default_value_t = 10_000)]
    sockets: usize,
    /// Streams in the baseline run.
    #[arg(long, default_value_t = 100)]
    baseline_sockets: usize,
    /// Dashboards; streams are spread over them.
    #[arg(long, default_value_t = 10)]
    dashboards: usize,
    /// Widgets per dashboard (each on its own metric, 1 s refresh).
    #[arg(long, default_value_t = 20)]
    widgets: usize,
    /// Client threads, each with its own epoll loop.
    #[arg(long, default_value_t = 2)]
    clients: usize,
    /// Seconds of updates measured per run.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
}

const INTERVAL_MS: i64 = 1000;
/// Shards of the node, and sender threads of the loopback floor.
const SHARDS: usize = 2;

fn rss_bytes(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("VmRSS:"))?.to_string();
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .map_or(0, |kb| kb * 1024)
}

fn sent_at(frame: &str) -> Option<i64> {
    let at = frame.find("\"sent_at\":")? + "\"sent_at\":".len();
    let digits: String = frame[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// User plus system CPU time of a process, in clock ticks (1/100 s).
fn cpu_ticks(pid: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let rest = s.rsplit_once(')')?.1.to_string();
            let fields: Vec<&str> = rest.split_whitespace().collect();
            Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
        })
        .unwrap_or(0)
}

fn percentile(sorted: &[i64], q: f64) -> i64 {
    if sorted.is_empty() {
        return -1;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Keeps every widget changing: one batch per 200 ms with a fresh value for each metric.
fn feeder(
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
fn scrapes(addr: std::net::SocketAddr, n: usize) {
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

struct RunResult {
    connected: usize,
    /// Mean size of the update frames received, WebSocket header included.
    frame_bytes: usize,
    idle_rss_per_socket: f64,
    delays: Vec<i64>,
}

/// Opens `n` streams over `dashboards` from `clients` threads, measures idle memory,
/// then feeds for `seconds`.
#[allow(clippy::too_many_arguments)]
fn run(
    addr: std::net::SocketAddr,
    pid: u32,
    dashboards: &[String],
    metrics: &[String],
    n: usize,
    clients: usize,
    seconds: u64,
) -> Result<RunResult, String> {
    let rss_before = rss_bytes(pid);
    let measuring = Arc::new(AtomicBool::new(false));
    let delays = Arc::new(Mutex::new(Vec::<i64>::new()));
    let text_bytes = Arc::new(AtomicU64::new(0));
    let on_text: OnText = {
        let (measuring, delays, text_bytes) = (
            Arc::clone(&measuring),
            Arc::clone(&delays),
            Arc::clone(&text_bytes),
        );
        Arc::new(move |text: &str| {
            if !measuring.load(Ordering::Relaxed) {
                return;
            }
            let received = now_ms();
            text_bytes.fetch_add(text.len() as u64, Ordering::Relaxed);
            // Only `sent_at` is needed: find it instead of parsing the frame, so the
            // client spends its CPU reading sockets.
            if let Some(sent_at) = sent_at(text) {
                let tick = sent_at.div_euclid(INTERVAL_MS) * INTERVAL_MS;
                delays
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(received - tick);
            }
        })
    };
    let stats = Arc::new(Stats::default());
    let stop = Arc::new(AtomicBool::new(false));
    let plan = Plan {
        addrs: vec![addr],
        dashboards: dashboards.to_vec(),
        sockets: n,
        threads: clients,
        token: None,
        stats: Arc::clone(&stats),
        on_text,
    };
    let handles = sockets::run(plan, Arc::clone(&stop)).map_err(|e| e.to_string())?;
    let deadline = Instant::now() + Duration::from_secs(120);
    while Stats::get(&stats.sockets_connected) + Stats::get(&stats.errors) < n as u64
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    let connected = Stats::get(&stats.sockets_connected) as usize;
    // Idle: no updates are flowing yet.
    std::thread::sleep(Duration::from_secs(2));
    let idle_rss = rss_bytes(pid);
    let feeding_done = Arc::new(AtomicBool::new(false));
    let feed = feeder(addr, metrics.to_vec(), Arc::clone(&feeding_done));
    std::thread::sleep(Duration::from_secs(2));
    let node_stats = || {
        let mut c = Client::connect(addr).ok()?;
        let v: Value = c
            .send("GET", "/stats", "application/json", b"")
            .ok()?
            .decode()
            .ok()?;
        let sum = |k: &str| {
            v["shards"].as_array().map_or(0, |a| {
                a.iter().map(|s| s[k].as_u64().unwrap_or(0)).sum::<u64>()
            })
        };
        let max = v["shards"].as_array().map_or(0, |a| {
            a.iter()
                .map(|s| s["write_lag_ms_max"].as_u64().unwrap_or(0))
                .max()
                .unwrap_or(0)
        });
        Some((
            sum("streams"),
            sum("frames_queued"),
            sum("frames_written"),
            sum("write_lag_ms_sum"),
            max,
        ))
    };
    let before = node_stats();
    let cpu_before = (cpu_ticks(&pid.to_string()), cpu_ticks("self"));
    measuring.store(true, Ordering::Relaxed);
    std::thread::sleep(Duration::from_secs(seconds));
    measuring.store(false, Ordering::Relaxed);
    let cpu_after = (cpu_ticks(&pid.to_string()), cpu_ticks("self"));
    let after = node_stats();
    scrapes(addr, 20);
    stop.store(true, Ordering::Relaxed);
    feeding_done.store(true, Ordering::Relaxed);
    let _ = feed.join();
    for h in handles {
        let _ = h.join();
    }
    let mut delays = std::mem::take(&mut *delays.lock().unwrap_or_else(PoisonError::into_inner));
    delays.sort_unstable();
    if let (Some(b), Some(a)) = (before, after) {
        println!(
            "  node: {} streams, {:.0} frames/s queued, {:.0} frames/s written, framing to socket write {:.1} ms on average, {} ms at most; cpu: node {:.0}% of one core, client {:.0}%",
            a.0,
            (a.1 - b.1) as f64 / seconds as f64,
            (a.2 - b.2) as f64 / seconds as f64,
            (a.3 - b.3) as f64 / (a.2 - b.2).max(1) as f64,
            a.4,
            (cpu_after.0 - cpu_before.0) as f64 / seconds as f64,
            (cpu_after.1 - cpu_before.1) as f64 / seconds as f64
        );
    }
    let payload = text_bytes.load(Ordering::Relaxed) as usize / delays.len().max(1);
    Ok(RunResult {
        connected,
        frame_bytes: payload + floor::header_len(payload),
        idle_rss_per_socket: idle_rss.saturating_sub(rss_before) as f64 / connected.max(1) as f64,
        delays,
    })
}

fn main() -> Result<(), String> {
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some(floor::SENDER_FLAG) {
        return floor::sender_main(floor::sender_plan(&argv[2..])?);
    }
    let args = Args::parse();
    let (node, addr) = start_node(&["--shards", &SHARDS.to_string()])?;
    let mut admin = Client::connect(addr).map_err(|e| e.to_string())?;
    let mut dashboards = Vec::new();
    let mut metrics = Vec::new();
    for d in 0..args.dashboards {
        let widgets: Vec<Value> = (0..args.widgets)
            .map(|w| {
                let m = format!("fanout.d{d}.w{w}");
                metrics.push(m.clone());
                json!({"metric_name": m, "aggregation": "sum", "window_seconds": 60, "refresh_interval_seconds": 1})
            })
            .collect();
        let new = NewDashboard {
            name: format!("fan-out {d}"),
            layout: Value::Null,
            widgets: serde_json::from_value(Value::Array(widgets)).map_err(|e| e.to_string())?,
        };
        let dashboard = admin
            .create_dashboard(&new)
            .map_err(|e| format!("creating a dashboard: {e}"))?;
        dashboards.push(dashboard.dashboard_id.to_string());
    }
    let mut results = Vec::new();
    for n in [args.baseline_sockets, args.sockets] {
        let r = run(
            addr,
            node.pid(),
            &dashboards,
            &metrics,
            n,
            args.clients,
            args.seconds,
        )?;
        println!(
            "{:>6} streams ({} connected): tick-to-browser delay p50 {} ms, p99 {} ms, max {} ms over {} frames; server memory per idle stream {:.0} bytes",
            n,
            r.connected,
            percentile(&r.delays, 0.5),
            percentile(&r.delays, 0.99),
            r.delays.last().copied().unwrap_or(-1),
            r.delays.len(),
            r.idle_rss_per_socket
        );
        results.push(r);
        std::thread::sleep(Duration::from_secs(2));
    }
    drop(node);
    if let [base, big] = &results[..] {
        println!(
            "p99 delay at {} streams is {:.2}x the baseline at {}",
            args.sockets,
            percentile(&big.delays, 0.99) as f64 / percentile(&base.delays, 0.99).max(1) as f64,
            args.baseline_sockets
        );
        let plan = floor::Fanout {
            sockets: args.sockets,
            frame_bytes: big.frame_bytes,
            ticks: args.seconds as u32,
            interval_ms: INTERVAL_MS,
            senders: SHARDS,
            readers: args.clients,
        };
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let floor = floor::measure(&exe, plan)?;
        println!(
            "loopback floor ({} sender threads doing nothing but send, {}-byte frames): delay p50 {} ms, p99 {} ms, max {} ms over {} frames",
            SHARDS,
            plan.frame_bytes,
            percentile(&floor, 0.5),
            percentile(&floor, 0.99),
            floor.last().copied().unwrap_or(-1),
            floor.len()
        );
        println!(
            "p99 delay at {} streams is {:.2}x the loopback floor",
            args.sockets,
            percentile(&big.delays, 0.99) as f64 / percentile(&floor, 0.99).max(1) as f64,
        );
    }
    Ok(())
}
