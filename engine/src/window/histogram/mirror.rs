//! A pane's buckets as the state mirror stores them, and how they are put back.

use super::{Histogram, Overflow, PaneCounts};

impl Histogram {
    /// The (bucket key, count) pairs ring slot `slot` recorded; a key may come twice.
    pub fn pane_buckets(&self, slot: usize) -> Vec<(u32, u64)> {
        let mut out = Vec::new();
        if let Some(pane) = self.panes.get(slot) {
            pane.visit(|k, n| out.push((k, n)));
        }
        out
    }

    /// Records `n` values of bucket `key` into ring slot `slot`, as `pane_buckets`
    /// listed them.
    pub fn restore_bucket(&mut self, slot: usize, key: u32, n: u64) {
        let Some(pane) = self.panes.get_mut(slot) else {
            return;
        };
        if n == 0 {
            return;
        }
        pane.add_n(key, n);
        self.apply(key, n, true);
    }
}

impl PaneCounts {
    fn add_n(&mut self, key: u32, n: u64) {
        if n == 1 {
            self.add(key);
            return;
        }
        let overflow = self.overflow.get_or_insert_default();
        if let Overflow::Small(list) = &mut **overflow {
            let map = list.drain(..).map(|(k, c)| (k, u64::from(c))).collect();
            **overflow = Overflow::Large(map);
        }
        if let Overflow::Large(map) = &mut **overflow {
            *map.entry(key).or_insert(0) += n;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A histogram rebuilt from the pane lists of another gives the same quantiles, and
    /// evicting a rebuilt pane takes out exactly what it put in.
    #[test]
    fn rebuilt_from_pane_buckets_it_answers_the_same() {
        let mut original = Histogram::new(4);
        for i in 0..2_000u32 {
            let value = f64::from(i % 300) * 1.5 - 40.0;
            original.record((i % 3) as usize, value);
        }
        let mut rebuilt = Histogram::new(4);
        for slot in 0..4 {
            for (key, n) in original.pane_buckets(slot) {
                rebuilt.restore_bucket(slot, key, n);
            }
        }
        for q in [0.0, 0.1, 0.5, 0.9, 0.99, 1.0] {
            assert_eq!(original.quantile(q), rebuilt.quantile(q), "q = {q}");
        }
        rebuilt.evict(1);
        original.evict(1);
        assert_eq!(original.len(), rebuilt.len());
        assert_eq!(original.quantile(0.5), rebuilt.quantile(0.5));
    }
}
