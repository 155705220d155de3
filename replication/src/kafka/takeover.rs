//! Where a shard picks a partition up when the group gives it one, decided on the
//! consumer thread before the partition is assigned:
//! - **kept**: this node applied the partition before and holds its windows: they are
//!   exact for every record before its position, so it goes on from there;
//! - **restore**: the state mirror holds the partition's windows as of offset n (the
//!   claim bumps the partition's epoch first, fencing off the previous owner): the shard
//!   loads them and consumption starts at n;
//! - **replay**: nothing to start from: the windows start empty and are rebuilt from the
//!   log, from the first record written at (now − longest window − allowed skew) or later.
//!
//! In every case consumption starts no earlier than that replay point: an older record
//! holds only events older than any window (a producer can write an event at most the
//! allowed skew before its time), so skipping it changes nothing.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use super::source::SourceContext;
use crate::redis::{Scope, StoredQuery, claim, connect};

/// How a shard picks up a partition.
#[derive(Debug)]
pub enum Resume {
    /// Its windows stay as they are.
    Kept,
    /// Its windows are loaded from these stored ones (by query id), as of `start`.
    Restore(HashMap<String, StoredQuery>),
    /// Its windows start empty.
    Replay,
}

/// A partition a shard now owns.
#[derive(Debug)]
pub struct Taken {
    pub partition: u32,
    /// The shard's epoch in the state mirror; `None` without a mirror, or when it could
    /// not be reached (the mirror's writer claims one later).
    pub epoch: Option<u64>,
    /// The first offset consumed.
    pub start: i64,
    pub resume: Resume,
}

/// What the node's readiness depends on: whether the consumer has joined its group, and
/// how many partitions are being taken over right now.
#[derive(Debug, Default)]
pub struct Takeovers {
    joined: AtomicBool,
    in_progress: AtomicUsize,
    /// Milliseconds before now from which a replay reads the log: the longest window
    /// plus the allowed skew, kept up to date by the shards.
    pub replay_ms: AtomicI64,
}

impl Takeovers {
    /// Takeovers that replay `replay_ms` back from now (raised later by the shards).
    pub fn new(replay_ms: i64) -> Self {
        Self {
            replay_ms: AtomicI64::new(replay_ms),
            ..Self::default()
        }
    }

    /// `None` when ready, else why not.
    pub fn not_ready(&self) -> Option<String> {
        if !self.joined.load(Ordering::Acquire) {
            return Some("waiting for a partition assignment from the consumer group".into());
        }
        match self.in_progress.load(Ordering::Acquire) {
            0 => None,
            n => Some(format!("restoring the windows of {n} partition(s)")),
        }
    }

    /// A shard finished taking over a partition.
    pub fn done(&self) {
        self.in_progress
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .ok();
    }

    pub(crate) fn joined(&self) {
        self.joined.store(true, Ordering::Release);
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Decides where each of `partitions` starts, claiming them in the mirror when there is
/// one. Blocking (Redis and broker round trips): runs on the consumer thread.
pub(crate) fn plan(
    ctx: &SourceContext,
    consumer: &BaseConsumer<SourceContext>,
    partitions: &[u32],
    patience: Duration,
) -> Vec<Taken> {
    ctx.takeovers
        .in_progress
        .fetch_add(partitions.len(), Ordering::AcqRel);
    let floors = replay_floors(ctx, consumer, partitions, patience);
    let mut mirror = ctx.mirror.as_ref().and_then(|url| {
        connect(url)
            .map_err(|e| tracing::warn!("taking partitions over without the state mirror: {e}; the partitions replay from the topic instead, which takes longer: check that redis (--redis) is reachable"))
            .ok()
    });
    let mut taken = Vec::with_capacity(partitions.len());
    for (&p, floor) in partitions.iter().zip(floors) {
        let ours = ctx.partitions[p as usize].applied_next();
        let claimed = mirror.as_mut().and_then(|conn| {
            claim(conn, Scope::Partition, p)
                .map_err(|e| tracing::warn!(partition = p, "state mirror: {e}; replaying; nothing to do unless it repeats: then check that redis (--redis) is reachable"))
                .ok()
        });
        let (epoch, base, resume) = match claimed {
            _ if ours >= 0
                && claimed
                    .as_ref()
                    .is_none_or(|c| c.offset.is_none_or(|n| ours >= n)) =>
            {
                (claimed.map(|c| c.epoch), ours, Resume::Kept)
            }
            Some(c) => match c.offset {
                Some(n) => {
                    if c.undecodable > 0 {
                        tracing::warn!(
                            partition = p,
                            entries = c.undecodable,
                            "stored panes that could not be read were skipped; the restored windows miss them until they slide out: check that every node runs the same livedash version"
                        );
                    }
                    (Some(c.epoch), n, Resume::Restore(c.queries))
                }
                None => (Some(c.epoch), floor, Resume::Replay),
            },
            None => (None, floor, Resume::Replay),
        };
        taken.push(Taken {
            partition: p,
            epoch,
            start: base.max(floor),
            resume,
        });
    }
    taken
}

/// Per partition, the first offset a replay needs (0 when it cannot be found out).
fn replay_floors(
    ctx: &SourceContext,
    consumer: &BaseConsumer<SourceContext>,
    partitions: &[u32],
    patience: Duration,
) -> Vec<i64> {
    if partitions.is_empty() {
        return Vec::new();
    }
    let since = now_ms() - ctx.takeovers.replay_ms.load(Ordering::Acquire).max(0);
    if since <= 0 {
        // Everything counts: from the start, without asking.
        return vec![0; partitions.len()];
    }
    let mut tpl = TopicPartitionList::new();
    for &p in partitions {
        if tpl
            .add_partition_offset(&ctx.topic, p as i32, Offset::Offset(since))
            .is_err()
        {
            return vec![0; partitions.len()];
        }
    }
    let found = consumer
        .offsets_for_times(tpl, patience)
        .map_err(|e| tracing::warn!("finding where to replay from: {e}; from the start, which takes longer: nothing to do unless it repeats: then check that the Kafka brokers (--kafka-brokers) are reachable"))
        .ok();
    partitions
        .iter()
        .map(|&p| {
            let high = consumer
                .fetch_watermarks(&ctx.topic, p as i32, patience)
                .map_or(-1, |(_, high)| high);
            let at = found
                .as_ref()
                .and_then(|f| f.find_partition(&ctx.topic, p as i32))
                .and_then(|e| match e.offset() {
                    Offset::Offset(n) => Some(n),
                    // No record that recent: the end.
                    Offset::End => Some(high),
                    _ => None,
                })
                .unwrap_or(0);
            // Some brokers answer 0 for a time past the last record: never past the end.
            if high >= 0 {
                at.clamp(0, high)
            } else {
                at.max(0)
            }
        })
        .collect()
}
