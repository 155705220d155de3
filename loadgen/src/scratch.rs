//! What the private servers of tests and benchmarks (`broker`, `redis`) share: a scratch
//! directory, a free loopback port, waiting until the server listens, and stopping it.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Child;
use std::time::{Duration, Instant};

/// A fresh, empty directory under the temporary one, unique to this process and call.
#[allow(clippy::expect_used)]
pub(crate) fn dir(name: &str) -> PathBuf {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("livedash-{name}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch directory");
    dir
}

#[allow(clippy::expect_used)]
pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Waits until something accepts on 127.0.0.1:`port`; panics after `patience`.
pub(crate) fn wait_listening(port: u16, patience: Duration, what: &str) {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let give_up = Instant::now() + patience;
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(Instant::now() < give_up, "{what} did not listen on {addr}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Kills the server, if it runs, and reaps it.
pub(crate) fn kill(child: &mut Option<Child>) {
    if let Some(mut child) = child.take() {
        let _ = child.kill();
        let _ = child.wait();
    }
}
