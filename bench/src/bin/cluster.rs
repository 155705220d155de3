//! The cluster under load: N nodes in cluster mode on a private tansu broker and Redis,
//! driven by `loadgen scenario` (a separate process) producing to the topic and holding
//! WebSocket streams spread over the nodes. Prints end-to-end latency, CPU seconds per
//! million events summed over the nodes, Redis Pub/Sub traffic and the fan-out, and with
//! `--kill` the reconnect gaps after one node is killed with SIGKILL mid-run. With
//! `--baseline`, a one-node run under the same load goes first, and the CPU ratio of the
//! cluster to it is printed.
//!
//! `cargo build --release --bin livedash --bin loadgen && cargo run --release -p livedash-bench --bin cluster -- --nodes 3`
//! (needs tansu 0.6.0 and redis-server, as the tests do).

use std::process::Command;
use std::time::{Duration, Instant};

use clap::Parser;
use livedash_bench::node::{Node, node_and_loadgen, start_binary};
use livedash_loadgen::broker::Broker;
use livedash_loadgen::client::Client;
use livedash_loadgen::redis::RedisServer;
use serde_json::Value;

const TOPIC: &str = "cluster.events";

#[derive(Debug, Clone, Parser)]
struct Args {
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Shards per node.
    #[arg(long, default_value_t = 1)]
    shards: usize,
    #[arg(long, default_value_t = 6)]
    partitions: u32,
    /// Events per second, produced to the topic.
    #[arg(long, default_value_t = 100_000)]
    rate: u64,
    /// Streams, spread over the nodes.
    #[arg(long, default_value_t = 15_000)]
    sockets: usize,
    #[arg(long, default_value_t = 10)]
    dashboards: usize,
    /// Measured seconds.
    #[arg(long, default_value_t = 30)]
    duration: u64,
    /// Kill -9 the second node this many seconds into the measured time.
    #[arg(long)]
    kill: Option<u64>,
    /// Run one node under the same load first, and compare the CPU per event.
    #[arg(long)]
    baseline: bool,
}

fn get(addr: std::net::SocketAddr, path: &str) -> Result<Value, String> {
    let mut c = Client::connect(addr).map_err(|e| e.to_string())?;
    let r = c
        .send("GET", path, "application/json", b"")
        .map_err(|e| e.to_string())?;
    serde_json::from_slice(&r.body).map_err(|e| e.to_string())
}

/// Over the shards of a node's `/stats`: the sum of `field`.
fn shards_sum(stats: &Value, f: impl Fn(&Value) -> u64) -> u64 {
    stats["shards"]
        .as_array()
        .map_or(0, |s| s.iter().map(&f).sum())
}

/// Metrics loadgen produces (its default `--metrics`).
const METRICS: usize = 1000;

/// Creates `count` widgets (1 h windows) over every metric; returns (dashboard, widget)
/// ids.
fn count_widgets(addr: std::net::SocketAddr) -> Result<Vec<(String, String)>, String> {
    let mut c = Client::connect(addr).map_err(|e| e.to_string())?;
    let mut ids = Vec::new();
    for chunk in (0..METRICS).collect::<Vec<_>>().chunks(200) {
        let widgets: Vec<Value> = chunk
            .iter()
            .map(|&m| {
                serde_json::json!({"metric_name": livedash_loadgen::ingest::metric_name(m),
                    "aggregation": "count", "window_seconds": 3600, "refresh_interval_seconds": 1})
            })
            .collect();
        let new: livedash_engine::NewDashboard =
            serde_json::from_value(serde_json::json!({"name": "truth", "widgets": widgets}))
                .map_err(|e| e.to_string())?;
        let d = c.create_dashboard(&new).map_err(|e| e.to_string())?;
        for w in d.widgets {
            ids.push((d.dashboard_id.to_string(), w.widget_id.to_string()));
        }
    }
    Ok(ids)
}

