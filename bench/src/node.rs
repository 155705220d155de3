//! Running a release `livedash` node for a benchmark (driven with loadgen's client).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

/// A node started by a benchmark; killed (and its data removed) on drop.
#[derive(Debug)]
pub struct Node(Child, std::path::PathBuf);

impl Node {
    /// The node's process id.
    pub fn pid(&self) -> u32 {
        self.0.id()
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
    let mut child = Command::new(&bin)
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
