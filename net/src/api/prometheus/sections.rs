//! The sections of a scrape: ingest, Kafka, aggregation, push, the state mirror, the
//! cluster and the process.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::{Families, each, shard, with_shard};
use crate::clock::now_ms;
use crate::service::metrics::FORMATS;
use crate::service::stats::ShardStats;

pub(super) fn ingest(f: &mut Families, shards: &[ShardStats]) {
    f.counter(
        "events_accepted_total",
        "events applied to windows (including those no widget watches)",
        each(shards, |s| s.accepted as f64),
    );
    f.counter(
        "events_unmatched_total",
        "accepted events whose metric no widget watches",
        each(shards, |s| s.unmatched as f64),
    );
    let mut rejected = Vec::new();
    for s in shards {
        rejected.push((
            with_shard(s, "reason", "too_old"),
            s.rejected_too_old as f64,
        ));
        rejected.push((
            with_shard(s, "reason", "too_far_ahead"),
            s.rejected_too_far_ahead as f64,
        ));
        if let Ok(serde_json::Value::Object(by_reason)) = serde_json::to_value(s.refused) {
            for (reason, n) in by_reason {
                let n = n.as_f64().unwrap_or_default();
                rejected.push((with_shard(s, "reason", &reason), n));
            }
        }
    }
    f.counter(
        "events_rejected_total",
        "events refused, by reason (the parsers' reasons, too_old and too_far_ahead)",
        rejected,
    );
    let by_format = |counts: fn(&ShardStats) -> [u64; 3]| {
        shards
            .iter()
            .flat_map(|s| {
                FORMATS
                    .iter()
                    .zip(counts(s))
                    .map(|(format, n)| (with_shard(s, "format", format), n as f64))
            })
            .collect::<Vec<_>>()
    };
    f.counter(
        "ingest_requests_total",
        "HTTP ingest requests taken by this shard, by format (json, line: POST /ingest; influx: the InfluxDB write endpoints)",
        by_format(|s| s.metrics.requests),
    );
    f.counter(
        "ingest_bytes_total",
        "HTTP ingest body bytes as received, by format",
        by_format(|s| s.metrics.request_bytes),
    );
    f.counter(
        "engine_apply_seconds_total",
        "time spent applying events to windows",
        each(shards, |s| s.engine_apply_ns as f64 / 1e9),
    );
}

pub(super) fn kafka(f: &mut Families, shards: &[ShardStats]) {
    let linked: Vec<_> = shards
        .iter()
        .filter_map(|s| Some((s, s.kafka.as_ref()?)))
        .collect();
    if linked.is_empty() {
        return;
    }
    type Pick = fn(&crate::service::stats::KafkaStats) -> u64;
    let counters: [(&str, &str, Pick); 9] = [
        (
            "kafka_records_consumed_total",
            "records consumed from the partitions this shard owns",
            |k| k.counters.consumed_records,
        ),
        (
            "kafka_events_consumed_total",
            "events in the records consumed",
            |k| k.counters.consumed_events,
        ),
        (
            "kafka_malformed_records_total",
            "records that are not events in a known format (skipped)",
            |k| k.counters.malformed_records,
        ),
        (
            "kafka_wrong_partition_events_total",
            "events on a partition their metric does not hash to (not aggregated)",
            |k| k.counters.wrong_partition,
        ),
        (
            "kafka_revoked_records_total",
            "records fetched before their partition moved away (dropped)",
            |k| k.counters.revoked_records,
        ),
        (
            "kafka_records_produced_total",
            "records this shard's HTTP ingest wrote to the topic",
            |k| k.counters.produced_records,
        ),
        (
            "kafka_events_produced_total",
            "events in the records written",
            |k| k.counters.produced_events,
        ),
        (
            "kafka_produce_failures_total",
            "writes to the topic that failed (the request got 503)",
            |k| k.counters.produce_failures,
        ),
        (
            "kafka_pauses_total",
            "times the consumer paused this shard's partitions because the shard fell behind",
            |k| k.pauses,
        ),
    ];
    for (name, help, pick) in counters {
        let samples = linked.iter().map(|(s, k)| (shard(s.shard), pick(k) as f64));
        f.counter(name, help, samples);
    }
    f.gauge(
        "kafka_partitions_owned",
        "partitions of the topic this shard owns now",
        linked
            .iter()
            .map(|(s, k)| (shard(s.shard), k.partitions.len() as f64)),
    );
    let partition_samples = |value: fn(&crate::service::topic::PartitionLag) -> Option<f64>| {
        linked
            .iter()
            .flat_map(|(s, k)| {
                k.partitions.iter().filter_map(move |p| {
                    let labels = vec![
                        ("shard", s.shard.to_string()),
                        ("partition", p.partition.to_string()),
                    ];
                    Some((labels, value(p)?))
                })
            })
            .collect::<Vec<_>>()
    };
    f.gauge(
        "kafka_lag_records",
        "records of the partition not applied yet (high watermark minus position)",
        partition_samples(|p| p.lag_records.map(|n| n as f64)),
    );
    f.gauge(
        "kafka_behind_seconds",
        "how far the partition's consumption is behind, in time",
        partition_samples(|p| p.behind_ms.map(|ms| ms as f64 / 1000.0)),
    );
}