/// The events the count widgets hold, read from a survivor, once they equal `want` (or
/// what they hold after two minutes).
fn settle(survivors: &[std::net::SocketAddr], widgets: &[(String, String)], want: u64) -> u64 {
    let give_up = Instant::now() + Duration::from_secs(120);
    loop {
        let counted: u64 = widgets
            .iter()
            .map(|(d, w)| {
                get(
                    survivors[0],
                    &format!("/dashboards/{d}/widgets/{w}/snapshot"),
                )
                .map_or(0, |v| v["value"].as_f64().unwrap_or(0.0) as u64)
            })
            .sum();
        if counted == want || Instant::now() > give_up {
            return counted;
        }
        std::thread::sleep(Duration::from_secs(2));
    }
}

fn main() -> Result<(), String> {
    let args = Args::parse();
    if args.baseline {
        let one = run(&Args {
            nodes: 1,
            kill: None,
            baseline: false,
            ..args
        })?;
        let many = run(&args)?;
        println!(
            "CPU per million events: {} nodes {many:.2} s, 1 node {one:.2} s: {:.2}x",
            args.nodes,
            many / one.max(1e-9)
        );
        return Ok(());
    }
    run(&args).map(drop)
}

/// One run; returns the CPU seconds per million events, summed over the nodes.
fn run(args: &Args) -> Result<f64, String> {
    let (node_bin, loadgen) = node_and_loadgen()?;
    let broker = Broker::start();
    broker.create_topic(TOPIC, args.partitions);
    let redis = RedisServer::start();
    let shards = args.shards.to_string();
    let node_args = [
        "--shards",
        &shards,
        "--kafka-brokers",
        &broker.addr(),
        "--kafka-topic",
        TOPIC,
        "--redis",
        &redis.url(),
    ];
    let mut nodes: Vec<Option<(Node, std::net::SocketAddr)>> = Vec::new();
    for i in 0..args.nodes {
        let dir = std::env::temp_dir().join(format!("livedash-cluster-{}-{i}", std::process::id()));
        nodes.push(Some(start_binary(&node_bin, &dir, &node_args)?));
    }
    let addrs: Vec<_> = nodes.iter().flatten().map(|(_, a)| *a).collect();
    let pids: Vec<u32> = nodes.iter().flatten().map(|(n, _)| n.pid()).collect();
    // Every node owns partitions before the load starts.
    let give_up = Instant::now() + Duration::from_secs(120);
    loop {
        let owned: Vec<u64> = addrs
            .iter()
            .map(|a| {
                get(*a, "/stats").map_or(0, |s| {
                    shards_sum(&s, |sh| {
                        sh["kafka"]["partitions"]
                            .as_array()
                            .map_or(0, |p| p.len() as u64)
                    })
                })
            })
            .collect();
        if owned.iter().sum::<u64>() == u64::from(args.partitions) && owned.iter().all(|&o| o > 0) {
            println!("partitions per node: {owned:?}");
            break;
        }
        if Instant::now() > give_up {
            return Err(format!("the partitions were never shared: {owned:?}"));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    // With a kill: count widgets over every metric the producers use, to check that
    // every acknowledged event counts once.
    let truth = match args.kill {
        Some(_) => count_widgets(addrs[0])?,
        None => Vec::new(),
    };
    let report = std::env::temp_dir().join(format!("livedash-cluster-{}.json", std::process::id()));
    let mut cmd = Command::new(&loadgen);
    cmd.arg("scenario");
    for a in &addrs {
        cmd.args(["--target", &format!("http://{a}")]);
    }
    for p in &pids {
        cmd.args(["--server-pid", &p.to_string()]);
    }
    cmd.args(["--kafka", &broker.addr(), "--topic", TOPIC])
        .args(["--rate", &args.rate.to_string(), "--batch", "1000"])
        .args(["--sockets", &args.sockets.to_string()])
        .args(["--dashboards", &args.dashboards.to_string()])
        .args([
            "--duration",
            &format!("{}s", args.duration),
            "--warmup",
            "5s",
        ])
        .arg("--json")
        .arg(&report);
    let mut child = cmd.spawn().map_err(|e| format!("loadgen: {e}"))?;
    // The measured time starts once the streams are open and the warm-up is over.
    let give_up = Instant::now() + Duration::from_secs(180);
    while addrs
        .iter()
        .map(|a| {
            get(*a, "/stats").map_or(0, |s| {
                shards_sum(&s, |sh| sh["streams"].as_u64().unwrap_or(0))
            })
        })
        .sum::<u64>()
        < args.sockets as u64 * 95 / 100
        && Instant::now() < give_up
    {
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(5));
    let counters = |addrs: &[std::net::SocketAddr]| -> (u64, u64) {
        addrs
            .iter()
            .filter_map(|a| get(*a, "/stats").ok())
            .map(|s| {
                let published = s["cluster"]["published"]["messages"].as_u64().unwrap_or(0);
                let frames = shards_sum(&s, |sh| sh["frames_written"].as_u64().unwrap_or(0));
                (published, frames)
            })
            .fold((0, 0), |(p, f), (a, b)| (p + a, f + b))
    };
    let started = Instant::now();
    let before = counters(&addrs);
    let mut survivors = addrs.clone();
    if let Some(at) = args.kill {
        std::thread::sleep(Duration::from_secs(at));
        if let Some((node, addr)) = nodes.get_mut(1).and_then(Option::take) {
            node.kill_keeping_data();
            survivors.retain(|a| *a != addr);
            println!("killed the node at {addr} with SIGKILL after {at} s");
        }
    }
    let status = child.wait().map_err(|e| e.to_string())?;
    let after = counters(&survivors);
    let elapsed = started.elapsed().as_secs_f64();
    if !status.success() {
        return Err(format!("loadgen failed: {status}"));
    }
    let r: Value = serde_json::from_slice(&std::fs::read(&report).map_err(|e| e.to_string())?)
        .map_err(|e| e.to_string())?;
    let events = r["events_acked"].as_f64().unwrap_or(0.0);
    let cpu = r["server_cpu_seconds"].as_f64().unwrap_or(0.0);
    let published = after.0.saturating_sub(before.0) as f64;
    let frames = after.1.saturating_sub(before.1) as f64;
    println!(
        "{} nodes x {} shards, {:.0} events/s through Kafka, {} of {} sockets: e2e p50 {:.0} ms p99 {:.0} ms, push p99 {:.0} ms",
        args.nodes,
        args.shards,
        r["achieved_events_per_s"].as_f64().unwrap_or(0.0),
        r["sockets_connected"],
        args.sockets,
        r["e2e_latency_ms"]["p50"].as_f64().unwrap_or(0.0),
        r["e2e_latency_ms"]["p99"].as_f64().unwrap_or(0.0),
        r["push_delay_ms"]["p99"].as_f64().unwrap_or(0.0),
    );
    println!(
        "  CPU {:.2} s per million events, summed over the nodes; redis pub/sub {:.0} messages/s published; {:.1} frames written per message",
        cpu / (events / 1e6).max(1e-9),
        published / elapsed,
        frames / published.max(1.0),
    );
    if args.kill.is_some() {
        println!(
            "  {} streams reconnected; gap p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
            r["reconnects"],
            r["reconnect_gap_ms"]["p50"].as_f64().unwrap_or(0.0),
            r["reconnect_gap_ms"]["p99"].as_f64().unwrap_or(0.0),
            r["reconnect_gap_ms"]["max"].as_f64().unwrap_or(0.0),
        );
    }
    if args.kill.is_some() {
        let acked = r["events_acked_total"].as_u64().unwrap_or(0);
        let counted = settle(&survivors, &truth, acked);
        println!(
            "  {}: the survivors count {counted} events of the {acked} the brokers acknowledged",
            if counted == acked { "exact" } else { "WRONG" }
        );
    }
    let _ = std::fs::remove_file(&report);
    drop(nodes);
    drop(redis);
    drop(broker);
    Ok(cpu / (events / 1e6).max(1e-9))
}
