//! The kill -9 chaos run (see `livedash_bench::chaos`): N runs, each printed as it ends,
//! then how many were exact and the takeover and rejoin times.
//!
//! `cargo build --release --bin livedash && cargo run --release -p livedash-bench --bin chaos -- --runs 20`
//! (needs tansu 0.6.0 and redis-server, as the tests do).

use clap::Parser;
use livedash_bench::chaos::{Chaos, run};

#[derive(Debug, Parser)]
struct Args {
    /// Kill -9 runs.
    #[arg(long, default_value_t = 20)]
    runs: usize,
    /// Events per second the producer writes.
    #[arg(long, default_value_t = 20_000)]
    rate: u64,
    /// Distinct metrics (each with a sum, count, min and max widget on both nodes).
    #[arg(long, default_value_t = 16)]
    metrics: usize,
}

fn main() -> Result<(), String> {
    let args = Args::parse();
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let node = exe.with_file_name("livedash");
    if !node.exists() {
        return Err(format!(
            "{} not found; build it first with `cargo build --release --bin livedash`",
            node.display()
        ));
    }
    let cfg = Chaos {
        node,
        runs: args.runs,
        rate: args.rate,
        metrics: args.metrics,
    };
    let results = run(&cfg, |i, r| {
        println!(
            "run {:>2}: {} takeover {:.1} s, restart to exact {:.1} s, {} events acknowledged{}",
            i + 1,
            if r.exact { "exact," } else { "WRONG," },
            r.takeover.as_secs_f64(),
            r.rejoin.as_secs_f64(),
            r.events,
            if r.wrong.is_empty() {
                String::new()
            } else {
                format!(": {:?}", r.wrong)
            }
        );
    })?;
    let exact = results.iter().filter(|r| r.exact).count();
    let mut takeovers: Vec<f64> = results.iter().map(|r| r.takeover.as_secs_f64()).collect();
    takeovers.sort_by(f64::total_cmp);
    let median = takeovers.get(takeovers.len() / 2).copied().unwrap_or(0.0);
    let max = takeovers.last().copied().unwrap_or(0.0);
    println!(
        "chaos: {exact} of {} kill -9 runs exact; takeover median {median:.1} s, max {max:.1} s (session timeout 10 s)",
        results.len()
    );
    if exact == results.len() {
        Ok(())
    } else {
        Err(format!("{} runs were not exact", results.len() - exact))
    }
}