pub(super) fn aggregation(f: &mut Families, shards: &[ShardStats]) {
    f.histogram(
        "tick_duration_seconds",
        "time one refresh run took (the widgets due at one instant)",
        shards.iter().map(|s| (shard(s.shard), &s.metrics.tick)),
    );
    f.counter(
        "values_computed_total",
        "widget values computed by refreshes",
        each(shards, |s| s.values_computed as f64),
    );
    f.counter(
        "values_changed_total",
        "computed values that differed from the widget's previous one (pushed)",
        each(shards, |s| s.metrics.values_changed as f64),
    );
    f.gauge(
        "queries",
        "distinct queries (metric, filter, window), and the tag values of grouped ones, with window state",
        each(shards, |s| s.queries as f64),
    );
    f.counter(
        "group_values_refused_total",
        "events of grouped widgets whose tag value found its query at max_group_values (counted in the whole and other only)",
        each(shards, |s| s.group_values_refused as f64),
    );
    f.gauge(
        "widgets",
        "widgets installed",
        each(shards, |s| s.widgets as f64),
    );
    f.gauge(
        "window_memory_bytes",
        "heap bytes held by window state",
        each(shards, |s| s.window_bytes as f64),
    );
}

pub(super) fn push(f: &mut Families, shards: &[ShardStats]) {
    f.histogram(
        "push_delay_seconds",
        "from a value computed (or heard from another node) to its frame written to a socket",
        shards
            .iter()
            .map(|s| (shard(s.shard), &s.metrics.push_delay)),
    );
    f.histogram(
        "e2e_latency_seconds",
        "from the event time of the newest event a frame shows for the first time to the frame written",
        shards.iter().map(|s| (shard(s.shard), &s.metrics.e2e)),
    );
    f.counter(
        "frames_written_total",
        "stream frames written to sockets",
        each(shards, |s| s.frames_written as f64),
    );
    f.counter(
        "stream_bytes_sent_total",
        "stream frame bytes written to sockets",
        each(shards, |s| s.metrics.bytes_sent as f64),
    );
    f.counter(
        "conflations_total",
        "times a slow connection's queue overflowed and was replaced by the newest values",
        each(shards, |s| s.metrics.conflations as f64),
    );
    f.counter(
        "slow_client_closes_total",
        "streams closed because the client took nothing for the slow-client timeout (1008)",
        each(shards, |s| {
            s.metrics.closes.get(&1008).copied().unwrap_or(0) as f64
        }),
    );
    let closes: Vec<_> = shards
        .iter()
        .flat_map(|s| {
            s.metrics.closes.iter().map(|(code, n)| {
                let code = if *code == 0 {
                    "client".to_owned()
                } else {
                    code.to_string()
                };
                (with_shard(s, "code", &code), *n as f64)
            })
        })
        .collect();
    f.counter(
        "stream_closes_total",
        "streams ended, by the close code the node sent (client: the client left)",
        closes,
    );
    f.gauge(
        "streams_open",
        "open WebSocket streams",
        each(shards, |s| s.streams as f64),
    );
    f.gauge(
        "subscriptions",
        "dashboards streamed by this shard (each subscribes to its widgets' owners)",
        each(shards, |s| s.streamed_dashboards as f64),
    );
    let written: u64 = shards.iter().map(|s| s.frames_written).sum();
    let computed: u64 = shards.iter().map(|s| s.values_computed).sum();
    if computed > 0 {
        f.gauge(
            "fanout_ratio",
            "frames written per widget value computed, since the node started",
            [(vec![], written as f64 / computed as f64)],
        );
    }
    f.counter(
        "shard_calls_failed_total",
        "calls between shards that got no answer in time",
        each(shards, |s| s.failed_calls as f64),
    );
}

