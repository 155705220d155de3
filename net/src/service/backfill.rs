//! Backfill (cluster mode): a query that is new on the shard owning its partition gets a
//! full window at once. It is registered at the partition's position L: records from L on
//! reach it live, and a reader of its own (`replication::kafka::backfill`) reads the
//! partition from the offset of (now − longest window of them − allowed skew) up to L for
//! the new queries alone, so no event is counted twice or missed. While a backfill runs,
//! its queries are left out of the state mirror's writes, and their first write
//! afterwards sends every pane: a node that takes the partition over meanwhile finds no
//! state for them and backfills them itself.
//!
//! A backfill belongs to one ownership of its partition: a revocation, a takeover that
//! does not keep the windows, or a fenced write cancels it. Queries made while another
//! node owns the partition are remembered, and backfilled if it comes back with its
//! windows kept.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

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
    /// Per partition another node owns: queries made here meanwhile.
    pending: RefCell<HashMap<u32, Vec<QueryKey>>>,
    pub counters: Cell<BackfillCounters>,
}

#[derive(Debug)]
struct Running {
    keys: Vec<QueryKey>,
    partition: u32,
    events: u64,
    /// Tells the reader thread to stop.
    cancel: Arc<AtomicBool>,
}

/// What a shard counts of its backfills.
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct BackfillCounters {
    pub started: u64,
    pub finished: u64,
    pub failed: u64,
    /// Cancelled because their partition moved.
    pub cancelled: u64,
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
        self.running.borrow().values().any(|r| r.keys.contains(key))
    }

    /// Cancels the backfills of `partition` (its ownership ended, or its windows are
    /// being replaced), and forgets the queries waiting for it.
    pub fn cancel(&self, partition: u32) {
        let mut cancelled = 0;
        self.running.borrow_mut().retain(|_, r| {
            if r.partition != partition {
                return true;
            }
            r.cancel.store(true, Ordering::Release);
            cancelled += 1;
            false
        });
        self.pending.borrow_mut().remove(&partition);
        if cancelled > 0 {
            self.count(|c| c.cancelled += cancelled);
        }
    }

    /// The queries made while `partition` was owned elsewhere (taken: they are to be
    /// backfilled now, or are covered otherwise).
    pub fn take_pending(&self, partition: u32) -> Vec<QueryKey> {
        self.pending
            .borrow_mut()
            .remove(&partition)
            .unwrap_or_default()
    }
}

/// Starts one backfill of `keys` (queries of partition `partition`) up to offset `until`.
pub fn start(svc: &Rc<Services>, mut keys: Vec<QueryKey>, partition: u32, until: i64) {
    let Some(link) = &svc.kafka else {
        return;
    };
    keys.retain(|k| !svc.backfills.running(k));
    if until <= 0 || keys.is_empty() {
        return;
    }
    let since_ms = {
        let engine = svc.engine.borrow();
        let longest = keys.iter().map(|k| k.window_seconds).max().unwrap_or(0);
        now_ms() - longest as i64 * 1000 - engine.config().max_skew_ms
    };
    let ticket = svc.backfills.next.get();
    svc.backfills.next.set(ticket + 1);
    let cancel = Arc::new(AtomicBool::new(false));
    svc.backfills.running.borrow_mut().insert(
        ticket,
        Running {
            keys,
            partition,
            events: 0,
            cancel: Arc::clone(&cancel),
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
        cancel,
        Arc::clone(&link.inputs),
    );
}

/// Takes records (or the end) of backfill `ticket`; those of a cancelled one are dropped.
pub fn take(
    svc: &Rc<Services>,
    ticket: u64,
    records: Vec<Record>,
    done: Option<Option<String>>,
    decode: impl Fn(&Record, i64) -> Result<Vec<MetricEvent>, String>,
) {
    let now = now_ms();
    let Some(keys) = svc
        .backfills
        .running
        .borrow()
        .get(&ticket)
        .map(|r| r.keys.clone())
    else {
        return;
    };
    let events: Vec<MetricEvent> = records
        .iter()
        .filter_map(|r| decode(r, now).ok())
        .flatten()
        .filter(|ev| keys.iter().any(|k| *k.metric == *ev.metric_name))
        .collect();
    let mut counted = 0;
    {
        let mut engine = svc.engine.borrow_mut();
        for key in &keys {
            counted += engine.backfill_query(key, &events, now).unwrap_or(0);
        }
    }
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
    // The mirror has nothing of them yet: their next write sends every pane.
    svc.engine
        .borrow_mut()
        .forget_mirror(|k| r.keys.contains(k));
    match outcome {
        None => {
            svc.backfills.count(|c| c.finished += 1);
            tracing::info!(
                shard = svc.id,
                partition = r.partition,
                events = r.events,
                queries = r.keys.len(),
                "backfilled new queries"
            );
        }
        Some(e) => {
            svc.backfills.count(|c| c.failed += 1);
            tracing::warn!(
                shard = svc.id,
                partition = r.partition,
                queries = r.keys.len(),
                "backfill stopped, the windows have what came so far: {e}; they are whole again once one window has passed: nothing to do unless it repeats: then check that the Kafka brokers (--kafka-brokers) are reachable"
            );
        }
    }
}

/// After widgets were installed: backfills the queries that are new (not in `before`)
/// and whose partition this shard owns; remembers those whose partition it does not.
pub fn new_queries(svc: &Rc<Services>, before: &[QueryKey]) {
    let Some(link) = &svc.kafka else {
        return;
    };
    let now_keys = svc.engine.borrow_mut().query_keys();
    let mut by_partition: HashMap<u32, Vec<QueryKey>> = HashMap::new();
    for key in now_keys {
        if before.contains(&key) {
            continue;
        }
        let partition = svc.placement.partition(&key.metric);
        if svc.placement.shard_of(partition) != svc.id {
            continue;
        }
        let owned = link
            .partitions
            .get(partition as usize)
            .is_some_and(|p| p.owned());
        if owned {
            by_partition.entry(partition).or_default().push(key);
        } else {
            svc.backfills
                .pending
                .borrow_mut()
                .entry(partition)
                .or_default()
                .push(key);
        }
    }
    for (partition, keys) in by_partition {
        let until = link.partitions[partition as usize].applied_next();
        start(svc, keys, partition, until);
    }
}
