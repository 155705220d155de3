//! The floor of window ingest: the same work as a livedash sum widget, with nothing of
//! livedash's in it. One flat ring of one-second panes per metric (sum and count), a hash
//! map from metric name to ring, a running total per ring that an evicted pane is
//! subtracted from; events looked up and their panes prefetched a chunk at a time, then
//! added. No tags, no filters, no widgets, no history, no percentiles: what is left is the
//! metric lookup and the pane each event lands in, which no sliding window avoids.

use hashbrown::HashMap;
use livedash_engine::MetricEvent;
use livedash_engine::prefetch::prefetch;

/// One second of one metric.
#[derive(Debug, Clone, Copy, Default)]
#[repr(C)]
struct Pane {
    second: i64,
    sum: f64,
    count: u64,
}

/// Sliding sums over `panes` seconds for a fixed set of metrics.
#[derive(Debug)]
pub struct FlatSums {
    rings: HashMap<String, u32>,
    panes_per_ring: usize,
    panes: Vec<Pane>,
    totals: Vec<(f64, u64)>,
    /// Scratch: per event of a chunk, its ring, pane index, second and value.
    plan: Vec<(u32, usize, i64, f64)>,
}

const CHUNK: usize = 64;

impl FlatSums {
    pub fn new(names: &[String], window_seconds: u64) -> Self {
        let panes_per_ring = window_seconds as usize;
        Self {
            rings: names
                .iter()
                .enumerate()
                .map(|(i, n)| (n.clone(), i as u32))
                .collect(),
            panes_per_ring,
            panes: vec![
                Pane {
                    second: i64::MIN,
                    ..Pane::default()
                };
                names.len() * panes_per_ring
            ],
            totals: vec![(0.0, 0); names.len()],
            plan: Vec::with_capacity(CHUNK),
        }
    }

    /// Adds `events` (events of an unknown metric, or older than the window, are
    /// skipped).
    pub fn apply(&mut self, events: &[MetricEvent], now_ms: i64) {
        let oldest = now_ms.div_euclid(1000) - self.panes_per_ring as i64 + 1;
        for chunk in events.chunks(CHUNK) {
            self.plan.clear();
            for ev in chunk {
                let Some(&ring) = self.rings.get(ev.metric_name.as_str()) else {
                    continue;
                };
                let second = ev.event_time.div_euclid(1000);
                if second < oldest {
                    continue;
                }
                let at = ring as usize * self.panes_per_ring
                    + second.rem_euclid(self.panes_per_ring as i64) as usize;
                prefetch(self.panes.as_ptr().wrapping_add(at));
                self.plan.push((ring, at, second, ev.value));
            }
            for &(ring, at, second, value) in &self.plan {
                let pane = &mut self.panes[at];
                let total = &mut self.totals[ring as usize];
                if pane.second != second {
                    if pane.second != i64::MIN {
                        total.0 -= pane.sum;
                        total.1 -= pane.count;
                    }
                    *pane = Pane {
                        second,
                        sum: 0.0,
                        count: 0,
                    };
                }
                pane.sum += value;
                pane.count += 1;
                total.0 += value;
                total.1 += 1;
            }
        }
    }

    /// Slides every ring to `now_ms` (the pane that left the window is subtracted) and
    /// reads its sum; returns how many rings hold events.
    pub fn refresh(&mut self, now_ms: i64) -> usize {
        let leaving = now_ms.div_euclid(1000) - self.panes_per_ring as i64;
        let at = leaving.rem_euclid(self.panes_per_ring as i64) as usize;
        let mut live = 0;
        for (ring, total) in self.totals.iter_mut().enumerate() {
            let pane = &mut self.panes[ring * self.panes_per_ring + at];
            if pane.second != i64::MIN && pane.second <= leaving {
                total.0 -= pane.sum;
                total.1 -= pane.count;
                pane.second = i64::MIN;
            }
            if std::hint::black_box(total.1) > 0 {
                live += 1;
            }
        }
        live
    }

    /// The sum over the window of metric `name`, and its event count.
    pub fn sum(&self, name: &str) -> Option<(f64, u64)> {
        self.rings.get(name).map(|&r| self.totals[r as usize])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(name: &str, t: i64, v: f64) -> MetricEvent {
        MetricEvent {
            metric_name: name.into(),
            value: v,
            tags: Default::default(),
            event_time: t,
        }
    }

    #[test]
    fn sums_slide_with_the_window() {
        let names = vec!["a".to_string(), "b".to_string()];
        let mut f = FlatSums::new(&names, 3);
        f.apply(
            &[
                ev("a", 1_000, 1.0),
                ev("a", 2_500, 2.0),
                ev("b", 2_000, 5.0),
            ],
            3_000,
        );
        f.refresh(3_000);
        assert_eq!(f.sum("a"), Some((3.0, 2)));
        f.apply(&[ev("a", 3_100, 4.0)], 4_000);
        // At 4 s the window holds seconds 2 and 3: second 1 left.
        f.refresh(4_000);
        assert_eq!(f.sum("a"), Some((6.0, 2)));
        assert_eq!(f.sum("b"), Some((5.0, 1)));
        // At 5 s second 2 leaves: b's only event goes.
        f.refresh(5_000);
        assert_eq!(f.sum("b"), Some((0.0, 0)));
        assert_eq!(f.sum("a"), Some((4.0, 1)));
    }
}