pub(super) fn mirror(f: &mut Families, shards: &[ShardStats]) {
    let mirrored: Vec<_> = shards
        .iter()
        .filter_map(|s| Some((s, s.mirror.as_ref()?)))
        .collect();
    if mirrored.is_empty() {
        return;
    }
    let now = now_ms();
    let each = |value: &dyn Fn(&crate::service::mirror::MirrorCounters) -> f64| {
        mirrored
            .iter()
            .map(|(s, m)| (shard(s.shard), value(m)))
            .collect::<Vec<_>>()
    };
    f.counter(
        "mirror_flushes_total",
        "writes of changed windows to Redis",
        each(&|m| m.flushes as f64),
    );
    f.counter(
        "mirror_flush_failures_total",
        "writes to Redis that failed (retried)",
        each(&|m| m.failed_flushes as f64),
    );
    f.counter(
        "mirror_fenced_total",
        "partitions refused because another node claimed them",
        each(&|m| m.fenced as f64),
    );
    f.counter(
        "mirror_bytes_total",
        "window bytes written to Redis",
        each(&|m| m.bytes as f64),
    );
    f.gauge(
        "mirror_last_flush_seconds",
        "duration of the last write to Redis",
        each(&|m| m.last_flush_us as f64 / 1e6),
    );
    f.gauge(
        "mirror_lag_seconds",
        "how long writes to Redis have been failing (0 while they succeed: the mirror is then at most one interval behind)",
        each(&|m| if m.failing_since_ms > 0 { (now - m.failing_since_ms).max(0) as f64 / 1000.0 } else { 0.0 }),
    );
    f.gauge(
        "redis_up",
        "1 while the shard's writes to Redis succeed",
        each(&|m| f64::from(u8::from(m.failing_since_ms == 0))),
    );
}

pub(super) fn cluster(f: &mut Families, link: &crate::service::cluster::ClusterLink) {
    let shared = &link.shared;
    let get = |c: &AtomicU64| c.load(Ordering::Relaxed) as f64;
    let up = |c: &AtomicBool| f64::from(u8::from(c.load(Ordering::Relaxed)));
    let nodes = shared.nodes.lock().map(|n| n.len()).unwrap_or_default();
    f.gauge(
        "cluster_nodes",
        "live nodes of the cluster, as this node last read them",
        [(vec![], nodes as f64)],
    );
    let (p, s) = (&shared.publish_counters, &shared.subscriber.counters);
    f.counter(
        "pubsub_published_messages_total",
        "Pub/Sub messages this node sent (values and beats)",
        [(vec![], get(&p.messages))],
    );
    f.counter(
        "pubsub_publish_failures_total",
        "batches of values lost because Redis was unreachable (sent again once it is back)",
        [(vec![], get(&p.failed))],
    );
    f.counter(
        "pubsub_received_messages_total",
        "Pub/Sub messages received from other nodes",
        [(vec![], get(&s.messages))],
    );
    f.counter(
        "pubsub_dropped_total",
        "Pub/Sub messages dropped because the shards were behind",
        [(vec![], get(&s.dropped))],
    );
    f.counter(
        "pubsub_reconnects_total",
        "reconnections of the Pub/Sub connection",
        [(vec![], get(&s.reconnects))],
    );
    f.gauge(
        "pubsub_up",
        "1 while the Pub/Sub connection to Redis is up",
        [(vec![], up(&shared.subscriber.connected))],
    );
}

/// The process, from `/proc/self` (Linux).
pub(super) fn process(f: &mut Families) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at "state" (field 3);
    // utime and stime are fields 14 and 15, in clock ticks of 1/100 s on Linux.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let cpu = (ticks(11) + ticks(12)) / 100.0;
    f.counter(
        "process_cpu_seconds_total",
        "user and system CPU time of the node",
        [(vec![], cpu)],
    );
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok());
    if let Some(kib) = rss_kib {
        f.gauge(
            "process_resident_memory_bytes",
            "resident memory of the node",
            [(vec![], kib * 1024.0)],
        );
    }
    f.gauge(
        "process_open_fds",
        "open file descriptors (sockets included), counted every 2 seconds",
        [(vec![], open_fds() as f64)],
    );
    if let Ok((soft, _)) = rlimit::getrlimit(rlimit::Resource::NOFILE) {
        f.gauge(
            "process_max_fds",
            "the open-files limit the node runs with",
            [(vec![], soft as f64)],
        );
    }
}

/// Open file descriptors, as a thread of its own last counted them. Listing
/// `/proc/self/fd` takes milliseconds with thousands of sockets: no shard does it.
fn open_fds() -> u64 {
    static COUNT: AtomicU64 = AtomicU64::new(0);
    static COUNTER: std::sync::Once = std::sync::Once::new();
    let count = || std::fs::read_dir("/proc/self/fd").map_or(0, |dir| dir.count() as u64);
    COUNTER.call_once(|| {
        COUNT.store(count(), Ordering::Relaxed);
        let spawned = std::thread::Builder::new()
            .name("livedash-fds".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(std::time::Duration::from_secs(2));
                    COUNT.store(count(), Ordering::Relaxed);
                }
            });
        if let Err(e) = spawned {
            tracing::warn!("cannot start the thread that counts open files: {e}; livedash_process_open_fds stays at its first count: nothing to do unless you need it: then check the node's thread limit (ulimit -u)");
        }
    });
    COUNT.load(Ordering::Relaxed)
}
