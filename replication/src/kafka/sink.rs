//! The producer a shard's HTTP ingest writes through: idempotent, acks=all, one record per
//! partition per batch. Each shard has its own, so replacing it (after a failed write, see
//! `KafkaLink`) concerns that shard alone. Delivery reports arrive on librdkafka's thread
//! and go to the shard through its inbox, tagged with the shard's ticket.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rdkafka::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};

use super::{KafkaSettings, client_config};
use crate::inbox::Inbox;

/// The broker's verdict on one record.
#[derive(Debug)]
pub struct Delivered {
    pub ticket: u64,
    /// The reason in words when the record was not written.
    pub result: Result<(), String>,
}

/// Records a producer may have in flight; each shard's delivery inbox holds this many.
pub const MAX_IN_FLIGHT: usize = 32 * 1024;

struct SinkContext {
    outbox: Arc<Inbox<Delivered>>,
    warnings: super::Warnings,
}

impl ClientContext for SinkContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        self.warnings.log(level, facility, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.warnings
            .warn(format_args!("producer: {error}: {reason}"));
    }
}

impl ProducerContext for SinkContext {
    type DeliveryOpaque = Box<u64>;

    fn delivery(&self, result: &DeliveryResult<'_>, ticket: Box<u64>) {
        let delivered = Delivered {
            ticket: *ticket,
            result: result.as_ref().map(|_| ()).map_err(|(e, _)| e.to_string()),
        };
        // The inbox holds every record that can be in flight, so this waits only if the
        // shard is stalled; a report it never takes leaves its request to time out (503).
        if self
            .outbox
            .push_waiting(delivered, Duration::from_secs(1))
            .is_err()
        {
            tracing::warn!(
                "a delivery report was dropped; its ingest request gets 503 although the record may have been written: nothing to do unless it repeats: then a shard is stalled: look for it in livedash_tick_duration_seconds"
            );
        }
    }
}

/// How long one poll of the producer's events lasts. A poll hands each delivery report
/// on as it comes, so this bounds nothing but how often the thread wakes up for nothing
/// (and rdkafka's poll spins for the last millisecond of each: with its own polling
/// thread's 100 ms, an idle producer took about 1% of a core).
const POLL: Duration = Duration::from_secs(1);

/// One shard's writer to the topic.
pub struct Sink {
    producer: Arc<BaseProducer<SinkContext>>,
    topic: String,
    stop: Arc<AtomicBool>,
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

impl std::fmt::Debug for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sink").field("topic", &self.topic).finish()
    }
}

impl Sink {
    /// A producer for `settings.topic` whose delivery reports go to `outbox`.
    pub fn new(settings: &KafkaSettings, outbox: Arc<Inbox<Delivered>>) -> Result<Self, String> {
        let timeout_ms = settings.ack_timeout.as_millis().max(1).to_string();
        let producer = client_config(settings)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("message.timeout.ms", &timeout_ms)
            .set("linger.ms", "1")
            .set("queue.buffering.max.messages", MAX_IN_FLIGHT.to_string())
            .create_with_context(SinkContext {
                outbox,
                warnings: super::Warnings::default(),
            })
            .map_err(|e| format!("kafka producer for {}: {e}", settings.brokers))?;
        let producer: Arc<BaseProducer<SinkContext>> = Arc::new(producer);
        let stop = Arc::new(AtomicBool::new(false));
        {
            let (producer, stop) = (Arc::clone(&producer), Arc::clone(&stop));
            std::thread::Builder::new()
                .name("livedash-produce".into())
                .spawn(move || {
                    while !stop.load(Ordering::Acquire) {
                        producer.poll(POLL);
                    }
                })
                .map_err(|e| format!("kafka producer thread: {e}"))?;
        }
        Ok(Self {
            producer,
            topic: settings.topic.clone(),
            stop,
        })
    }

    /// Queues one record for `partition`; its report comes back with `ticket`. Fails at
    /// once when the producer's queue is full.
    pub fn send(&self, ticket: u64, partition: u32, key: &str, value: &[u8]) -> Result<(), String> {
        let record = BaseRecord::with_opaque_to(&self.topic, Box::new(ticket))
            .partition(partition as i32)
            .key(key)
            .payload(value);
        self.producer.send(record).map_err(|(e, _)| e.to_string())
    }

    /// Waits up to `timeout` for every queued record to be delivered (at shutdown).
    pub fn flush(&self, timeout: Duration) {
        if let Err(e) = self.producer.flush(timeout) {
            tracing::warn!(
                "flushing the kafka producer: {e}; records still queued may not be written, and none of them was acknowledged to its producer: nothing to do on the node"
            );
        }
    }
}
