//! The sliding window of one query: a ring of panes over event time with running totals.
//! Count, sum and the histogram are kept by subtract-on-evict. The newest event time
//! needs no refold: panes slide out oldest first, so it only changes when the window
//! empties. Min and max are cached with the number of panes that hold each, and refolded
//! over the live panes only after the last pane holding one of them slid out.
//!
//! The window-wide sum and min/max are kept up to date only once something has read them
//! (a widget of that aggregation): until then an insert updates its pane alone, and the
//! first read rebuilds them from the panes. A query that only feeds sum widgets never
//! tracks extremes, one that only feeds max widgets never keeps a running sum.

use super::compensated::CompensatedSum;
use super::distribution::Distribution;
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

/// Min and max of the live panes, with how many panes hold each (ties are common: whole
/// milliseconds, counts, repeated readings).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fold {
    pub min: f64,
    pub max: f64,
    min_holders: u32,
    max_holders: u32,
}

impl Fold {
    const EMPTY: Fold = Fold {
        min: f64::INFINITY,
        max: f64::NEG_INFINITY,
        min_holders: 0,
        max_holders: 0,
    };

    #[inline]
    fn merge(&mut self, other: &Fold) {
        self.take_min(other.min, other.min_holders);
        self.take_max(other.max, other.max_holders);
    }

    #[inline]
    fn merge_pane(&mut self, p: &Pane) {
        self.take_min(p.min, 1);
        self.take_max(p.max, 1);
    }

    #[inline]
    fn take_min(&mut self, min: f64, holders: u32) {
        if min < self.min {
            self.min = min;
            self.min_holders = holders;
        } else if min == self.min {
            self.min_holders += holders;
        }
    }

    #[inline]
    fn take_max(&mut self, max: f64, holders: u32) {
        if max > self.max {
            self.max = max;
            self.max_holders = holders;
        } else if max == self.max {
            self.max_holders += holders;
        }
    }

    /// A pane whose min and max were `before` (infinite for a new pane) now holds
    /// `value`.
    #[inline]
    fn note_insert(&mut self, before: (f64, f64), value: f64) {
        if value < self.min {
            self.min = value;
            self.min_holders = 1;
        } else if value == self.min && before.0 > value {
            self.min_holders += 1;
        }
        if value > self.max {
            self.max = value;
            self.max_holders = 1;
        } else if value == self.max && before.1 < value {
            self.max_holders += 1;
        }
    }

