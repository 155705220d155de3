//! Cluster mode throughput against a private tansu broker, each figure beside a baseline
//! run in the same process on the same broker:
//!
//! - `consume`: a topic pre-filled with JSON-array records (one per partition per batch,
//!   as livedash's own producer writes them) is read by a bare rdkafka consumer (records
//!   fetched, nothing parsed), then by a 2-shard node that applies every event to its
//!   windows (a 5-minute sum widget per metric). Reported: events/s of each, and the ratio.
//!   With `--redis`, a third run: the same node with the state mirror on (a private
//!   redis-server), reported beside the node without it, with the mirror's bytes per event.
//! - `mirror`: a producer writes at a fixed rate while a 2-shard node with the state mirror
//!   consumes; reported: events/s consumed, mirror bytes/s and bytes per event.
//! - `ingest`: HTTP clients POST 1,000-event batches to a 2-shard node in cluster mode
//!   (answered once the broker acknowledged them), after a bare producer wrote the same
//!   batches, grouped the same way, with the same number of batches in flight. Reported:
//!   events/s acknowledged by each, and the ratio.
//!
//! `cargo build --release --bin livedash && cargo run --release -p livedash-bench --bin kafka -- consume`
//! (tansu 0.6.0 must be installed: `cargo install tansu --version 0.6.0 --locked --features libsql`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use livedash_bench::node::{IngestClients, create_widgets, start_node, start_node_in};
use livedash_engine::{MetricEvent, batch, partition_for};
use livedash_loadgen::broker::Broker;
use livedash_loadgen::client::{Client, now_ms};
use livedash_loadgen::ingest::Rng;
use livedash_loadgen::redis::RedisServer;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientConfig, ClientContext, Message, Offset, TopicPartitionList};
use serde_json::{Value, json};

#[derive(Debug, Parser)]
struct Args {
    #[command(subcommand)]
    run: Run,
    /// Partitions of the topic.
    #[arg(long, default_value_t = 8, global = true)]
    partitions: u32,
    /// Events per batch (per HTTP request; split into one record per partition).
    #[arg(long, default_value_t = 1000, global = true)]
    batch: usize,
    /// Distinct metric names; each carries one of 10 host tags.
    #[arg(long, default_value_t = 1000, global = true)]
    metrics: usize,
    /// Record format of the pre-filled topic and of the bare producer: `batch` (the
    /// compact form livedash's producer writes) or `json` (a JSON array of events).
    #[arg(long, default_value = "batch", global = true)]
    format: String,
}

