//! Ingest: events from any source (HTTP, the demo, Kafka) are split by owner shard,
//! applied in place for this shard and with one `ApplyEvents` call per other owner, and the
//! answers merged into one reply with every rejection by its index in the source.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Instant;

use glommio::spawn_local;
use hashbrown::HashMap;
use livedash_engine::{IngestReply, MetricEvent, Rejection};

use super::Services;
use super::calls::{ApplyEvents, IngestError};
use super::mesh::ShardCall;
use crate::clock::now_ms;
use crate::parse::{Parsed, Refusals};

/// Every this-many-th ingested event is sampled for the recent metric names.
const RECENT_SAMPLE: usize = 8;
/// Most recent metric names kept per shard, unless the node sets another budget
/// (`max_metric_names`).
const RECENT_MAX: usize = 2000;

/// What this shard counts of the events it applied.
#[derive(Debug)]
pub struct IngestCounters {
    /// Time spent applying events to windows, in nanoseconds.
    pub apply_ns: Cell<u64>,
    /// Events handed to the engine (accepted or refused by time).
    pub events: Cell<u64>,
    /// Events the parsers of this shard refused, by reason.
    pub refusals: Cell<Refusals>,
    /// Metric names seen recently (sampled), with when: suggestions for the UI.
    recent: RefCell<HashMap<String, i64>>,
    /// Most names `recent` keeps.
    recent_max: usize,
}

impl Default for IngestCounters {
    fn default() -> Self {
        Self::new(RECENT_MAX)
    }
}

impl IngestCounters {
    /// Counters that remember at most `recent_max` metric names.
    pub fn new(recent_max: usize) -> Self {
        Self {
            apply_ns: Cell::default(),
            events: Cell::default(),
            refusals: Cell::default(),
            recent: RefCell::default(),
            recent_max: recent_max.max(1),
        }
    }

    /// Samples the metric names of a batch into the bounded recent set.
    fn remember(&self, events: &[MetricEvent], now: i64) {
        let mut recent = self.recent.borrow_mut();
        for ev in events.iter().step_by(RECENT_SAMPLE) {
            match recent.get_mut(ev.metric_name.as_str()) {
                Some(seen) => *seen = now,
                None => {
                    recent.insert(ev.metric_name.clone(), now);
                }
            }
        }
        if recent.len() > self.recent_max {
            // Keep the newer half, by count: names seen at the same instant (one batch of
            // many names) must not all survive the cut.
            let keep = self.recent_max / 2;
            let mut all: Vec<(String, i64)> = recent.drain().collect();
            all.select_nth_unstable_by(keep, |a, b| b.1.cmp(&a.1));
            all.truncate(keep);
            recent.extend(all);
        }
    }

    /// Counts the parser refusals of a batch.
    pub fn count_refusals(&self, refusals: &Refusals) {
        let mut all = self.refusals.get();
        all.add(refusals);
        self.refusals.set(all);
    }

    /// The metric names seen recently.
    pub fn recent_names(&self) -> Vec<String> {
        self.recent.borrow().keys().cloned().collect()
    }
}

/// What a shard made of an `ApplyEvents` batch.
#[derive(Debug)]
pub struct Applied {
    pub accepted: usize,
    /// Accepted events no widget watches.
    pub unmatched: usize,
    /// Positions in the batch of the refused events, and why.
    pub rejected: Vec<(usize, Rejection)>,
    /// Standalone with the state mirror: why the events are not stored, if they are not.
    pub not_stored: Option<String>,
}

impl ShardCall for ApplyEvents {
    type Reply = Applied;

    async fn run(self, svc: &Rc<Services>) -> Applied {
        let events = self.0;
        let started = Instant::now();
        let now = now_ms();
        let (out, unmatched) = {
            let mut engine = svc.engine.borrow_mut();
            let unmatched_before = engine.stats().unmatched;
            let out = engine.apply(&events, now);
            (out, (engine.stats().unmatched - unmatched_before) as usize)
        };
        let counters = &svc.ingest;
        counters
            .apply_ns
            .set(counters.apply_ns.get() + started.elapsed().as_nanos() as u64);
        counters
            .events
            .set(counters.events.get() + events.len() as u64);
        counters.remember(&events, now);
        let not_stored = super::mirror::applied_durably(svc).await.err();
        Applied {
            accepted: out.accepted,
            unmatched,
            rejected: out.rejected,
            not_stored,
        }
    }
}

