//! A window's value distribution as `histogram` widgets report it: the non-empty
//! buckets of the histogram the percentiles use, in value order, merged evenly down to
//! a most number of buckets.

use serde::{Deserialize, Serialize};

/// How many values a window holds and how they spread: `[lower, upper, count]` per
/// non-empty bucket, in value order. Every value counted in a bucket lies within
/// `[lower, upper]`; a bucket is at most `BUCKET_RELATIVE_ERROR` wide on each side of
/// its midpoint until buckets are merged, and the outermost bounds are the window's
/// exact minimum and maximum.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Distribution {
    pub count: u64,
    pub buckets: Vec<(f64, f64, u64)>,
}

impl Distribution {
    /// `buckets` (in value order) merged evenly into at most `max` (at least 1): each
    /// merged bucket takes the same number of neighbours, the last one what is left.
    pub fn merged(buckets: Vec<(f64, f64, u64)>, max: usize) -> Self {
        let count = buckets.iter().map(|b| b.2).sum();
        let max = max.max(1);
        if buckets.len() <= max {
            return Self { count, buckets };
        }
        let per = buckets.len().div_ceil(max);
        let buckets = buckets
            .chunks(per)
            .map(|c| (c[0].0, c[c.len() - 1].1, c.iter().map(|b| b.2).sum()))
            .collect();
        Self { count, buckets }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merging_keeps_every_count_and_the_outer_bounds() {
        let buckets: Vec<_> = (0..10).map(|i| (i as f64, i as f64 + 1.0, i + 1)).collect();
        let d = Distribution::merged(buckets.clone(), 4);
        assert_eq!(d.count, 55);
        assert_eq!(
            d.buckets,
            vec![
                (0.0, 3.0, 6),
                (3.0, 6.0, 15),
                (6.0, 9.0, 24),
                (9.0, 10.0, 10)
            ]
        );
        assert_eq!(Distribution::merged(buckets.clone(), 10).buckets, buckets);
        assert_eq!(
            Distribution::merged(buckets, 0).buckets,
            vec![(0.0, 10.0, 55)]
        );
        assert_eq!(Distribution::merged(Vec::new(), 3), Distribution::default());
    }
}
