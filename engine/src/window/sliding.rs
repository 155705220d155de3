//! The sliding window of one query: a ring of panes over event time with running totals.
//! Count, sum and the histogram are kept by subtract-on-evict; min, max and the newest
//! event time are cached and refolded over the live panes only after an eviction that
//! may have removed the extreme.

use super::compensated::CompensatedSum;
use super::histogram::Histogram;
use super::pane::Pane;
use super::spec::WindowSpec;
use crate::model::Aggregation;

/// Where an inserted event went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InsertOutcome {
    /// The event now counts in the window.
    Counted,
    /// Its pane has already slid out of this window.
    TooOld,
    /// Its pane is further ahead than the ring holds (beyond the allowed skew).
    TooFarAhead,
}

/// Summary of the live panes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fold {
    pub min: f64,
    pub max: f64,
    /// Newest event time among live panes (epoch ms), `None` when the window is empty.
    pub latest: Option<i64>,
}

impl Fold {
    const EMPTY: Fold = Fold {
        min: f64::INFINITY,
        max: f64::NEG_INFINITY,
        latest: None,
    };

    #[inline]
    fn merge(&mut self, other: &Fold) {
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        self.latest = self.latest.max(other.latest);
    }

    #[inline]
    fn merge_pane(&mut self, p: &Pane) {
        self.min = self.min.min(p.min);
        self.max = self.max.max(p.max);
        self.latest = Some(self.latest.map_or(p.latest, |l| l.max(p.latest)));
    }
}

/// Event-time sliding window: `spec.panes` live panes ending at the clock's pane, plus
/// `spec.future_panes` slots for events stamped slightly ahead of the clock.
///
/// Invariant: every statistic equals the naive aggregate over the events inserted (and
/// counted) whose pane index is greater than `current - spec.panes`.
#[derive(Debug, Clone)]
#[repr(C)]
pub struct SlidingWindow {
    // Fields an insert reads come first, so they share the first cache lines.
    /// Pane index of the clock, and the ring slot that holds it.
    current: i64,
    current_slot: i64,
    /// Start of the current pane and of the next one, in epoch ms.
    current_start: i64,
    next_boundary: i64,
    cap: i64,
    spec: WindowSpec,
    panes: Box<[Pane]>,
    count: u64,
    sum: CompensatedSum,
    /// Min, max and newest time over live panes, while known to be valid.
    fold_cache: Option<Fold>,
    /// Blocks whose summary is out of date (bit `b` for block `b`).
    dirty: u64,
    block_shift: u32,
    /// Boxed, so windows without one keep their insert-hot fields in fewer cache lines.
    histogram: Option<Box<Histogram>>,
    // Fields below are read at refold time only.
    evictions_since_refold: i64,
    /// Min, max and newest time per block of `1 << block_shift` ring slots, so a refold
    /// recomputes only the blocks that changed and then folds at most 64 summaries.
    blocks: Box<[Fold]>,
}

impl SlidingWindow {
    /// Bytes, from the start, that an insert reads.
    pub(crate) const HOT_BYTES: usize = std::mem::offset_of!(SlidingWindow, evictions_since_refold);

    /// An empty window whose clock reads `now_ms`.
    pub fn new(spec: WindowSpec, now_ms: i64, with_histogram: bool) -> Self {
        let cap = spec.capacity();
        let current = now_ms.div_euclid(spec.pane_ms);
        // Smallest block of at least 8 slots that needs at most 64 blocks.
        let mut block_shift = 3;
        while (cap as usize).div_ceil(1 << block_shift) > 64 {
            block_shift += 1;
        }
        let mut window = Self {
            spec,
            cap,
            current,
            current_slot: current.rem_euclid(cap),
            current_start: current * spec.pane_ms,
            next_boundary: (current + 1) * spec.pane_ms,
            panes: vec![Pane::VACANT; cap as usize].into_boxed_slice(),
            count: 0,
            sum: CompensatedSum::default(),
            evictions_since_refold: 0,
            fold_cache: Some(Fold::EMPTY),
            blocks: vec![Fold::EMPTY; (cap as usize).div_ceil(1 << block_shift)].into_boxed_slice(),
            block_shift,
            dirty: 0,
            histogram: None,
        };
        window.set_histogram(with_histogram);
        window
    }

    /// The pane geometry.
    pub fn spec(&self) -> WindowSpec {
        self.spec
    }

    /// Turns the percentile histogram on (empty: it sees events from now on) or off.
    pub fn set_histogram(&mut self, on: bool) {
        match (on, self.histogram.is_some()) {
            (true, false) => self.histogram = Some(Box::new(Histogram::new(self.cap as usize))),
            (false, true) => self.histogram = None,
            _ => {}
        }
    }

    /// True when a histogram is kept.
    pub fn has_histogram(&self) -> bool {
        self.histogram.is_some()
    }

    /// Moves the clock to `now_ms`, evicting panes that slid out. The clock never goes back.
    #[inline]
    pub fn advance(&mut self, now_ms: i64) {
        if now_ms >= self.next_boundary {
            self.advance_slow(now_ms);
        }
    }

