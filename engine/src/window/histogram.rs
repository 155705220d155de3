//! A log-linear (HDR-style) histogram over f64 values with subtract-on-evict support.
//! Buckets come straight from the float's bits: the exponent plus the top 6 mantissa bits,
//! so each bucket is 1/64 of an octave wide and its midpoint is within 1/128 of any member.

use hashbrown::HashMap;

/// Mantissa bits kept in a bucket key: 64 buckets per power of two.
const SUB_BUCKET_BITS: u32 = 6;
const SHIFT: u32 = 52 - SUB_BUCKET_BITS;
/// Largest relative error of a reported quantile against the exact nearest-rank value
/// (half a bucket width), for normal (non-subnormal) values.
pub const BUCKET_RELATIVE_ERROR: f64 = 1.0 / (1u64 << (SUB_BUCKET_BITS + 1)) as f64;

/// Pane-local key: magnitude bucket, with a sign bit above it; `ZERO_KEY` for zero.
const NEG_FLAG: u32 = 1 << 17;
const ZERO_KEY: u32 = 1 << 18;
/// A pane's overflow keeps its buckets in a short list until this many, then in a hash map.
const SMALL_PANE_BUCKETS: usize = 16;

#[inline]
fn magnitude_key(abs: f64) -> u32 {
    (abs.to_bits() >> SHIFT) as u32
}

#[inline]
fn pane_key(value: f64) -> u32 {
    if value > 0.0 {
        magnitude_key(value)
    } else if value < 0.0 {
        magnitude_key(-value) | NEG_FLAG
    } else {
        ZERO_KEY
    }
}

/// The store a pane key counts in (`true` for the negative one) and its magnitude key
/// there; `None` for zero, which is counted apart.
#[inline]
fn split_key(key: u32) -> Option<(bool, u32)> {
    if key == ZERO_KEY {
        None
    } else {
        Some((key & NEG_FLAG != 0, key & !NEG_FLAG))
    }
}

/// The midpoint of a magnitude bucket.
fn representative(key: u32) -> f64 {
    let lo = f64::from_bits(u64::from(key) << SHIFT);
    let hi = f64::from_bits(u64::from(key + 1) << SHIFT);
    if hi.is_finite() {
        lo + (hi - lo) / 2.0
    } else {
        lo
    }
}

mod dense;
use dense::{DenseStore, GROUP};

/// The buckets of a pane that did not fit in its inline list.
#[derive(Debug, Clone)]
enum Overflow {
    Small(Vec<(u32, u32)>),
    Large(HashMap<u32, u64>),
}

impl Default for Overflow {
    fn default() -> Self {
        Self::Small(Vec::new())
    }
}

impl Overflow {
    #[inline]
    fn add(&mut self, key: u32) {
        match self {
            Self::Small(list) => {
                if let Some(entry) = list.iter_mut().find(|e| e.0 == key) {
                    if let Some(n) = entry.1.checked_add(1) {
                        entry.1 = n;
                        return;
                    }
                } else if list.len() < SMALL_PANE_BUCKETS {
                    list.push((key, 1));
                    return;
                }
                let mut map: HashMap<u32, u64> =
                    list.drain(..).map(|(k, n)| (k, u64::from(n))).collect();
                *map.entry(key).or_insert(0) += 1;
                *self = Self::Large(map);
            }
            Self::Large(map) => *map.entry(key).or_insert(0) += 1,
        }
    }

    fn drain(&mut self, mut f: impl FnMut(u32, u64)) {
        match self {
            Self::Small(list) => list.drain(..).for_each(|(k, n)| f(k, u64::from(n))),
            Self::Large(map) => {
                map.drain().for_each(|(k, n)| f(k, n));
                // Keep big maps from pinning memory in quiet panes.
                if map.capacity() > 256 {
                    *self = Self::default();
                }
            }
        }
    }

    fn heap_bytes(&self) -> usize {
        match self {
            Self::Small(list) => list.capacity() * size_of::<(u32, u32)>(),
            Self::Large(map) => map.allocation_size(),
        }
    }
}

/// Distinct buckets a pane lists inline, in its own cache line (about one second of a
/// series at 10 events/s).
const INLINE_BUCKETS: usize = 11;

/// The buckets one pane added, so they can be taken out again when it is evicted: the
/// first `INLINE_BUCKETS` distinct ones inline (one cache line, which recording a value
/// reads and writes), the rest, and counts past `u8::MAX`, in an overflow list.
#[derive(Debug, Clone, Default)]
#[repr(C, align(64))]
struct PaneCounts {
    keys: [u32; INLINE_BUCKETS],
    counts: [u8; INLINE_BUCKETS],
    len: u8,
    overflow: Option<Box<Overflow>>,
}

