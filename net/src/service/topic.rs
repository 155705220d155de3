//! The topic (cluster mode): HTTP batches are written to Kafka, grouped by partition (one
//! record per partition in the compact `batch-v1` form, keyed by a metric name of it), and
//! acknowledged once the broker acknowledged every record. The shard's consumer loop (`crate::kafka`) brings the
//! broker's delivery reports back here.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::FutureExt;
use glommio::channels::local_channel::{self, LocalSender};
use glommio::timer::sleep;
use hashbrown::HashMap;
use livedash_engine::{IngestReply, MetricEvent, batch};
use livedash_replication::kafka::source::ShardInput;
use livedash_replication::kafka::takeover::Takeovers;
use livedash_replication::kafka::{Delivered, KafkaSettings, Partitions, Sink};
use livedash_replication::{Doorbell, Inbox};
use serde::Serialize;

use super::Services;
use super::calls::ProduceError;
use crate::clock::now_ms;
use crate::parse::Parsed;

/// What a shard keeps of the topic.
#[derive(Debug)]
pub struct KafkaLink {
    settings: KafkaSettings,
    /// This shard's producer; replaced after a failed write (see `produce`).
    sink: RefCell<Arc<Sink>>,
    /// A write of the current producer failed; when it was made, and how many were made
    /// before it (reports of an older producer do not make a new one).
    renew: Cell<bool>,
    made: Cell<Instant>,
    generation: Cell<u64>,
    /// Records of this shard's partitions, assignments and revocations.
    pub inputs: Arc<Inbox<ShardInput>>,
    /// The broker's reports on records this shard wrote.
    pub deliveries: Arc<Inbox<Delivered>>,
    /// Rung when either inbox has something; taken by the consumer loop.
    pub doorbell: RefCell<Option<Doorbell>>,
    /// Every partition of the topic (shared with the consumer thread).
    pub partitions: Partitions,
    /// Partition takeovers in progress, and how far back a replay reads.
    pub takeovers: Arc<Takeovers>,
    pub counters: Cell<KafkaCounters>,
    /// Per ticket: the request waiting for its report, and the producer generation.
    waiting: RefCell<HashMap<u64, (Report, u64)>>,
    next_ticket: Cell<u64>,
}

/// Where a record's delivery report goes: the request that wrote it.
type Report = LocalSender<Result<(), String>>;

/// What this shard counts of the topic.
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct KafkaCounters {
    /// Records and events written by this shard's HTTP ingest, and writes that failed.
    pub produced_records: u64,
    pub produced_events: u64,
    pub produce_failures: u64,
    /// Records and events consumed from this shard's partitions.
    pub consumed_records: u64,
    pub consumed_events: u64,
    /// Records that are not events in any known format (counted, logged, skipped).
    pub malformed_records: u64,
    /// Events on a partition their metric does not hash to (not aggregated).
    pub wrong_partition: u64,
    /// Records fetched before their partition was revoked (dropped).
    pub revoked_records: u64,
}

/// What a shard's link to the topic is made of (`KafkaLink::new`).
#[derive(Debug)]
pub struct LinkParts {
    pub settings: KafkaSettings,
    pub sink: Sink,
    pub inputs: Arc<Inbox<ShardInput>>,
    pub deliveries: Arc<Inbox<Delivered>>,
    pub doorbell: Doorbell,
    pub partitions: Partitions,
    pub takeovers: Arc<Takeovers>,
}

impl KafkaLink {
    pub fn new(parts: LinkParts) -> Self {
        let LinkParts {
            settings,
            sink,
            inputs,
            deliveries,
            doorbell,
            partitions,
            takeovers,
        } = parts;
        Self {
            settings,
            sink: RefCell::new(Arc::new(sink)),
            renew: Cell::new(false),
            made: Cell::new(Instant::now()),
            generation: Cell::new(0),
            inputs,
            deliveries,
            doorbell: RefCell::new(Some(doorbell)),
            partitions,
            takeovers,
            counters: Cell::default(),
            waiting: RefCell::new(HashMap::new()),
            next_ticket: Cell::new(0),
        }
    }

    pub fn settings(&self) -> &KafkaSettings {
        &self.settings
    }

    /// The topic's partition count.
    pub fn partition_count(&self) -> u32 {
        self.partitions.len() as u32
    }

    /// Hands a delivery report to the request waiting for it.
    pub fn delivered(&self, delivered: Delivered) {
        let Some((tx, generation)) = self.waiting.borrow_mut().remove(&delivered.ticket) else {
            return;
        };
        if delivered.result.is_err() && generation == self.generation.get() {
            self.renew.set(true);
        }
        // The request may have given up already; then nobody needs the answer.
        tx.try_send(delivered.result).ok();
    }

    /// Updates this shard's counters.
    pub fn count(&self, f: impl FnOnce(&mut KafkaCounters)) {
        let mut c = self.counters.get();
        f(&mut c);
        self.counters.set(c);
    }

    /// A ticket for a record whose report `tx` waits for.
    fn ticket(&self, tx: Report) -> u64 {
        let id = self.next_ticket.get();
        self.next_ticket.set(id + 1);
        self.waiting
            .borrow_mut()
            .insert(id, (tx, self.generation.get()));
        id
    }