    /// Starts loading the pane that `advance(now_ms)` would evict first.
    #[inline]
    pub fn prefetch_advance(&self, now_ms: i64) {
        if now_ms >= self.next_boundary {
            let first_dead = self.current - self.spec.panes + 1;
            let slot = first_dead.rem_euclid(self.cap) as usize;
            crate::prefetch::prefetch(&self.panes[slot]);
            if let Some(h) = &self.histogram {
                h.prefetch_header();
            }
        }
    }

    #[cold]
    fn advance_slow(&mut self, now_ms: i64) {
        let target = now_ms.div_euclid(self.spec.pane_ms);
        let first_dead = self.current - self.spec.panes + 1;
        let last_dead = target - self.spec.panes;
        if last_dead - first_dead + 1 >= self.cap {
            for slot in 0..self.cap as usize {
                if self.panes[slot].is_live() {
                    self.evict(slot);
                }
            }
        } else {
            for index in first_dead..=last_dead {
                let slot = index.rem_euclid(self.cap) as usize;
                if self.panes[slot].index == index {
                    self.evict(slot);
                }
            }
        }
        self.current = target;
        self.current_slot = target.rem_euclid(self.cap);
        self.current_start = target * self.spec.pane_ms;
        self.next_boundary = self.current_start + self.spec.pane_ms;
    }

    fn evict(&mut self, slot: usize) {
        let pane = std::mem::replace(&mut self.panes[slot], Pane::VACANT);
        if let Some(f) = &self.fold_cache
            && (pane.min <= f.min || pane.max >= f.max || Some(pane.latest) >= f.latest)
        {
            self.fold_cache = None;
        }
        self.dirty |= 1 << (slot >> self.block_shift);
        self.count -= pane.count;
        self.sum.sub_sum(&pane.sum);
        if let Some(h) = self.histogram.as_mut() {
            h.evict(slot);
        }
        self.evictions_since_refold += 1;
        if self.evictions_since_refold >= self.cap {
            // Rebuild the running sum from the pane sums once per turn of the ring, so
            // rounding error cannot accumulate beyond one window's worth of updates.
            self.evictions_since_refold = 0;
            self.sum = CompensatedSum::default();
            for p in self.panes.iter().filter(|p| p.is_live()) {
                self.sum.add_sum(&p.sum);
            }
        }
    }

    /// Ring slot and pane index for an event at `time_ms`, or where it cannot go.
    #[inline]
    fn locate(&self, time_ms: i64) -> Result<(usize, i64), InsertOutcome> {
        let delta = if time_ms >= self.current_start && time_ms < self.next_boundary {
            0
        } else {
            time_ms.div_euclid(self.spec.pane_ms) - self.current
        };
        if delta <= -self.spec.panes {
            return Err(InsertOutcome::TooOld);
        }
        if delta >= self.spec.future_panes {
            return Err(InsertOutcome::TooFarAhead);
        }
        let mut slot = self.current_slot + delta;
        if slot < 0 {
            slot += self.cap;
        } else if slot >= self.cap {
            slot -= self.cap;
        }
        Ok((slot as usize, self.current + delta))
    }

    /// Starts loading the pane an event at `time_ms` would land in (and its histogram
    /// record) into cache, without waiting for it.
    #[inline]
    pub fn prefetch(&self, time_ms: i64) {
        if let Ok((slot, _)) = self.locate(time_ms) {
            crate::prefetch::prefetch(&self.panes[slot]);
            if let Some(h) = &self.histogram {
                h.prefetch_header();
            }
        }
    }

    /// Starts loading the histogram records an event at `time_ms` with `value` will
    /// update; nothing without a histogram.
    #[inline]
    pub fn prefetch_histogram(&self, time_ms: i64, value: f64) {
        if let Some(h) = &self.histogram
            && let Ok((slot, _)) = self.locate(time_ms)
        {
            h.prefetch_record(slot, value);
        }
    }

    /// Inserts one event. The caller has advanced the clock for this batch.
    #[inline]
    pub fn insert(&mut self, time_ms: i64, value: f64) -> InsertOutcome {
        let (slot, index) = match self.locate(time_ms) {
            Ok(found) => found,
            Err(outcome) => return outcome,
        };
        let pane = &mut self.panes[slot];
        if pane.index == index {
            pane.add(time_ms, value);
        } else {
            debug_assert!(!pane.is_live(), "slot reused before its pane was evicted");
            *pane = Pane::start(index, time_ms, value);
        }
        self.dirty |= 1 << (slot >> self.block_shift);
        if let Some(f) = &mut self.fold_cache {
            f.min = f.min.min(value);
            f.max = f.max.max(value);
            f.latest = Some(f.latest.map_or(time_ms, |l| l.max(time_ms)));
        }
        self.count += 1;
        self.sum.add(value);
        if let Some(h) = self.histogram.as_mut() {
            h.record(slot, value);
        }
        InsertOutcome::Counted
    }

    /// End of the window (exclusive): the end of the clock's pane, in epoch ms.
    pub fn window_end(&self) -> i64 {
        self.next_boundary
    }

