//! The shard's side of the state mirror (cluster mode with `--redis`): every
//! `mirror_interval_ms`, the panes of its partitions' queries that changed, with each
//! partition's next offset, go to the mirror's writer in one flush (at most one in flight:
//! a flush is taken between two record batches, so state and offset always agree). The
//! outcome comes back through the shard's inbox: a stored partition is marked clean, a
//! fenced one (another node claimed it) is dropped, a failed one is sent whole next time.

use std::cell::{Cell, RefCell};
use std::sync::Arc;
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

use hashbrown::HashMap;
use livedash_engine::QueryChanges;
use livedash_replication::Inbox;
use livedash_replication::redis::{Flush, FlushResult, Flushed, PartitionFlush};
use serde::Serialize;

use super::Services;
use crate::clock::now_ms;

/// What a shard keeps of the mirror.
#[derive(Debug)]
pub struct MirrorLink {
    writer: Sender<Flush>,
    /// Outcomes of this shard's flushes.
    pub flushed: Arc<Inbox<Flushed>>,
    interval: Duration,
    /// Partitions this shard owns, with its epoch for each (`None`: not claimed yet).
    epochs: RefCell<HashMap<u32, Option<u64>>>,
    /// Offsets last stored per partition.
    stored: RefCell<HashMap<u32, i64>>,
    /// The flush in flight: (partition, next offset) of each partition in it.
    in_flight: RefCell<Option<Vec<(u32, i64)>>>,
    last: Cell<Instant>,
    pub counters: Cell<MirrorCounters>,
}

/// What this shard counts of the mirror.
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct MirrorCounters {
    pub flushes: u64,
    pub failed_flushes: u64,
    /// Partitions refused because another node claimed them.
    pub fenced: u64,
    /// Pane bytes written.
    pub bytes: u64,
    /// Duration of the last flush, in microseconds.
    pub last_flush_us: u64,
    /// Epoch ms since when writes fail (0: they do not).
    pub failing_since_ms: i64,
    /// Partitions restored from the mirror, and queries restored in them.
    pub restored_partitions: u64,
    pub restored_queries: u64,
}

impl MirrorLink {
    pub fn new(writer: Sender<Flush>, flushed: Arc<Inbox<Flushed>>, interval: Duration) -> Self {
        Self {
            writer,
            flushed,
            interval,
            epochs: RefCell::default(),
            stored: RefCell::default(),
            in_flight: RefCell::default(),
            last: Cell::new(Instant::now()),
            counters: Cell::default(),
        }
    }

    fn count(&self, f: impl FnOnce(&mut MirrorCounters)) {
        let mut c = self.counters.get();
        f(&mut c);
        self.counters.set(c);
    }

    /// This shard now owns `partition` under `epoch`; its first flush sends every pane.
    pub fn own(&self, partition: u32, epoch: Option<u64>) {
        self.epochs.borrow_mut().insert(partition, epoch);
        self.stored.borrow_mut().remove(&partition);
    }

    pub fn disown(&self, partition: u32) {
        self.epochs.borrow_mut().remove(&partition);
        self.stored.borrow_mut().remove(&partition);
    }

    /// Counts a partition restored with `queries` queries.
    pub fn restored(&self, queries: usize) {
        self.count(|c| {
            c.restored_partitions += 1;
            c.restored_queries += queries as u64;
        });
    }
}

