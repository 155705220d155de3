//! WebSocket fan-out: how many streams one node holds, what an idle stream costs the
//! server, how long a refresh takes to reach every browser, and how that compares with
//! the loopback floor and with a peer server, all in one run.
//!
//! Starts the release node (2 shards), creates dashboards refreshing every second, opens
//! a baseline of streams and then many streams from this process (loadgen's clients: a
//! few threads with an epoll loop each), measures the server's resident memory per idle
//! stream, then feeds events so every widget changes every tick and records, per received
//! `update` frame, the push delay: from the tick (the refresh deadline: the dashboard's
//! phase plus a multiple of the interval) to the frame's arrival. The same is then run
//! against a node with aligned ticks (`--spread-ticks false`), against the loopback floor
//! of each schedule (`livedash_bench::floor`), and against a tokio + tokio-tungstenite
//! broadcast server (`livedash_bench::peer`, aligned ticks as such a server has), with
//! the same clients and frames of the same shape; it prints each one's push delay, CPU
//! and memory per stream, and the ratios.
//!
//! `cargo build --release --bin livedash && cargo run --release -p livedash-bench --bin ws_fanout`

use std::time::Duration;

use clap::Parser;
use livedash_bench::floor;
use livedash_bench::node::{Node, start_node};
use livedash_bench::peer::{self, Peer, PeerPlan};
use livedash_engine::{NewDashboard, tick_phase_ms};
use livedash_loadgen::client::Client;
use serde_json::{Value, json};

mod floors;
mod probe;
mod runs;

use floors::{compact_frame_bytes, floor_run, floors_only};
use probe::{p99, percentile, spread};
use runs::{RunResult, Target, run};

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
    /// Skip the node with aligned ticks and its floor.
    #[arg(long)]
    no_aligned: bool,
    /// Skip the tokio peer.
    #[arg(long)]
    no_peer: bool,
    /// Only the floors of the spread schedule (random dashboard ids), through `send`,
    /// through io_uring and with compact frames, `--floor-rounds` times in turn.
    #[arg(long)]
    floors_only: bool,
    #[arg(long, default_value_t = 3)]
    floor_rounds: usize,
    /// Frame size of `--floors-only`, WebSocket header included.
    #[arg(long, default_value_t = 2925)]
    frame_bytes: usize,
}

const INTERVAL_MS: i64 = 1000;
/// Shards of the node, and sender threads of the loopback floor.
const SHARDS: usize = 2;

/// Creates the fan-out dashboards on a node; returns their ids and the metrics they
/// watch.
fn create_dashboards(
    addr: std::net::SocketAddr,
    args: &Args,
) -> Result<(Vec<String>, Vec<String>), String> {
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
    Ok((dashboards, metrics))
}

/// Starts a node with `spread` ticks or aligned ones, runs `sizes` streams in turn;
/// returns the results and the dashboards' phases.
fn node_runs(
    args: &Args,
    spread_ticks: bool,
    sizes: &[usize],
) -> Result<(Vec<RunResult>, Vec<i64>), String> {
    let (node, addr): (Node, _) = start_node(&[
        "--shards",
        &SHARDS.to_string(),
        "--spread-ticks",
        &spread_ticks.to_string(),
    ])?;
    let (dashboards, metrics) = create_dashboards(addr, args)?;
    let phases: Vec<i64> = dashboards
        .iter()
        .map(|d| {
            let id = d.parse::<uuid::Uuid>().map_err(|e| e.to_string())?;
            Ok(if spread_ticks {
                tick_phase_ms(&id, INTERVAL_MS)
            } else {
                0
            })
        })
        .collect::<Result<_, String>>()?;
    let target = Target {
        addr,
        pid: node.pid(),
        dashboards: &dashboards,
        phases: &phases,
        metrics: Some(&metrics),
    };
    let mut results = Vec::new();
    for &n in sizes {
        let r = run(&target, n, args.clients, args.seconds)?;
        println!(
            "{:>6} streams ({} connected, {} ticks): push delay {}; server memory per stream {:.0} bytes idle, {:.0} bytes under load",
            n,
            r.connected,
            if spread_ticks { "spread" } else { "aligned" },
            spread(&r.delays),
            r.idle_rss_per_socket,
            r.loaded_rss_per_socket
        );
        results.push(r);
        std::thread::sleep(Duration::from_secs(2));
    }
    drop(node);
    Ok((results, phases))
}

