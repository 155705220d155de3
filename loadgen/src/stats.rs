//! What a run measures: counters, latency histograms (HDR, microsecond resolution) and a
//! per-second series for plots. Shared by the producer threads and the socket threads.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Highest latency recorded, in microseconds (one hour); larger values are clamped.
const MAX_US: u64 = 3_600_000_000;

/// A latency distribution and its per-second series.
#[derive(Debug)]
pub struct Latency {
    total: Histogram<u64>,
    per_second: BTreeMap<u64, Histogram<u64>>,
}

#[allow(clippy::expect_used)]
fn histogram() -> Histogram<u64> {
    // 3 significant digits: 0.1% resolution. The bounds are valid constants.
    Histogram::new_with_bounds(1, MAX_US, 3).expect("valid histogram bounds")
}

impl Default for Latency {
    fn default() -> Self {
        Self {
            total: histogram(),
            per_second: BTreeMap::new(),
        }
    }
}

impl Latency {
    fn record(&mut self, second: u64, us: u64, n: u64) {
        let us = us.clamp(1, MAX_US);
        let _ = self.total.record_n(us, n);
        let _ = self
            .per_second
            .entry(second)
            .or_insert_with(histogram)
            .record_n(us, n);
    }

    /// Values recorded.
    pub fn count(&self) -> u64 {
        self.total.len()
    }
}

/// Percentiles in milliseconds, as the JSON report spells them.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl Percentiles {
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Self {
            p50: ms(h.value_at_quantile(0.50)),
            p90: ms(h.value_at_quantile(0.90)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
        }
    }
}

/// Everything a run counts. Only what happens while `measuring` is set is counted.
#[derive(Debug)]
pub struct Stats {
    started: Instant,
    pub measuring: AtomicBool,
    pub events_sent: AtomicU64,
    pub events_acked: AtomicU64,
    /// Events acknowledged over the whole run, warm-up included.
    pub events_acked_total: AtomicU64,
    pub events_rejected: AtomicU64,
    pub errors: AtomicU64,
    pub sockets_connected: AtomicU64,
    pub updates_received: AtomicU64,
    /// Streams that closed, reconnected, and got updates again.
    pub reconnects: AtomicU64,
    pub ingest: Mutex<Latency>,
    /// Per event: event time to the first frame that shows it (see `visible`).
    pub e2e: Mutex<Latency>,
    /// Per widget in each update frame: receive time minus its `latest_event_time`.
    pub freshness: Mutex<Latency>,
    pub push: Mutex<Latency>,
    /// Per reconnected stream: its last update before the close to its first after.
    pub gap: Mutex<Latency>,
    /// Set when streams run: which events the followed streams have shown.
    pub visible: std::sync::OnceLock<crate::visible::Visible>,
    /// Why the run cannot go on (the node refused the events, a stream, a dashboard).
    fatal: Mutex<Option<String>>,
    /// Some request or stream got through to a node.
    pub reached: AtomicBool,
}

impl Default for Stats {
    fn default() -> Self {
        Self {
            started: Instant::now(),
            measuring: AtomicBool::new(false),
            events_sent: AtomicU64::new(0),
            events_acked: AtomicU64::new(0),
            events_acked_total: AtomicU64::new(0),
            events_rejected: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            sockets_connected: AtomicU64::new(0),
            updates_received: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            ingest: Mutex::new(Latency::default()),
            e2e: Mutex::new(Latency::default()),
            freshness: Mutex::new(Latency::default()),
            push: Mutex::new(Latency::default()),
            gap: Mutex::new(Latency::default()),
            visible: std::sync::OnceLock::new(),
            fatal: Mutex::new(None),
            reached: AtomicBool::new(false),
        }
    }
}

impl Stats {
    pub fn measuring(&self) -> bool {
        self.measuring.load(Ordering::Relaxed)
    }

    fn second(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    pub fn record(&self, which: &Mutex<Latency>, us: u64) {
        self.record_n(which, us, 1);
    }

    /// Records `n` values of `us` microseconds.
    pub fn record_n(&self, which: &Mutex<Latency>, us: u64, n: u64) {
        let second = self.second();
        if let Ok(mut l) = which.lock() {
            l.record(second, us, n);
        }
    }

    /// Notes events sent with event time `t` (one per metric number in `metrics`) for
    /// the per-event latency, when streams follow them.
    pub fn sent(&self, t: i64, metrics: &[usize]) {
        if let Some(v) = self.visible.get() {
            v.sent(t, metrics);
        }
    }

    /// Takes back what `sent` noted for events the node did not take.
    pub fn unsent(&self, t: i64, metrics: &[usize]) {
        if let Some(v) = self.visible.get() {
            v.unsent(t, metrics);
        }
    }

    /// Ends the run with `reason` (the first one given wins).
    pub fn fail(&self, reason: String) {
        if let Ok(mut fatal) = self.fatal.lock()
            && fatal.is_none()
        {
            *fatal = Some(reason);
        }
    }

    /// Why the run must end, if it must.
    pub fn fatal(&self) -> Option<String> {
        self.fatal.lock().ok().and_then(|f| f.clone())
    }

    pub fn count(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// Percentiles of one distribution so far.
    pub fn percentiles(which: &Mutex<Latency>) -> Percentiles {
        which
            .lock()
            .map(|l| Percentiles::of(&l.total))
            .unwrap_or_default()
    }

    /// `(second, p99 ms)` of one distribution, for plots.
    pub fn p99_series(which: &Mutex<Latency>) -> Vec<(u64, f64)> {
        which
            .lock()
            .map(|l| {
                l.per_second
                    .iter()
                    .map(|(s, h)| (*s, h.value_at_quantile(0.99) as f64 / 1000.0))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// `(lower ms, count)` buckets of one distribution, for a histogram plot.
    pub fn buckets(which: &Mutex<Latency>, n: usize) -> Vec<(f64, u64)> {
        let Ok(l) = which.lock() else {
            return Vec::new();
        };
        if l.total.is_empty() {
            return Vec::new();
        }
        let top = l.total.value_at_quantile(0.999).max(1);
        let width = top.div_ceil(n as u64).max(1);
        let mut counts = vec![0u64; n];
        for v in l.total.iter_recorded() {
            let at = (l.total.highest_equivalent(v.value_iterated_to()) / width) as usize;
            counts[at.min(n - 1)] += v.count_at_value();
        }
        counts
            .into_iter()
            .enumerate()
            .map(|(i, c)| ((i as u64 * width) as f64 / 1000.0, c))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_ordered_and_in_ms() {
        let stats = Stats::default();
        for us in 1..=10_000 {
            stats.record(&stats.e2e, us * 100);
        }
        let p = Stats::percentiles(&stats.e2e);
        assert!(p.p50 <= p.p90 && p.p90 <= p.p99 && p.p99 <= p.p999 && p.p999 <= p.max);
        assert!((p.p50 - 500.0).abs() < 1.0, "{p:?}");
        assert!((p.max - 1000.0).abs() < 1.0, "{p:?}");
        let buckets = Stats::buckets(&stats.e2e, 10);
        assert_eq!(buckets.iter().map(|b| b.1).sum::<u64>(), 10_000);
    }
}
