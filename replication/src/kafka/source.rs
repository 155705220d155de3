//! The consumer group member of a node: one librdkafka consumer on a thread of its own,
//! `cooperative-sticky` assignment, records handed to shard p mod shards through that
//! shard's inbox. A shard that falls behind has its partitions paused, never buffered
//! without bound; a revocation returns only once the shard stopped applying the partition.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::bindings::rd_kafka_resp_err_t as RDKafkaRespErr;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::statistics::Statistics;
use rdkafka::{Offset, TopicPartitionList};

use super::takeover::{self, Resume, Taken, Takeovers};
use super::{FORMAT_HEADER, KafkaSettings, Partitions, client_config};
use crate::inbox::Inbox;

/// One record of a partition the receiving shard owns.
#[derive(Debug)]
pub struct Record {
    pub partition: u32,
    pub offset: i64,
    /// The partition's generation when the record was fetched: a shard drops records of
    /// an older generation (the partition was revoked since).
    pub generation: u64,
    pub value: Vec<u8>,
    /// The `livedash-format` header, when present.
    pub format: Option<String>,
}

/// What the consumer thread hands a shard.
#[derive(Debug)]
pub enum ShardInput {
    Records(Vec<Record>),
    /// These partitions are now the shard's, each with where it starts and how its
    /// windows are picked up (`takeover`). Records of a partition come only after this.
    Assigned(Vec<Taken>),
    /// Past records for the backfill `ticket` (`backfill`); `done` ends it, with the
    /// error that stopped it if one did.
    Backfilled {
        ticket: u64,
        records: Vec<Record>,
        done: Option<Option<String>>,
    },
    /// These partitions are no longer the shard's: it sets `done` once it will apply
    /// none of their records any more.
    Revoked {
        partitions: Vec<u32>,
        done: Arc<AtomicBool>,
    },
}

/// Records gathered for a shard before they are handed over in one batch.
const BATCH_RECORDS: usize = 512;
/// How long a rebalance waits for a shard to take a revocation and confirm it.
const FENCE_PATIENCE: Duration = Duration::from_secs(5);
/// How long the group waits for a member that stopped answering.
const SESSION_TIMEOUT: Duration = Duration::from_secs(10);
/// A member with no partition this long after joining rejoins (then twice as long, and
/// so on up to `REJOIN_MAX`): some brokers (tansu 0.6) can settle a rebalance that
/// follows a member's death with an empty assignment for the member that is left.
const REJOIN_AFTER: Duration = Duration::from_secs(15);
const REJOIN_MAX: Duration = Duration::from_secs(300);
/// How often the applied offsets are committed (for monitoring and restarts).
const COMMIT_EVERY: Duration = Duration::from_secs(1);

/// The consumer of a node, not started yet.
#[derive(Debug)]
pub struct Source {
    pub settings: KafkaSettings,
    pub partitions: Partitions,
    /// One per shard.
    pub inboxes: Vec<Arc<Inbox<ShardInput>>>,
    /// The state mirror's Redis URL, when there is one.
    pub mirror: Option<String>,
    pub takeovers: Arc<Takeovers>,
}

/// The running consumer thread.
#[derive(Debug)]
pub struct SourceHandle {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl SourceHandle {
    /// Leaves the group (the shards get their revocations) and ends the thread.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take()
            && t.join().is_err()
        {
            tracing::error!("the kafka consumer thread panicked");
        }
    }
}

pub(crate) struct SourceContext {
    pub(crate) topic: String,
    pub(crate) partitions: Partitions,
    inboxes: Vec<Arc<Inbox<ShardInput>>>,
    warnings: super::Warnings,
    pub(crate) mirror: Option<String>,
    pub(crate) takeovers: Arc<Takeovers>,
}

impl SourceContext {
    fn shard_of(&self, partition: u32) -> usize {
        partition as usize % self.inboxes.len()
    }

    /// Our topic's partitions in `tpl`.
    fn ours(&self, tpl: &TopicPartitionList) -> Vec<u32> {
        tpl.elements()
            .iter()
            .filter(|e| e.topic() == self.topic)
            .filter_map(|e| u32::try_from(e.partition()).ok())
            .filter(|&p| (p as usize) < self.partitions.len())
            .collect()
    }

    fn per_shard(&self, partitions: &[u32]) -> Vec<(usize, Vec<u32>)> {
        let mut out: Vec<(usize, Vec<u32>)> = Vec::new();
        for &p in partitions {
            let shard = self.shard_of(p);
            match out.iter_mut().find(|(s, _)| *s == shard) {
                Some((_, ps)) => ps.push(p),
                None => out.push((shard, vec![p])),
            }
        }
        out
    }