/// Sends a flush when one is due and none is in flight.
pub fn maybe_flush(svc: &Services) {
    let Some(link) = svc.kafka.as_ref() else {
        return;
    };
    let Some(mirror) = link.mirror.as_ref() else {
        return;
    };
    if mirror.in_flight.borrow().is_some() || mirror.last.get().elapsed() < mirror.interval {
        return;
    }
    mirror.last.set(Instant::now());
    let epochs = mirror.epochs.borrow().clone();
    if epochs.is_empty() {
        return;
    }
    let placement = svc.placement;
    let mut engine = svc.engine.borrow_mut();
    // A partition without an epoch, or not stored since it was taken: every pane goes.
    let stored = mirror.stored.borrow();
    engine.forget_mirror(|k| {
        let p = placement.partition(&k.metric);
        epochs
            .get(&p)
            .is_some_and(|e| e.is_none() || !stored.contains_key(&p))
    });
    let mut by_partition: HashMap<u32, Vec<QueryChanges>> = HashMap::new();
    // A query being backfilled is not written until its window is whole.
    for changes in engine.mirror_changes(now_ms(), |k| {
        epochs.contains_key(&placement.partition(&k.metric)) && !svc.backfills.running(k)
    }) {
        by_partition
            .entry(placement.partition(&changes.key.metric))
            .or_default()
            .push(changes);
    }
    drop(engine);
    let mut partitions = Vec::new();
    for (&partition, &epoch) in &epochs {
        let next_offset = link.partitions[partition as usize].applied_next();
        let queries = by_partition.remove(&partition).unwrap_or_default();
        let clean = epoch.is_some() && stored.get(&partition) == Some(&next_offset);
        if (queries.is_empty() && clean) || next_offset < 0 {
            continue;
        }
        partitions.push(PartitionFlush {
            partition,
            epoch,
            next_offset,
            queries,
        });
    }
    drop(stored);
    if partitions.is_empty() {
        return;
    }
    let sent: Vec<(u32, i64)> = partitions
        .iter()
        .map(|p| (p.partition, p.next_offset))
        .collect();
    let flush = Flush {
        shard: svc.id,
        partitions,
    };
    match mirror.writer.send(flush) {
        Ok(()) => *mirror.in_flight.borrow_mut() = Some(sent),
        Err(_) => tracing::error!(shard = svc.id, "the state mirror's writer is gone"),
    }
}

/// Takes the outcome of the flush in flight.
pub fn take_outcome(svc: &Services, flushed: Flushed) {
    let Some(link) = svc.kafka.as_ref() else {
        return;
    };
    let Some(mirror) = link.mirror.as_ref() else {
        return;
    };
    let sent = mirror.in_flight.borrow_mut().take().unwrap_or_default();
    let failed = flushed
        .results
        .iter()
        .any(|(_, r)| *r == FlushResult::Failed);
    mirror.count(|c| {
        c.flushes += 1;
        c.bytes += flushed.bytes as u64;
        c.last_flush_us = flushed.took.as_micros() as u64;
        if failed {
            c.failed_flushes += 1;
            if c.failing_since_ms == 0 {
                c.failing_since_ms = now_ms();
            }
        } else {
            c.failing_since_ms = 0;
        }
    });
    for (partition, result) in flushed.results {
        let mut epochs = mirror.epochs.borrow_mut();
        let Some(epoch) = epochs.get_mut(&partition) else {
            // Given up since the flush was sent.
            continue;
        };
        match result {
            FlushResult::Stored { epoch: e } => {
                if epoch.is_none() {
                    *epoch = Some(e);
                }
                if let Some(&(_, next)) = sent.iter().find(|(p, _)| *p == partition) {
                    mirror.stored.borrow_mut().insert(partition, next);
                }
            }
            FlushResult::Failed => {
                // Sent whole next time: what Redis holds of it is not known.
                mirror.stored.borrow_mut().remove(&partition);
            }
            FlushResult::Lost => {
                // Claimed again, and sent whole, by the next flush.
                *epoch = None;
                mirror.stored.borrow_mut().remove(&partition);
            }
            FlushResult::Fenced => {
                epochs.remove(&partition);
                mirror.stored.borrow_mut().remove(&partition);
                link.partitions[partition as usize].give_up();
                mirror.count(|c| c.fenced += 1);
                tracing::warn!(
                    shard = svc.id,
                    partition,
                    "another node claimed this partition in the state mirror: this shard stops applying it"
                );
            }
        }
    }
}
