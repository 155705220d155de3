//! The `livedash` binary: reads the configuration, raises the open-files limit, starts one
//! shard per core and runs until SIGINT or SIGTERM, then shuts down gracefully (exit 0).

use std::io::Write;
use std::sync::atomic::Ordering;

use anyhow::Context;
use clap::Parser;
use livedash_net::config::{Cli, Config};
use livedash_net::node;
use livedash_net::store::FileStore;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LIVEDASH_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let config = Config::resolve(Cli::parse())?;
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => tracing::info!("open-files limit: {n}"),
        Err(e) => tracing::warn!("cannot raise the open-files limit: {e}"),
    }
    let store = FileStore::open(&config.data_dir)
        .with_context(|| format!("opening data directory {}", config.data_dir.display()))?;
    let shards = config.shard_count();
    let mut signals = Signals::new([SIGINT, SIGTERM]).context("installing signal handlers")?;
    let node = node::start(config, Box::new(store))?;
    println!(
        "livedash listening on http://{} with {shards} shards",
        node.addr
    );
    std::io::stdout().flush()?;
    let flag = node.shutdown_flag();
    std::thread::spawn(move || {
        if let Some(signal) = signals.forever().next() {
            tracing::info!("signal {signal}: shutting down");
            flag.store(true, Ordering::Relaxed);
        }
    });
    node.join()?;
    tracing::info!("stopped");
    Ok(())
}
