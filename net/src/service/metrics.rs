//! What one shard measures for `/metrics` beyond the counters `/stats` shows: latency
//! histograms (tick, push delay, end to end), ingest requests and bytes by format, stream
//! bytes, conflations and closes. Plain cells, owned by the shard: nothing is shared or
//! locked on a hot path; a scrape asks every shard for a copy and merges them.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;

/// Bucket bounds, in seconds, of the push-delay and end-to-end histograms.
pub const LATENCY_BOUNDS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0,
    30.0, 60.0,
];
/// Bucket bounds, in seconds, of the tick-duration histogram.
pub const TICK_BOUNDS: &[f64] = &[
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 1.0,
];

/// The formats ingest requests come in, as the `format` label names them.
pub const FORMATS: [&str; 3] = ["json", "line", "influx"];

/// An ingest request's format: an index into `FORMATS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `POST /ingest`, JSON.
    Json = 0,
    /// `POST /ingest`, line protocol.
    Line = 1,
    /// The InfluxDB write endpoints.
    Influx = 2,
}

/// A histogram kept by one shard.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// One count per bound, then the overflow (`+Inf`) bucket; not cumulative.
    counts: Box<[Cell<u64>]>,
    sum: Cell<f64>,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: (0..=bounds.len()).map(|_| Cell::new(0)).collect(),
            sum: Cell::new(0.0),
        }
    }

    /// Counts one observation of `seconds` (negative ones, from clocks apart, count as 0).
    pub fn observe(&self, seconds: f64) {
        let seconds = seconds.max(0.0);
        let i = self.bounds.partition_point(|b| *b < seconds);
        let c = &self.counts[i];
        c.set(c.get() + 1);
        self.sum.set(self.sum.get() + seconds);
    }

    pub fn snapshot(&self) -> Buckets {
        Buckets {
            bounds: self.bounds,
            counts: self.counts.iter().map(Cell::get).collect(),
            sum: self.sum.get(),
        }
    }
}

/// A copy of a histogram, mergeable across shards and comparable across time.
#[derive(Debug, Clone, PartialEq)]
pub struct Buckets {
    pub bounds: &'static [f64],
    /// One count per bound, then the overflow bucket; not cumulative.
    pub counts: Vec<u64>,
    pub sum: f64,
}

impl Buckets {
    pub fn empty(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: vec![0; bounds.len() + 1],
            sum: 0.0,
        }
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Adds `other` (of the same bounds) to these counts.
    pub fn merge(&mut self, other: &Buckets) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.sum += other.sum;
    }

    /// What was observed after `earlier` (a copy of the same histogram taken before).
    pub fn since(&self, earlier: &Buckets) -> Buckets {
        Buckets {
            bounds: self.bounds,
            counts: self
                .counts
                .iter()
                .zip(&earlier.counts)
                .map(|(a, b)| a.saturating_sub(*b))
                .collect(),
            sum: (self.sum - earlier.sum).max(0.0),
        }
    }

    /// The `q` quantile (0 to 1), interpolated linearly within its bucket as Prometheus'
    /// `histogram_quantile` does; `None` without observations. Past the last bound, the
    /// last bound is the answer (a lower bound of the truth).
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * total as f64;
        let mut below = 0u64;
        for (i, &n) in self.counts.iter().enumerate() {
            if n > 0 && (below + n) as f64 >= rank {
                let Some(&upper) = self.bounds.get(i) else {
                    return self.bounds.last().copied();
                };
                let lower = if i == 0 { 0.0 } else { self.bounds[i - 1] };
                let within = (rank - below as f64) / n as f64;
                return Some(lower + (upper - lower) * within.clamp(0.0, 1.0));
            }
            below += n;
        }
        self.bounds.last().copied()
    }

    /// `(upper bound, cumulative count)` per bound, as the exposition lists them (`+Inf`
    /// is the total count).
    pub fn cumulative(&self) -> impl Iterator<Item = (f64, u64)> + '_ {
        let mut acc = 0;
        self.bounds.iter().zip(&self.counts).map(move |(&b, &n)| {
            acc += n;
            (b, acc)
        })
    }
}

/// What one shard measures (see the module doc).
#[derive(Debug)]
pub struct Metrics {
    /// Off with `--metrics false`: the histograms are not kept (the counters of `/stats`
    /// are, they cost nothing).
    pub on: bool,
    pub requests: [Cell<u64>; 3],
    pub request_bytes: [Cell<u64>; 3],
    /// Time one refresh run took (the widgets due at one instant).
    pub tick: Histogram,
    pub values_changed: Cell<u64>,
    /// From a value computed (or heard from another node) to its frame written.
    pub push_delay: Histogram,
    /// From the event time of the newest event a frame shows for the first time to the
    /// frame written.
    pub e2e: Histogram,
    pub bytes_sent: Cell<u64>,
    /// Connections whose queue overflowed and were resynchronised with the newest values.
    pub conflations: Cell<u64>,
    /// Streams the node closed, by close code (0: the client left).
    pub closes: RefCell<BTreeMap<u16, u64>>,
    /// This shard's previous `/metrics` scrape: the work (every shard gathering, this one
    /// merging and encoding) and the wall time, in seconds.
    pub last_scrape: Cell<(f64, f64)>,
}