const _: () = assert!(size_of::<PaneCounts>() == 64);

impl PaneCounts {
    /// The inline entry of `key`, found by comparing all keys at once (no branch on
    /// where it sits in the list, which varies from value to value).
    #[inline]
    fn find(&self, key: u32) -> Option<usize> {
        let mut hits = 0u32;
        for (i, &k) in self.keys.iter().enumerate() {
            hits |= u32::from(k == key) << i;
        }
        hits &= (1u32 << self.len) - 1;
        (hits != 0).then(|| hits.trailing_zeros() as usize)
    }

    #[inline]
    fn add(&mut self, key: u32) {
        let len = usize::from(self.len);
        if let Some(i) = self.find(key) {
            if let Some(n) = self.counts[i].checked_add(1) {
                self.counts[i] = n;
                return;
            }
        } else if len < INLINE_BUCKETS {
            self.keys[len] = key;
            self.counts[len] = 1;
            self.len += 1;
            return;
        }
        self.overflow.get_or_insert_default().add(key);
    }

    /// Hands every (bucket, count) to `f` (a bucket may come twice, inline and in the
    /// overflow) and empties the list.
    fn drain(&mut self, mut f: impl FnMut(u32, u64)) {
        let len = usize::from(self.len);
        for (&k, &n) in self.keys[..len].iter().zip(&self.counts[..len]) {
            f(k, u64::from(n));
        }
        self.len = 0;
        if let Some(overflow) = &mut self.overflow {
            overflow.drain(f);
        }
    }

    /// Hands every (bucket, count) to `f`, as `drain` does, keeping the list.
    fn visit(&self, mut f: impl FnMut(u32, u64)) {
        let len = usize::from(self.len);
        for (&k, &n) in self.keys[..len].iter().zip(&self.counts[..len]) {
            f(k, u64::from(n));
        }
        match self.overflow.as_deref() {
            Some(Overflow::Small(list)) => list.iter().for_each(|&(k, n)| f(k, u64::from(n))),
            Some(Overflow::Large(map)) => map.iter().for_each(|(&k, &n)| f(k, n)),
            None => {}
        }
    }

    /// The buckets listed inline.
    fn inline_keys(&self) -> &[u32] {
        &self.keys[..usize::from(self.len)]
    }

    fn heap_bytes(&self) -> usize {
        self.overflow
            .as_ref()
            .map_or(0, |o| size_of::<Overflow>() + o.heap_bytes())
    }
}

/// Where a quantile walk stopped: at zero, or in a bucket of the negative (`true`) or
/// positive store.
enum Spot {
    Zero,
    Bucket(bool, usize),
}

/// Window-wide value distribution plus the per-pane bucket lists to evict with.
///
/// Laid out so that recording a positive value reads one line of this header: the
/// total, the pane lists and the positive store come first.
#[derive(Debug, Clone)]
#[repr(C, align(64))]
pub struct Histogram {
    total: u64,
    panes: Box<[PaneCounts]>,
    positive: DenseStore,
    // Read for zeros, negative values and quantiles only.
    zeros: u64,
    negative: DenseStore,
    /// Where the last quantile was found (true for the negative store) and the bucket
    /// index there: quantiles move little between refreshes, so the next refresh loads
    /// that neighbourhood ahead of its walk.
    last_found: Option<(bool, u32)>,
    /// Most buckets each store spans (`DenseStore`).
    budget: u32,
}

// Recording a positive value reads the first line only.
const _: () = assert!(std::mem::offset_of!(Histogram, zeros) <= 64);

mod mirror;

impl Histogram {
    /// An empty histogram for a ring of `slots` panes, within the process's bucket
    /// budget (`limits::histogram_buckets`).
    pub fn new(slots: usize) -> Self {
        Self::with_budget(slots, crate::limits::histogram_buckets())
    }

    /// An empty histogram whose stores span at most `budget` buckets each (at least 64:
    /// one octave).
    pub fn with_budget(slots: usize, budget: usize) -> Self {
        Self {
            budget: budget.clamp(64, 1 << 20) as u32,
            positive: DenseStore::default(),
            negative: DenseStore::default(),
            zeros: 0,
            total: 0,
            panes: (0..slots).map(|_| PaneCounts::default()).collect(),
            last_found: None,
        }
    }

