//! `loadgen`: drives a livedash node with open-loop event producers and thousands of
//! WebSocket clients, and reports achieved rates and latency percentiles (text, JSON, SVG).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

use livedash_engine::NewDashboard;
use livedash_loadgen::client::{Client, target_addr};
use livedash_loadgen::ingest::{Format, Plan};
use livedash_loadgen::report::{ProducerFigures, Report, StreamFigures, sample_process};
use livedash_loadgen::stats::Stats;
use livedash_loadgen::visible::Visible;
use livedash_loadgen::{baseline, ingest, kafka, report, sockets};

/// Load generator for livedash. Every run prints a report; `--json` and `--plot` save it.
#[derive(Debug, Parser)]
#[command(name = "loadgen", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Open-loop HTTP producers at a target rate.
    Ingest {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        producers: Producers,
    },
    /// WebSocket clients spread over dashboards (created here unless --dashboard is given).
    Sockets {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        clients: Clients,
    },
    /// The original design on a real Redis, then livedash, fed the same way: events/s of
    /// both and their ratio.
    SeedBaseline(SeedArgs),
    /// A cluster on this machine to watch a failover in the browser: a private tansu
    /// broker and Redis, and N livedash nodes on consecutive ports (the first runs the
    /// demo dashboard). Needs tansu and redis-server installed; Ctrl-C stops everything.
    ClusterDemo(DemoArgs),
    /// Producers and clients together.
    Scenario {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        producers: Producers,
        #[command(flatten)]
        clients: Clients,
    },
}

