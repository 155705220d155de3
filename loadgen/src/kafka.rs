//! Open-loop producers straight to the topic (`--kafka`): the same schedule and events as
//! the HTTP producers, each batch written as livedash's own producer writes it, one record
//! per partition in the compact `batch-v1` form (keyed by a metric of it, on the partition
//! Kafka's default partitioner gives the metric). A batch's latency runs from its intended
//! send time to the broker's acknowledgement of its last record.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::ClientContext;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};

use livedash_engine::{MetricEvent, batch};

use crate::ingest::{Plan, Rng, Schedule, metric_name};
use crate::stats::Stats;

/// A batch in flight: its records left to acknowledge, and whether any failed.
#[derive(Debug)]
struct Batch {
    intended: Instant,
    events: u64,
    measured: bool,
    left: AtomicUsize,
    failed: AtomicBool,
}

struct Reports {
    stats: Arc<Stats>,
}

impl ClientContext for Reports {}

impl ProducerContext for Reports {
    type DeliveryOpaque = Arc<Batch>;

    fn delivery(&self, result: &DeliveryResult<'_>, batch: Arc<Batch>) {
        if result.is_err() {
            batch.failed.store(true, Ordering::Release);
        }
        if batch.left.fetch_sub(1, Ordering::AcqRel) != 1 {
            return;
        }
        if !batch.failed.load(Ordering::Acquire) {
            Stats::count(&self.stats.events_acked_total, batch.events);
        }
        if !batch.measured {
            return;
        }
        if batch.failed.load(Ordering::Acquire) {
            Stats::count(&self.stats.errors, 1);
        } else {
            Stats::count(&self.stats.events_acked, batch.events);
            self.stats.record(
                &self.stats.ingest,
                batch.intended.elapsed().as_micros() as u64,
            );
        }
    }
}

/// The topic's partition count, from the brokers.
fn partitions(producer: &ThreadedProducer<Reports>, topic: &str) -> Result<u32, String> {
    let metadata = producer
        .client()
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .map_err(|e| format!("asking the brokers about topic {topic}: {e}"))?;
    metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none())
        .map(|t| t.partitions().len() as u32)
        .filter(|&n| n > 0)
        .ok_or_else(|| format!("topic {topic} does not exist (start a node on it first)"))
}

/// Runs the producers until `until`; returns when every record was acknowledged or
/// abandoned.
pub fn run(
    plan: Plan,
    brokers: String,
    topic: String,
    stats: Arc<Stats>,
    until: Instant,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let producer: ThreadedProducer<Reports> = match ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "1")
            .set("message.timeout.ms", "10000")
            .create_with_context(Reports {
                stats: Arc::clone(&stats),
            }) {
            Ok(p) => p,
            Err(e) => {
                stats.fail(format!("kafka producer for {brokers}: {e}"));
                Stats::count(&stats.errors, 1);
                return;
            }
        };
        let count = match partitions(&producer, &topic) {
            Ok(n) => n,
            Err(e) => {
                stats.fail(format!("kafka producers: {e}"));
                Stats::count(&stats.errors, 1);
                return;
            }
        };
        // Each metric's partition, computed once.
        let partition_of: Vec<u32> = (0..plan.metrics.max(1))
            .map(|m| livedash_engine::partition_for(&metric_name(m), count))
            .collect();
        let producer = Arc::new(producer);
        let schedule = Arc::new(Schedule::new(&plan, until));
        let threads: Vec<_> = (0..plan.connections.max(1))
            .map(|c| {
                let (plan, stats, schedule, stop, producer, topic, partition_of) = (
                    plan.clone(),
                    Arc::clone(&stats),
                    Arc::clone(&schedule),
                    Arc::clone(&stop),
                    Arc::clone(&producer),
                    topic.clone(),
                    partition_of.clone(),
                );
                std::thread::spawn(move || {
                    let mut rng = Rng::for_producer(c);
                    let mut groups: Vec<Vec<MetricEvent>> = vec![Vec::new(); count as usize];
                    let mut metrics = Vec::with_capacity(plan.batch);
                    while let Some(intended) = schedule.next(&stop) {
                        let t = crate::now_ms();
                        for g in &mut groups {
                            g.clear();
                        }
                        metrics.clear();
                        for _ in 0..plan.batch {
                            let (metric, host, value) = rng.event(plan.metrics, plan.tags);
                            metrics.push(metric);
                            groups[partition_of[metric] as usize].push(MetricEvent {
                                metric_name: metric_name(metric),
                                value,
                                tags: [("host".to_string(), format!("h{host}"))].into(),
                                event_time: t,
                            });
                        }
                        // A record the brokers refuse later is not taken back: its events
                        // count as never shown.
                        stats.sent(t, &metrics);
                        let records = groups.iter().filter(|g| !g.is_empty()).count();
                        let measured = stats.measuring();
                        if measured {
                            Stats::count(&stats.events_sent, plan.batch as u64);
                        }
                        let batch = Arc::new(Batch {
                            intended,
                            events: plan.batch as u64,
                            measured,
                            left: AtomicUsize::new(records),
                            failed: AtomicBool::new(false),
                        });
                        for (p, g) in groups.iter().enumerate() {
                            let Some(first) = g.first() else {
                                continue;
                            };
                            let value = batch::encode(g);
                            let record = BaseRecord::with_opaque_to(&topic, Arc::clone(&batch))
                                .partition(p as i32)
                                .key(&first.metric_name)
                                .payload(&value);
                            if let Err((e, record)) = producer.send(record) {
                                eprintln!("kafka: {e}");
                                // Counts the record as failed so the batch still ends.
                                let batch = record.delivery_opaque;
                                batch.failed.store(true, Ordering::Release);
                                if batch.left.fetch_sub(1, Ordering::AcqRel) == 1 && batch.measured
                                {
                                    Stats::count(&stats.errors, 1);
                                }
                            }
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            let _ = t.join();
        }
        if let Err(e) = producer.flush(Duration::from_secs(10)) {
            eprintln!("kafka: records not acknowledged at the end: {e}");
        }
    })
}
