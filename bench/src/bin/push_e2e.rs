//! Event to screen with ticks spread over the refresh interval and with ticks aligned, in
//! one run: for each, starts the release node (2 shards) and runs `loadgen scenario` (its
//! own process: producers over HTTP and WebSocket clients) against it, then prints, from
//! loadgen's report, the per-event end-to-end latency (event time to the first frame that
//! shows the event), the freshness (receive time minus the newest event time of each
//! widget in a frame), the push delay, the node's CPU and resident memory per stream, and
//! the bound the per-event p99 must stay within: refresh + push p99 + 20 ms. With
//! `--before PATH` an earlier build of the node runs beside them, with its defaults.
//!
//! `cargo build --release --bin livedash --bin loadgen && cargo run --release -p livedash-bench --bin push_e2e`

use std::process::Command;
use std::time::Duration;

use clap::Parser;
use livedash_bench::node::{node_and_loadgen, start_binary};
use serde_json::Value;

#[derive(Debug, Parser)]
struct Args {
    /// Events per second the producers send.
    #[arg(long, default_value_t = 100_000)]
    rate: u64,
    /// WebSocket clients.
    #[arg(long, default_value_t = 10_000)]
    sockets: usize,
    /// Dashboards the clients spread over (20 widgets each, 1 s refresh).
    #[arg(long, default_value_t = 10)]
    dashboards: usize,
    /// Measured seconds per node.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Runs of each kind, alternating.
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// Also run this `livedash` binary (an earlier build, run with its defaults) as the
    /// "before" of the comparison.
    #[arg(long)]
    before: Option<std::path::PathBuf>,
}

/// A node to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Spread,
    Aligned,
    Before,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Self::Spread => "spread",
            Self::Aligned => "aligned",
            Self::Before => "before",
        }
    }
}

/// The widgets' refresh interval, loadgen's default.
const REFRESH_MS: f64 = 1000.0;

/// What one scenario run reported.
#[derive(Debug, Default, Clone, Copy)]
struct Figures {
    e2e: [f64; 3],
    freshness: [f64; 2],
    push: [f64; 2],
    events_per_s: f64,
    followed: f64,
    cpu_s: f64,
    rss_per_socket: f64,
}

fn scenario(args: &Args, kind: Kind, dir: &std::path::Path) -> Result<Figures, String> {
    let (node_bin, loadgen) = node_and_loadgen()?;
    let (node, addr) = match (kind, &args.before) {
        (Kind::Before, Some(before)) => start_binary(before, dir, &["--shards", "2"])?,
        _ => start_binary(
            &node_bin,
            dir,
            &[
                "--shards",
                "2",
                "--spread-ticks",
                &(kind == Kind::Spread).to_string(),
            ],
        )?,
    };
    let report = dir.with_extension("json");
    let status = Command::new(&loadgen)
        .arg("scenario")
        .args(["--target", &format!("http://{addr}")])
        .args(["--server-pid", &node.pid().to_string()])
        .args(["--rate", &args.rate.to_string()])
        .args(["--sockets", &args.sockets.to_string()])
        .args(["--dashboards", &args.dashboards.to_string()])
        .args([
            "--duration",
            &format!("{}s", args.seconds),
            "--warmup",
            "5s",
        ])
        .arg("--json")
        .arg(&report)
        .status()
        .map_err(|e| format!("loadgen: {e}"))?;
    drop(node);
    if !status.success() {
        return Err(format!("loadgen failed: {status}"));
    }
    let r: Value = serde_json::from_slice(&std::fs::read(&report).map_err(|e| e.to_string())?)
        .map_err(|e| e.to_string())?;
    let ms = |key: &str, q: &str| r[key][q].as_f64().unwrap_or(f64::NAN);
    let sockets = r["sockets_connected"].as_f64().unwrap_or(0.0).max(1.0);
    Ok(Figures {
        e2e: [
            ms("e2e_latency_ms", "p50"),
            ms("e2e_latency_ms", "p99"),
            ms("e2e_latency_ms", "max"),
        ],
        freshness: [ms("freshness_ms", "p50"), ms("freshness_ms", "p99")],
        push: [ms("push_delay_ms", "p50"), ms("push_delay_ms", "p99")],
        events_per_s: r["achieved_events_per_s"].as_f64().unwrap_or(0.0),
        followed: r["e2e_events"].as_f64().unwrap_or(0.0),
        cpu_s: r["server_cpu_seconds"].as_f64().unwrap_or(f64::NAN),
        rss_per_socket: r["server_rss_bytes"].as_f64().unwrap_or(f64::NAN) / sockets,
    })
}

fn print(label: &str, f: &Figures, seconds: u64) {
    let bound = REFRESH_MS + f.push[1] + 20.0;
    println!(
        "{label:<8} {:>9.0} ev/s  e2e p50 {:>5.0} p99 {:>5.0} max {:>5.0} ms ({:.0} events followed)  freshness p50 {:>4.0} p99 {:>4.0} ms  push p50 {:>4.0} p99 {:>4.0} ms  node CPU {:.2} s/s  {:.0} bytes/stream  bound {:.0} ms: {}",
        f.events_per_s,
        f.e2e[0],
        f.e2e[1],
        f.e2e[2],
        f.followed,
        f.freshness[0],
        f.freshness[1],
        f.push[0],
        f.push[1],
        f.cpu_s / seconds as f64,
        f.rss_per_socket,
        bound,
        if f.e2e[1] <= bound { "within" } else { "ABOVE" }
    );
}

fn main() -> Result<(), String> {
    let args = Args::parse();
    let dir = std::env::temp_dir().join(format!("livedash-push-e2e-{}", std::process::id()));
    let mut kinds = vec![Kind::Spread, Kind::Aligned];
    if args.before.is_some() {
        kinds.push(Kind::Before);
    }
    let mut runs: Vec<(Kind, Figures)> = Vec::new();
    for round in 0..args.rounds.max(1) {
        // Rotate which goes first, so a drift of the machine does not favour one.
        for i in 0..kinds.len() {
            let kind = kinds[(i + round) % kinds.len()];
            let f = scenario(&args, kind, &dir)?;
            print(kind.label(), &f, args.seconds);
            runs.push((kind, f));
            std::thread::sleep(Duration::from_secs(2));
        }
    }
    let median = |kind: Kind, pick: fn(&Figures) -> f64| {
        let mut v: Vec<f64> = runs
            .iter()
            .filter(|(k, _)| *k == kind)
            .map(|(_, f)| pick(f))
            .collect();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
    };
    for other in &kinds[1..] {
        println!(
            "spread / {}, medians: e2e p50 {:.2}x, e2e p99 {:.2}x, push p99 {:.2}x, node CPU {:.2}x, memory per stream {:.2}x",
            other.label(),
            median(Kind::Spread, |f| f.e2e[0]) / median(*other, |f| f.e2e[0]),
            median(Kind::Spread, |f| f.e2e[1]) / median(*other, |f| f.e2e[1]),
            median(Kind::Spread, |f| f.push[1]) / median(*other, |f| f.push[1]),
            median(Kind::Spread, |f| f.cpu_s) / median(*other, |f| f.cpu_s),
            median(Kind::Spread, |f| f.rss_per_socket) / median(*other, |f| f.rss_per_socket),
        );
    }
    let _ = std::fs::remove_file(dir.with_extension("json"));
    Ok(())
}