    fn apply(&mut self, key: u32, n: u64, add: bool) {
        let budget = self.budget as usize;
        match split_key(key) {
            None if add => self.zeros += n,
            None => self.zeros -= n,
            Some((negative, k)) => {
                let store = if negative {
                    &mut self.negative
                } else {
                    &mut self.positive
                };
                if add {
                    store.add(k, n, budget)
                } else {
                    store.sub(k, n)
                }
            }
        }
        if add {
            self.total += n
        } else {
            self.total -= n
        }
    }

    /// The positive or the negative store.
    #[inline]
    fn store(&self, negative: bool) -> &DenseStore {
        if negative {
            &self.negative
        } else {
            &self.positive
        }
    }

    /// Starts loading the header's lines past the first (zeros, negatives, the last
    /// quantile's place).
    #[inline]
    fn prefetch_cold_header(&self) {
        let base = std::ptr::from_ref(self).cast::<u8>();
        for line in (64..size_of::<Self>()).step_by(64) {
            crate::prefetch::prefetch(base.wrapping_add(line));
        }
    }

    /// Records `value` into ring slot `slot`.
    #[inline]
    pub fn record(&mut self, slot: usize, value: f64) {
        let key = pane_key(value);
        self.panes[slot].add(key);
        self.apply(key, 1, true);
    }

    /// Starts loading the line of this header that recording a positive value reads.
    #[inline]
    pub fn prefetch_header(&self) {
        crate::prefetch::prefetch(self);
    }

    /// Starts loading what recording `value` in slot `slot` reaches from this header: the
    /// slot's inline bucket list, and the window-wide count (and its group sum) of the
    /// value's bucket. Call after `prefetch_header` has had time to bring the header in.
    #[inline]
    pub fn prefetch_slot(&self, slot: usize, value: f64) {
        if let Some(pane) = self.panes.get(slot) {
            crate::prefetch::prefetch(pane);
        }
        let key = pane_key(value);
        if key & (NEG_FLAG | ZERO_KEY) != 0 {
            self.prefetch_cold_header();
        }
        if let Some((store, at)) = self.prefetch_count(key)
            && let Some(g) = store.groups.get(at / GROUP)
        {
            crate::prefetch::prefetch(g);
        }
    }

    /// Starts loading the overflow of slot `slot`, if it has one.
    #[inline]
    fn prefetch_overflow(&self, slot: usize) {
        if let Some(pane) = self.panes.get(slot)
            && let Some(overflow) = &pane.overflow
        {
            crate::prefetch::prefetch(std::ptr::from_ref::<Overflow>(overflow));
        }
    }

    /// Starts loading the window-wide count of bucket `key`; returns its store and its
    /// index there (`None` for zero).
    #[inline]
    fn prefetch_count(&self, key: u32) -> Option<(&DenseStore, usize)> {
        let (negative, k) = split_key(key)?;
        let store = self.store(negative);
        let at = k.wrapping_sub(store.offset) as usize;
        if let Some(c) = store.counts.get(at) {
            crate::prefetch::prefetch(c);
        }
        Some((store, at))
    }

    /// Starts loading what evicting slot `slot` and then walking to a quantile will read,
    /// in steps a batch apart (each needs what the one before brought in): 0, the slot's
    /// inline list, the rest of the header, the group sums and the bucket group of the
    /// last quantile; 1, the slot's overflow; 2, the counts its inline list will
    /// decrement, and the overflow's list.
    #[inline]
    pub fn prefetch_evict(&self, slot: usize, step: u8) {
        let Some(pane) = self.panes.get(slot) else {
            return;
        };
        match (step, pane) {
            (0, _) => {
                crate::prefetch::prefetch(pane);
                // A quantile reads the whole header.
                self.prefetch_cold_header();
                if let Some((negative, at)) = self.last_found {
                    let store = self.store(negative);
                    for store_groups in store.groups.chunks(8) {
                        crate::prefetch::prefetch(store_groups.as_ptr());
                    }
                    // The walk scans the counts of the answer's group.
                    let start = at as usize / GROUP * GROUP;
                    let end = (start + GROUP).min(store.counts.len());
                    for line in store.counts.get(start..end).unwrap_or_default().chunks(8) {
                        crate::prefetch::prefetch(line.as_ptr());
                    }
                }
            }
            (1, _) => self.prefetch_overflow(slot),
            _ => {
                for &key in pane.inline_keys() {
                    self.prefetch_count(key);
                }
                if let Some(overflow) = &pane.overflow
                    && let Overflow::Small(list) = &**overflow
                {
                    crate::prefetch::prefetch(list.as_ptr());
                }
            }
        }
    }

