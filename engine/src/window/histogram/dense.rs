//! The window-wide counts of one sign of a histogram: contiguous buckets within a budget.

/// Buckets per group summary: a quantile walk skips whole groups by their sums.
pub(super) const GROUP: usize = 64;

/// Contiguous counts over a range of magnitude keys, with a sum per group of `GROUP`
/// buckets so a quantile walk steps over empty or passed-over groups at once. Boxed
/// slices (grown by reallocating, which is rare) keep it to 40 bytes, so the histogram's
/// header line holds the positive store whole.
///
/// The store spans at most `budget` buckets. When a value would stretch it further, the
/// smallest magnitudes are merged into the lowest bucket kept (`floor`): a key below the
/// floor counts there, now and when it is taken out again, and the floor only rises
/// until the histogram is rebuilt.
#[derive(Debug, Clone, Default)]
pub(super) struct DenseStore {
    pub(super) offset: u32,
    /// Keys below this count in its bucket (0: nothing merged).
    pub(super) floor: u32,
    pub(super) counts: Box<[u64]>,
    pub(super) groups: Box<[u64]>,
}

impl DenseStore {
    #[inline]
    pub(super) fn add(&mut self, key: u32, n: u64, budget: usize) {
        let key = key.max(self.floor);
        if self.counts.is_empty() {
            self.offset = key;
            self.counts = Box::new([n]);
            self.groups = Box::new([n]);
            return;
        }
        if key < self.offset {
            let grow = (self.offset - key) as usize;
            if grow + self.counts.len() > budget {
                return self.add_within(key, n, budget);
            }
            let margin = grow
                .max(self.counts.len() / 2)
                .min(self.offset as usize)
                .min(budget - self.counts.len());
            let mut counts = vec![0; margin + self.counts.len()];
            counts[margin..].copy_from_slice(&self.counts);
            self.counts = counts.into_boxed_slice();
            self.offset -= margin as u32;
            self.regroup();
        }
        let at = (key - self.offset) as usize;
        if at >= self.counts.len() {
            if at >= budget {
                return self.add_within(key, n, budget);
            }
            let len = (at + 1)
                .max(self.counts.len() + self.counts.len() / 2)
                .min(budget);
            let mut counts = std::mem::take(&mut self.counts).into_vec();
            counts.resize(len, 0);
            self.counts = counts.into_boxed_slice();
            let mut groups = std::mem::take(&mut self.groups).into_vec();
            groups.resize(len.div_ceil(GROUP), 0);
            self.groups = groups.into_boxed_slice();
        }
        self.counts[at] += n;
        self.groups[at / GROUP] += n;
    }

    /// Adds `n` at `key` when the store cannot simply grow to it within `budget`: lays
    /// the counts out again from the lowest key held, or, when the keys held and `key`
    /// span more than `budget`, from the highest less `budget`, merging what is below.
    #[cold]
    fn add_within(&mut self, key: u32, n: u64, budget: usize) {
        let held = self
            .counts
            .iter()
            .enumerate()
            .filter(|(_, c)| **c > 0)
            .map(|(i, _)| self.offset + i as u32);
        let (lo, hi) = held.fold((key, key), |(lo, hi), k| (lo.min(k), hi.max(k)));
        let start = if (hi - lo) as usize >= budget {
            // Only a span wider than the budget merges anything, and raises the floor.
            let start = hi + 1 - budget as u32;
            self.floor = self.floor.max(start);
            start
        } else {
            lo
        };
        let mut counts = vec![0u64; (hi - start + 1) as usize];
        for (i, &c) in self.counts.iter().enumerate() {
            if c > 0 {
                let k = (self.offset + i as u32).max(start);
                counts[(k - start) as usize] += c;
            }
        }
        counts[(key.max(start) - start) as usize] += n;
        self.offset = start;
        self.counts = counts.into_boxed_slice();
        self.regroup();
    }

    /// The highest key holding a count.
    pub(super) fn highest(&self) -> Option<u32> {
        let g = self.groups.iter().rposition(|&sum| sum > 0)?;
        let end = ((g + 1) * GROUP).min(self.counts.len());
        let i = self.counts[g * GROUP..end].iter().rposition(|&c| c > 0)?;
        Some(self.offset + (g * GROUP + i) as u32)
    }

    /// Whether the floor is higher than the keys held need, by at least a quarter of
    /// `budget`: a rebuild from the panes' keys would then keep more buckets apart.
    pub(super) fn floor_too_high(&self, budget: usize) -> bool {
        self.floor > 0
            && self.highest().is_none_or(|hi| {
                hi.saturating_sub(budget as u32 - 1) + (budget / 4) as u32 <= self.floor
            })
    }

    #[inline]
    pub(super) fn sub(&mut self, key: u32, n: u64) {
        let at = key.max(self.floor).wrapping_sub(self.offset) as usize;
        if let Some(c) = self.counts.get_mut(at) {
            debug_assert!(*c >= n, "histogram count underflow");
            let n = n.min(*c);
            *c -= n;
            self.groups[at / GROUP] -= n;
        }
    }

    fn regroup(&mut self) {
        self.groups = self.counts.chunks(GROUP).map(|c| c.iter().sum()).collect();
    }

    pub(super) fn clear(&mut self) {
        *self = Self::default();
    }

    /// Index of the bucket holding the `rank`-th value counted from the largest key, or
    /// what is left of `rank` past this store.
    pub(super) fn walk_down(&self, rank: u64) -> Result<usize, u64> {
        let mut left = rank;
        for (g, &sum) in self.groups.iter().enumerate().rev() {
            if sum < left {
                left -= sum;
                continue;
            }
            let start = g * GROUP;
            let end = (start + GROUP).min(self.counts.len());
            for (i, &c) in self.counts[start..end].iter().enumerate().rev() {
                if c >= left {
                    return Ok(start + i);
                }
                left -= c;
            }
        }
        Err(left)
    }

    /// As `walk_down`, counted from the smallest key.
    pub(super) fn walk_up(&self, rank: u64) -> Result<usize, u64> {
        let mut left = rank;
        for (g, &sum) in self.groups.iter().enumerate() {
            if sum < left {
                left -= sum;
                continue;
            }
            let start = g * GROUP;
            let end = (start + GROUP).min(self.counts.len());
            for (i, &c) in self.counts[start..end].iter().enumerate() {
                if c >= left {
                    return Ok(start + i);
                }
                left -= c;
            }
        }
        Err(left)
    }

    pub(super) fn heap_bytes(&self) -> usize {
        (self.counts.len() + self.groups.len()) * size_of::<u64>()
    }
}
