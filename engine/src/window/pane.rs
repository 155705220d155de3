//! One pane: the summary of every event whose time falls in one fixed-width interval.
//! Panes are plain copyable structs so a ring of them is one contiguous allocation.

use super::compensated::CompensatedSum;

/// Marks a ring slot that holds no live pane.
pub(crate) const EMPTY: i64 = i64::MIN;

/// Count, sum, min and max of the events in one pane.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Pane {
    /// Pane number (`event_time.div_euclid(pane_ms)`), or `EMPTY`.
    pub index: i64,
    pub count: u64,
    pub sum: CompensatedSum,
    pub min: f64,
    pub max: f64,
}

impl Pane {
    pub(crate) const VACANT: Pane = Pane {
        index: EMPTY,
        count: 0,
        sum: CompensatedSum::ZERO,
        min: f64::INFINITY,
        max: f64::NEG_INFINITY,
    };

    /// Starts pane `index` with one event.
    #[inline]
    pub(crate) fn start(index: i64, value: f64) -> Pane {
        Pane {
            index,
            count: 1,
            sum: CompensatedSum::of(value),
            min: value,
            max: value,
        }
    }

    #[inline]
    pub(crate) fn add(&mut self, value: f64) {
        self.count += 1;
        self.sum.add(value);
        self.min = self.min.min(value);
        self.max = self.max.max(value);
    }

    pub(crate) fn is_live(&self) -> bool {
        self.index != EMPTY
    }
}
