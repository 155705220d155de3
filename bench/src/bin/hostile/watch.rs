//! What the node does while a hostile input runs: `/healthz` on every shard, asked every
//! 20 ms over one keep-alive connection per shard, and the node's peak resident memory
//! (`VmHWM`, reset before each input).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use livedash_loadgen::client::Client;

/// Health answers per shard: latencies in microseconds, and failures.
#[derive(Debug, Default, Clone)]
pub struct Health {
    pub latencies: Vec<Vec<u64>>,
    pub failures: u64,
}

impl Health {
    /// The largest latency of each shard, in ms, and how many answers it gave.
    pub fn worst_ms(&self) -> Vec<(f64, usize)> {
        self.latencies
            .iter()
            .map(|l| {
                let max = l.iter().copied().max().unwrap_or(0);
                (max as f64 / 1000.0, l.len())
            })
            .collect()
    }
}

/// Asks every shard for `/healthz` every 20 ms until dropped.
pub struct Prober {
    stop: Arc<AtomicBool>,
    health: Arc<Mutex<Health>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// One keep-alive connection to each shard (connections land on shards by the kernel's
/// hash, so new ones are opened until every shard has one).
fn connect_all(addr: SocketAddr, shards: usize) -> Result<Vec<Client>, String> {
    let mut by_shard: Vec<Option<Client>> = (0..shards).map(|_| None).collect();
    for _ in 0..1000 {
        if by_shard.iter().all(Option::is_some) {
            break;
        }
        let mut c = Client::connect(addr).map_err(|e| e.to_string())?;
        let reply = c.send("GET", "/healthz", "application/json", b"");
        let shard = reply
            .ok()
            .and_then(|r| serde_json::from_slice::<serde_json::Value>(&r.body).ok())
            .and_then(|v| v["shard"].as_u64())
            .map(|s| s as usize);
        if let Some(s) = shard.filter(|s| *s < shards)
            && by_shard[s].is_none()
        {
            by_shard[s] = Some(c);
        }
    }
    by_shard
        .into_iter()
        .map(|c| c.ok_or_else(|| "no connection reached every shard".to_string()))
        .collect()
}

impl Prober {
    pub fn start(addr: SocketAddr, shards: usize) -> Result<Self, String> {
        let mut clients = connect_all(addr, shards)?;
        let stop = Arc::new(AtomicBool::new(false));
        let health = Arc::new(Mutex::new(Health {
            latencies: vec![Vec::new(); shards],
            failures: 0,
        }));
        let (s, h) = (Arc::clone(&stop), Arc::clone(&health));
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                for (shard, c) in clients.iter_mut().enumerate() {
                    let t = Instant::now();
                    let ok = c
                        .send("GET", "/healthz", "application/json", b"")
                        .is_ok_and(|r| r.status == 200);
                    let took = t.elapsed().as_micros() as u64;
                    let mut health = h.lock().unwrap_or_else(|p| p.into_inner());
                    if ok {
                        health.latencies[shard].push(took);
                    } else {
                        health.failures += 1;
                        // The connection may have closed: the next attempt reconnects,
                        // possibly to another shard, which still shows the node's health.
                        let _ = c.reconnect();
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        Ok(Self {
            stop,
            health,
            thread: Some(thread),
        })
    }

    /// What was measured since the last call, and starts afresh.
    pub fn take(&self) -> Health {
        let mut health = self.health.lock().unwrap_or_else(|p| p.into_inner());
        let shards = health.latencies.len();
        std::mem::replace(
            &mut *health,
            Health {
                latencies: vec![Vec::new(); shards],
                failures: 0,
            },
        )
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A field of `/proc/<pid>/status`, in bytes.
fn status_bytes(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
        .unwrap_or(0)
        * 1024
}

/// The node's resident memory now.
pub fn rss(pid: u32) -> u64 {
    status_bytes(pid, "VmRSS:")
}

/// The node's peak resident memory since the last reset.
pub fn peak(pid: u32) -> u64 {
    status_bytes(pid, "VmHWM:")
}

/// Resets the peak to the memory resident now (`clear_refs` 5); false where the kernel
/// does not allow it, and the peak is then the process's whole life's.
pub fn reset_peak(pid: u32) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}
