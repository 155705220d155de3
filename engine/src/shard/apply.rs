//! Applying a batch of events to the shard's windows. Events are looked up by metric
//! name and checked in time first; the (event, query) pairs then go through in chunks, in
//! passes that prefetch first and insert last, so the cache misses of a chunk overlap.
//!
//! The pairs can also be grouped by query first, with a counting sort (stable, so each
//! query sees its events in arrival order and the results are exactly those of arrival
//! order), so the events of one query meet its pane while it is in cache. Measured by
//! batch size (`cargo bench -p livedash-bench --bench window -- window_batches`), that
//! does not pay: with 10,000 series a batch of 10,000 events holds about one event per
//! query, and in batches of 100,000 the events themselves no longer fit in cache, so
//! reading them costs what grouping saves. `apply` keeps arrival order; the grouped
//! order stays for the benchmarks and the tests.

use super::{APPLY_CHUNK, ApplyOutcome, Shard};
use crate::model::MetricEvent;
use crate::query::Route;

/// One event for one of its queries, with what inserting it reads, so inserting in query
/// order touches the event itself only for a tag filter.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Pair {
    event: u32,
    route: Route,
    time: i64,
    value: f64,
}

/// How the pairs of a batch are ordered before they are applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grouping {
    /// In arrival order.
    Never,
    /// Grouped by query.
    Always,
}

impl Shard {
    /// Applies a batch of validated events at clock `now_ms`, in arrival order.
    pub fn apply(&mut self, events: &[MetricEvent], now_ms: i64) -> ApplyOutcome {
        self.apply_grouped(events, now_ms, Grouping::Never)
    }

    /// `apply`, with the order of application chosen by `grouping` (the results are the
    /// same either way; benchmarks compare the two).
    pub fn apply_grouped(
        &mut self,
        events: &[MetricEvent],
        now_ms: i64,
        grouping: Grouping,
    ) -> ApplyOutcome {
        match grouping {
            Grouping::Never => self.apply_in_order(events, now_ms),
            Grouping::Always => self.apply_by_query(events, now_ms),
        }
    }

    /// Arrival order, chunk by chunk: each chunk's times are checked and metrics looked up
    /// (prefetching their queries as they are found), then its pairs inserted.
    fn apply_in_order(&mut self, events: &[MetricEvent], now_ms: i64) -> ApplyOutcome {
        let now = self.now(now_ms);
        let mut outcome = ApplyOutcome::default();
        let mut plan = std::mem::take(&mut self.plan);
        for (chunk_no, chunk) in events.chunks(APPLY_CHUNK).enumerate() {
            let base = chunk_no * APPLY_CHUNK;
            plan.clear();
            self.look_up(chunk, base, now, &mut outcome, &mut plan);
            self.insert_all(events, &plan, now, false);
        }
        self.plan = plan;
        outcome
    }

    /// Grouped by query: every event looked up first, the pairs sorted by query (stable),
    /// then inserted.
    fn apply_by_query(&mut self, events: &[MetricEvent], now_ms: i64) -> ApplyOutcome {
        let now = self.now(now_ms);
        let mut outcome = ApplyOutcome::default();
        let mut plan = std::mem::take(&mut self.plan);
        plan.clear();
        for (chunk_no, chunk) in events.chunks(APPLY_CHUNK).enumerate() {
            self.look_up(chunk, chunk_no * APPLY_CHUNK, now, &mut outcome, &mut plan);
        }
        let mut grouped = std::mem::take(&mut self.grouped);
        let mut counts = std::mem::take(&mut self.group_counts);
        group_by_query(&plan, self.queries.id_bound(), &mut counts, &mut grouped);
        // The queries prefetched while looking up are long out of cache: again.
        self.insert_all(events, &grouped, now, true);
        self.grouped = grouped;
        self.group_counts = counts;
        self.plan = plan;
        outcome
    }

    /// Checks the times of `chunk` (whose first event is `base` in the batch) and adds a
    /// pair per query of each accepted event to `plan`, prefetching the query.
    fn look_up(
        &mut self,
        chunk: &[MetricEvent],
        base: usize,
        now: i64,
        outcome: &mut ApplyOutcome,
        plan: &mut Vec<Pair>,
    ) {
        for (i, ev) in chunk.iter().enumerate() {
            if let Err(r) = self.check_time(ev.event_time, now) {
                outcome.rejected.push((base + i, r));
                continue;
            }
            outcome.accepted += 1;
            match self.queries.queries_of(&ev.metric_name) {
                Some(routes) => {
                    for &route in routes {
                        self.queries.prefetch(route.id);
                        plan.push(Pair {
                            event: (base + i) as u32,
                            route,
                            time: ev.event_time,
                            value: ev.value,
                        });
                    }
                }
                None => self.stats.unmatched += 1,
            }
        }
    }

    /// Inserts `pairs` in chunks: prefetch the queries (with `prefetch`), advance each and
    /// prefetch the pane its event lands in (and the histogram steps, with percentile
    /// widgets), then insert.
    fn insert_all(&mut self, events: &[MetricEvent], pairs: &[Pair], now: i64, prefetch: bool) {
        for chunk in pairs.chunks(APPLY_CHUNK) {
            if prefetch {
                for p in chunk {
                    self.queries.prefetch(p.route.id);
                }
            }
            for p in chunk {
                self.queries.warm(p.route.id, p.time, now);
            }
            if self.histograms > 0 {
                for p in chunk {
                    self.queries.warm_histogram(p.route.id, p.time, p.value);
                }
            }
            for p in chunk {
                let tags = &events[p.event as usize].tags;
                self.queries.insert_into(p.route, tags, p.time, p.value);
            }
        }
    }
}

/// Orders `pairs` by query id into `out`, keeping arrival order within a query (a counting
/// sort over the dense ids below `bound`; `counts` is scratch).
fn group_by_query(pairs: &[Pair], bound: usize, counts: &mut Vec<u32>, out: &mut Vec<Pair>) {
    counts.clear();
    counts.resize(bound + 1, 0);
    for p in pairs {
        counts[p.route.id.index() + 1] += 1;
    }
    for i in 1..counts.len() {
        counts[i] += counts[i - 1];
    }
    out.clear();
    let Some(&first) = pairs.first() else {
        return;
    };
    out.resize(pairs.len(), first);
    for &pair in pairs {
        let at = &mut counts[pair.route.id.index()];
        out[*at as usize] = pair;
        *at += 1;
    }
}
