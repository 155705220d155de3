//! A private Kafka-compatible broker for tests and benchmarks: tansu with sqlite storage in
//! a scratch directory, on a free loopback port, stopped (and its directory removed) on
//! drop, also when the test fails.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::scratch;

const INSTALL: &str = "cargo install tansu --version 0.6.0 --locked --features libsql";

#[derive(Debug)]
pub struct Broker {
    child: Option<Child>,
    pub port: u16,
    dir: PathBuf,
    binary: PathBuf,
}

/// The tansu binary: `$LIVEDASH_TANSU`, else on the PATH, else in cargo's bin directory.
fn tansu() -> PathBuf {
    if let Some(p) = std::env::var_os("LIVEDASH_TANSU") {
        return p.into();
    }
    let mut candidates: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|path| {
            std::env::split_paths(&path)
                .map(|d| d.join("tansu"))
                .collect()
        })
        .unwrap_or_default();
    if let Some(home) = std::env::var_os("CARGO_HOME") {
        candidates.push(PathBuf::from(home).join("bin/tansu"));
    }
    if let Some(home) = std::env::var_os("HOME") {
        candidates.push(PathBuf::from(home).join(".cargo/bin/tansu"));
    }
    candidates
        .into_iter()
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("the Kafka-compatible broker tansu is not installed: run `{INSTALL}` (or `bash .ci/run`, which does)")
        })
}

impl Broker {
    /// Starts a broker; panics with the install command when tansu is missing.
    pub fn start() -> Self {
        let mut broker = Self {
            child: None,
            port: scratch::free_port(),
            dir: scratch::dir("tansu"),
            binary: tansu(),
        };
        broker.run();
        broker
    }

    /// `HOST:PORT` for clients.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn url(&self) -> String {
        format!("tcp://127.0.0.1:{}", self.port)
    }

    #[allow(clippy::expect_used)]
    fn run(&mut self) {
        let url = self.url();
        let child = Command::new(&self.binary)
            .current_dir(&self.dir)
            .args(["broker", "--storage-engine", "sqlite://tansu.db"])
            .args(["--listener-url", &url, "--advertised-listener-url", &url])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start tansu");
        self.child = Some(child);
        scratch::wait_listening(self.port, Duration::from_secs(30), "tansu");
    }

    /// Creates a topic with `partitions` partitions.
    #[allow(clippy::expect_used)]
    pub fn create_topic(&self, name: &str, partitions: u32) {
        let status = Command::new(&self.binary)
            .args([
                "topic",
                "create",
                name,
                "--partitions",
                &partitions.to_string(),
            ])
            .args(["--broker", &self.url()])
            .stdout(Stdio::null())
            .status()
            .expect("tansu topic create");
        assert!(status.success(), "tansu topic create {name}: {status}");
    }

    /// Kills the broker; its data stays for `restart`.
    pub fn stop(&mut self) {
        scratch::kill(&mut self.child);
    }

    /// Starts the broker again on the same port and data.
    pub fn restart(&mut self) {
        self.stop();
        self.run();
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