#[derive(Debug, Subcommand)]
enum Run {
    /// Consumption from a pre-filled topic: bare consumer, then the node.
    Consume {
        /// Events in the topic.
        #[arg(long, default_value_t = 4_000_000)]
        events: usize,
        /// Also run the node with the state mirror on.
        #[arg(long)]
        redis: bool,
    },
    /// The state mirror's traffic at a fixed event rate.
    Mirror {
        /// Events per second written to the topic.
        #[arg(long, default_value_t = 100_000)]
        rate: u64,
        /// Measured seconds.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
    /// HTTP ingest in cluster mode: bare producer, then the node.
    Ingest {
        /// Concurrent HTTP connections (and batches in flight for the bare producer).
        #[arg(long, default_value_t = 8)]
        connections: usize,
        /// Measured seconds of each side.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
}

const TOPIC: &str = "bench.events";

/// A batch: per partition, its record's value and event count.
type Batch = Vec<(u32, Vec<u8>, u64)>;

/// Batches of events, each split into one record per partition.
fn batches(args: &Args, count: usize) -> Vec<Batch> {
    let now = now_ms();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    (0..count)
        .map(|_| {
            let mut groups: HashMap<u32, Vec<MetricEvent>> = HashMap::new();
            for _ in 0..args.batch {
                let r = rng.bits();
                let name = metric(r as usize % args.metrics);
                groups
                    .entry(partition_for(&name, args.partitions))
                    .or_default()
                    .push(MetricEvent {
                        metric_name: name,
                        value: (r >> 32) as f64 / 1e6,
                        tags: [("host".to_string(), format!("h{}", (r >> 16) % 10))].into(),
                        event_time: now - (r >> 40) as i64 % 1000,
                    });
            }
            groups
                .into_iter()
                .map(|(p, events)| {
                    let value = if args.format == "json" {
                        serde_json::to_vec(&events).unwrap_or_default()
                    } else {
                        batch::encode(&events)
                    };
                    (p, value, events.len() as u64)
                })
                .collect()
        })
        .collect()
}

/// A 2-shard node in cluster mode on the bench topic.
fn cluster_args(brokers: &str) -> [&str; 6] {
    [
        "--shards",
        "2",
        "--kafka-brokers",
        brokers,
        "--kafka-topic",
        TOPIC,
    ]
}

fn metric(i: usize) -> String {
    format!("bench.metric.{i}")
}

/// Counts acknowledged events of records whose opaque is their event count.
struct Acks {
    events: Arc<AtomicU64>,
    in_flight: Arc<AtomicUsize>,
    failed: Arc<AtomicU64>,
}

impl ClientContext for Acks {}

impl ProducerContext for Acks {
    type DeliveryOpaque = Box<u64>;

    fn delivery(&self, result: &DeliveryResult<'_>, events: Box<u64>) {
        match result {
            Ok(_) => {
                self.events.fetch_add(*events, Ordering::Relaxed);
            }
            Err(_) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

fn producer(brokers: &str, acks: Acks) -> Result<ThreadedProducer<Acks>, String> {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "1")
        .set(
            "compression.type",
            std::env::var("BENCH_COMPRESSION").unwrap_or_else(|_| "none".into()),
        )
        .create_with_context(acks)
        .map_err(|e| e.to_string())
}

/// Writes batches (records with their event counts) keeping at most `window` records in
/// flight, until `stop`; returns events acknowledged.
fn produce(
    brokers: &str,
    batches: &[Batch],
    window: usize,
    mut stop: impl FnMut(u64) -> bool,
) -> Result<(u64, Duration), String> {
    let events = Arc::new(AtomicU64::new(0));
    let in_flight = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let p = producer(
        brokers,
        Acks {
            events: Arc::clone(&events),
            in_flight: Arc::clone(&in_flight),
            failed: Arc::clone(&failed),
        },
    )?;
    let started = Instant::now();
    let mut i = 0usize;
    while !stop(events.load(Ordering::Relaxed)) {
        let batch = &batches[i % batches.len()];
        i += 1;
        for (partition, value, count) in batch {
            while in_flight.load(Ordering::Acquire) >= window {
                std::thread::sleep(Duration::from_micros(50));
            }
            in_flight.fetch_add(1, Ordering::AcqRel);
            let record = BaseRecord::with_opaque_to(TOPIC, Box::new(*count))
                .partition(*partition as i32)
                .key("bench")
                .payload(value);
            if let Err((e, _)) = p.send(record) {
                in_flight.fetch_sub(1, Ordering::AcqRel);
                return Err(format!("producing: {e}"));
            }
        }
    }
    p.flush(Duration::from_secs(30))
        .map_err(|e| e.to_string())?;
    if failed.load(Ordering::Relaxed) > 0 {
        return Err(format!("{} records failed", failed.load(Ordering::Relaxed)));
    }
    Ok((events.load(Ordering::Relaxed), started.elapsed()))
}

/// Reads every partition from the start until `records` records came; returns the time.
fn bare_consume(broker: &Broker, partitions: u32, records: u64) -> Result<Duration, String> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.addr())
        .set("group.id", "bench-bare")
        .set("enable.auto.commit", "false")
        .create()
        .map_err(|e| e.to_string())?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(TOPIC, p as i32, Offset::Beginning)
            .map_err(|e| e.to_string())?;
    }
    consumer.assign(&tpl).map_err(|e| e.to_string())?;
    let mut seen = 0u64;
    let mut bytes = 0usize;
    let mut started = None;
    let give_up = Instant::now() + Duration::from_secs(600);
    while seen < records && Instant::now() < give_up {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            started.get_or_insert_with(Instant::now);
            bytes += m.payload().map_or(0, <[u8]>::len);
            seen += 1;
        }
    }
    if seen < records {
        return Err(format!("bare consumer read {seen} of {records} records"));
    }
    eprintln!("  bare consumer: {seen} records, {} MB", bytes / 1_000_000);
    Ok(started.map_or(Duration::ZERO, |s| s.elapsed()))
}

/// Dashboards with a 5-minute sum widget per metric, on the node at `addr`.
fn create_sum_widgets(addr: SocketAddr, metrics: usize) -> Result<(), String> {
    let mut admin = Client::connect(addr).map_err(|e| e.to_string())?;
    let specs: Vec<Value> = (0..metrics)
        .map(|m| json!({"metric_name": metric(m), "aggregation": "sum", "window_seconds": 300, "refresh_interval_seconds": 1}))
        .collect();
    create_widgets(&mut admin, &specs)
}

