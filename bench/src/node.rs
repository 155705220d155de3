//! Running a release `livedash` node for a benchmark, and driving it with loadgen's
//! client: widgets to compute, closed-loop HTTP ingest clients.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use livedash_engine::NewDashboard;
use livedash_loadgen::client::Client;
use serde_json::Value;

/// A node started by a benchmark; killed (and its data removed) on drop.
#[derive(Debug)]
pub struct Node(Child, std::path::PathBuf);

impl Node {
    /// The node's process id.
    pub fn pid(&self) -> u32 {
        self.0.id()
    }

    /// Kills the node with SIGKILL and keeps its data directory.
    pub fn kill_keeping_data(mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        self.1 = std::path::PathBuf::new();
    }

    /// Stops the node with SIGTERM (its store flushed) and keeps its data directory.
    pub fn stop_keeping_data(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
        self.1 = std::path::PathBuf::new();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        let _ = std::fs::remove_dir_all(&self.1);
    }
}

/// Starts `target/release/livedash` (next to this benchmark's executable) on a free
/// port with `args`.
pub fn start_node(args: &[&str]) -> Result<(Node, SocketAddr), String> {
    let dir = std::env::temp_dir().join(format!("livedash-http-ingest-{}", std::process::id()));
    start_node_in(&dir, args)
}

/// Starts the node on data directory `dir` (removed when the node is dropped).
pub fn start_node_in(dir: &std::path::Path, args: &[&str]) -> Result<(Node, SocketAddr), String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let bin = exe.with_file_name("livedash");
    if !bin.exists() {
        return Err(format!(
            "{} not found; build it first with `cargo build --release --bin livedash`",
            bin.display()
        ));
    }
    start_binary(&bin, dir, args)
}

/// Starts the `livedash` binary `bin` on data directory `dir` (removed when the node is
/// dropped), on a free port with `args`.
pub fn start_binary(
    bin: &std::path::Path,
    dir: &std::path::Path,
    args: &[&str],
) -> Result<(Node, SocketAddr), String> {
    let mut child = Command::new(bin)
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .args(args)
        .env(
            "LIVEDASH_LOG",
            std::env::var("BENCH_NODE_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("starting {}: {e}", bin.display()))?;
    let mut line = String::new();
    if let Some(out) = child.stdout.take() {
        let _ = BufReader::new(out).read_line(&mut line);
    }
    let addr = livedash_loadgen::client::banner_addr(&line)
        .ok_or_else(|| format!("no address in {line:?}"))?;
    Ok((Node(child, dir.to_path_buf()), addr))
}

/// The release `livedash` and `loadgen` binaries beside the running benchmark.
pub fn node_and_loadgen() -> Result<(std::path::PathBuf, std::path::PathBuf), String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let (node, loadgen) = (
        exe.with_file_name("livedash"),
        exe.with_file_name("loadgen"),
    );
    for bin in [&node, &loadgen] {
        if !bin.exists() {
            return Err(format!(
                "{} not found; build it with `cargo build --release --bin livedash --bin loadgen`",
                bin.display()
            ));
        }
    }
    Ok((node, loadgen))
}

/// Creates dashboards of at most 200 widgets each from `specs` (widget specs as JSON).
pub fn create_widgets(admin: &mut Client, specs: &[Value]) -> Result<(), String> {
    for (i, chunk) in specs.chunks(200).enumerate() {
        let new = NewDashboard {
            name: format!("bench {i}"),
            layout: Value::Null,
            widgets: serde_json::from_value(Value::Array(chunk.to_vec()))
                .map_err(|e| e.to_string())?,
        };
        admin
            .create_dashboard(&new)
            .map_err(|e| format!("creating a dashboard: {e}"))?;
    }
    Ok(())
}

/// Closed-loop HTTP clients: each keeps one keep-alive connection and POSTs the JSON
/// `bodies` in turn until stopped, counting accepted events and requests while measuring.
#[derive(Debug)]
pub struct IngestClients {
    measuring: Arc<AtomicBool>,
    done: Arc<AtomicBool>,
    events: Arc<AtomicU64>,
    requests: Arc<AtomicU64>,
    threads: Vec<std::thread::JoinHandle<Result<(), String>>>,
}

impl IngestClients {
    pub fn start(addr: SocketAddr, bodies: Arc<Vec<Vec<u8>>>, connections: usize) -> Self {
        let measuring = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicBool::new(false));
        let events = Arc::new(AtomicU64::new(0));
        let requests = Arc::new(AtomicU64::new(0));
        let threads = (0..connections)
            .map(|t| {
                let (bodies, measuring, done, events, requests) = (
                    Arc::clone(&bodies),
                    Arc::clone(&measuring),
                    Arc::clone(&done),
                    Arc::clone(&events),
                    Arc::clone(&requests),
                );
                std::thread::spawn(move || -> Result<(), String> {
                    let mut conn = Client::connect(addr).map_err(|e| e.to_string())?;
                    let mut i = t;
                    while !done.load(Ordering::Relaxed) {
                        let reply = conn
                            .ingest_body("application/json", "", &bodies[i % bodies.len()])
                            .map_err(|e| format!("ingest: {e}"))?;
                        i += 1;
                        if measuring.load(Ordering::Relaxed) {
                            events.fetch_add(reply.accepted as u64, Ordering::Relaxed);
                            requests.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        Self {
            measuring,
            done,
            events,
            requests,
            threads,
        }
    }

    /// Starts or stops counting.
    pub fn measure(&self, on: bool) {
        self.measuring.store(on, Ordering::Relaxed);
    }

    /// Events accepted and requests answered while measuring.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.events.load(Ordering::Relaxed),
            self.requests.load(Ordering::Relaxed),
        )
    }

    /// Stops the clients; the first error any of them met.
    pub fn stop(self) -> Result<(), String> {
        self.done.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join()
                .map_err(|_| "a client thread panicked".to_string())??;
        }
        Ok(())
    }
}