    /// Number of events in the window.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Sum of the values in the window, `None` when empty.
    pub fn sum(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum.value())
    }

    /// Min, max and newest event time over the live panes (cached between evictions; a
    /// refold recomputes the changed blocks only).
    pub fn fold(&mut self) -> Fold {
        if let Some(f) = self.fold_cache {
            return f;
        }
        while self.dirty != 0 {
            let block = self.dirty.trailing_zeros() as usize;
            self.dirty &= self.dirty - 1;
            let start = block << self.block_shift;
            let end = (start + (1 << self.block_shift)).min(self.panes.len());
            let mut summary = Fold::EMPTY;
            for p in self.panes[start..end].iter().filter(|p| p.is_live()) {
                summary.merge_pane(p);
            }
            self.blocks[block] = summary;
        }
        let mut fold = Fold::EMPTY;
        for b in self.blocks.iter() {
            fold.merge(b);
        }
        self.fold_cache = Some(fold);
        fold
    }

    /// The value of `aggregation` over the window; `None` for an empty window (and for a
    /// percentile without a histogram), except `count`, which is 0.
    pub fn value(&self, aggregation: Aggregation, fold: &Fold) -> Option<f64> {
        if aggregation == Aggregation::Count {
            return Some(self.count as f64);
        }
        if self.count == 0 {
            return None;
        }
        match aggregation {
            Aggregation::Sum => self.sum(),
            Aggregation::Avg => self.sum().map(|s| s / self.count as f64),
            Aggregation::Min => Some(fold.min),
            Aggregation::Max => Some(fold.max),
            Aggregation::Count => Some(self.count as f64),
            Aggregation::P50 | Aggregation::P90 | Aggregation::P95 | Aggregation::P99 => {
                let q = aggregation.quantile()?;
                let v = self.histogram.as_ref()?.quantile(q)?;
                // The extreme buckets are bounded by the exact extremes.
                Some(v.clamp(fold.min, fold.max))
            }
        }
    }

    /// Heap bytes held by this window (ring plus histogram).
    pub fn heap_bytes(&self) -> usize {
        self.panes.len() * size_of::<Pane>()
            + self.blocks.len() * size_of::<Fold>()
            + self
                .histogram
                .as_ref()
                .map_or(0, |h| size_of::<Histogram>() + h.heap_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(secs: u64, now: i64) -> SlidingWindow {
        SlidingWindow::new(WindowSpec::for_window(secs, 5000), now, true)
    }

    #[test]
    fn empty_window_has_no_value_but_zero_count() {
        let mut w = window(60, 1_000_000);
        let f = w.fold();
        for agg in Aggregation::ALL {
            let expect = if agg == Aggregation::Count {
                Some(0.0)
            } else {
                None
            };
            assert_eq!(w.value(agg, &f), expect, "{agg}");
        }
        assert_eq!(f.latest, None);
    }

    #[test]
    fn slides_and_evicts() {
        let mut w = window(10, 100_000);
        assert_eq!(w.insert(99_000, 1.0), InsertOutcome::Counted);
        assert_eq!(w.insert(100_500, 5.0), InsertOutcome::Counted);
        assert_eq!(w.insert(106_000, 2.0), InsertOutcome::TooFarAhead);
        assert_eq!(w.insert(105_999, 7.0), InsertOutcome::Counted);
        assert_eq!(w.insert(90_999, 1.0), InsertOutcome::TooOld);
        assert_eq!(w.insert(91_000, -3.0), InsertOutcome::Counted);
        let f = w.fold();
        assert_eq!(w.value(Aggregation::Sum, &f), Some(10.0));
        assert_eq!(w.value(Aggregation::Min, &f), Some(-3.0));
        assert_eq!(w.value(Aggregation::Max, &f), Some(7.0));
        assert_eq!(f.latest, Some(105_999));
        assert_eq!(w.window_end(), 101_000);
        w.advance(100_999);
        assert_eq!(w.count(), 4);
        w.advance(101_000);
        assert_eq!(w.count(), 3, "the pane of 91 000 slid out");
        w.advance(109_999);
        assert_eq!(w.count(), 2, "99 000 slid out");
        w.advance(114_999);
        assert_eq!(w.count(), 1, "105 999 is still live");
        w.advance(115_000);
        assert_eq!(w.count(), 0);
        let f = w.fold();
        assert_eq!(w.value(Aggregation::Avg, &f), None);
        assert!(w.histogram.as_ref().unwrap().is_empty());
        w.advance(10_000_000);
        assert_eq!(w.insert(10_000_001, 4.0), InsertOutcome::Counted);
        let f = w.fold();
        assert_eq!(w.value(Aggregation::P99, &f), Some(4.0));
    }

    #[test]
    fn refold_keeps_sum_exact_after_huge_values_leave() {
        let mut w = window(10, 0);
        w.insert(0, 1e17);
        w.insert(0, 3.0);
        for t in 1..100 {
            w.advance(t * 1000);
            w.insert(t * 1000, 0.25);
        }
        assert_eq!(w.sum(), Some(0.25 * 10.0));
    }
}
