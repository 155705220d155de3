//! HTTP ingest throughput, wrk-style: closed-loop keep-alive connections POST 1,000-event
//! JSON batches to a node on loopback for a fixed time. The baseline, run first in the
//! same process, is how fast one core only parses the same bodies (no sockets, no engine),
//! so the result reads as a ratio that survives a noisy machine.
//!
//! `cargo build --release --bin livedash && cargo run --release -p livedash-bench --bin http_ingest`
//! starts `target/release/livedash` on a free port; `--addr` targets a running node instead.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use livedash_bench::node::{IngestClients, create_widgets, start_node};
use livedash_engine::MetricEvent;
use livedash_loadgen::client::{Client, now_ms};
use livedash_loadgen::ingest::Rng;
use serde_json::{Value, json};

#[derive(Debug, Parser)]
struct Args {
    /// A running node; without it the bench starts target/release/livedash itself.
    #[arg(long)]
    addr: Option<SocketAddr>,
    /// Concurrent keep-alive connections (one client thread each).
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Events per request.
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// Measured seconds (after one second of warm-up).
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Distinct metric names; each carries one of 10 host tags.
    #[arg(long, default_value_t = 1000)]
    metrics: usize,
    /// Then the same against a node with the state mirror on a private redis-server
    /// (answers once the events are stored), reported beside the node without it.
    #[arg(long)]
    redis: bool,
    /// Then observability off (`--metrics false --self-dashboard false`) and on (the
    /// defaults, with /metrics scraped once a second), in turn for `--rounds` rounds,
    /// reported as the ratio on/off.
    #[arg(long)]
    observability: bool,
    /// Rounds of the observability comparison.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
}

/// Request bodies: every (metric, host) series appears, event times within the last second.
fn bodies(args: &Args, count: usize) -> Vec<Vec<u8>> {
    let now = now_ms();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    (0..count)
        .map(|_| {
            let events: Vec<Value> = (0..args.batch)
                .map(|_| {
                    let r = rng.bits();
                    json!({
                        "metric_name": format!("bench.metric.{}", r as usize % args.metrics),
                        "value": (r >> 32) as f64 / 1e6,
                        "tags": {"host": format!("h{}", (r >> 16) % 10)},
                        "event_time": now - (r >> 40) as i64 % 1000,
                    })
                })
                .collect();
            serde_json::to_vec(&events).unwrap_or_default()
        })
        .collect()
}

fn main() -> Result<(), String> {
    let args = Args::parse();
    let bodies = Arc::new(bodies(&args, 64));

    // Baseline: one core parsing the same bodies.
    let started = Instant::now();
    let mut parsed = 0usize;
    while started.elapsed() < Duration::from_secs(2) {
        for body in bodies.iter() {
            let events: Vec<MetricEvent> =
                serde_json::from_slice(body).map_err(|e| e.to_string())?;
            parsed += events.len();
        }
    }
    let parse_rate = parsed as f64 / started.elapsed().as_secs_f64();

    let (rate, _, _) = run(&args, &bodies, parse_rate, &[], false)?;
    if args.observability && args.addr.is_none() {
        observability(&args, &bodies, parse_rate)?;
    }
    if args.redis && args.addr.is_none() {
        let redis = livedash_loadgen::redis::RedisServer::start();
        let url = redis.url();
        let (durable, _, _) = run(&args, &bodies, parse_rate, &["--redis", &url], false)?;
        println!(
            "durable   with the state mirror: {durable:.0} events/s, {:.2}x the node without it in the same run",
            durable / rate
        );
    }
    Ok(())
}

/// Nodes with observability off and on, in turn; prints the ratio of their rates.
fn observability(args: &Args, bodies: &Arc<Vec<Vec<u8>>>, parse_rate: f64) -> Result<(), String> {
    let off_args = ["--metrics", "false", "--self-dashboard", "false"];
    let on_args = ["--metrics", "true", "--self-dashboard", "true"];
    let (mut off, mut on) = (Vec::new(), Vec::new());
    let (mut off_cpu, mut on_cpu) = (Vec::new(), Vec::new());
    for _ in 0..args.rounds {
        let (rate, _, cpu) = run(args, bodies, parse_rate, &off_args, false)?;
        off.push(rate);
        off_cpu.push(cpu);
        let (rate, _, cpu) = run(args, bodies, parse_rate, &on_args, true)?;
        on.push(rate);
        on_cpu.push(cpu);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(0.0)
    };
    let rounds: Vec<String> = off
        .iter()
        .zip(&on)
        .map(|(a, b)| format!("{:.3}", b / a))
        .collect();
    let (off, on) = (median(&mut off), median(&mut on));
    println!(
        "observability  off: {off:.0} events/s, on (scraped every second): {on:.0} events/s (medians of {} rounds): on/off {:.3}; per round: {}",
        args.rounds,
        on / off,
        rounds.join(" ")
    );
    let (off_cpu, on_cpu) = (median(&mut off_cpu), median(&mut on_cpu));
    println!(
        "observability  node CPU per event off: {off_cpu:.0} ns, on: {on_cpu:.0} ns (medians): off/on {:.3}",
        off_cpu / on_cpu
    );
    Ok(())
}

