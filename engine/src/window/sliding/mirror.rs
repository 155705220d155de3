//! What the state mirror reads from a window and writes back into one: the panes that
//! changed since its last read (found by comparing each slot of the changed blocks with
//! what it read last time, so an insert pays nothing for it), and a restore from panes.

use serde::{Deserialize, Serialize};

use super::super::compensated::CompensatedSum;
use super::super::pane::{EMPTY, Pane};
use super::SlidingWindow;

/// One pane as the mirror stores it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PaneState {
    /// Pane number (`event_time.div_euclid(pane_ms)`).
    pub index: i64,
    pub count: u64,
    /// The pane's compensated sum: running sum and compensation.
    pub sum: (f64, f64),
    pub min: f64,
    pub max: f64,
    /// Percentile buckets (key, count), empty when the window keeps no histogram.
    pub buckets: Vec<(u32, u64)>,
}

/// The panes of a window that changed since the mirror last read it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PaneChanges {
    /// True when this is every live pane (the first read, or after `forget_mirror`):
    /// whatever was stored before is to be replaced.
    pub full: bool,
    /// Ring slot and the pane now there.
    pub set: Vec<(u32, PaneState)>,
    /// Ring slots whose pane slid out.
    pub deleted: Vec<u32>,
}

impl PaneChanges {
    pub fn is_empty(&self) -> bool {
        !self.full && self.set.is_empty() && self.deleted.is_empty()
    }
}

impl SlidingWindow {
    /// The panes that changed since the last call (all live panes on the first call).
    pub fn take_changes(&mut self) -> PaneChanges {
        let cap = self.panes.len();
        let full = self.mirrored.is_none();
        let blocks = if full {
            u64::MAX
        } else {
            self.mirror_dirty | self.dirty
        };
        self.mirror_dirty = 0;
        let shadow = self
            .mirrored
            .get_or_insert_with(|| vec![(EMPTY, 0); cap].into_boxed_slice());
        let mut changes = PaneChanges {
            full,
            ..PaneChanges::default()
        };
        let mut left = blocks;
        while left != 0 {
            let block = left.trailing_zeros() as usize;
            left &= left - 1;
            let start = block << self.block_shift;
            if start >= cap {
                break;
            }
            let end = (start + (1 << self.block_shift)).min(cap);
            for slot in start..end {
                let pane = &self.panes[slot];
                let seen = &mut shadow[slot];
                if (pane.index, pane.count) == *seen {
                    continue;
                }
                if pane.is_live() {
                    let buckets = self
                        .histogram
                        .as_ref()
                        .map_or_else(Vec::new, |h| h.pane_buckets(slot));
                    changes.set.push((slot as u32, export(pane, buckets)));
                } else {
                    changes.deleted.push(slot as u32);
                }
                *seen = (pane.index, pane.count);
            }
        }
        changes
    }

    /// Makes the next `take_changes` a full one (after the mirror lost track, for
    /// example when a write failed).
    pub fn forget_mirror(&mut self) {
        self.mirrored = None;
    }

    /// Loads `panes` into this window, which must be empty (a new one), and sets its
    /// newest event time. Panes outside the window at its clock, and a second pane for
    /// a slot, are skipped. Returns the number of panes loaded.
    pub fn restore(&mut self, latest: Option<i64>, panes: &[PaneState]) -> usize {
        debug_assert_eq!(self.count, 0, "restore into an empty window");
        let cap = self.cap();
        let oldest = self.current - i64::from(self.span_panes) + 1;
        let newest = self.current + i64::from(self.future_panes) - 1;
        let mut loaded = 0;
        for p in panes {
            if p.count == 0 || p.index < oldest || p.index > newest {
                continue;
            }
            let slot = p.index.rem_euclid(cap) as usize;
            if self.panes[slot].is_live() {
                continue;
            }
            self.panes[slot] = Pane {
                index: p.index,
                count: p.count,
                sum: CompensatedSum::from_parts(p.sum.0, p.sum.1),
                min: p.min,
                max: p.max,
            };
            self.count += p.count;
            if let Some(h) = self.histogram.as_mut() {
                for &(key, n) in &p.buckets {
                    h.restore_bucket(slot, key, n);
                }
            }
            self.dirty |= 1 << (slot >> self.block_shift);
            loaded += 1;
        }
        if self.count > 0 {
            self.latest = latest.unwrap_or(i64::MIN);
        }
        self.fold_valid = false;
        self.sum_valid = false;
        self.mirrored = None;
        loaded
    }
}

fn export(pane: &Pane, buckets: Vec<(u32, u64)>) -> PaneState {
    PaneState {
        index: pane.index,
        count: pane.count,
        sum: pane.sum.parts(),
        min: pane.min,
        max: pane.max,
        buckets,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Aggregation;
    use crate::window::WindowSpec;

    fn window(now: i64) -> SlidingWindow {
        SlidingWindow::new(WindowSpec::for_window(60, 5_000), now, true)
    }

    /// Replays the changes onto a map of slot to pane, as the mirror's store does.
    fn store(into: &mut [Option<PaneState>], changes: PaneChanges) {
        if changes.full {
            into.iter_mut().for_each(|p| *p = None);
        }
        for (slot, pane) in changes.set {
            into[slot as usize] = Some(pane);
        }
        for slot in changes.deleted {
            into[slot as usize] = None;
        }
    }

    /// After any mix of inserts, evictions and reads, the stored panes restore a window
    /// that answers every aggregation exactly as the original.
    #[test]
    fn changes_replayed_into_a_store_restore_the_same_window() {
        let start = 1_000_000_000;
        let mut w = window(start);
        let mut stored = vec![None; w.panes.len()];
        let mut now = start;
        for step in 0..400i64 {
            now += 250;
            w.advance(now);
            for k in 0..(step % 7) {
                let late = (k * 1_300) % 20_000;
                w.insert(now - late, (step * 31 % 97) as f64 - 20.0 + k as f64 * 0.25);
            }
            if step % 5 == 0 {
                w.value(Aggregation::Max);
            }
            if step % 3 == 0 {
                store(&mut stored, w.take_changes());
            }
        }
        store(&mut stored, w.take_changes());
        let panes: Vec<PaneState> = stored.into_iter().flatten().collect();
        let mut restored = window(now);
        restored.restore(w.latest(), &panes);
        for agg in Aggregation::ALL {
            assert_eq!(w.value(agg), restored.value(agg), "{agg:?}");
        }
        assert_eq!(w.count(), restored.count());
        assert_eq!(w.latest(), restored.latest());
    }

    #[test]
    fn a_quiet_window_has_no_changes_and_a_restore_is_sent_whole() {
        let mut w = window(10_000_000);
        w.insert(10_000_000, 1.0);
        assert_eq!(w.take_changes().set.len(), 1);
        assert!(w.take_changes().is_empty());
        w.insert(10_000_000, 2.0);
        let changes = w.take_changes();
        assert!(!changes.full);
        assert_eq!(changes.set.len(), 1);
        assert_eq!(changes.set[0].1.count, 2);
        w.forget_mirror();
        let again = w.take_changes();
        assert!(again.full);
        assert_eq!(again.set.len(), 1);
    }

    #[test]
    fn panes_outside_the_window_are_not_restored() {
        let mut w = window(10_000_000);
        w.insert(10_000_000, 1.0);
        let panes: Vec<PaneState> = w.take_changes().set.into_iter().map(|(_, p)| p).collect();
        let mut later = window(10_000_000 + 61_000);
        assert_eq!(later.restore(w.latest(), &panes), 0);
        assert_eq!(later.count(), 0);
        assert_eq!(later.latest(), None);
    }
}