    /// A pane slid out; false when it held the last copy of the min or of the max, so
    /// the fold must be recomputed.
    #[inline]
    fn note_evict(&mut self, pane: &Pane) -> bool {
        if pane.min == self.min {
            self.min_holders -= 1;
        }
        if pane.max == self.max {
            self.max_holders -= 1;
        }
        self.min_holders > 0 && self.max_holders > 0
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
    // What an insert reads and writes comes first, packed into two cache lines (the
    // geometry in u32s, the cache's validity in a flag, the ring's length as its
    // capacity), so readying an insert loads two lines of a line-aligned owner.
    /// Pane index of the clock.
    current: i64,
    /// The geometry (`WindowSpec`): pane width, live panes, slots ahead of the clock.
    pane_ms: i64,
    span_panes: u32,
    future_panes: u32,
    /// The ring slot of the clock's pane.
    current_slot: u32,
    block_shift: u32,
    /// True while `fold` is the min and max over the live panes.
    fold_valid: bool,
    /// True while `sum` is the sum over the live panes.
    sum_valid: bool,
    /// The ring: `span_panes + future_panes` slots.
    panes: Box<[Pane]>,
    /// Boxed, so windows without one keep their insert-hot fields in fewer cache lines.
    histogram: Option<Box<Histogram>>,
    count: u64,
    sum: CompensatedSum,
    /// Newest event time over live panes, `i64::MIN` when the window is empty.
    latest: i64,
    /// Min and max over live panes, while `fold_valid`.
    fold: Fold,
    /// Blocks whose summary is out of date (bit `b` for block `b`).
    dirty: u64,
    // Fields below are read at refold time only.
    evictions_since_refold: i64,
    /// Min and max per block of `1 << block_shift` ring slots, so a refold
    /// recomputes only the blocks that changed and then folds at most 64 summaries.
    blocks: Box<[Fold]>,
    /// Blocks changed since the state mirror last read them, beyond those still in
    /// `dirty` (a refold clears `dirty`, and hands its bits over here first).
    mirror_dirty: u64,
    /// (pane index, count) of every slot as the mirror last read it; `None` until the
    /// first read, or after `forget_mirror`, so the next read sends every live pane.
    mirrored: Option<Box<[(i64, u64)]>>,
}

mod mirror;
pub use mirror::{PaneChanges, PaneState};

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
            current,
            pane_ms: spec.pane_ms,
            span_panes: u32::try_from(spec.panes).unwrap_or(u32::MAX),
            future_panes: u32::try_from(spec.future_panes).unwrap_or(u32::MAX),
            current_slot: current.rem_euclid(cap) as u32,
            block_shift,
            // Neither is tracked until read.
            fold_valid: false,
            sum_valid: false,
            panes: vec![Pane::VACANT; cap as usize].into_boxed_slice(),
            histogram: None,
            count: 0,
            sum: CompensatedSum::default(),
            latest: i64::MIN,
            fold: Fold::EMPTY,
            dirty: 0,
            evictions_since_refold: 0,
            blocks: vec![Fold::EMPTY; (cap as usize).div_ceil(1 << block_shift)].into_boxed_slice(),
            mirror_dirty: 0,
            mirrored: None,
        };
        window.set_histogram(with_histogram);
        window
    }

    /// The pane geometry.
    pub fn spec(&self) -> WindowSpec {
        WindowSpec {
            pane_ms: self.pane_ms,
            panes: i64::from(self.span_panes),
            future_panes: i64::from(self.future_panes),
        }
    }

    /// Slots in the ring.
    #[inline]
    fn cap(&self) -> i64 {
        self.panes.len() as i64
    }

    /// Start of the clock's pane, in epoch ms.
    #[inline]
    fn current_start(&self) -> i64 {
        self.current * self.pane_ms
    }

    /// Start of the pane after the clock's, in epoch ms.
    #[inline]
    fn next_boundary(&self) -> i64 {
        self.current_start() + self.pane_ms
    }

    /// Turns the percentile histogram on (empty: it sees events from now on) or off.
    pub fn set_histogram(&mut self, on: bool) {
        match (on, self.histogram.is_some()) {
            (true, false) => self.histogram = Some(Box::new(Histogram::new(self.panes.len()))),
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
        if now_ms >= self.next_boundary() {
            self.advance_slow(now_ms);
        }
    }

    /// Starts loading the pane that `advance(now_ms)` would evict first.
    #[inline]
    pub fn prefetch_advance(&self, now_ms: i64) {
        if now_ms >= self.next_boundary() {
            let first_dead = self.current - i64::from(self.span_panes) + 1;
            self.prefetch_pane(first_dead.rem_euclid(self.cap()) as usize);
            if let Some(h) = &self.histogram {
                h.prefetch_header();
            }
        }
    }

    /// Starts loading both cache lines a pane may straddle.
    #[inline]
    fn prefetch_pane(&self, slot: usize) {
        if let Some(pane) = self.panes.get(slot) {
            let start = std::ptr::from_ref(pane).cast::<u8>();
            crate::prefetch::prefetch(start);
            crate::prefetch::prefetch(start.wrapping_add(size_of::<Pane>() - 1));
        }
    }

    #[cold]
    fn advance_slow(&mut self, now_ms: i64) {
        let target = now_ms.div_euclid(self.pane_ms);
        let span = i64::from(self.span_panes);
        let cap = self.cap();
        let first_dead = self.current - span + 1;
        let last_dead = target - span;
        if last_dead - first_dead + 1 >= cap {
            for slot in 0..self.panes.len() {
                if self.panes[slot].is_live() {
                    self.evict(slot);
                }
            }
        } else {
            for index in first_dead..=last_dead {
                let slot = index.rem_euclid(cap) as usize;
                if self.panes[slot].index == index {
                    self.evict(slot);
                }
            }
        }
        self.current = target;
        self.current_slot = target.rem_euclid(cap) as u32;
    }

    fn evict(&mut self, slot: usize) {
        let pane = std::mem::replace(&mut self.panes[slot], Pane::VACANT);
        self.dirty |= 1 << (slot >> self.block_shift);
        self.count -= pane.count;
        if self.count == 0 {
            // Nothing is left: what is tracked is known without looking.
            self.latest = i64::MIN;
            self.fold = Fold::EMPTY;
            self.sum = CompensatedSum::default();
        } else {
            if self.fold_valid && !self.fold.note_evict(&pane) {
                self.fold_valid = false;
            }
            if self.sum_valid {
                self.sum.sub_sum(&pane.sum);
            }
        }
        if let Some(h) = self.histogram.as_mut() {
            h.evict(slot);
        }
        self.evictions_since_refold += 1;
        if self.evictions_since_refold >= self.cap() {
            // Rebuild the running sum from the pane sums once per turn of the ring, so
            // rounding error cannot accumulate beyond one window's worth of updates.
            self.evictions_since_refold = 0;
            if self.sum_valid {
                self.sum = self.pane_sum();
            }
        }
    }

    /// The sum over the live panes, added up from the panes.
    fn pane_sum(&self) -> CompensatedSum {
        let mut sum = CompensatedSum::default();
        for p in self.panes.iter().filter(|p| p.is_live()) {
            sum.add_sum(&p.sum);
        }
        sum
    }

    /// Ring slot and pane index for an event at `time_ms`, or where it cannot go.
    #[inline]
    fn locate(&self, time_ms: i64) -> Result<(usize, i64), InsertOutcome> {
        let delta = match time_ms.checked_sub(self.current_start()) {
            Some(into) if (0..self.pane_ms).contains(&into) => 0,
            _ => time_ms.div_euclid(self.pane_ms) - self.current,
        };
        if delta <= -i64::from(self.span_panes) {
            return Err(InsertOutcome::TooOld);
        }
        if delta >= i64::from(self.future_panes) {
            return Err(InsertOutcome::TooFarAhead);
        }
        let cap = self.cap();
        let mut slot = i64::from(self.current_slot) + delta;
        if slot < 0 {
            slot += cap;
        } else if slot >= cap {
            slot -= cap;
        }
        Ok((slot as usize, self.current + delta))
    }

    /// Starts loading the pane an event at `time_ms` would land in (and its histogram
    /// record) into cache, without waiting for it.
    #[inline]
    pub fn prefetch(&self, time_ms: i64) {
        if let Ok((slot, _)) = self.locate(time_ms) {
            self.prefetch_pane(slot);
            if let Some(h) = &self.histogram {
                h.prefetch_header();
            }
        }
    }

    /// The later steps of `prefetch_advance` for a window with a histogram (see
    /// `Histogram::prefetch_evict`), each a batch apart.
    #[inline]
    pub fn prefetch_advance_histogram(&self, now_ms: i64, step: u8) {
        if let Some(h) = &self.histogram
            && now_ms >= self.next_boundary()
        {
            let first_dead = self.current - i64::from(self.span_panes) + 1;
            h.prefetch_evict(first_dead.rem_euclid(self.cap()) as usize, step);
        }
    }

    /// Starts loading the histogram records an event at `time_ms` with `value` will
    /// update (the slot's inline bucket list, the bucket's count); call a batch after
    /// `prefetch`, which brings the histogram's header in. Nothing without a histogram.
    #[inline]
    pub fn prefetch_histogram(&self, time_ms: i64, value: f64) {
        if let Some(h) = &self.histogram
            && let Ok((slot, _)) = self.locate(time_ms)
        {
            h.prefetch_slot(slot, value);
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
        let before = if pane.index == index {
            let before = (pane.min, pane.max);
            pane.add(value);
            before
        } else {
            debug_assert!(!pane.is_live(), "slot reused before its pane was evicted");
            *pane = Pane::start(index, value);
            (f64::INFINITY, f64::NEG_INFINITY)
        };
        self.dirty |= 1 << (slot >> self.block_shift);
        if self.fold_valid {
            self.fold.note_insert(before, value);
        }
        self.latest = self.latest.max(time_ms);
        self.count += 1;
        if self.sum_valid {
            self.sum.add(value);
        }
        if let Some(h) = self.histogram.as_mut() {
            h.record(slot, value);
        }
        InsertOutcome::Counted
    }

    /// End of the window (exclusive): the end of the clock's pane, in epoch ms.
    pub fn window_end(&self) -> i64 {
        self.next_boundary()
    }

    /// Number of events in the window.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Newest event time in the window (epoch ms), `None` when it is empty.
    pub fn latest(&self) -> Option<i64> {
        (self.latest != i64::MIN).then_some(self.latest)
    }

    /// Sum of the values in the window, `None` when empty. The first call starts keeping
    /// a running sum.
    pub fn sum(&mut self) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        if !self.sum_valid {
            self.sum = self.pane_sum();
            self.sum_valid = true;
        }
        Some(self.sum.value())
    }

    /// Min and max over the live panes (cached from the first call until the last pane
    /// holding one of them slides out; a refold recomputes the changed blocks only).
    pub fn fold(&mut self) -> Fold {
        if self.fold_valid {
            return self.fold;
        }
        self.mirror_dirty |= self.dirty;
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
        self.fold = fold;
        self.fold_valid = true;
        fold
    }

    /// The value of `aggregation` over the window; `None` for an empty window (and for a
    /// percentile without a histogram), except `count`, which is 0. A `histogram` has no
    /// one number: its value is the count (`distribution` reports the rest). Only min,
    /// max and the percentiles read the fold (and start keeping it up to date).
    pub fn value(&mut self, aggregation: Aggregation) -> Option<f64> {
        if matches!(aggregation, Aggregation::Count | Aggregation::Histogram) {
            return Some(self.count as f64);
        }
        if self.count == 0 {
            return None;
        }
        match aggregation {
            Aggregation::Sum => self.sum(),
            Aggregation::Avg => self.sum().map(|s| s / self.count as f64),
            Aggregation::Min => Some(self.fold().min),
            Aggregation::Max => Some(self.fold().max),
            Aggregation::Count | Aggregation::Histogram => Some(self.count as f64),
            Aggregation::P50 | Aggregation::P90 | Aggregation::P95 | Aggregation::P99 => {
                let q = aggregation.quantile()?;
                let v = self.histogram.as_mut()?.quantile(q)?;
                // The extreme buckets are bounded by the exact extremes.
                let fold = self.fold();
                Some(v.clamp(fold.min, fold.max))
            }
        }
    }

    /// The window's distribution in at most `max_buckets` buckets, its outermost bounds
    /// the exact minimum and maximum; `None` without a histogram.
    pub fn distribution(&mut self, max_buckets: usize) -> Option<Distribution> {
        let mut buckets = self.histogram.as_ref()?.buckets();
        if self.count > 0 {
            let fold = self.fold();
            if let Some(first) = buckets.first_mut() {
                first.0 = first.0.max(fold.min).min(first.1);
            }
            if let Some(last) = buckets.last_mut() {
                last.1 = last.1.min(fold.max).max(last.0);
            }
        }
        Some(Distribution::merged(buckets, max_buckets))
    }

    /// Heap bytes held by this window (ring plus histogram).
    pub fn heap_bytes(&self) -> usize {
        self.panes.len() * size_of::<Pane>()
            + self.blocks.len() * size_of::<Fold>()
            + self
                .mirrored
                .as_ref()
                .map_or(0, |m| m.len() * size_of::<(i64, u64)>())
            + self
                .histogram
                .as_ref()
                .map_or(0, |h| size_of::<Histogram>() + h.heap_bytes())
    }
}

#[cfg(test)]
mod tests;
