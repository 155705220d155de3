//! A Neumaier-compensated running sum, so that adding and later subtracting pane sums
//! (subtract-on-evict) does not let rounding error build up over hours of sliding.

/// Running sum with a compensation term for lost low-order bits.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct CompensatedSum {
    sum: f64,
    compensation: f64,
}

impl CompensatedSum {
    pub(crate) const ZERO: CompensatedSum = CompensatedSum {
        sum: 0.0,
        compensation: 0.0,
    };

    pub(crate) fn of(x: f64) -> Self {
        Self {
            sum: x,
            compensation: 0.0,
        }
    }

    /// Adds another compensated sum, both of its parts.
    pub(crate) fn add_sum(&mut self, other: &CompensatedSum) {
        self.add(other.sum);
        self.add(other.compensation);
    }

    /// Subtracts another compensated sum, both of its parts, so that taking out what was
    /// put in leaves no residue.
    pub(crate) fn sub_sum(&mut self, other: &CompensatedSum) {
        self.add(-other.sum);
        self.add(-other.compensation);
    }

    #[inline]
    pub(crate) fn add(&mut self, x: f64) {
        let t = self.sum + x;
        if self.sum.abs() >= x.abs() {
            self.compensation += (self.sum - t) + x;
        } else {
            self.compensation += (x - t) + self.sum;
        }
        self.sum = t;
    }

    pub(crate) fn value(&self) -> f64 {
        self.sum + self.compensation
    }

    /// The running sum and its compensation, as stored by the state mirror.
    pub(crate) fn parts(&self) -> (f64, f64) {
        (self.sum, self.compensation)
    }

    pub(crate) fn from_parts(sum: f64, compensation: f64) -> Self {
        Self { sum, compensation }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cancellation_is_exact() {
        let mut s = CompensatedSum::default();
        s.add(1e16);
        s.add(1.0);
        s.add(-1e16);
        assert_eq!(s.value(), 1.0);
        let mut naive = 1e16 + 1.0;
        naive -= 1e16;
        assert_ne!(naive, 1.0, "plain f64 loses the 1.0 here");
    }
}
