//! Reading one partition's past for a query that is new on its owner: from the first
//! record written at `since_ms` up to (not including) offset `until`, where the owner
//! started applying the partition's records to the query live. A consumer of its own,
//! outside the group, on a thread of its own; the records go to the shard's inbox.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};

use super::source::{Record, ShardInput};
use super::{FORMAT_HEADER, KafkaSettings, client_config};
use crate::inbox::Inbox;

/// Records handed over per batch.
const BATCH: usize = 512;
/// The longest a backfill may take before it gives up.
const DEADLINE: Duration = Duration::from_secs(600);
/// How long a broker call, or a handover to a busy shard, may wait.
const PATIENCE: Duration = Duration::from_secs(30);

/// One backfill to run.
#[derive(Debug, Clone, Copy)]
pub struct Backfill {
    /// Names the backfill in what the shard receives.
    pub ticket: u64,
    pub partition: u32,
    /// Event time (ms) from which records are read (by their timestamps).
    pub since_ms: i64,
    /// The first offset not read.
    pub until: i64,
}

/// Starts `job` on a thread; its records, and then its end, go to `inbox` as
/// `ShardInput::Backfilled`. Setting `cancel` stops it.
pub fn start(
    settings: &KafkaSettings,
    job: Backfill,
    cancel: Arc<AtomicBool>,
    inbox: Arc<Inbox<ShardInput>>,
) {
    let settings = settings.clone();
    let spawned = std::thread::Builder::new()
        .name("livedash-backfill".into())
        .spawn(move || {
            let (read, error) = match read(&settings, job, &cancel, &inbox) {
                Ok(read) => (read, None),
                Err((read, e)) => (read, Some(e)),
            };
            let end = ShardInput::Backfilled {
                ticket: job.ticket,
                records: Vec::new(),
                done: Some(error),
            };
            if inbox.push_waiting(end, PATIENCE).is_err() {
                tracing::error!(
                    partition = job.partition,
                    read,
                    "a shard did not take the end of a backfill"
                );
            }
        });
    if let Err(e) = spawned {
        tracing::error!("starting a backfill: {e}");
    }
}

/// Reads the records and hands them over; returns how many, or how many and the error.
fn read(
    settings: &KafkaSettings,
    job: Backfill,
    cancel: &AtomicBool,
    inbox: &Inbox<ShardInput>,
) -> Result<usize, (usize, String)> {
    let consumer: BaseConsumer = client_config(settings)
        .set("group.id", format!("{}.backfill", settings.group))
        .set("enable.auto.commit", "false")
        .create()
        .map_err(|e| (0, format!("backfill consumer: {e}")))?;
    let p = job.partition as i32;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&settings.topic, p, Offset::Offset(job.since_ms))
        .map_err(|e| (0, e.to_string()))?;
    let start = consumer
        .offsets_for_times(tpl, PATIENCE)
        .ok()
        .and_then(|found| {
            found
                .find_partition(&settings.topic, p)
                .and_then(|e| match e.offset() {
                    Offset::Offset(n) => Some(n),
                    Offset::End => Some(job.until),
                    _ => None,
                })
        })
        .unwrap_or(0)
        .clamp(0, job.until.max(0));
    if start >= job.until {
        return Ok(0);
    }
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&settings.topic, p, Offset::Offset(start))
        .map_err(|e| (0, e.to_string()))?;
    consumer
        .assign(&tpl)
        .map_err(|e| (0, format!("backfill: {e}")))?;
    let give_up = Instant::now() + DEADLINE;
    let mut read = 0;
    let mut next = start;
    let mut batch = Vec::with_capacity(BATCH);
    while next < job.until {
        if cancel.load(Ordering::Acquire) {
            return Err((read, "cancelled: the partition moved".into()));
        }
        if Instant::now() > give_up {
            return Err((
                read,
                format!("backfill took longer than {} s", DEADLINE.as_secs()),
            ));
        }
        let Some(result) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let message = result.map_err(|e| (read, format!("backfill: {e}")))?;
        next = message.offset() + 1;
        if message.offset() >= job.until {
            break;
        }
        batch.push(Record {
            partition: job.partition,
            offset: message.offset(),
            generation: 0,
            value: message.payload().unwrap_or_default().to_vec(),
            format: message.headers().and_then(|h| {
                h.iter()
                    .find(|h| h.key == FORMAT_HEADER)
                    .and_then(|h| h.value)
                    .map(|v| String::from_utf8_lossy(v).into_owned())
            }),
        });
        read += 1;
        if batch.len() >= BATCH || next >= job.until {
            let records = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
            let input = ShardInput::Backfilled {
                ticket: job.ticket,
                records,
                done: None,
            };
            if inbox.push_waiting(input, PATIENCE).is_err() {
                return Err((read, "the shard did not take backfilled records".into()));
            }
        }
    }
    if !batch.is_empty() {
        let input = ShardInput::Backfilled {
            ticket: job.ticket,
            records: batch,
            done: None,
        };
        if inbox.push_waiting(input, PATIENCE).is_err() {
            return Err((read, "the shard did not take backfilled records".into()));
        }
    }
    Ok(read)
}
