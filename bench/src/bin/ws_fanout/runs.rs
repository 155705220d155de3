//! One measured run: streams opened against a node or the peer, idle memory, then the push
//! delay of every update frame while values flow.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use livedash_bench::floor;
use livedash_loadgen::client::{Client, now_ms};
use livedash_loadgen::sockets::{self, OnText, Plan};
use livedash_loadgen::stats::Stats;
use serde_json::Value;

use crate::INTERVAL_MS;
use crate::probe::{cpu_ticks, feeder, rss_bytes, scrapes, sent_at};

/// What one run measured.
pub(crate) struct RunResult {
    pub(crate) connected: usize,
    /// Mean size of the update frames received, WebSocket header included.
    pub(crate) frame_bytes: usize,
    pub(crate) idle_rss_per_socket: f64,
    /// Resident memory per stream at the end of the measured time, updates flowing.
    pub(crate) loaded_rss_per_socket: f64,
    /// Server CPU seconds over the measured time.
    pub(crate) cpu_seconds: f64,
    pub(crate) delays: Vec<i64>,
}

/// The server a run measures.
pub(crate) struct Target<'a> {
    pub(crate) addr: std::net::SocketAddr,
    pub(crate) pid: u32,
    pub(crate) dashboards: &'a [String],
    /// Tick phase of each dashboard, in ms.
    pub(crate) phases: &'a [i64],
    /// A livedash node: fed with events, its `/stats` read and `/metrics` scraped.
    /// `None` for the peer, which makes up its own values.
    pub(crate) metrics: Option<&'a [String]>,
}

/// Opens `n` streams over the target's dashboards from `clients` threads, measures idle
/// memory, then feeds for `seconds`.
pub(crate) fn run(
    target: &Target,
    n: usize,
    clients: usize,
    seconds: u64,
) -> Result<RunResult, String> {
    let (addr, pid) = (target.addr, target.pid);
    let rss_before = rss_bytes(pid);
    let measuring = Arc::new(AtomicBool::new(false));
    let delays = Arc::new(Mutex::new(Vec::<i64>::new()));
    let text_bytes = Arc::new(AtomicU64::new(0));
    let phases: Vec<i64> = target.phases.to_vec();
    let on_text: OnText = {
        let (measuring, delays, text_bytes) = (
            Arc::clone(&measuring),
            Arc::clone(&delays),
            Arc::clone(&text_bytes),
        );
        Arc::new(move |index, text: &str| {
            if !measuring.load(Ordering::Relaxed) {
                return;
            }
            let received = now_ms();
            // Only `sent_at` is needed: find it instead of parsing the frame, so the
            // client spends its CPU reading sockets.
            if let Some(sent_at) = sent_at(text) {
                text_bytes.fetch_add(text.len() as u64, Ordering::Relaxed);
                let phase = phases
                    .get(index % phases.len().max(1))
                    .copied()
                    .unwrap_or(0);
                let tick = phase + (sent_at - phase).div_euclid(INTERVAL_MS) * INTERVAL_MS;
                delays
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(received - tick);
            }
        })
    };
    let stats = Arc::new(Stats::default());
    let stop = Arc::new(AtomicBool::new(false));
    let plan = Plan {
        addrs: vec![addr],
        dashboards: target.dashboards.to_vec(),
        sockets: n,
        threads: clients,
        token: None,
        stats: Arc::clone(&stats),
        on_text,
    };
    let handles = sockets::run(plan, Arc::clone(&stop)).map_err(|e| e.to_string())?;
    let deadline = Instant::now() + Duration::from_secs(120);
    while Stats::get(&stats.sockets_connected) + Stats::get(&stats.errors) < n as u64
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    let connected = Stats::get(&stats.sockets_connected) as usize;
    // Idle: no updates are flowing yet (the peer's flow from the start).
    std::thread::sleep(Duration::from_secs(2));
    let idle_rss = rss_bytes(pid);
    let feeding_done = Arc::new(AtomicBool::new(false));
    let feed = target
        .metrics
        .map(|m| feeder(addr, m.to_vec(), Arc::clone(&feeding_done)));
    std::thread::sleep(Duration::from_secs(2));
    let node_stats = || {
        target.metrics?;
        let mut c = Client::connect(addr).ok()?;
        let v: Value = c
            .send("GET", "/stats", "application/json", b"")
            .ok()?
            .decode()
            .ok()?;
        let sum = |k: &str| {
            v["shards"].as_array().map_or(0, |a| {
                a.iter().map(|s| s[k].as_u64().unwrap_or(0)).sum::<u64>()
            })
        };
        let max = v["shards"].as_array().map_or(0, |a| {
            a.iter()
                .map(|s| s["write_lag_ms_max"].as_u64().unwrap_or(0))
                .max()
                .unwrap_or(0)
        });
        Some((
            sum("streams"),
            sum("frames_queued"),
            sum("frames_written"),
            sum("write_lag_ms_sum"),
            max,
        ))
    };
    let before = node_stats();
    let cpu_before = (cpu_ticks(&pid.to_string()), cpu_ticks("self"));
    measuring.store(true, Ordering::Relaxed);
    std::thread::sleep(Duration::from_secs(seconds));
    measuring.store(false, Ordering::Relaxed);
    let cpu_after = (cpu_ticks(&pid.to_string()), cpu_ticks("self"));
    let loaded_rss = rss_bytes(pid);
    let after = node_stats();
    if target.metrics.is_some() {
        scrapes(addr, 20);
    }
    stop.store(true, Ordering::Relaxed);
    feeding_done.store(true, Ordering::Relaxed);
    if let Some(feed) = feed {
        let _ = feed.join();
    }
    for h in handles {
        let _ = h.join();
    }
    let mut delays = std::mem::take(&mut *delays.lock().unwrap_or_else(PoisonError::into_inner));
    delays.sort_unstable();
    if let (Some(b), Some(a)) = (before, after) {
        println!(
            "  node: {} streams, {:.0} frames/s queued, {:.0} frames/s written, framing to socket write {:.1} ms on average, {} ms at most",
            a.0,
            (a.1 - b.1) as f64 / seconds as f64,
            (a.2 - b.2) as f64 / seconds as f64,
            (a.3 - b.3) as f64 / (a.2 - b.2).max(1) as f64,
            a.4,
        );
    }
    let cpu_seconds = (cpu_after.0 - cpu_before.0) as f64 / 100.0;
    println!(
        "  cpu: server {:.0}% of one core, client {:.0}%",
        cpu_seconds * 100.0 / seconds as f64,
        (cpu_after.1 - cpu_before.1) as f64 / seconds as f64
    );
    let payload = text_bytes.load(Ordering::Relaxed) as usize / delays.len().max(1);
    Ok(RunResult {
        connected,
        frame_bytes: payload + floor::header_len(payload),
        idle_rss_per_socket: idle_rss.saturating_sub(rss_before) as f64 / connected.max(1) as f64,
        loaded_rss_per_socket: loaded_rss.saturating_sub(rss_before) as f64
            / connected.max(1) as f64,
        cpu_seconds,
        delays,
    })
}
