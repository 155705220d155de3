//! The shard's side of the state mirror (`--redis`): every `mirror_interval_ms`, the
//! panes that changed, with each stored partition's position, go to the mirror's writer
//! in one flush (at most one in flight). In cluster mode a stored partition is a Kafka
//! partition and its position the next offset; the flush is taken between two record
//! batches, so state and offset always agree. Standalone, each shard is one stored
//! partition and its position counts the batches applied; an ingest request is answered
//! once the flush holding its events is stored (group commit).
//!
//! The outcome comes back through the shard's inbox: a stored partition is marked
//! clean, a fenced one (another node claimed it) is dropped, a failed one is sent whole
//! next time.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

use futures_lite::FutureExt;
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use glommio::timer::sleep;
use hashbrown::HashMap;
use livedash_engine::QueryChanges;
use livedash_replication::Inbox;
use livedash_replication::redis::{Claim, Flush, FlushResult, Flushed, PartitionFlush};
use serde::Serialize;

use super::Services;
use crate::clock::now_ms;

/// How long an ingest request waits for its events to be stored (standalone).
pub const DURABLE_WAIT: Duration = Duration::from_secs(3);

/// A flush in flight: the ownership it was sent under, and (partition, position) of each
/// partition in it.
type InFlight = (u64, Vec<(u32, i64)>);

