//! Counters of every shard for `/stats`, and the metric names seen recently, gathered
//! from all shards.

use std::collections::BTreeSet;
use std::rc::Rc;

use serde::Serialize;

use super::Services;
use super::backfill::BackfillCounters;
use super::calls::{RecentMetrics, Stats};
use super::mesh::{CallError, ShardCall};
use super::metrics::MetricsSnapshot;
use super::mirror::MirrorCounters;
use super::topic::{self, KafkaCounters, PartitionLag};
use crate::parse::Refusals;

/// Counters of one shard.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ShardStats {
    pub shard: usize,
    pub accepted: u64,
    pub unmatched: u64,
    pub rejected_too_old: u64,
    pub rejected_too_far_ahead: u64,
    /// Events the parsers of this shard refused before they reached a window, by reason.
    pub refused: Refusals,
    pub widgets: usize,
    pub queries: usize,
    /// Events of grouped widgets past their query's `max_group_values` tag values.
    pub group_values_refused: u64,
    /// Widget values computed by refreshes.
    pub values_computed: u64,
    /// Dashboards this shard streams (one subscription each to their widgets' owners).
    pub streamed_dashboards: usize,
    /// The shortest window of a widget this shard owns, in ms.
    #[serde(skip)]
    pub shortest_window_ms: Option<i64>,
    pub window_bytes: usize,
    /// Time spent applying events to windows, in nanoseconds.
    pub engine_apply_ns: u64,
    /// Events handed to the engine (accepted or refused by time).
    pub engine_events: u64,
    pub connections: usize,
    /// Open WebSocket streams.
    pub streams: usize,
    /// Stream frames queued for connections, and written to their sockets.
    pub frames_queued: u64,
    pub frames_written: u64,
    /// Stream frames that could not be encoded (none were sent).
    pub frames_unencodable: u64,
    /// Sum and maximum of the time from framing to socket write, in ms.
    pub write_lag_ms_sum: u64,
    pub write_lag_ms_max: u64,
    /// Calls this shard made of others that failed (no reply in time, unreachable).
    pub failed_calls: u64,
    /// Replies that came after their caller gave up, and replies that could not be sent.
    pub late_replies: u64,
    pub unsent_replies: u64,
    /// Cluster mode: what this shard wrote to and read from the topic, and how far
    /// behind each partition it owns is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kafka: Option<Box<KafkaStats>>,
    /// The state mirror's counters, with `--redis`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mirror: Option<MirrorCounters>,
    /// Histograms and counters of `/metrics` only.
    #[serde(skip)]
    pub metrics: MetricsSnapshot,
    /// Time this shard took to gather these counters, in nanoseconds.
    #[serde(skip)]
    pub gather_ns: u64,
}

/// A shard's side of the topic.
#[derive(Debug, Clone, Serialize)]
pub struct KafkaStats {
    #[serde(flatten)]
    pub counters: KafkaCounters,
    /// Times the consumer paused this shard's partitions because the shard fell behind.
    pub pauses: u64,
    pub partitions: Vec<PartitionLag>,
    /// Backfills of new queries.
    pub backfills: BackfillCounters,
}

impl ShardCall for Stats {
    type Reply = Box<ShardStats>;

    async fn run(self, svc: &Rc<Services>) -> Box<ShardStats> {
        let started = std::time::Instant::now();
        let engine = svc.engine.borrow();
        let st = engine.stats();
        let hub = &svc.hub;
        let mesh = &svc.mesh;
        let mut stats = Box::new(ShardStats {
            shard: svc.id,
            accepted: st.accepted,
            unmatched: st.unmatched,
            rejected_too_old: st.rejected_too_old,
            rejected_too_far_ahead: st.rejected_too_far_ahead,
            refused: svc.ingest.refusals.get(),
            widgets: engine.widget_count(),
            queries: engine.query_count(),
            group_values_refused: engine.group_values_refused(),
            values_computed: st.values_computed,
            streamed_dashboards: hub.rooms(),
            shortest_window_ms: shortest_window_ms(&engine),
            window_bytes: engine.window_heap_bytes(),
            engine_apply_ns: svc.ingest.apply_ns.get(),
            engine_events: svc.ingest.events.get(),
            connections: svc.connections.get(),
            streams: hub.connections(),
            frames_queued: hub.frames_queued.get(),
            frames_written: hub.frames_written.get(),
            frames_unencodable: hub.frames_unencodable.get(),
            write_lag_ms_sum: hub.write_lag_ms_sum.get(),
            write_lag_ms_max: if self.restart_max {
                hub.write_lag_ms_max.replace(0)
            } else {
                hub.write_lag_ms_max.get()
            },
            failed_calls: mesh.failed_calls.get(),
            late_replies: mesh.late_replies.get(),
            unsent_replies: mesh.unsent_replies.get(),
            mirror: svc.mirror.as_ref().map(|m| m.counters.get()),
            metrics: svc.metrics.snapshot(),
            kafka: svc.kafka.as_ref().map(|link| {
                Box::new(KafkaStats {
                    counters: link.counters.get(),
                    pauses: link.inputs.pauses(),
                    partitions: topic::lag(svc),
                    backfills: svc.backfills.counters.get(),
                })
            }),
            gather_ns: 0,
        });
        stats.gather_ns = started.elapsed().as_nanos() as u64;
        stats
    }
}

impl ShardCall for RecentMetrics {
    type Reply = Vec<String>;

    async fn run(self, svc: &Rc<Services>) -> Vec<String> {
        svc.ingest.recent_names()
    }
}

/// The shortest window of any widget of `engine`, in ms.
pub fn shortest_window_ms(engine: &livedash_engine::Shard) -> Option<i64> {
    engine
        .widget_ids()
        .filter_map(|id| engine.widget(id).map(|w| w.spec.window_seconds))
        .min()
        .map(|s| s as i64 * 1000)
}

/// Every shard's counters, in shard order. `restart_max`: see `Stats`.
pub async fn all_shards(
    svc: &Rc<Services>,
    restart_max: bool,
) -> Result<Vec<ShardStats>, CallError> {
    let mut out = Vec::with_capacity(svc.shards);
    for to in 0..svc.shards {
        out.push(*svc.call(to, Stats { restart_max }).await?);
    }
    Ok(out)
}

/// Metric names seen recently on any shard, sorted.
pub async fn recent_metric_names(svc: &Rc<Services>) -> Result<BTreeSet<String>, CallError> {
    let mut names = BTreeSet::new();
    for to in 0..svc.shards {
        names.extend(svc.call(to, RecentMetrics).await?);
    }
    Ok(names)
}