    /// Removes everything slot `slot` recorded.
    pub fn evict(&mut self, slot: usize) {
        let mut pane = std::mem::take(&mut self.panes[slot]);
        pane.drain(|key, n| self.apply(key, n, false));
        self.panes[slot] = pane;
        if self.total == 0 {
            self.positive.clear();
            self.negative.clear();
        } else {
            let budget = self.budget as usize;
            if self.positive.floor_too_high(budget) || self.negative.floor_too_high(budget) {
                self.rebuild();
            }
        }
    }

    /// Counts every value again from the panes' own keys, so buckets merged under a floor
    /// that the values left in the window no longer need come apart again.
    #[cold]
    fn rebuild(&mut self) {
        let panes = std::mem::take(&mut self.panes);
        self.positive.clear();
        self.negative.clear();
        self.zeros = 0;
        self.total = 0;
        self.last_found = None;
        for pane in panes.iter() {
            pane.visit(|key, n| self.apply(key, n, true));
        }
        self.panes = panes;
    }

    /// Number of values recorded and not evicted.
    pub fn len(&self) -> u64 {
        self.total
    }

    /// True when nothing is recorded.
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// The nearest-rank `q`-quantile (the value at rank `ceil(q * n)`), as a bucket
    /// midpoint within `BUCKET_RELATIVE_ERROR` of the exact value; `None` when empty.
    pub fn quantile(&mut self, q: f64) -> Option<f64> {
        if self.total == 0 {
            return None;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let zeros = |left: u64| {
            if self.zeros >= left {
                Ok(Spot::Zero)
            } else {
                Err(left - self.zeros)
            }
        };
        let found = if rank > self.total / 2 {
            // High quantiles walk down from the largest value: the shorter way.
            let from_top = self.total - rank + 1;
            Self::from_largest_key(&self.positive, from_top, false)
                .or_else(zeros)
                .or_else(|left| Self::from_smallest_key(&self.negative, left, true))
        } else {
            Self::from_largest_key(&self.negative, rank, true)
                .or_else(zeros)
                .or_else(|left| Self::from_smallest_key(&self.positive, left, false))
        };
        match found.ok()? {
            Spot::Zero => Some(0.0),
            Spot::Bucket(negative, at) => {
                self.last_found = Some((negative, at as u32));
                let store = self.store(negative);
                let magnitude = representative(store.offset + at as u32);
                Some(if negative { -magnitude } else { magnitude })
            }
        }
    }

    /// The `rank`-th entry of a store counted from its largest magnitude; `Err(rank still
    /// to go)` when the store holds fewer.
    fn from_largest_key(store: &DenseStore, rank: u64, negative: bool) -> Result<Spot, u64> {
        store.walk_down(rank).map(|i| Spot::Bucket(negative, i))
    }

    /// Like `from_largest_key`, counted from the smallest magnitude.
    fn from_smallest_key(store: &DenseStore, rank: u64, negative: bool) -> Result<Spot, u64> {
        store.walk_up(rank).map(|i| Spot::Bucket(negative, i))
    }

    /// The non-empty buckets, in value order, as `(lower, upper, count)`. The lowest
    /// bucket of a store that merged small magnitudes under its floor reaches down to 0.
    pub fn buckets(&self) -> Vec<(f64, f64, u64)> {
        let bounds = |store: &DenseStore, i: usize| {
            let key = store.offset + i as u32;
            let lo = if store.floor > 0 && key <= store.floor {
                0.0
            } else {
                f64::from_bits(u64::from(key) << SHIFT)
            };
            let hi = f64::from_bits(u64::from(key + 1) << SHIFT);
            (lo, if hi.is_finite() { hi } else { f64::MAX })
        };
        let mut out = Vec::new();
        for (i, &c) in self.negative.counts.iter().enumerate().rev() {
            if c > 0 {
                let (lo, hi) = bounds(&self.negative, i);
                out.push((-hi, -lo, c));
            }
        }
        if self.zeros > 0 {
            out.push((0.0, 0.0, self.zeros));
        }
        for (i, &c) in self.positive.counts.iter().enumerate() {
            if c > 0 {
                let (lo, hi) = bounds(&self.positive, i);
                out.push((lo, hi, c));
            }
        }
        out
    }

    /// Heap bytes held (stores plus pane lists).
    pub fn heap_bytes(&self) -> usize {
        self.positive.heap_bytes()
            + self.negative.heap_bytes()
            + self.panes.len() * size_of::<PaneCounts>()
            + self.panes.iter().map(PaneCounts::heap_bytes).sum::<usize>()
    }
}

#[cfg(test)]
mod tests;