fn main() -> Result<(), String> {
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let argv: Vec<String> = std::env::args().collect();
    match argv.get(1).map(String::as_str) {
        Some(floor::SENDER_FLAG) => {
            return floor::sender_main(floor::sender_plan(&argv[2..])?);
        }
        Some(peer::PEER_FLAG) => return peer::server_main(peer::peer_plan(&argv[2..])?),
        _ => {}
    }
    let args = Args::parse();
    if args.floors_only {
        return floors_only(&args);
    }
    let (spread_runs, phases) = node_runs(&args, true, &[args.baseline_sockets, args.sockets])?;
    let [base, big] = &spread_runs[..] else {
        return Err("two runs expected".into());
    };
    println!(
        "p99 delay at {} streams is {:.2}x the baseline at {}",
        args.sockets,
        p99(&big.delays) / p99(&base.delays),
        args.baseline_sockets
    );
    let aligned = if args.no_aligned {
        None
    } else {
        Some(node_runs(&args, false, &[args.sockets])?.0.remove(0))
    };
    let peer = if args.no_peer {
        None
    } else {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        // Dashboard ids of its own: the clients ask for them by id.
        let dashboards: Vec<String> = (0..args.dashboards)
            .map(|_| uuid::Uuid::new_v4().to_string())
            .collect();
        let server = Peer::start(
            &exe,
            &PeerPlan {
                dashboards: dashboards.clone(),
                widgets: args.widgets,
                interval_ms: INTERVAL_MS,
                workers: SHARDS,
                limit: Duration::from_secs(args.seconds + 300),
            },
        )?;
        let target = Target {
            addr: server.addr,
            pid: server.pid(),
            dashboards: &dashboards,
            phases: &[0],
            metrics: None,
        };
        let r = run(&target, args.sockets, args.clients, args.seconds)?;
        println!(
            "{:>6} streams ({} connected), tokio + tokio-tungstenite broadcast peer, {} worker threads: push delay {}; memory per stream {:.0} bytes idle, {:.0} bytes under load",
            args.sockets,
            r.connected,
            SHARDS,
            spread(&r.delays),
            r.idle_rss_per_socket,
            r.loaded_rss_per_socket
        );
        Some(r)
    };
    let floor_spread = floor_run(
        &args,
        big.frame_bytes,
        phases.clone(),
        floor::Submit::Send,
        "spread schedule",
    )?;
    // What one io_uring submission per burst would save over a send per socket, and what
    // a smaller frame would.
    let floor_uring = floor_run(
        &args,
        big.frame_bytes,
        phases.clone(),
        floor::Submit::Uring,
        "spread schedule, io_uring",
    )?;
    let compact_bytes = compact_frame_bytes(big.frame_bytes, args.widgets);
    let floor_compact = floor_run(
        &args,
        compact_bytes,
        phases,
        floor::Submit::Send,
        "spread schedule, compact frames",
    )?;
    let floor_aligned = match &aligned {
        Some(a) => Some(floor_run(
            &args,
            a.frame_bytes,
            Vec::new(),
            floor::Submit::Send,
            "aligned",
        )?),
        None => None,
    };
    println!();
    println!(
        "{:<34} {:>9} {:>9} {:>9} {:>11} {:>13} {:>11}",
        format!("at {} streams", args.sockets),
        "p50 ms",
        "p99 ms",
        "max ms",
        "CPU s",
        "bytes/stream",
        "frame bytes"
    );
    let row = |name: &str, d: &[i64], r: Option<&RunResult>| {
        println!(
            "{:<34} {:>9} {:>9} {:>9} {:>11} {:>13} {:>11}",
            name,
            percentile(d, 0.5),
            percentile(d, 0.99),
            d.last().copied().unwrap_or(-1),
            r.map_or("-".into(), |r| format!("{:.2}", r.cpu_seconds)),
            r.map_or("-".into(), |r| format!("{:.0}", r.loaded_rss_per_socket)),
            r.map_or("-".into(), |r| r.frame_bytes.to_string()),
        );
    };
    row("livedash, spread ticks", &big.delays, Some(big));
    row("loopback floor, spread schedule", &floor_spread, None);
    row("  the same through io_uring", &floor_uring, None);
    row(
        &format!("  the same, {compact_bytes}-byte frames"),
        &floor_compact,
        None,
    );
    if let (Some(a), Some(f)) = (&aligned, &floor_aligned) {
        row("livedash, aligned ticks", &a.delays, Some(a));
        row("loopback floor, aligned", f, None);
    }
    if let Some(p) = &peer {
        row("tokio broadcast peer (aligned)", &p.delays, Some(p));
    }
    println!(
        "push p99: livedash / floor of the spread schedule {:.2}x",
        p99(&big.delays) / p99(&floor_spread)
    );
    println!(
        "floor p99: io_uring / send {:.2}x; {compact_bytes}-byte / {}-byte frames {:.2}x",
        p99(&floor_uring) / p99(&floor_spread),
        big.frame_bytes,
        p99(&floor_compact) / p99(&floor_spread)
    );
    if let (Some(a), Some(f)) = (&aligned, &floor_aligned) {
        println!(
            "push p99: livedash aligned / its floor {:.2}x; spread / aligned {:.2}x",
            p99(&a.delays) / p99(f),
            p99(&big.delays) / p99(&a.delays)
        );
    }
    if let Some(p) = &peer {
        println!(
            "push p99: peer / livedash {:.2}x; CPU seconds livedash / peer {:.2}x; memory per stream under load livedash / peer {:.2}x",
            p99(&p.delays) / p99(&big.delays),
            big.cpu_seconds / p.cpu_seconds.max(0.01),
            big.loaded_rss_per_socket / p.loaded_rss_per_socket.max(1.0)
        );
    }
    Ok(())
}