/// Counter `name` of the `section` of each shard's stats (`kafka`, `mirror`), summed
/// over the node's shards.
fn shard_counter(c: &mut Client, section: &str, name: &str) -> Result<u64, String> {
    let stats: Value = c
        .send("GET", "/stats", "application/json", b"")
        .map_err(|e| format!("/stats: {e}"))?
        .decode()
        .map_err(|e| format!("/stats: {e}"))?;
    Ok(stats["shards"]
        .as_array()
        .map(|shards| {
            shards
                .iter()
                .map(|s| s[section][name].as_u64().unwrap_or(0))
                .sum()
        })
        .unwrap_or(0))
}

/// A Kafka counter summed over the node's shards.
fn node_counter(c: &mut Client, name: &str) -> Result<u64, String> {
    shard_counter(c, "kafka", name)
}

/// A mirror counter summed over the node's shards.
fn mirror_counter(c: &mut Client, name: &str) -> Result<u64, String> {
    shard_counter(c, "mirror", name)
}

/// A node in cluster mode (group `group`, plus `extra` arguments) with a 5-minute sum
/// widget per metric: widgets are made while it runs standalone, then it is started on
/// the topic.
fn cluster_node(
    args: &Args,
    broker: &Broker,
    group: &str,
    extra: &[&str],
) -> Result<(livedash_bench::node::Node, SocketAddr), String> {
    let dir = std::env::temp_dir().join(format!(
        "livedash-bench-kafka-{}-{group}",
        std::process::id()
    ));
    let (setup, addr) = start_node_in(&dir, &["--shards", "2"])?;
    create_sum_widgets(addr, args.metrics)?;
    setup.stop_keeping_data();
    let brokers = broker.addr();
    let mut node_args: Vec<&str> = cluster_args(&brokers).to_vec();
    node_args.extend(["--kafka-group", group]);
    node_args.extend_from_slice(extra);
    start_node_in(&dir, &node_args)
}

