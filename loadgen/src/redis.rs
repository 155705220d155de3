//! A private Redis for tests and benchmarks: `redis-server` on a free loopback port, with
//! no persistence, in a scratch directory, stopped on drop (also when the test fails).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::scratch;

const INSTALL: &str = "apt-get install -y redis-server";

#[derive(Debug)]
pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    dir: PathBuf,
    binary: PathBuf,
}

/// `redis-server` on the PATH, else Debian's.
fn binary() -> PathBuf {
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|d| d.join("redis-server"))
            .find(|p| p.is_file())
    });
    on_path
        .or_else(|| Some(PathBuf::from("/usr/bin/redis-server")).filter(|p| p.is_file()))
        .unwrap_or_else(|| {
            panic!("redis-server is not installed: run `{INSTALL}` (or `bash .ci/run`, which does)")
        })
}

impl RedisServer {
    /// Starts a server; panics with the install command when redis-server is missing.
    pub fn start() -> Self {
        let mut server = Self {
            child: None,
            port: scratch::free_port(),
            dir: scratch::dir("redis"),
            binary: binary(),
        };
        server.run();
        server
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    #[allow(clippy::expect_used)]
    fn run(&mut self) {
        let child = Command::new(&self.binary)
            .current_dir(&self.dir)
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        scratch::wait_listening(self.port, Duration::from_secs(10), "redis-server");
    }

    /// Kills the server. It keeps nothing: a restart starts empty.
    pub fn stop(&mut self) {
        scratch::kill(&mut self.child);
    }

    /// Starts the server again on the same port.
    pub fn restart(&mut self) {
        self.stop();
        self.run();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