    fn forget(&self, ticket: u64) {
        self.waiting.borrow_mut().remove(&ticket);
    }

    /// The producer to write with. After a failed write it is replaced (at most once a
    /// second): a producer keeps its idempotence id across a broker restart, and some
    /// brokers (tansu 0.6) fail every later write of an id they lost. The old one is
    /// dropped on the blocking pool, since dropping waits for its thread.
    fn producer(&self) -> Arc<Sink> {
        if self.renew.get() && self.made.get().elapsed() >= RENEW_AT_MOST_EVERY {
            match Sink::new(&self.settings, Arc::clone(&self.deliveries)) {
                Ok(fresh) => {
                    let old = self.sink.replace(Arc::new(fresh));
                    self.renew.set(false);
                    self.made.set(Instant::now());
                    self.generation.set(self.generation.get() + 1);
                    glommio::spawn_local(async move {
                        glommio::executor().spawn_blocking(move || drop(old)).await;
                    })
                    .detach();
                }
                Err(e) => tracing::warn!(
                    "a new kafka producer: {e}; the shard keeps writing with the old one and tries again at its next write: nothing to do unless it repeats: then check the node's limits on open files and threads (ulimit -n, ulimit -u)"
                ),
            }
        }
        Arc::clone(&self.sink.borrow())
    }
}

/// Shortest time between two replacements of a shard's producer.
const RENEW_AT_MOST_EVERY: Duration = Duration::from_secs(1);

/// Writes the parsed events to the topic, one record per partition, and answers once the
/// broker acknowledged all of them. Nothing is acknowledged that was not written.
pub async fn produce(svc: &Rc<Services>, parsed: Parsed) -> Result<IngestReply, ProduceError> {
    let Some(link) = &svc.kafka else {
        return Err(ProduceError {
            reason: "this node is not connected to Kafka".into(),
            written: 0,
        });
    };
    svc.ingest.count_refusals(&parsed.refusals);
    let mut per_partition: HashMap<u32, Vec<&MetricEvent>> = HashMap::new();
    for ev in &parsed.events {
        per_partition
            .entry(svc.placement.partition(&ev.metric_name))
            .or_default()
            .push(ev);
    }
    let sink = link.producer();
    let mut waits = Vec::with_capacity(per_partition.len());
    let mut failure = None;
    for (partition, events) in &per_partition {
        let value = batch::encode(events.iter().copied());
        let (tx, rx) = local_channel::new_bounded(1);
        let ticket = link.ticket(tx);
        let key = events.first().map_or("", |e| e.metric_name.as_str());
        match sink.send(ticket, *partition, key, &value) {
            Ok(()) => waits.push((ticket, events.len(), rx)),
            Err(e) => {
                link.forget(ticket);
                failure = Some(e);
                break;
            }
        }
    }
    // Every record sent is waited for, even after a failure, so the answer can say how
    // many events were written.
    let patience = Duration::from_millis(svc.config.kafka_ack_timeout_ms + 1000);
    let mut written = 0;
    for (ticket, events, rx) in waits {
        let report = async { rx.recv().await }
            .or(async {
                sleep(patience).await;
                None
            })
            .await;
        match report {
            Some(Ok(())) => {
                written += events;
                link.count(|c| {
                    c.produced_records += 1;
                    c.produced_events += events as u64;
                });
            }
            Some(Err(reason)) => failure = Some(reason),
            None => {
                link.forget(ticket);
                failure = Some(format!(
                    "no acknowledgement within {} ms",
                    patience.as_millis()
                ));
            }
        }
    }
    if let Some(reason) = failure {
        link.count(|c| c.produce_failures += 1);
        return Err(ProduceError { reason, written });
    }
    Ok(IngestReply {
        accepted: written,
        unmatched: None,
        rejected: parsed.rejected,
        rejected_total: parsed.rejected_total,
    })
}

/// How far behind one partition is: records not applied yet, and the time since the
/// newest event applied while records are waiting (0 once caught up).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct PartitionLag {
    pub partition: u32,
    /// Offset of the next record to apply (`null` before the first).
    pub position: Option<i64>,
    pub high_watermark: Option<i64>,
    pub lag_records: Option<i64>,
    pub behind_ms: Option<i64>,
}

/// The lag of every partition this shard owns now.
pub fn lag(svc: &Services) -> Vec<PartitionLag> {
    let Some(link) = &svc.kafka else {
        return Vec::new();
    };
    let now = now_ms();
    link.partitions
        .iter()
        .enumerate()
        .filter(|(p, state)| state.owned() && svc.placement.shard_of(*p as u32) == svc.id)
        .map(|(p, state)| {
            let lag_records = state.lag_records();
            let newest = state.newest_event_ms();
            let behind_ms = match lag_records {
                Some(0) => Some(0),
                _ if newest > 0 => Some((now - newest).max(0)),
                _ => None,
            };
            PartitionLag {
                partition: p as u32,
                position: Some(state.applied_next()).filter(|&n| n >= 0),
                high_watermark: Some(state.high_watermark()).filter(|&n| n >= 0),
                lag_records,
                behind_ms,
            }
        })
        .collect()
}
