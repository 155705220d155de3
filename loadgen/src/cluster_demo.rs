//! `loadgen cluster-demo`: a cluster on one machine to watch a failover in the browser. A
//! private tansu broker and Redis, then N livedash nodes on consecutive ports (the first
//! one runs the demo dashboard and its synthetic events), all stopped on Ctrl-C.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};

use crate::broker::Broker;
use crate::redis::RedisServer;
use crate::scratch;

/// What the demo starts.
#[derive(Debug, Clone)]
pub struct Demo {
    pub nodes: usize,
    /// The first node's port; the others follow.
    pub port: u16,
    pub partitions: u32,
    /// The `livedash` binary.
    pub livedash: PathBuf,
}

/// A node of the demo, killed when dropped.
struct Node {
    child: Child,
    url: String,
    dir: PathBuf,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The `livedash` binary next to this one (`cargo build --release` puts both there).
pub fn sibling_livedash() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let bin = exe.with_file_name("livedash");
    if !bin.is_file() {
        bail!(
            "{} not found: build it with `cargo build --release --bin livedash`, or pass --livedash PATH",
            bin.display()
        );
    }
    Ok(bin)
}

fn start_node(demo: &Demo, i: usize, brokers: &str, redis: &str) -> anyhow::Result<Node> {
    let port = demo.port + i as u16;
    let dir = scratch::dir(&format!("demo-node-{i}"));
    let url = format!("http://127.0.0.1:{port}");
    let mut cmd = Command::new(&demo.livedash);
    cmd.args(["--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(&dir)
        .args([
            "--shards",
            "1",
            "--kafka-brokers",
            brokers,
            "--redis",
            redis,
        ])
        .args(["--advertise-url", &url])
        .env(
            "LIVEDASH_LOG",
            std::env::var("LIVEDASH_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(Stdio::piped());
    if i == 0 {
        cmd.arg("--demo");
    }
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting {}", demo.livedash.display()))?;
    let mut banner = String::new();
    if let Some(out) = child.stdout.take() {
        BufReader::new(out).read_line(&mut banner)?;
    }
    if banner.is_empty() {
        let _ = child.kill();
        return Err(anyhow!(
            "node {} did not start (port {port} in use?)",
            i + 1
        ));
    }
    Ok(Node { child, url, dir })
}

/// Runs the demo until Ctrl-C (or SIGTERM).
pub fn run(demo: &Demo) -> anyhow::Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&stop))?;
    }
    println!("starting a tansu broker and a redis-server on free loopback ports...");
    let broker = Broker::start();
    broker.create_topic("livedash.events", demo.partitions);
    let redis = RedisServer::start();
    let mut nodes = Vec::with_capacity(demo.nodes);
    for i in 0..demo.nodes {
        nodes.push(start_node(demo, i, &broker.addr(), &redis.url())?);
    }
    println!(
        "\n{} livedash nodes share {} Kafka partitions (broker {}, redis {}):",
        demo.nodes,
        demo.partitions,
        broker.addr(),
        redis.url()
    );
    for n in &nodes {
        println!("  {}   pid {}", n.url, n.child.id());
    }
    println!(
        "\nOpen {}/ and the \"livedash demo\" dashboard. Kill the node the page streams \
         from (kill -9 PID): the page reconnects to another node within seconds, and \
         once the group's session timeout (10 s) passes, the dead node's partitions \
         move and every widget is exact again. GET /stats shows each node's partitions \
         (\"cluster\" section). Ctrl-C stops everything.",
        nodes[0].url
    );
    let mut reported = vec![false; nodes.len()];
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(200));
        for (i, n) in nodes.iter_mut().enumerate() {
            if !reported[i]
                && let Ok(Some(status)) = n.child.try_wait()
            {
                reported[i] = true;
                println!("node {} ({}) exited: {status}", i + 1, n.url);
            }
        }
    }
    println!("stopping");
    drop(nodes);
    drop(redis);
    drop(broker);
    Ok(())
}