    /// Offsets to commit: the applied position of each of `partitions`.
    fn applied_offsets(&self, partitions: &[u32]) -> TopicPartitionList {
        let mut tpl = TopicPartitionList::new();
        for &p in partitions {
            let next = self.partitions[p as usize].applied_next();
            if next >= 0
                && let Err(e) =
                    tpl.add_partition_offset(&self.topic, p as i32, Offset::Offset(next))
            {
                tracing::warn!(
                    partition = p,
                    "offset to commit: {e}; this partition's offset is not committed this time: nothing to do (the node starts partitions from the state mirror or a replay, not from committed offsets)"
                );
            }
        }
        tpl
    }

    fn warn_limited(&self, what: std::fmt::Arguments<'_>) {
        self.warnings.warn(what);
    }
}

impl ClientContext for SourceContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        self.warnings.log(level, facility, message);
    }

    fn stats(&self, statistics: Statistics) {
        let Some(topic) = statistics.topics.get(&self.topic) else {
            return;
        };
        for (&p, part) in &topic.partitions {
            if let Some(state) = usize::try_from(p).ok().and_then(|p| self.partitions.get(p))
                && part.hi_offset >= 0
            {
                state
                    .high_watermark
                    .store(part.hi_offset, Ordering::Release);
            }
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.warn_limited(format_args!("{error}: {reason}"));
    }
}

impl SourceContext {
    /// A revocation: bumps the partitions' generation, waits until every shard confirmed
    /// it applies none of their records any more, and commits what was applied.
    fn revoke(&self, consumer: &BaseConsumer<Self>, tpl: &TopicPartitionList) {
        let revoked = self.ours(tpl);
        for &p in &revoked {
            self.partitions[p as usize].give_up();
        }
        let mut fences = Vec::new();
        for (shard, partitions) in self.per_shard(&revoked) {
            let done = Arc::new(AtomicBool::new(false));
            let input = ShardInput::Revoked {
                partitions,
                done: Arc::clone(&done),
            };
            if self.inboxes[shard]
                .push_waiting(input, FENCE_PATIENCE)
                .is_ok()
            {
                fences.push((shard, done));
            } else {
                tracing::error!(shard, "a shard did not take its revocation in time");
            }
        }
        let give_up = Instant::now() + FENCE_PATIENCE;
        for (shard, done) in fences {
            while !done.load(Ordering::Acquire) {
                if Instant::now() > give_up {
                    tracing::error!(shard, "a shard did not confirm its revocation in time");
                    break;
                }
                std::thread::sleep(Duration::from_micros(200));
            }
        }
        let offsets = self.applied_offsets(&revoked);
        if offsets.count() > 0
            && let Err(e) = consumer.commit(&offsets, CommitMode::Sync)
        {
            self.warn_limited(format_args!(
                "committing the offsets of revoked partitions: {e}"
            ));
        }
        tracing::info!(partitions = ?revoked, "kafka partitions revoked");
    }

    /// An assignment: where each partition starts and how its windows are picked up is
    /// decided first (`takeover::plan`), then the partitions are taken at those offsets
    /// and each shard told before any record of theirs reaches it.
    fn assign(&self, consumer: &BaseConsumer<Self>, tpl: &mut TopicPartitionList) {
        self.takeovers.joined();
        let assigned = self.ours(tpl);
        let taken = takeover::plan(self, consumer, &assigned, FENCE_PATIENCE);
        for t in &taken {
            if let Err(e) =
                tpl.set_partition_offset(&self.topic, t.partition as i32, Offset::Offset(t.start))
            {
                tracing::warn!(
                    partition = t.partition,
                    "setting the start offset: {e}; the partition starts from its committed offset instead and its widgets may be off for one window: nothing to do unless it repeats: then report it as a bug, with this line"
                );
            }
        }
        let result = match consumer.rebalance_protocol() {
            RebalanceProtocol::Cooperative => consumer.incremental_assign(tpl),
            _ => consumer.assign(tpl),
        };
        if let Err(e) = result {
            tracing::error!("taking the assigned kafka partitions: {e}");
            taken.iter().for_each(|_| self.takeovers.done());
            return;
        }
        for t in &taken {
            self.partitions[t.partition as usize].take(t.start, matches!(t.resume, Resume::Kept));
        }
        if !taken.is_empty() {
            tracing::info!(
                partitions = ?taken.iter().map(|t| (t.partition, t.start)).collect::<Vec<_>>(),
                "kafka partitions assigned (partition, start offset)"
            );
        }
        let mut by_shard: Vec<Vec<Taken>> = (0..self.inboxes.len()).map(|_| Vec::new()).collect();
        for t in taken {
            by_shard[self.shard_of(t.partition)].push(t);
        }
        for (shard, taken) in by_shard.into_iter().enumerate() {
            if taken.is_empty() {
                continue;
            }
            let n = taken.len();
            if self.inboxes[shard]
                .push_waiting(ShardInput::Assigned(taken), FENCE_PATIENCE)
                .is_err()
            {
                tracing::error!(shard, "a shard did not take its assignment in time");
                (0..n).for_each(|_| self.takeovers.done());
            }
        }
    }
}

