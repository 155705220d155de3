//! Backfill (cluster mode): a query that is new on the shard owning its partition gets a
//! full window at once. It is registered at the partition's position L: records from L on
//! reach it live, and a reader of its own (`replication::kafka::backfill`) reads the
//! partition from the offset of (now − window − allowed skew) up to L for it alone, so
//! no event is counted twice or missed. While a backfill runs, the query is left out of
//! the state mirror's writes, and its first write afterwards sends every pane: a node
//! that takes the partition over meanwhile finds no state for it and backfills it itself.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use hashbrown::HashMap;
use livedash_engine::{MetricEvent, QueryKey};
use livedash_replication::kafka::backfill::{self, Backfill};
use livedash_replication::kafka::source::Record;
use serde::Serialize;

use super::Services;
use crate::clock::now_ms;

/// The backfills of one shard.
#[derive(Debug, Default)]
pub struct Backfills {
    next: Cell<u64>,
    running: RefCell<HashMap<u64, Running>>,
    pub counters: Cell<BackfillCounters>,
}

#[derive(Debug)]
struct Running {
    key: QueryKey,
    partition: u32,
    events: u64,
}

/// What a shard counts of its backfills.
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct BackfillCounters {
    pub started: u64,
    pub finished: u64,
    pub failed: u64,
    /// Events added to windows by backfills.
    pub events: u64,
    /// Backfills running now.
    pub running: u64,
}

impl Backfills {
    fn count(&self, f: impl FnOnce(&mut BackfillCounters)) {
        let mut c = self.counters.get();
        f(&mut c);
        c.running = self.running.borrow().len() as u64;
        self.counters.set(c);
    }

    /// True while query `key` is being backfilled.
    pub fn running(&self, key: &QueryKey) -> bool {
        self.running.borrow().values().any(|r| r.key == *key)
    }
}

/// Starts a backfill of `key` (of partition `partition`) up to offset `until`.
pub fn start(svc: &Rc<Services>, key: QueryKey, partition: u32, until: i64) {
    let Some(link) = &svc.kafka else {
        return;
    };
    if until <= 0 || svc.backfills.running(&key) {
        return;
    }
    let since_ms = {
        let engine = svc.engine.borrow();
        now_ms() - key.window_seconds as i64 * 1000 - engine.config().max_skew_ms
    };
    let ticket = svc.backfills.next.get();
    svc.backfills.next.set(ticket + 1);
    svc.backfills.running.borrow_mut().insert(
        ticket,
        Running {
            key,
            partition,
            events: 0,
        },
    );
    svc.backfills.count(|c| c.started += 1);
    backfill::start(
        link.settings(),
        Backfill {
            ticket,
            partition,
            since_ms,
            until,
        },
        std::sync::Arc::clone(&link.inputs),
    );
}

/// Takes records (or the end) of backfill `ticket`.
pub fn take(
    svc: &Rc<Services>,
    ticket: u64,
    records: Vec<Record>,
    done: Option<Option<String>>,
    decode: impl Fn(&Record, i64) -> Result<Vec<MetricEvent>, String>,
) {
    let now = now_ms();
    let key = match svc.backfills.running.borrow().get(&ticket) {
        Some(r) => r.key.clone(),
        None => return,
    };
    let events: Vec<MetricEvent> = records
        .iter()
        .filter_map(|r| decode(r, now).ok())
        .flatten()
        .collect();
    let counted = svc
        .engine
        .borrow_mut()
        .backfill_query(&key, &events, now)
        .unwrap_or(0);
    if let Some(r) = svc.backfills.running.borrow_mut().get_mut(&ticket) {
        r.events += counted as u64;
    }
    svc.backfills.count(|c| c.events += counted as u64);
    let Some(outcome) = done else {
        return;
    };
    let Some(r) = svc.backfills.running.borrow_mut().remove(&ticket) else {
        return;
    };
    // The mirror has nothing of it yet: its next write sends every pane.
    svc.engine.borrow_mut().forget_mirror(|k| *k == r.key);
    match outcome {
        None => {
            svc.backfills.count(|c| c.finished += 1);
            tracing::info!(
                shard = svc.id,
                partition = r.partition,
                events = r.events,
                query = r.key.stable_id(),
                "backfilled a new query"
            );
        }
        Some(e) => {
            svc.backfills.count(|c| c.failed += 1);
            tracing::warn!(
                shard = svc.id,
                partition = r.partition,
                query = r.key.stable_id(),
                "backfill stopped, the window has what came so far: {e}"
            );
        }
    }
}

/// After widgets were installed: backfills the queries that are new (not in `before`)
/// and whose partition this shard owns.
pub fn new_queries(svc: &Rc<Services>, before: &[QueryKey]) {
    let Some(link) = &svc.kafka else {
        return;
    };
    let now_keys = svc.engine.borrow_mut().query_keys();
    for key in now_keys {
        if before.contains(&key) {
            continue;
        }
        let partition = svc.placement.partition(&key.metric);
        let Some(state) = link.partitions.get(partition as usize) else {
            continue;
        };
        if state.owned() && svc.placement.shard_of(partition) == svc.id {
            start(svc, key, partition, state.applied_next());
        }
    }
}