/// Applies parsed events on their owner shards: the local part in place, one call per
/// other owner, all at once. A shard that does not answer makes the whole batch an error
/// (the other owners' parts are applied).
pub async fn dispatch(svc: &Rc<Services>, parsed: Parsed) -> Result<IngestReply, IngestError> {
    svc.ingest.count_refusals(&parsed.refusals);
    let mut unmatched = 0;
    let mut reply = IngestReply {
        accepted: 0,
        unmatched: None,
        rejected: parsed.rejected,
        rejected_total: parsed.rejected_total,
    };
    // Split by owner, remembering each event's index in the source.
    let mut batches: Vec<(Vec<MetricEvent>, Vec<u32>)> = vec![(Vec::new(), Vec::new()); svc.shards];
    for (ev, origin) in parsed.events.into_iter().zip(parsed.origin) {
        let (events, origins) = &mut batches[svc.owner(&ev.metric_name)];
        events.push(ev);
        origins.push(origin);
    }
    let mut calls = Vec::new();
    let mut local = None;
    for (to, (events, origins)) in batches.into_iter().enumerate() {
        if events.is_empty() {
            continue;
        }
        if to == svc.id {
            local = Some((events, origins));
        } else {
            let svc = Rc::clone(svc);
            let task = spawn_local(async move { svc.mesh.remote(to, ApplyEvents(events)).await });
            calls.push((origins, task));
        }
    }
    let mut not_stored = None;
    let mut merge =
        |applied: Applied, origins: &[u32]| {
            if applied.not_stored.is_some() {
                not_stored = applied.not_stored;
            }
            reply.accepted += applied.accepted;
            unmatched += applied.unmatched;
            reply.rejected_total += applied.rejected.len();
            reply
                .rejected
                .extend(applied.rejected.into_iter().map(|(i, r)| {
                    livedash_engine::RejectedEvent {
                        index: origins[i] as usize,
                        reason: r.reason().to_string(),
                    }
                }));
        };
    if let Some((events, origins)) = local {
        merge(ApplyEvents(events).run(svc).await, &origins);
    }
    let mut failure = None;
    for (origins, task) in calls {
        match task.await {
            Ok(applied) => merge(applied, &origins),
            Err(e) => failure = Some(e),
        }
    }
    if let Some(e) = failure {
        return Err(e.into());
    }
    if let Some(reason) = not_stored {
        return Err(IngestError::NotDurable(reason));
    }
    reply.rejected.sort_by_key(|r| r.index);
    reply
        .rejected
        .truncate(livedash_engine::limits::MAX_LISTED_REJECTIONS);
    reply.unmatched = Some(unmatched);
    Ok(reply)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(n: usize) -> Vec<MetricEvent> {
        (0..n)
            .map(|i| MetricEvent {
                metric_name: format!("m{i}"),
                value: 1.0,
                tags: Default::default(),
                event_time: 0,
            })
            .collect()
    }

    #[test]
    fn the_recent_names_stay_bounded_even_when_seen_at_one_instant() {
        let counters = IngestCounters::default();
        // One batch of many distinct names, all at the same instant.
        counters.remember(&named(RECENT_MAX * RECENT_SAMPLE * 3), 1_000);
        assert!(counters.recent_names().len() <= RECENT_MAX);
        for round in 0..10 {
            counters.remember(&named(RECENT_MAX * RECENT_SAMPLE), 2_000 + round);
            assert!(counters.recent_names().len() <= RECENT_MAX);
        }
        // The newest names stay.
        counters.remember(&[named(1).remove(0)], 9_000);
        assert!(counters.recent_names().contains(&"m0".to_string()));
    }
}
