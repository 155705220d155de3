//! The `livedash` binary: reads the configuration, raises the open-files limit, starts one
//! shard per core and runs until SIGINT or SIGTERM, then shuts down gracefully (exit 0).
//! A configuration error is one line on stderr and exit code 2; any other failure to
//! start, one line and exit code 1.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::sync::atomic::Ordering;

use anyhow::Context;
use clap::error::ErrorKind;
use livedash_net::config::{Config, ConfigError};
use livedash_net::node;
use livedash_net::store::FileStore;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

/// Logs to stderr: text, or one JSON object per line with `LIVEDASH_LOG_FORMAT=json`.
fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("LIVEDASH_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let format = std::env::var("LIVEDASH_LOG_FORMAT").unwrap_or_default();
    if format.eq_ignore_ascii_case("json") {
        logs.json().with_current_span(false).init();
    } else {
        logs.with_ansi(std::io::stderr().is_terminal()).init();
        if !(format.is_empty() || format.eq_ignore_ascii_case("text")) {
            tracing::warn!("LIVEDASH_LOG_FORMAT={format} is not known: set json or text");
        }
    }
}

fn main() -> ExitCode {
    init_logs();
    let resolved = match Config::resolve(std::env::args_os(), std::env::vars().map(|(k, _)| k)) {
        Ok(resolved) => resolved,
        Err(ConfigError::Args(e))
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) =>
        {
            e.exit()
        }
        Err(e) => {
            eprintln!("livedash: {e}");
            return ExitCode::from(2);
        }
    };
    for warning in resolved
        .warnings
        .iter()
        .chain(&resolved.config.exposure_warnings())
    {
        tracing::warn!("{warning}");
    }
    match run(resolved.config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("livedash: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(config: Config) -> anyhow::Result<()> {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => tracing::info!("open-files limit: {n}"),
        Err(e) => tracing::warn!(
            "cannot raise the open-files limit: {e}; the node keeps its current limit, which caps its connections: to allow more, start it from a shell where ulimit -n <n> was set, or set LimitNOFILE= in its systemd unit"
        ),
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
