//! The original design's aggregation, done in memory as a fair baseline: per query an
//! ordered map keyed by event time (a sorted set), insert then trim on every event, and
//! at refresh a full range scan; sum and count keep a running total instead, as the
//! original design allows.

use std::collections::{BTreeMap, HashMap};

use livedash_engine::{Aggregation, MetricEvent};

#[derive(Debug)]
struct SortedSetQuery {
    window_ms: i64,
    aggregation: Aggregation,
    /// (event time, arrival sequence) -> value: the sorted set's score and member.
    set: BTreeMap<(i64, u64), f64>,
    running_sum: f64,
}

/// Sorted-set aggregation for one widget per metric.
#[derive(Debug, Default)]
pub struct SortedSetEngine {
    by_metric: HashMap<String, Vec<usize>>,
    queries: Vec<SortedSetQuery>,
    seq: u64,
}

impl SortedSetEngine {
    /// Adds a query for `metric`.
    pub fn add_query(&mut self, metric: &str, aggregation: Aggregation, window_seconds: u64) {
        self.by_metric
            .entry(metric.to_string())
            .or_default()
            .push(self.queries.len());
        self.queries.push(SortedSetQuery {
            window_ms: window_seconds as i64 * 1000,
            aggregation,
            set: BTreeMap::new(),
            running_sum: 0.0,
        });
    }

    /// ZADD then ZREMRANGEBYSCORE (-inf, now - window) for each event.
    pub fn apply(&mut self, events: &[MetricEvent], now_ms: i64) {
        for e in events {
            let Some(ids) = self.by_metric.get(e.metric_name.as_str()) else {
                continue;
            };
            for &id in ids {
                let q = &mut self.queries[id];
                self.seq += 1;
                q.set.insert((e.event_time, self.seq), e.value);
                q.running_sum += e.value;
                let cutoff = now_ms - q.window_ms;
                while let Some(entry) = q.set.first_entry() {
                    if entry.key().0 >= cutoff {
                        break;
                    }
                    q.running_sum -= entry.remove();
                }
            }
        }
    }

    /// One refresh of query `id`: ZRANGEBYSCORE (now - window, now] and aggregate.
    pub fn refresh(&mut self, id: usize, now_ms: i64) -> Option<f64> {
        let q = &mut self.queries[id];
        let cutoff = now_ms - q.window_ms;
        while let Some(entry) = q.set.first_entry() {
            if entry.key().0 >= cutoff {
                break;
            }
            q.running_sum -= entry.remove();
        }
        if q.set.is_empty() {
            return (q.aggregation == Aggregation::Count).then_some(0.0);
        }
        let range = q.set.range((cutoff, 0)..(now_ms + 1, 0)).map(|(_, v)| *v);
        match q.aggregation {
            Aggregation::Sum => Some(q.running_sum),
            Aggregation::Count => Some(q.set.len() as f64),
            Aggregation::Avg => Some(q.running_sum / q.set.len() as f64),
            Aggregation::Min => range.reduce(f64::min),
            Aggregation::Max => range.reduce(f64::max),
            agg => {
                let mut values: Vec<f64> = range.collect();
                if values.is_empty() {
                    return None;
                }
                let q = agg.quantile().unwrap_or(1.0);
                let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
                let (_, v, _) = values.select_nth_unstable_by(rank - 1, f64::total_cmp);
                Some(*v)
            }
        }
    }

    /// Refreshes every query.
    pub fn refresh_all(&mut self, now_ms: i64) -> usize {
        (0..self.queries.len())
            .filter(|&id| self.refresh(id, now_ms).is_some())
            .count()
    }

    /// Entries held over all queries.
    pub fn len(&self) -> usize {
        self.queries.iter().map(|q| q.set.len()).sum()
    }

    /// True when no entry is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