impl ConsumerContext for SourceContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => self.assign(consumer, tpl),
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                self.revoke(consumer, tpl);
                let result = match consumer.rebalance_protocol() {
                    RebalanceProtocol::Cooperative => consumer.incremental_unassign(tpl),
                    _ => consumer.unassign(),
                };
                if let Err(e) = result {
                    tracing::error!("giving up the revoked kafka partitions: {e}");
                }
            }
            other => {
                let code: rdkafka::types::RDKafkaErrorCode = other.into();
                self.warn_limited(format_args!("rebalance: {code}"));
            }
        }
    }
}

impl Source {
    /// Joins the consumer group and starts handing records to the shards.
    pub fn start(self) -> Result<SourceHandle, String> {
        let context = SourceContext {
            topic: self.settings.topic.clone(),
            partitions: Arc::clone(&self.partitions),
            inboxes: self.inboxes,
            warnings: super::Warnings::default(),
            mirror: self.mirror,
            takeovers: self.takeovers,
        };
        let consumer: BaseConsumer<SourceContext> = client_config(&self.settings)
            .set("group.id", &self.settings.group)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("partition.assignment.strategy", "cooperative-sticky")
            .set(
                "session.timeout.ms",
                SESSION_TIMEOUT.as_millis().to_string(),
            )
            // Also bounds how long a rebalance waits for members that are gone.
            .set("max.poll.interval.ms", "15000")
            // A member learns of a rebalance at its next heartbeat: once a second, so a
            // dead member's partitions move about a second after its session expires.
            .set("heartbeat.interval.ms", "1000")
            .set("statistics.interval.ms", "1000")
            // A fetch with nothing new waits at most this long: it bounds how late a
            // quiet partition's next record is seen.
            .set("fetch.wait.max.ms", "50")
            .create_with_context(context)
            .map_err(|e| format!("kafka consumer for {}: {e}", self.settings.brokers))?;
        consumer
            .subscribe(&[&self.settings.topic])
            .map_err(|e| format!("subscribing to {}: {e}", self.settings.topic))?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = Arc::clone(&stop);
            std::thread::Builder::new()
                .name("livedash-kafka".into())
                .spawn(move || consume(consumer, &stop))
                .map_err(|e| format!("starting the kafka consumer thread: {e}"))?
        };
        Ok(SourceHandle {
            stop,
            thread: Some(thread),
        })
    }
}

/// The consumer thread: polls, batches records per shard, hands them over, pauses the
/// partitions of a shard whose inbox is full, and commits applied offsets.
fn consume(consumer: BaseConsumer<SourceContext>, stop: &AtomicBool) {
    let ctx = consumer.context();
    let shards = ctx.inboxes.len();
    let mut pending: Vec<Vec<Record>> = (0..shards).map(|_| Vec::new()).collect();
    let mut paused: Vec<Option<TopicPartitionList>> = (0..shards).map(|_| None).collect();
    let mut last_commit = Instant::now();
    let mut committed: Vec<i64> = vec![-1; ctx.partitions.len()];
    let mut empty_since = Instant::now();
    let mut rejoin_after = REJOIN_AFTER;
    while !stop.load(Ordering::Acquire) {
        if ctx.partitions.iter().any(|p| p.owned()) {
            empty_since = Instant::now();
            rejoin_after = REJOIN_AFTER;
        } else if empty_since.elapsed() >= rejoin_after {
            tracing::warn!(
                "no kafka partition from the group for {} s: rejoining it; nothing to do unless it repeats: then check that the brokers are reachable and that the topic has at least as many partitions as there are nodes in --kafka-group",
                empty_since.elapsed().as_secs()
            );
            consumer.unsubscribe();
            if let Err(e) = consumer.subscribe(&[&ctx.topic]) {
                ctx.warn_limited(format_args!("subscribing again: {e}"));
            }
            empty_since = Instant::now();
            rejoin_after = (rejoin_after * 2).min(REJOIN_MAX);
        }
        let waiting = pending.iter().any(|p| !p.is_empty());
        let timeout = if waiting {
            Duration::from_millis(1)
        } else {
            Duration::from_millis(100)
        };
        let mut next = consumer.poll(timeout);
        let mut taken = 0;
        while let Some(result) = next {
            match result {
                Ok(message) => take_record(ctx, &message, &mut pending),
                Err(e) => ctx.warn_limited(format_args!("{e}")),
            }
            taken += 1;
            if taken >= BATCH_RECORDS * shards {
                break;
            }
            next = consumer.poll(Duration::ZERO);
        }
        for shard in 0..shards {
            hand_over(&consumer, shard, &mut pending[shard], &mut paused[shard]);
        }
        if last_commit.elapsed() >= COMMIT_EVERY {
            last_commit = Instant::now();
            commit_moved(&consumer, &mut committed);
        }
    }
    commit_moved(&consumer, &mut committed);
    // Leaving the group runs the revocation (and its fences) before the thread ends.
    consumer.unsubscribe();
    let give_up = Instant::now() + FENCE_PATIENCE;
    while Instant::now() < give_up && !consumer.assignment().is_ok_and(|a| a.count() == 0) {
        consumer.poll(Duration::from_millis(50));
    }
}