/// Starts a node on the pre-filled topic and times its consumption of `events` events;
/// returns events/s and the mirror's bytes (0 without it).
fn node_consume(
    args: &Args,
    broker: &Broker,
    events: u64,
    group: &str,
    extra: &[&str],
) -> Result<(f64, u64), String> {
    let (_node, addr) = cluster_node(args, broker, group, extra)?;
    let mut c = Client::connect(addr).map_err(|e| e.to_string())?;
    let (mut first, mut last) = (None, None);
    let give_up = Instant::now() + Duration::from_secs(600);
    while Instant::now() < give_up {
        let n = node_counter(&mut c, "consumed_events")?;
        if n > 0 && first.is_none() {
            first = Some((Instant::now(), n));
        }
        if n >= events {
            last = Some(Instant::now());
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let (Some((t0, n0)), Some(t1)) = (first, last) else {
        return Err("the node did not consume the topic in time".into());
    };
    // Let the last flush land before reading the mirror's bytes.
    std::thread::sleep(Duration::from_millis(500));
    let bytes = mirror_counter(&mut c, "bytes")?;
    eprintln!(
        "  node: {} events in {:.2} s after the first {n0}",
        events - n0,
        (t1 - t0).as_secs_f64()
    );
    Ok(((events - n0) as f64 / (t1 - t0).as_secs_f64(), bytes))
}

fn consume(args: &Args, total: usize, with_redis: bool) -> Result<(), String> {
    let broker = Broker::start();
    broker.create_topic(TOPIC, args.partitions);
    let count = total.div_ceil(args.batch);
    let all = batches(args, 64);
    let records: u64 = (0..count).map(|i| all[i % all.len()].len() as u64).sum();
    let mut written = 0usize;
    let (events, took) = produce(&broker.addr(), &all, 256, |_| {
        written += 1;
        written > count
    })?;
    eprintln!(
        "pre-filled {events} events in {records} records in {:.1} s",
        took.as_secs_f64()
    );

    let bare = bare_consume(&broker, args.partitions, records)?;
    let bare_rate = events as f64 / bare.as_secs_f64();
    let (node_rate, _) = node_consume(args, &broker, events, "bench-plain", &[])?;
    println!(
        "kafka consume: node {node_rate:.0} events/s, bare consumer {bare_rate:.0} events/s, node/bare {:.2}",
        node_rate / bare_rate
    );
    if with_redis {
        // Mirror on, then off once more: the ratio is against the mean of the runs
        // without it, one before and one after.
        let redis = RedisServer::start();
        let url = redis.url();
        let (mirrored, bytes) =
            node_consume(args, &broker, events, "bench-mirror", &["--redis", &url])?;
        let (again, _) = node_consume(args, &broker, events, "bench-plain-2", &[])?;
        let without = (node_rate + again) / 2.0;
        println!(
            "kafka consume with the state mirror: {mirrored:.0} events/s, without {without:.0} events/s (mean of {node_rate:.0} before and {again:.0} after), with/without {:.2}; mirror {:.3} bytes/event",
            mirrored / without,
            bytes as f64 / events as f64
        );
    }
    Ok(())
}

/// Writes at `rate` events/s while a node with the state mirror consumes; reports the
/// mirror's bytes per second and per event over `seconds`.
fn mirror(args: &Args, rate: u64, seconds: u64) -> Result<(), String> {
    let broker = Broker::start();
    broker.create_topic(TOPIC, args.partitions);
    let redis = RedisServer::start();
    let url = redis.url();
    let (_node, addr) = cluster_node(args, &broker, "bench-mirror", &["--redis", &url])?;
    let mut c = Client::connect(addr).map_err(|e| e.to_string())?;
    let all = batches(args, 64);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let producer = {
        let (stop, batch) = (Arc::clone(&stop), args.batch as f64);
        let broker_addr = broker.addr();
        std::thread::spawn(move || {
            let started = Instant::now();
            let mut sent = 0f64;
            produce(&broker_addr, &all, 256, |_| {
                sent += batch;
                let due = started + Duration::from_secs_f64(sent / rate as f64);
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                stop.load(Ordering::Acquire)
            })
        })
    };
    std::thread::sleep(Duration::from_secs(3));
    let (e0, b0, t0) = (
        node_counter(&mut c, "consumed_events")?,
        mirror_counter(&mut c, "bytes")?,
        Instant::now(),
    );
    std::thread::sleep(Duration::from_secs(seconds));
    let (e1, b1, t1) = (
        node_counter(&mut c, "consumed_events")?,
        mirror_counter(&mut c, "bytes")?,
        Instant::now(),
    );
    stop.store(true, Ordering::Release);
    producer
        .join()
        .map_err(|_| "the producer panicked".to_string())??;
    let secs = (t1 - t0).as_secs_f64();
    let events = e1.saturating_sub(e0);
    println!(
        "state mirror at {rate} events/s written: {:.0} events/s consumed, {:.0} bytes/s to redis, {:.3} bytes/event",
        events as f64 / secs,
        (b1 - b0) as f64 / secs,
        (b1 - b0) as f64 / events.max(1) as f64
    );
    Ok(())
}

fn ingest(args: &Args, connections: usize, seconds: u64) -> Result<(), String> {
    let broker = Broker::start();
    broker.create_topic(TOPIC, args.partitions);
    let all = batches(args, 64);
    let records_per_batch = all.iter().map(Vec::len).sum::<usize>() / all.len();
    // Bare producer: the same records, as many batches in flight as HTTP connections.
    let end = Instant::now() + Duration::from_secs(seconds);
    let (bare_events, took) = produce(
        &broker.addr(),
        &all,
        connections * records_per_batch,
        |_| Instant::now() >= end,
    )?;
    let bare_rate = bare_events as f64 / took.as_secs_f64();

    let brokers = broker.addr();
    let (_node, addr) = start_node(&cluster_args(&brokers))?;
    create_sum_widgets(addr, args.metrics)?;
    // HTTP bodies: each batch as one JSON array.
    let bodies: Arc<Vec<Vec<u8>>> = Arc::new(
        all.iter()
            .map(|batch| {
                let mut events: Vec<MetricEvent> = Vec::new();
                for (_, value, _) in batch {
                    if batch::is_batch(value) {
                        events.extend(batch::decode(value).unwrap_or_default());
                    } else {
                        events.extend(
                            serde_json::from_slice::<Vec<MetricEvent>>(value).unwrap_or_default(),
                        );
                    }
                }
                serde_json::to_vec(&events).unwrap_or_default()
            })
            .collect(),
    );
    let clients = IngestClients::start(addr, bodies, connections);
    std::thread::sleep(Duration::from_secs(1));
    clients.measure(true);
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(seconds));
    clients.measure(false);
    let node_rate = clients.counts().0 as f64 / started.elapsed().as_secs_f64();
    clients.stop()?;
    println!(
        "kafka ingest: node {node_rate:.0} events/s acknowledged, bare producer {bare_rate:.0} events/s, node/bare {:.2}",
        node_rate / bare_rate
    );
    Ok(())
}

fn main() -> Result<(), String> {
    let args = Args::parse();
    match args.run {
        Run::Consume { events, redis } => consume(&args, events, redis),
        Run::Mirror { rate, seconds } => mirror(&args, rate, seconds),
        Run::Ingest {
            connections,
            seconds,
        } => ingest(&args, connections, seconds),
    }
}