/// What a shard keeps of the mirror.
#[derive(Debug)]
pub struct MirrorLink {
    writer: Sender<Flush>,
    /// Outcomes of this shard's flushes.
    pub flushed: Arc<Inbox<Flushed>>,
    interval: Duration,
    /// Standalone: the shard itself is the one stored partition.
    standalone: bool,
    /// Standalone: batches applied so far (the position stored with the state).
    applied: Cell<i64>,
    /// Standalone: requests waiting until the position they need is stored, by id.
    waiters: RefCell<Vec<(i64, u64, LocalSender<()>)>>,
    next_waiter: Cell<u64>,
    /// Standalone: wakes the flush loop when a request starts waiting.
    kick: (LocalSender<()>, RefCell<Option<LocalReceiver<()>>>),
    /// Partitions this shard owns, with its epoch for each (`None`: not claimed yet).
    epochs: RefCell<HashMap<u32, Option<u64>>>,
    /// Bumped on every change of ownership: an outcome of a flush sent under an earlier
    /// ownership is ignored.
    ownership: Cell<u64>,
    /// Positions last stored per partition.
    stored: RefCell<HashMap<u32, i64>>,
    /// The flush in flight: the ownership it was sent under, and (partition, position)
    /// of each partition in it.
    in_flight: RefCell<Option<InFlight>>,
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
    pub fn new(
        writer: Sender<Flush>,
        flushed: Arc<Inbox<Flushed>>,
        interval: Duration,
        standalone: bool,
    ) -> Self {
        Self {
            writer,
            flushed,
            interval,
            standalone,
            applied: Cell::new(0),
            waiters: RefCell::default(),
            next_waiter: Cell::new(0),
            kick: {
                let (tx, rx) = local_channel::new_bounded(1);
                (tx, RefCell::new(Some(rx)))
            },
            epochs: RefCell::default(),
            ownership: Cell::new(0),
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
        self.ownership.set(self.ownership.get() + 1);
        self.epochs.borrow_mut().insert(partition, epoch);
        self.stored.borrow_mut().remove(&partition);
    }

    pub fn disown(&self, partition: u32) {
        self.ownership.set(self.ownership.get() + 1);
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

    /// Why nothing can be made durable now, if so (standalone: refuse ingest).
    pub fn unavailable(&self) -> Option<String> {
        if !self.standalone {
            return None;
        }
        if self.epochs.borrow().is_empty() {
            return Some("this node lost its claim on its state in redis to another node".into());
        }
        let since = self.counters.get().failing_since_ms;
        (since != 0).then(|| {
            format!(
                "the state mirror (redis) has been unreachable for {} ms: events cannot be stored",
                now_ms() - since
            )
        })
    }
}

/// Standalone: restores this shard's windows from its claim and takes its stored
/// partition (the shard's id) under the claim's epoch.
pub fn restore_standalone(svc: &Services, claim: &Claim) {
    let Some(mirror) = &svc.mirror else {
        return;
    };
    let now = now_ms();
    let mut engine = svc.engine.borrow_mut();
    let mut loaded = 0;
    let parts = engine.stored_parts(claim.queries.keys().map(String::as_str));
    for key in engine.query_keys().into_iter().chain(parts) {
        if let Some(q) = claim.queries.get(&key.stable_id())
            && engine
                .restore_query(&key, q.latest, &q.panes, now)
                .is_some()
        {
            loaded += 1;
        }
    }
    drop(engine);
    mirror.applied.set(claim.offset.unwrap_or(0).max(0));
    mirror.own(svc.id as u32, Some(claim.epoch));
    if loaded > 0 {
        mirror.restored(loaded);
    }
}

/// Standalone: a batch was applied; waits until it is stored (at most `DURABLE_WAIT`).
pub async fn applied_durably(svc: &Services) -> Result<(), String> {
    let Some(mirror) = svc.mirror.as_ref().filter(|m| m.standalone) else {
        return Ok(());
    };
    let position = mirror.applied.get() + 1;
    mirror.applied.set(position);
    let (tx, rx) = local_channel::new_bounded(1);
    let id = mirror.next_waiter.get();
    mirror.next_waiter.set(id + 1);
    mirror.waiters.borrow_mut().push((position, id, tx));
    mirror.kick.0.try_send(()).ok();
    let stored = async { rx.recv().await.is_some() };
    let timeout = async {
        sleep(DURABLE_WAIT).await;
        false
    };
    if stored.or(timeout).await {
        Ok(())
    } else {
        mirror.waiters.borrow_mut().retain(|w| w.1 != id);
        Err(mirror.unavailable().unwrap_or_else(|| {
            format!(
                "the state mirror (redis) did not store the events within {} ms; they are applied in memory and will be stored once it answers",
                DURABLE_WAIT.as_millis()
            )
        }))
    }
}

/// Standalone: takes outcomes and sends flushes, for as long as the shard runs.
pub async fn run_standalone(svc: Rc<Services>) {
    let Some(mirror) = svc.mirror.as_ref().filter(|m| m.standalone) else {
        return;
    };
    let Some(kicked) = mirror.kick.1.borrow_mut().take() else {
        return;
    };
    loop {
        while let Some(flushed) = mirror.flushed.pop() {
            take_outcome(&svc, flushed);
        }
        maybe_flush(&svc);
        if mirror.in_flight.borrow().is_some() {
            // The outcome comes back in about a round trip to Redis.
            sleep(Duration::from_micros(200)).await;
        } else {
            let pause = sleep(mirror.interval.max(Duration::from_millis(1)));
            async { kicked.recv().await.map(drop).unwrap_or(()) }
                .or(pause)
                .await;
        }
    }
}

/// The position of `partition`: the next offset (cluster mode) or the batches applied.
fn position(svc: &Services, mirror: &MirrorLink, partition: u32) -> i64 {
    if mirror.standalone {
        return mirror.applied.get();
    }
    svc.kafka
        .as_ref()
        .and_then(|link| link.partitions.get(partition as usize))
        .map_or(-1, |p| p.applied_next())
}

/// The stored partition of query `metric`.
fn partition_of(svc: &Services, mirror: &MirrorLink, metric: &str) -> u32 {
    if mirror.standalone {
        svc.id as u32
    } else {
        svc.placement.partition(metric)
    }
}

/// Sends a flush when one is due and none is in flight.
pub fn maybe_flush(svc: &Services) {
    let Some(mirror) = svc.mirror.as_ref() else {
        return;
    };
    // Standalone, a request waiting for its events does not wait for the next interval
    // (unless writes fail: then retries keep to the interval).
    let waiting =
        !mirror.waiters.borrow().is_empty() && mirror.counters.get().failing_since_ms == 0;
    if mirror.in_flight.borrow().is_some()
        || (!waiting && mirror.last.get().elapsed() < mirror.interval)
    {
        return;
    }
    mirror.last.set(Instant::now());
    let epochs = mirror.epochs.borrow().clone();
    if epochs.is_empty() {
        return;
    }
    let mut engine = svc.engine.borrow_mut();
    // A partition without an epoch, or not stored since it was taken: every pane goes.
    let stored = mirror.stored.borrow();
    engine.forget_mirror(|k| {
        let p = partition_of(svc, mirror, &k.metric);
        epochs
            .get(&p)
            .is_some_and(|e| e.is_none() || !stored.contains_key(&p))
    });
    let mut by_partition: HashMap<u32, Vec<QueryChanges>> = HashMap::new();
    // A query being backfilled is not written until its window is whole.
    for changes in engine.mirror_changes(now_ms(), |k| {
        epochs.contains_key(&partition_of(svc, mirror, &k.metric)) && !svc.backfills.running(k)
    }) {
        by_partition
            .entry(partition_of(svc, mirror, &changes.key.metric))
            .or_default()
            .push(changes);
    }
    drop(engine);
    let mut partitions = Vec::new();
    for (&partition, &epoch) in &epochs {
        let next_offset = position(svc, mirror, partition);
        let queries = by_partition.remove(&partition).unwrap_or_default();
        let clean = epoch.is_some() && stored.get(&partition) == Some(&next_offset);
        if (queries.is_empty() && clean) || next_offset < 0 {
            continue;
        }
        partitions.push(PartitionFlush {
            partition,
            epoch,
            next_offset,
            // Not stored since it was taken: what Redis holds of it is replaced whole.
            replace: !stored.contains_key(&partition),
            queries,
        });
    }
    drop(stored);
    if partitions.is_empty() {
        resolve_waiters(mirror);
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
        Ok(()) => *mirror.in_flight.borrow_mut() = Some((mirror.ownership.get(), sent)),
        Err(_) => tracing::error!(shard = svc.id, "the state mirror's writer is gone"),
    }
}

/// Standalone: answers the requests whose batches are stored.
fn resolve_waiters(mirror: &MirrorLink) {
    let Some(&stored) = mirror.stored.borrow().values().max() else {
        return;
    };
    mirror.waiters.borrow_mut().retain(|(position, _, tx)| {
        if *position <= stored {
            tx.try_send(()).ok();
            false
        } else {
            true
        }
    });
}

/// Takes the outcome of the flush in flight.
pub fn take_outcome(svc: &Services, flushed: Flushed) {
    let Some(mirror) = svc.mirror.as_ref() else {
        return;
    };
    let Some((ownership, sent)) = mirror.in_flight.borrow_mut().take() else {
        return;
    };
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
    if ownership != mirror.ownership.get() {
        // Sent before partitions moved: its outcome says nothing of what is owned now,
        // and what it stored is replaced by the next flush.
        mirror.stored.borrow_mut().clear();
        return;
    }
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
            FlushResult::Behind => {
                // The stored state is ahead of this shard's position: it claims the
                // partition once it got that far.
                mirror.stored.borrow_mut().remove(&partition);
            }
            FlushResult::Fenced => {
                epochs.remove(&partition);
                svc.backfills.cancel(partition);
                mirror.stored.borrow_mut().remove(&partition);
                mirror.count(|c| c.fenced += 1);
                if let Some(state) = svc
                    .kafka
                    .as_ref()
                    .and_then(|link| link.partitions.get(partition as usize))
                {
                    state.give_up();
                    tracing::warn!(
                        shard = svc.id,
                        partition,
                        "another node claimed this partition in the state mirror: this shard stops applying it; nothing to do if the group moved it to another node: otherwise check that no other livedash cluster shares this redis (--redis)"
                    );
                } else {
                    tracing::error!(
                        shard = svc.id,
                        "another node claimed this shard's state in the state mirror (two nodes on one redis?): ingest is refused from now on"
                    );
                }
            }
        }
    }
    resolve_waiters(mirror);
}