/// Scrapes `/metrics` once a second until dropped, as Prometheus would.
struct Scraper(
    Arc<std::sync::atomic::AtomicBool>,
    Option<std::thread::JoinHandle<u64>>,
);

impl Scraper {
    fn start(addr: SocketAddr) -> Self {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut scrapes = 0;
            let Ok(mut c) = Client::connect(addr) else {
                return scrapes;
            };
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                if c.send("GET", "/metrics", "text/plain", b"")
                    .is_ok_and(|r| r.status == 200)
                {
                    scrapes += 1;
                }
                std::thread::sleep(Duration::from_secs(1));
            }
            scrapes
        });
        Self(stop, Some(thread))
    }

    fn stop(mut self) -> u64 {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
        self.1.take().and_then(|t| t.join().ok()).unwrap_or(0)
    }
}

/// Starts a node with `extra` arguments (or uses `--addr`), makes the widgets, runs the
/// clients (with `scrape`, scrapes `/metrics` meanwhile); prints the figures and returns
/// events/s and requests/s.
fn run(
    args: &Args,
    bodies: &Arc<Vec<Vec<u8>>>,
    parse_rate: f64,
    extra: &[&str],
    scrape: bool,
) -> Result<(f64, f64, f64), String> {
    let (node, addr) = match args.addr {
        Some(addr) => (None, addr),
        None => {
            let (node, addr) = start_node(extra)?;
            (Some(node), addr)
        }
    };
    // Widgets over every metric: 5-minute sums, and p99 on every tenth metric.
    let mut admin = Client::connect(addr).map_err(|e| e.to_string())?;
    let specs: Vec<Value> = (0..args.metrics)
        .flat_map(|m| {
            let name = format!("bench.metric.{m}");
            let mut w = vec![json!({"metric_name": name, "aggregation": "sum", "window_seconds": 300, "refresh_interval_seconds": 1})];
            if m % 10 == 0 {
                w.push(json!({"metric_name": name, "aggregation": "p99", "window_seconds": 300, "refresh_interval_seconds": 1}));
            }
            w
        })
        .collect();
    create_widgets(&mut admin, &specs)?;
    let clients = IngestClients::start(addr, Arc::clone(bodies), args.connections);
    std::thread::sleep(Duration::from_secs(1));
    let before = admin
        .send("GET", "/stats", "application/json", b"")
        .map_err(|e| e.to_string())?
        .body;
    let scraper = scrape.then(|| Scraper::start(addr));
    let pid = node.as_ref().map(livedash_bench::node::Node::pid);
    let cpu = || {
        pid.and_then(livedash_loadgen::report::sample_process)
            .map(|(s, _)| s)
    };
    let cpu_before = cpu();
    clients.measure(true);
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(args.seconds));
    clients.measure(false);
    let cpu_after = cpu();
    if let Some(scraper) = scraper {
        println!(
            "          ({} scrapes of /metrics meanwhile)",
            scraper.stop()
        );
    }
    let elapsed = started.elapsed().as_secs_f64();
    let after = admin
        .send("GET", "/stats", "application/json", b"")
        .map_err(|e| e.to_string())?
        .body;
    let (events, requests) = clients.counts();
    clients.stop()?;
    let engine = |stats: &[u8]| -> (f64, f64) {
        let v: Value = serde_json::from_slice(stats).unwrap_or_default();
        let shards = v["shards"].as_array().cloned().unwrap_or_default();
        let sum = |k: &str| {
            shards
                .iter()
                .map(|s| s[k].as_f64().unwrap_or(0.0))
                .sum::<f64>()
        };
        (sum("engine_apply_ns"), sum("engine_events"))
    };
    let ((ns0, ev0), (ns1, ev1)) = (engine(&before), engine(&after));
    let rate = events as f64 / elapsed;
    println!(
        "baseline  parse only, 1 thread:   {:>12.0} events/s",
        parse_rate
    );
    println!(
        "http      {} connections x {}-event batches: {:>12.0} events/s ({:.0} requests/s), {:.2}x the one-core parse baseline",
        args.connections,
        args.batch,
        rate,
        requests as f64 / elapsed,
        rate / parse_rate
    );
    if !extra.is_empty() {
        println!("          (node arguments: {})", extra.join(" "));
    }
    if ev1 > ev0 {
        println!(
            "engine    {:.0} ns of engine CPU per event (apply only)",
            (ns1 - ns0) / (ev1 - ev0)
        );
    }
    // The node's whole CPU time per event (user and system, every thread).
    let cpu_ns = match (cpu_before, cpu_after) {
        (Some(a), Some(b)) if events > 0 => (b - a) * 1e9 / events as f64,
        _ => f64::NAN,
    };
    println!("node      {cpu_ns:.0} ns of node CPU per event (every thread)");
    Ok((rate, requests as f64 / elapsed, cpu_ns))
}
