//! Black-box harness: runs the real `livedash` binary on 127.0.0.1:0 with a private data
//! directory, and talks to it with loadgen's API client.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use livedash_engine::NewDashboard;
use serde_json::Value;
use uuid::Uuid;

pub mod cluster;

pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    keep_dir: bool,
}

static NEXT_DIR: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

pub fn fresh_dir() -> PathBuf {
    let n = NEXT_DIR.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("livedash-net-test-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

impl Server {
    /// Starts a node with `args` (plus a port-0 listener and a fresh data directory).
    pub fn start(args: &[&str]) -> Self {
        Self::start_in(fresh_dir(), args)
    }

    /// Starts a node on an existing data directory.
    pub fn start_in(data_dir: PathBuf, args: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_livedash"))
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&data_dir)
            .args(args)
            // LIVEDASH_TEST_LOG sets the nodes' log filter when a test needs a closer look.
            .env(
                "LIVEDASH_LOG",
                std::env::var("LIVEDASH_TEST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .env_remove("LIVEDASH_TEST_LOG")
            // No self-dashboard unless a test asks for it (`--self-dashboard true`): tests
            // count the dashboards they make.
            .env("LIVEDASH_SELF_DASHBOARD", "false")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn livedash");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read banner");
        let addr = livedash_loadgen::client::banner_addr(&line)
            .unwrap_or_else(|| panic!("no address in banner {line:?}"));
        Self {
            child,
            addr,
            data_dir,
            keep_dir: false,
        }
    }

    pub fn client(&self) -> Client {
        Client::connect(self.addr)
    }

    /// The node's peak resident memory so far (`VmHWM`), in bytes.
    pub fn peak_rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("read /proc/<pid>/status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .expect("VmHWM in /proc/<pid>/status")
            * 1024
    }

    /// SIGKILL, keeping the data directory for a restart.
    pub fn kill9(mut self) -> PathBuf {
        self.keep_dir = true;
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.data_dir.clone()
    }

    /// SIGTERM and wait; returns the exit status and keeps the data directory.
    pub fn terminate(mut self) -> (std::process::ExitStatus, PathBuf) {
        self.keep_dir = true;
        let pid = self.child.id().to_string();
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill");
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return (status, self.data_dir.clone());
            }
            assert!(
                std::time::Instant::now() < deadline,
                "node did not stop after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !self.keep_dir {
            let _ = std::fs::remove_dir_all(&self.data_dir);
        }
    }
}

/// A response (loadgen's), read as JSON by the tests.
pub use livedash_loadgen::client::Reply;
pub use livedash_loadgen::now_ms;

pub trait ReplyExt {
    fn json(&self) -> Value;
    fn error(&self) -> String;
}

impl ReplyExt for Reply {
    fn json(&self) -> Value {
        self.decode().unwrap_or_else(|e| panic!("not JSON: {e}"))
    }

    fn error(&self) -> String {
        self.reason()
    }
}

/// One keep-alive connection: loadgen's typed client, with helpers that panic on I/O
/// errors (a test failure).
pub struct Client(pub livedash_loadgen::client::Client);

impl std::ops::Deref for Client {
    type Target = livedash_loadgen::client::Client;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for Client {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Self {
        let inner = livedash_loadgen::client::Client::connect(addr).expect("connect");
        inner
            .stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        Self(inner)
    }

    pub fn with_token(self, token: &str) -> Self {
        Self(self.0.with_token(token))
    }

    /// Sends one request with a body and reads the response.
    pub fn send(&mut self, method: &str, path: &str, content_type: &str, body: &[u8]) -> Reply {
        self.0
            .send(method, path, content_type, body)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    pub fn get(&mut self, path: &str) -> Reply {
        self.send("GET", path, "application/json", b"")
    }

    pub fn delete(&mut self, path: &str) -> Reply {
        self.send("DELETE", path, "application/json", b"")
    }

    pub fn json(&mut self, method: &str, path: &str, body: &Value) -> Reply {
        self.send(
            method,
            path,
            "application/json",
            body.to_string().as_bytes(),
        )
    }

    /// A POST with extra header lines (each ending in CRLF), as an InfluxDB client or a
    /// browser sends it.
    pub fn post_with_headers(&mut self, path: &str, headers: &str, body: &[u8]) -> Reply {
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: localhost\r\n{headers}Content-Length: {}\r\n\r\n",
            body.len()
        );
        self.0.stream.write_all(head.as_bytes()).unwrap();
        self.0.stream.write_all(body).unwrap();
        self.read_reply()
    }

    /// Reads one response.
    pub fn read_reply(&mut self) -> Reply {
        self.0.read_reply().expect("read a response")
    }

    /// True when the server has closed the connection (reads EOF).
    pub fn closed(&mut self) -> bool {
        let mut byte = [0u8; 1];
        matches!(self.0.stream.read(&mut byte), Ok(0))
    }

    /// Which shard serves this connection.
    pub fn shard(&mut self) -> u64 {
        self.get("/healthz").json()["shard"].as_u64().unwrap()
    }
}

/// Creates a dashboard from `widgets` (specs) with the typed client and returns it.
pub fn create_dashboard(c: &mut Client, name: &str, widgets: Value) -> Value {
    let new = NewDashboard {
        name: name.to_string(),
        layout: Value::Null,
        widgets: serde_json::from_value(widgets).expect("widget specs"),
    };
    let dashboard = c.create_dashboard(&new).expect("create a dashboard");
    serde_json::to_value(dashboard).unwrap()
}

/// The snapshot of widget number `widget` of `dashboard`, with the typed client.
pub fn snapshot(c: &mut Client, dashboard: &Value, widget: usize) -> Value {
    let id = |v: &Value| v.as_str().unwrap().parse::<Uuid>().unwrap();
    let reading =
        c.0.snapshot(
            id(&dashboard["dashboard_id"]),
            id(&dashboard["widgets"][widget]["widget_id"]),
        )
        .expect("snapshot");
    serde_json::to_value(reading).unwrap()
}