impl Metrics {
    pub fn new(on: bool) -> Self {
        Self {
            on,
            requests: Default::default(),
            request_bytes: Default::default(),
            tick: Histogram::new(TICK_BOUNDS),
            values_changed: Cell::new(0),
            push_delay: Histogram::new(LATENCY_BOUNDS),
            e2e: Histogram::new(LATENCY_BOUNDS),
            bytes_sent: Cell::new(0),
            conflations: Cell::new(0),
            closes: RefCell::new(BTreeMap::new()),
            last_scrape: Cell::new((0.0, 0.0)),
        }
    }

    /// Counts an ingest request of `bytes` body bytes.
    pub fn request(&self, format: Format, bytes: usize) {
        let i = format as usize;
        self.requests[i].set(self.requests[i].get() + 1);
        self.request_bytes[i].set(self.request_bytes[i].get() + bytes as u64);
    }

    /// Counts a stream frame of `bytes` written at `now` (epoch ms), with its stamp.
    pub fn frame_written(&self, bytes: usize, stamp: &Stamp, now: i64) {
        self.bytes_sent.set(self.bytes_sent.get() + bytes as u64);
        if !self.on {
            return;
        }
        if let Some(at) = stamp.computed_at {
            self.push_delay.observe((now - at) as f64 / 1000.0);
        }
        if let Some(at) = stamp.newest_event {
            self.e2e.observe((now - at) as f64 / 1000.0);
        }
    }

    /// Counts the first `bytes` of a frame whose rest the connection's writer sends.
    pub fn bytes_sent_partly(&self, bytes: usize) {
        self.bytes_sent.set(self.bytes_sent.get() + bytes as u64);
    }

    /// Counts a stream the node closed with `code` (`None`: the client left).
    pub fn closed(&self, code: Option<u16>) {
        *self
            .closes
            .borrow_mut()
            .entry(code.unwrap_or(0))
            .or_default() += 1;
    }

    pub fn snapshot(&self) -> MetricsSnapshot {
        MetricsSnapshot {
            requests: self.requests.each_ref().map(Cell::get),
            request_bytes: self.request_bytes.each_ref().map(Cell::get),
            tick: self.tick.snapshot(),
            values_changed: self.values_changed.get(),
            push_delay: self.push_delay.snapshot(),
            e2e: self.e2e.snapshot(),
            bytes_sent: self.bytes_sent.get(),
            conflations: self.conflations.get(),
            closes: self.closes.borrow().clone(),
        }
    }
}

/// When a frame's values were computed and the newest event it shows for the first time,
/// carried with the frame to the moment it is written (epoch ms).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub framed_at: i64,
    /// The oldest value's; `None` for frames that carry no new value (dashboard edits).
    pub computed_at: Option<i64>,
    pub newest_event: Option<i64>,
}

impl Stamp {
    /// A frame with no new value in it.
    pub fn framed(at: i64) -> Self {
        Self {
            framed_at: at,
            computed_at: None,
            newest_event: None,
        }
    }
}

/// A copy of one shard's `Metrics`.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricsSnapshot {
    pub requests: [u64; 3],
    pub request_bytes: [u64; 3],
    pub tick: Buckets,
    pub values_changed: u64,
    pub push_delay: Buckets,
    pub e2e: Buckets,
    pub bytes_sent: u64,
    pub conflations: u64,
    pub closes: BTreeMap<u16, u64>,
}

impl Default for MetricsSnapshot {
    fn default() -> Self {
        Self {
            requests: [0; 3],
            request_bytes: [0; 3],
            tick: Buckets::empty(TICK_BOUNDS),
            values_changed: 0,
            push_delay: Buckets::empty(LATENCY_BOUNDS),
            e2e: Buckets::empty(LATENCY_BOUNDS),
            bytes_sent: 0,
            conflations: 0,
            closes: BTreeMap::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_count_up_to_their_bound() {
        let h = Histogram::new(&[0.1, 1.0]);
        for s in [0.05, 0.1, 0.5, 1.0, 7.0, -1.0] {
            h.observe(s);
        }
        let b = h.snapshot();
        assert_eq!(b.counts, vec![3, 2, 1]);
        assert_eq!(b.count(), 6);
        let cumulative: Vec<_> = b.cumulative().collect();
        assert_eq!(cumulative, vec![(0.1, 3), (1.0, 5)]);
    }

    #[test]
    fn quantiles_interpolate_within_a_bucket() {
        let h = Histogram::new(&[1.0, 2.0, 4.0]);
        assert_eq!(h.snapshot().quantile(0.5), None);
        for _ in 0..50 {
            h.observe(0.5);
        }
        for _ in 0..50 {
            h.observe(3.0);
        }
        let b = h.snapshot();
        assert_eq!(b.quantile(0.5), Some(1.0));
        // The 95th of 100 is the 45th of the 50 in (2, 4].
        assert_eq!(b.quantile(0.95), Some(2.0 + 2.0 * 45.0 / 50.0));
        h.observe(100.0);
        assert_eq!(h.snapshot().quantile(1.0), Some(4.0));
    }

    #[test]
    fn since_takes_the_difference_and_merge_adds() {
        let h = Histogram::new(LATENCY_BOUNDS);
        h.observe(0.002);
        let before = h.snapshot();
        h.observe(3.0);
        h.observe(3.0);
        let after = h.snapshot();
        let window = after.since(&before);
        assert_eq!(window.count(), 2);
        assert_eq!(window.quantile(0.5).map(|q| q > 2.0), Some(true));
        let mut merged = before.clone();
        merged.merge(&window);
        assert_eq!(merged, after);
    }
}
