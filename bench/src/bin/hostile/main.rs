//! Hostile inputs against a release node, each at ten times the size it was found at:
//! for each, the node's peak memory above what it held before (against the bound its
//! budgets set) and the slowest `/healthz` answer of every shard while it ran (against
//! 100 ms).
//!
//! `cargo build --release --bin livedash && cargo run --release -p livedash-bench --bin hostile [-- NAME...]`

use livedash_bench::node::start_node_in;

mod inputs;
mod watch;

/// The slowest health answer allowed while an input runs.
const HEALTH_MS: f64 = 100.0;
const SHARDS: usize = 2;
const MAX_BODY: u64 = 64 << 20;

fn main() {
    if let Err(e) = run() {
        eprintln!("hostile: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let only: Vec<String> = std::env::args().skip(1).collect();
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let dir = std::env::temp_dir().join(format!("livedash-hostile-{}", std::process::id()));
    let (node, addr) = start_node_in(
        &dir,
        &[
            "--shards",
            &SHARDS.to_string(),
            "--max-body-bytes",
            &MAX_BODY.to_string(),
            "--self-dashboard",
            "false",
        ],
    )?;
    let pid = node.pid();
    let ctx = inputs::Ctx {
        addr,
        shards: SHARDS,
        data_dir: dir.clone(),
        max_body: MAX_BODY,
    };
    let prober = watch::Prober::start(addr, SHARDS)?;
    println!(
        "node: {SHARDS} shards, max_body_bytes {} MiB, other budgets at their defaults\n",
        MAX_BODY >> 20
    );
    println!(
        "{:<13} {:>10} {:>10} {:>5} {:>22} {:>8}  what came back",
        "input", "peak +MB", "bound MB", "mem", "health max ms/shard", "health"
    );
    let mut failed = Vec::new();
    for input in inputs::all() {
        if !only.is_empty() && !only.iter().any(|o| o == input.name) {
            continue;
        }
        let prepared = (input.prepare)(&ctx);
        // Let the last input's connections close before measuring this one.
        std::thread::sleep(std::time::Duration::from_millis(500));
        let exact = watch::reset_peak(pid);
        let before = if exact {
            watch::rss(pid)
        } else {
            watch::peak(pid)
        };
        prober.take();
        let outcome = prepared.and_then(|made| (input.run)(&ctx, &made));
        std::thread::sleep(std::time::Duration::from_millis(200));
        let health = prober.take();
        let grown = watch::peak(pid).saturating_sub(before);
        let bound = (input.bound)(&ctx);
        let worst = health.worst_ms();
        let mem_ok = grown <= bound.bytes;
        let health_ok =
            health.failures == 0 && worst.iter().all(|(ms, n)| *ms <= HEALTH_MS && *n > 0);
        let shown: Vec<String> = worst.iter().map(|(ms, _)| format!("{ms:.1}")).collect();
        println!(
            "{:<13} {:>10.1} {:>10.1} {:>5} {:>22} {:>8}  {}",
            input.name,
            grown as f64 / 1e6,
            bound.bytes as f64 / 1e6,
            if mem_ok { "ok" } else { "OVER" },
            shown.join(" / "),
            if health_ok { "ok" } else { "SLOW" },
            match &outcome {
                Ok(s) => s.clone(),
                Err(e) => format!("error: {e}"),
            }
        );
        if !mem_ok || !health_ok || outcome.is_err() {
            failed.push(input.name);
        }
    }
    println!("\nbounds (each plus 32 MB of slack):");
    for input in inputs::all() {
        println!(
            "  {:<13} {} ({})",
            input.name,
            (input.bound)(&ctx).rule,
            input.sends
        );
    }
    drop(prober);
    drop(node);
    if failed.is_empty() {
        println!(
            "\nevery input stayed within its bound, and every shard answered /healthz within {HEALTH_MS} ms"
        );
        Ok(())
    } else {
        Err(format!("over a bound or slow: {}", failed.join(", ")))
    }
}