fn take_record(ctx: &SourceContext, message: &BorrowedMessage<'_>, pending: &mut [Vec<Record>]) {
    let Ok(partition) = u32::try_from(message.partition()) else {
        return;
    };
    let Some(state) = ctx.partitions.get(partition as usize) else {
        return;
    };
    if message.topic() != ctx.topic || !state.owned() {
        return;
    }
    let format = message.headers().and_then(|h| {
        h.iter()
            .find(|h| h.key == FORMAT_HEADER)
            .and_then(|h| h.value)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    });
    pending[ctx.shard_of(partition)].push(Record {
        partition,
        offset: message.offset(),
        generation: state.generation(),
        value: message.payload().unwrap_or_default().to_vec(),
        format,
    });
}

/// Hands `pending` to `shard`; pauses its partitions when its inbox is full and resumes
/// them once it took everything.
fn hand_over(
    consumer: &BaseConsumer<SourceContext>,
    shard: usize,
    pending: &mut Vec<Record>,
    paused: &mut Option<TopicPartitionList>,
) {
    let ctx = consumer.context();
    while !pending.is_empty() {
        let batch: Vec<Record> = if pending.len() > BATCH_RECORDS {
            pending.drain(..BATCH_RECORDS).collect()
        } else {
            std::mem::take(pending)
        };
        match ctx.inboxes[shard].push(ShardInput::Records(batch)) {
            Ok(()) => {}
            Err(ShardInput::Records(mut back)) => {
                back.append(pending);
                *pending = back;
                if paused.is_none() {
                    let mut tpl = TopicPartitionList::new();
                    for (p, state) in ctx.partitions.iter().enumerate() {
                        if state.owned() && ctx.shard_of(p as u32) == shard {
                            tpl.add_partition(&ctx.topic, p as i32);
                        }
                    }
                    match consumer.pause(&tpl) {
                        Ok(()) => {
                            ctx.inboxes[shard].count_pause();
                            *paused = Some(tpl);
                        }
                        Err(e) => tracing::warn!(
                            shard,
                            "pausing partitions: {e}; records for this shard wait in memory and the consumer tries again: nothing to do unless it repeats: then add nodes (partitions move to them)"
                        ),
                    }
                }
                return;
            }
            Err(_) => return,
        }
    }
    if let Some(tpl) = paused.take()
        && let Err(e) = consumer.resume(&tpl)
    {
        tracing::warn!(
            shard,
            "resuming partitions: {e}; this shard's partitions stay paused until the next rebalance: if their lag_records in /stats keeps growing, restart the node"
        );
    }
}

/// Commits the applied offsets that moved since the last commit.
fn commit_moved(consumer: &BaseConsumer<SourceContext>, committed: &mut [i64]) {
    let ctx = consumer.context();
    let moved: Vec<u32> = ctx
        .partitions
        .iter()
        .enumerate()
        .filter(|(p, s)| s.owned() && s.applied_next() > committed[*p])
        .map(|(p, _)| p as u32)
        .collect();
    if moved.is_empty() {
        return;
    }
    let offsets = ctx.applied_offsets(&moved);
    match consumer.commit(&offsets, CommitMode::Async) {
        Ok(()) => {
            for p in moved {
                committed[p as usize] = ctx.partitions[p as usize].applied_next();
            }
        }
        Err(e) => ctx.warn_limited(format_args!("committing offsets: {e}")),
    }
}

#[cfg(test)]
mod tests;