#[derive(Debug, Args)]
struct DemoArgs {
    /// Nodes to start.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Port of the first node; the others take the next ones.
    #[arg(long, default_value_t = 8081)]
    port: u16,
    /// Kafka partitions of the topic.
    #[arg(long, default_value_t = 6)]
    partitions: u32,
    /// The livedash binary [default: the one next to loadgen].
    #[arg(long)]
    livedash: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct SeedArgs {
    /// The Redis server, e.g. redis://127.0.0.1:6379.
    #[arg(long)]
    redis: String,
    /// The node.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    target: String,
    /// Measured time of each side.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Events per pipeline (Redis) and per request (livedash).
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// Distinct metric names.
    #[arg(long, default_value_t = 1000)]
    metrics: usize,
    /// Distinct values of the `host` tag.
    #[arg(long, default_value_t = 10)]
    tags: usize,
    /// Window length, in seconds, of both sides' queries.
    #[arg(long, default_value_t = 60)]
    window: u64,
    /// HTTP connections for the livedash side.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Write both rates and their ratio as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct Common {
    /// A node; repeat for a cluster: producer connections and streams are spread over
    /// the nodes, dashboards are created on the first, and a stream or connection whose
    /// node goes away moves to the next.
    #[arg(long = "target", default_value = "http://127.0.0.1:8080")]
    targets: Vec<String>,
    /// Measured time, e.g. 30s, 2m, 500ms.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Time run before measuring, not counted.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    warmup: Duration,
    /// Bearer token (used for ingest, dashboard creation and streams).
    #[arg(long)]
    token: Option<String>,
    /// The node's process id: its CPU seconds and resident memory go in the report.
    /// Repeat for a cluster: the report sums them over the nodes.
    #[arg(long = "server-pid")]
    server_pids: Vec<u32>,
    /// Write the report as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Draw latency over time and the latency histogram here (SVG).
    #[arg(long)]
    plot: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct Producers {
    /// Events per second, all connections together.
    #[arg(long, default_value_t = 100_000)]
    rate: u64,
    /// Events per request.
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// Concurrent keep-alive connections (one thread each).
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Distinct metric names.
    #[arg(long, default_value_t = 1000)]
    metrics: usize,
    /// Distinct values of the `host` tag.
    #[arg(long, default_value_t = 10)]
    tags: usize,
    /// Body format.
    #[arg(long, value_enum, default_value_t = Format::Json)]
    format: Format,
    /// Produce straight to these Kafka brokers (HOST:PORT[,...]) instead of POSTing to
    /// the node: one JSON-array record per partition per batch, latency to the brokers'
    /// acknowledgement. The node must run in cluster mode on the same topic.
    #[arg(long, value_name = "BROKERS")]
    kafka: Option<String>,
    /// The topic of --kafka.
    #[arg(long, default_value = "livedash.events")]
    topic: String,
}

#[derive(Debug, Args)]
struct Clients {
    /// WebSocket clients.
    #[arg(long, default_value_t = 1000)]
    sockets: usize,
    /// Dashboards to create and spread the clients over.
    #[arg(long, default_value_t = 10)]
    dashboards: usize,
    /// Existing dashboards to watch instead (repeatable).
    #[arg(long = "dashboard")]
    dashboard_ids: Vec<String>,
    /// Widgets per created dashboard.
    #[arg(long, default_value_t = 20)]
    widgets: usize,
    /// Refresh interval of the created widgets, in seconds.
    #[arg(long, default_value_t = 1.0)]
    refresh: f64,
    /// Client threads, each serving its share of the streams on one epoll loop.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Distinct metrics the created widgets watch (match the producers' --metrics).
    #[arg(long, default_value_t = 1000)]
    widget_metrics: usize,
    /// Keep the dashboards this run created (by default they are deleted at the end).
    #[arg(long)]
    keep: bool,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, unit) = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map_or((text, "s"), |at| text.split_at(at));
    let n: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 30s, 2m or 500ms"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => {
            return Err(format!(
                "unknown unit {unit:?} in {text:?}; use ms, s, m or h"
            ));
        }
    };
    Ok(Duration::from_secs_f64(secs))
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let (name, common, producers, clients) = match cli.command {
        Command::SeedBaseline(args) => return seed_baseline(args),
        Command::ClusterDemo(args) => return cluster_demo(args),
        Command::Ingest { common, producers } => ("ingest", common, Some(producers), None),
        Command::Sockets { common, clients } => ("sockets", common, None, Some(clients)),
        Command::Scenario {
            common,
            producers,
            clients,
        } => ("scenario", common, Some(producers), Some(clients)),
    };
    let addrs = common
        .targets
        .iter()
        .map(|t| target_addr(t))
        .collect::<Result<Vec<_>, _>>()?;
    let first = common.targets[0].clone();
    let stats = Arc::new(Stats::default());
    let stop = Arc::new(AtomicBool::new(false));
    // Ctrl-C ends the run early; the report covers what was measured until then.
    let interrupted = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&interrupted))?;
    }
    if name == "sockets" {
        eprintln!(
            "note: `sockets` runs no producers: values change only if something else sends \
             events (`loadgen scenario` runs both)"
        );
    }
    let halted = || interrupted.load(Ordering::Relaxed) || stats.fatal().is_some();

    let mut client_threads = Vec::new();
    let mut created = Vec::new();
    let sockets_target = clients.as_ref().map_or(0, |c| c.sockets);
    if let Some(c) = &clients {
        let ids = if c.dashboard_ids.is_empty() {
            let ids = sockets::create_dashboards(
                &first,
                common.token.as_deref(),
                c.dashboards.max(1),
                c.widgets,
                c.widget_metrics,
                c.refresh,
            )?;
            if !c.keep {
                created.clone_from(&ids);
            }
            ids
        } else {
            for id in &c.dashboard_ids {
                sockets::check_dashboard(&first, common.token.as_deref(), id)?;
            }
            c.dashboard_ids.clone()
        };
        let _ = stats.visible.set(Visible::new(c.sockets, ids.len()));
        let on_text: sockets::OnText = {
            let stats = Arc::clone(&stats);
            Arc::new(move |index, text: &str| sockets::record(&stats, index, text))
        };
        let plan = sockets::Plan {
            addrs,
            dashboards: ids,
            sockets: c.sockets,
            threads: c.threads,
            token: common.token.clone(),
            stats: Arc::clone(&stats),
            on_text,
        };
        client_threads = sockets::run(plan, Arc::clone(&stop))?;
        // Let the clients connect before the clock starts.
        let deadline = Instant::now() + Duration::from_secs(60);
        while Stats::get(&stats.sockets_connected) + Stats::get(&stats.errors) < c.sockets as u64
            && Instant::now() < deadline
            && !halted()
        {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let run_for = common.warmup + common.duration;
    let producer = producers.as_ref().map(|p| {
        let plan = Plan {
            targets: common.targets.clone(),
            rate: p.rate,
            batch: p.batch,
            connections: p.connections,
            metrics: p.metrics,
            tags: p.tags,
            format: p.format,
            token: common.token.clone(),
        };
        let until = Instant::now() + run_for;
        match &p.kafka {
            Some(brokers) => kafka::run(
                plan,
                brokers.clone(),
                p.topic.clone(),
                Arc::clone(&stats),
                until,
                Arc::clone(&stop),
            ),
            None => ingest::run(plan, Arc::clone(&stats), until, Arc::clone(&stop)),
        }
    });
    if producers
        .as_ref()
        .is_some_and(|p| p.rate == 0 || p.batch == 0)
    {
        bail!("--rate and --batch must be at least 1");
    }

    let warm_until = Instant::now() + common.warmup;
    while Instant::now() < warm_until && !halted() {
        std::thread::sleep(Duration::from_millis(20));
    }
    let server_before = sample_all(&common.server_pids);
    stats.measuring.store(true, Ordering::Relaxed);
    let started = Instant::now();
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} {elapsed} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    while started.elapsed() < common.duration && !halted() {
        std::thread::sleep(
            Duration::from_millis(250).min(common.duration.saturating_sub(started.elapsed())),
        );
        let secs = started.elapsed().as_secs_f64().max(0.001);
        bar.set_message(format!(
            "{:.0} events/s acked, {} sockets, e2e p99 {:.0} ms, freshness p99 {:.0} ms, push p99 {:.0} ms",
            Stats::get(&stats.events_acked) as f64 / secs,
            Stats::get(&stats.sockets_connected),
            Stats::percentiles(&stats.e2e).p99,
            Stats::percentiles(&stats.freshness).p99,
            Stats::percentiles(&stats.push).p99,
        ));
        bar.tick();
    }
    stats.measuring.store(false, Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    bar.finish_and_clear();
    let server_after = sample_all(&common.server_pids);
    let sockets_connected = Stats::get(&stats.sockets_connected);
    stop.store(true, Ordering::Relaxed);
    if let Some(p) = producer {
        let _ = p.join();
    }
    for e in client_threads {
        let _ = e.join();
    }

    let cleaned = delete_dashboards(&first, common.token.as_deref(), &created);
    if let Some(reason) = stats.fatal() {
        bail!("{reason}");
    }
    cleaned?;
    let report = Report {
        scenario: name.to_string(),
        duration_s: elapsed,
        interrupted: interrupted.load(Ordering::Relaxed),
        errors: Stats::get(&stats.errors),
        producers: producers.as_ref().map(|p| ProducerFigures {
            target_events_per_s: p.rate,
            achieved_events_per_s: Stats::get(&stats.events_acked) as f64 / elapsed,
            events_sent: Stats::get(&stats.events_sent),
            events_acked: Stats::get(&stats.events_acked),
            events_acked_total: Stats::get(&stats.events_acked_total),
            events_rejected: Stats::get(&stats.events_rejected),
            ingest_latency_ms: Stats::percentiles(&stats.ingest),
        }),
        streams: clients.as_ref().map(|_| {
            let reconnects = Stats::get(&stats.reconnects);
            StreamFigures {
                sockets_target: sockets_target as u64,
                sockets_connected,
                updates_received: Stats::get(&stats.updates_received),
                e2e_latency_ms: Stats::percentiles(&stats.e2e),
                e2e_events: stats.e2e.lock().map_or(0, |l| l.count()),
                freshness_ms: Stats::percentiles(&stats.freshness),
                push_delay_ms: Stats::percentiles(&stats.push),
                reconnects,
                reconnect_gap_ms: (reconnects > 0).then(|| Stats::percentiles(&stats.gap)),
            }
        }),
        server_cpu_seconds: server_before.zip(server_after).map(|(b, a)| a.0 - b.0),
        server_rss_bytes: server_after.map(|s| s.1),
    };
    report.print();
    if let Some(path) = &common.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &common.plot {
        report::plot(path, &stats).with_context(|| format!("drawing {}", path.display()))?;
    }
    Ok(())
}

/// Deletes the dashboards a run created.
fn delete_dashboards(target: &str, token: Option<&str>, ids: &[String]) -> anyhow::Result<()> {
    if ids.is_empty() {
        return Ok(());
    }
    let mut client =
        Client::connect(target_addr(target)?)?.with_token_opt(token.map(str::to_string));
    for id in ids {
        let r = client
            .send(
                "DELETE",
                &format!("/dashboards/{id}"),
                "application/json",
                b"",
            )
            .with_context(|| format!("deleting dashboard {id} on {target}"))?;
        if r.status != 204 && r.status != 404 {
            bail!(
                "deleting dashboard {id} on {target}: HTTP {}: {}",
                r.status,
                String::from_utf8_lossy(&r.body)
            );
        }
    }
    Ok(())
}

/// Starts the cluster demo.
fn cluster_demo(args: DemoArgs) -> anyhow::Result<()> {
    use livedash_loadgen::cluster_demo::{Demo, run, sibling_livedash};
    if args.nodes == 0 {
        bail!("--nodes must be at least 1");
    }
    let livedash = match args.livedash {
        Some(path) => path,
        None => sibling_livedash()?,
    };
    run(&Demo {
        nodes: args.nodes,
        port: args.port,
        partitions: args.partitions.max(1),
        livedash,
    })
}

/// CPU seconds and resident bytes summed over `pids` (none without pids; a process that
/// is gone counts nothing).
fn sample_all(pids: &[u32]) -> Option<(f64, u64)> {
    (!pids.is_empty()).then(|| {
        pids.iter()
            .filter_map(|&p| sample_process(p))
            .fold((0.0, 0), |(c, r), (pc, pr)| (c + pc, r + pr))
    })
}

/// Redis first, then livedash with widgets on the same metrics (a sum over the same window
/// each), both at the fastest rate they take; prints both and the ratio.
fn seed_baseline(args: SeedArgs) -> anyhow::Result<()> {
    let SeedArgs {
        redis,
        target,
        duration,
        batch,
        metrics,
        tags,
        window,
        connections,
        json,
    } = args;
    let b = baseline::Baseline {
        redis,
        duration,
        batch,
        metrics,
        tags,
        window_ms: window as i64 * 1000,
    };
    let redis_rate = baseline::run_redis(&b)?;
    println!("original design on Redis: {redis_rate:.0} events/s (one pipelined connection)");
    // livedash: the same queries as widgets, then open-loop producers asked for far more
    // than the node can take, so the achieved rate is its ceiling.
    let per_dashboard = 200;
    let mut client = Client::connect(target_addr(&target)?)?;
    for (d, chunk) in (0..metrics)
        .collect::<Vec<_>>()
        .chunks(per_dashboard)
        .enumerate()
    {
        let widgets: Vec<serde_json::Value> = chunk
            .iter()
            .map(|&m| {
                serde_json::json!({"metric_name": ingest::metric_name(m), "aggregation": "sum",
                "window_seconds": window, "refresh_interval_seconds": 1})
            })
            .collect();
        let new = NewDashboard {
            name: format!("seed-baseline {d}"),
            layout: serde_json::Value::Null,
            widgets: serde_json::from_value(serde_json::Value::Array(widgets))?,
        };
        client
            .create_dashboard(&new)
            .with_context(|| format!("creating widgets on {target}"))?;
    }
    let stats = Arc::new(Stats::default());
    let stop = Arc::new(AtomicBool::new(false));
    let plan = Plan {
        targets: vec![target],
        rate: 100_000_000,
        batch,
        connections,
        metrics,
        tags,
        format: Format::Json,
        token: None,
    };
    let warmup = Duration::from_secs(1);
    let producer = ingest::run(
        plan,
        Arc::clone(&stats),
        Instant::now() + warmup + duration,
        Arc::clone(&stop),
    );
    std::thread::sleep(warmup);
    stats.measuring.store(true, Ordering::Relaxed);
    let started = Instant::now();
    std::thread::sleep(duration);
    stats.measuring.store(false, Ordering::Relaxed);
    let livedash_rate = Stats::get(&stats.events_acked) as f64 / started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let _ = producer.join();
    println!("livedash over HTTP:       {livedash_rate:.0} events/s ({connections} connections)");
    let ratio = livedash_rate / redis_rate.max(1.0);
    println!("livedash / original design: {ratio:.1}x");
    if let Some(path) = &json {
        let report = serde_json::json!({
            "scenario": "seed-baseline",
            "duration_s": duration.as_secs_f64(),
            "redis_events_per_s": redis_rate,
            "livedash_events_per_s": livedash_rate,
            "ratio": ratio,
        });
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("5"), Ok(Duration::from_secs(5)));
        assert!(parse_duration("5 parsecs").is_err());
    }
}
