//! Kafka: the topic between producers and shards in cluster mode. `sink` writes HTTP
//! batches and answers once the broker acknowledged them; `source` runs the consumer group
//! member that hands each shard the records of the partitions it owns (p mod shards).

pub mod backfill;
pub mod sink;
pub mod source;
pub mod takeover;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer};

pub use sink::{Delivered, Sink};
pub use source::{Source, SourceHandle};

/// Where the topic is and who reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaSettings {
    /// Bootstrap brokers, `host:port[,host:port]`.
    pub brokers: String,
    pub topic: String,
    /// Consumer group of the nodes.
    pub group: String,
    /// Partitions of the topic when the node has to create it.
    pub create_partitions: u32,
    /// Replication factor of the topic when the node has to create it.
    pub create_replication: u32,
    /// How long a write may wait for the broker's acknowledgement.
    pub ack_timeout: Duration,
}

/// At most one warning about the brokers per this long, per client.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// Rate-limited warnings of a client: a broker that is down makes librdkafka report the
/// same failure many times a second.
#[derive(Debug)]
struct Warnings {
    started: Instant,
    /// When the last warning was logged, in ms since `started` (0: never).
    warned_at: AtomicU64,
}

impl Default for Warnings {
    fn default() -> Self {
        Self {
            started: Instant::now(),
            warned_at: AtomicU64::new(0),
        }
    }
}

impl Warnings {
    fn warn(&self, what: std::fmt::Arguments<'_>) {
        let now = (self.started.elapsed().as_millis() as u64).max(1);
        let last = self.warned_at.load(Ordering::Relaxed);
        if (last == 0 || now.saturating_sub(last) >= WARN_EVERY.as_millis() as u64)
            && self
                .warned_at
                .compare_exchange(last, now, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                "kafka: {what} (further warnings of this client are held back for {} s); librdkafka retries by itself: nothing to do unless it persists: then check that the brokers in --kafka-brokers are reachable",
                WARN_EVERY.as_secs()
            );
        }
    }

    /// librdkafka's own log lines: warnings and worse are rate-limited warnings.
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error
            | RDKafkaLogLevel::Warning => self.warn(format_args!("{facility}: {message}")),
            _ => tracing::debug!("kafka {facility}: {message}"),
        }
    }
}

/// How long start-up waits for the brokers to answer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The header that marks a record's value format when it is not JSON or line protocol.
pub const FORMAT_HEADER: &str = "livedash-format";

/// What a shard sees of one partition, shared with the consumer thread.
#[derive(Debug)]
pub struct PartitionState {
    /// Bumped on every assignment and revocation: records fetched under an older
    /// generation are dropped by the shard.
    generation: AtomicU64,
    owned: AtomicBool,
    /// Offset after the last record the shard applied (-1: none yet).
    applied_next: AtomicI64,
    /// The broker's high watermark, from the consumer's statistics (-1: unknown).
    high_watermark: AtomicI64,
    /// Newest event time applied, in ms (0: none yet).
    newest_event_ms: AtomicI64,
}

impl Default for PartitionState {
    fn default() -> Self {
        Self {
            generation: AtomicU64::new(0),
            owned: AtomicBool::new(false),
            applied_next: AtomicI64::new(-1),
            high_watermark: AtomicI64::new(-1),
            newest_event_ms: AtomicI64::new(0),
        }
    }
}

impl PartitionState {
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub fn owned(&self) -> bool {
        self.owned.load(Ordering::Acquire)
    }

    pub fn applied_next(&self) -> i64 {
        self.applied_next.load(Ordering::Acquire)
    }

    pub fn high_watermark(&self) -> i64 {
        self.high_watermark.load(Ordering::Acquire)
    }

    pub fn newest_event_ms(&self) -> i64 {
        self.newest_event_ms.load(Ordering::Acquire)
    }

    /// Records that the shard applied everything before `next`, with events up to
    /// `newest_ms`.
    pub fn applied(&self, next: i64, newest_ms: i64) {
        self.applied_next.store(next, Ordering::Release);
        self.newest_event_ms.fetch_max(newest_ms, Ordering::AcqRel);
    }

    /// Records in the partition not applied yet (`None` while unknown).
    pub fn lag_records(&self) -> Option<i64> {
        let high = self.high_watermark();
        let next = self.applied_next();
        (high >= 0 && next >= 0).then(|| (high - next).max(0))
    }

    /// Takes the partition: consumption resumes at `start`; `kept` when the shard keeps
    /// the windows it has.
    fn take(&self, start: i64, kept: bool) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        if !kept {
            self.newest_event_ms.store(0, Ordering::Release);
        }
        self.applied_next.store(start, Ordering::Release);
        self.owned.store(true, Ordering::Release);
    }

    /// Stops applying the partition's records (it was revoked, or another node claimed
    /// it in the state mirror).
    pub fn give_up(&self) {
        self.owned.store(false, Ordering::Release);
        self.generation.fetch_add(1, Ordering::AcqRel);
    }
}

/// The partitions of the topic, indexed by partition number.
pub type Partitions = Arc<[PartitionState]>;

/// Asks the brokers for the topic's partition count, creating the topic when it is
/// missing. Blocking: call it before the shards start.
pub fn prepare_topic(settings: &KafkaSettings) -> Result<u32, String> {
    let consumer: BaseConsumer = client_config(settings)
        .create()
        .map_err(|e| format!("kafka client for {}: {e}", settings.brokers))?;
    if let Some(n) = partition_count(&consumer, &settings.topic)? {
        return Ok(n);
    }
    let admin: AdminClient<DefaultClientContext> = client_config(settings)
        .create()
        .map_err(|e| format!("kafka admin client: {e}"))?;
    let topic = NewTopic::new(
        &settings.topic,
        settings.create_partitions as i32,
        TopicReplication::Fixed(settings.create_replication as i32),
    );
    let options = AdminOptions::new().operation_timeout(Some(CONNECT_TIMEOUT));
    let created = futures_lite::future::block_on(admin.create_topics([&topic], &options))
        .map_err(|e| format!("creating topic {}: {e}", settings.topic))?;
    for result in created {
        if let Err((name, code)) = result
            && code != rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists
        {
            return Err(format!("creating topic {name}: {code}"));
        }
    }
    tracing::info!(
        topic = settings.topic,
        partitions = settings.create_partitions,
        "created the topic"
    );
    // The brokers may take a moment to show the new topic in their metadata.
    let give_up = std::time::Instant::now() + CONNECT_TIMEOUT;
    loop {
        if let Some(n) = partition_count(&consumer, &settings.topic)? {
            return Ok(n);
        }
        if std::time::Instant::now() > give_up {
            return Err(format!(
                "topic {} was created but the brokers do not list it",
                settings.topic
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The topic's partition count, `None` when the brokers do not know it.
fn partition_count(consumer: &BaseConsumer, topic: &str) -> Result<Option<u32>, String> {
    let metadata = consumer
        .fetch_metadata(Some(topic), CONNECT_TIMEOUT)
        .map_err(|e| format!("asking the brokers about topic {topic}: {e}"))?;
    Ok(metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none())
        .map(|t| t.partitions().len() as u32)
        .filter(|&n| n > 0))
}

/// Settings every client of ours shares.
fn client_config(settings: &KafkaSettings) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &settings.brokers)
        .set("client.id", "livedash")
        .set("log_level", "4");
    config
}
