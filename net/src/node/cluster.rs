//! The clients of outside systems, made before the shards start. Cluster mode: the topic's
//! producer, every shard's inboxes and doorbell, the state mirror's writer, and the
//! consumer (started once the shards run). Standalone with Redis: the mirror's writer and
//! each shard's claim on its stored windows.

use std::sync::{Arc, Mutex};

use anyhow::anyhow;
use livedash_engine::Placement;
use livedash_replication::kafka::sink::MAX_IN_FLIGHT;
use livedash_replication::kafka::source::ShardInput;
use livedash_replication::kafka::takeover::Takeovers;
use livedash_replication::kafka::{
    Delivered, KafkaSettings, PartitionState, Partitions, Sink, Source, SourceHandle, prepare_topic,
};
use livedash_replication::redis::subscriber::{Inbound, Subscriber};
use livedash_replication::redis::values::{Publisher, PublisherSettings};
use livedash_replication::redis::{self, Claim, Flushed, RedisSettings, Scope, Writer};
use livedash_replication::{Doorbell, Inbox};

use crate::service::cluster::{ClusterLink, ClusterShared};
use crate::service::mirror::MirrorLink;
use crate::service::topic::{KafkaLink, LinkParts};

/// Records batches a shard may have waiting before its partitions are paused.
const INPUT_BATCHES: usize = 64;
/// Mirror outcomes a shard may have waiting (it has at most one flush in flight).
const FLUSH_OUTCOMES: usize = 4;
/// Messages from other nodes a shard may have waiting.
const INBOUND: usize = 1024;

/// Who this node is among the others (cluster mode: Kafka and Redis).
#[derive(Debug, Clone)]
pub struct ClusterSettings {
    pub node: String,
    pub history_len: usize,
}

/// One shard's parts, until the shard takes them.
type ShardParts = (Doorbell, Sink, Option<Arc<Inbox<Flushed>>>);

pub struct KafkaParts {
    partitions: Partitions,
    inputs: Vec<Arc<Inbox<ShardInput>>>,
    deliveries: Vec<Arc<Inbox<Delivered>>>,
    own: Mutex<Vec<Option<ShardParts>>>,
    settings: KafkaSettings,
    takeovers: Arc<Takeovers>,
    redis: Option<RedisSettings>,
    /// The state mirror's writer: it lives as long as the process.
    writer: Option<Writer>,
    /// Cluster mode: what the shards share, and each shard's inbox from other nodes.
    cluster: Option<(ClusterShared, Vec<Arc<Inbox<Inbound>>>)>,
}

impl KafkaParts {
    /// Connects; a takeover replays `replay_ms` back from now (the longest window of the
    /// stored dashboards plus the allowed skew) until the shards raise it.
    pub fn connect(
        settings: KafkaSettings,
        redis: Option<RedisSettings>,
        cluster: Option<ClusterSettings>,
        shards: usize,
        replay_ms: i64,
    ) -> anyhow::Result<Self> {
        let count = prepare_topic(&settings).map_err(|e| anyhow!(e))?;
        tracing::info!(
            topic = settings.topic,
            partitions = count,
            "cluster mode: kafka at {}",
            settings.brokers
        );
        if let Some(r) = &redis {
            redis::check(&r.url).map_err(|e| anyhow!(e))?;
            tracing::info!("state mirror: redis at {}", r.url);
        }
        let partitions: Partitions = (0..count).map(|_| PartitionState::default()).collect();
        let mut inputs = Vec::with_capacity(shards);
        let mut deliveries = Vec::with_capacity(shards);
        let mut outcomes = Vec::with_capacity(shards);
        let mut own = Vec::with_capacity(shards);
        let mut inbound = Vec::with_capacity(shards);
        for _ in 0..shards {
            let (door, bell) = Doorbell::new();
            inbound.push(Arc::new(Inbox::new(INBOUND, bell.clone())));
            let outbox = Arc::new(Inbox::new(MAX_IN_FLIGHT, bell.clone()));
            let sink = Sink::new(&settings, Arc::clone(&outbox)).map_err(|e| anyhow!(e))?;
            let flushed = redis
                .as_ref()
                .map(|_| Arc::new(Inbox::new(FLUSH_OUTCOMES, bell.clone())));
            if let Some(f) = &flushed {
                outcomes.push(Arc::clone(f));
            }
            inputs.push(Arc::new(Inbox::new(INPUT_BATCHES, bell)));
            deliveries.push(outbox);
            own.push(Some((door, sink, flushed)));
        }
        let writer = redis.as_ref().map(|r| Writer::start(r.clone(), outcomes));
        let cluster = match (&redis, cluster) {
            (Some(r), Some(c)) => Some((join(r, c, &partitions, inbound.clone())?, inbound)),
            _ => None,
        };
        Ok(Self {
            partitions,
            inputs,
            deliveries,
            own: Mutex::new(own),
            settings,
            takeovers: Arc::new(Takeovers::new(replay_ms)),
            redis,
            writer,
            cluster,
        })
    }

    /// Cluster mode: where this node's URL is set once the listener is bound.
    pub fn advertised(&self) -> Option<Arc<std::sync::OnceLock<String>>> {
        self.cluster
            .as_ref()
            .map(|(c, _)| Arc::clone(&c.advertised))
    }

    pub fn placement(&self, shards: usize) -> Placement {
        Placement::cluster(self.partitions.len() as u32, shards)
    }

    /// Shard `id`'s link to the topic, to the mirror, and to the other nodes.
    pub fn link(&self, id: usize) -> Option<(KafkaLink, Option<MirrorLink>, Option<ClusterLink>)> {
        let (doorbell, sink, flushed) = self.own.lock().ok()?.get_mut(id)?.take()?;
        let mirror = match (&self.writer, &self.redis, flushed) {
            (Some(writer), Some(r), Some(flushed)) => {
                Some(MirrorLink::new(writer.sender(), flushed, r.interval, false))
            }
            _ => None,
        };
        let link = KafkaLink::new(LinkParts {
            settings: self.settings.clone(),
            sink,
            inputs: Arc::clone(&self.inputs[id]),
            deliveries: Arc::clone(&self.deliveries[id]),
            doorbell,
            partitions: Arc::clone(&self.partitions),
            takeovers: Arc::clone(&self.takeovers),
        });
        let cluster = self.cluster.as_ref().map(|(shared, inbound)| {
            ClusterLink::new(
                shared.clone(),
                Arc::clone(&inbound[id]),
                self.partitions.len(),
            )
        });
        Some((link, mirror, cluster))
    }

    pub fn start_source(&self) -> anyhow::Result<SourceHandle> {
        Source {
            settings: self.settings.clone(),
            partitions: Arc::clone(&self.partitions),
            inboxes: self.inputs.clone(),
            mirror: self.redis.as_ref().map(|r| r.url.clone()),
            takeovers: Arc::clone(&self.takeovers),
        }
        .start()
        .map_err(|e| anyhow!(e))
    }
}

/// Starts the threads that link this node to the others: the publisher of owned values
/// and the subscriber to the values this node streams.
fn join(
    redis: &RedisSettings,
    cluster: ClusterSettings,
    partitions: &Partitions,
    inbound: Vec<Arc<Inbox<Inbound>>>,
) -> anyhow::Result<ClusterShared> {
    let advertised = Arc::new(std::sync::OnceLock::new());
    let publisher = Publisher::start(
        PublisherSettings {
            url: redis.url.clone(),
            node: cluster.node.clone(),
            advertised: Arc::clone(&advertised),
            history_len: cluster.history_len,
        },
        Arc::clone(partitions),
    )?;
    let subscriber = Subscriber::start(
        redis.url.clone(),
        cluster.node.clone(),
        partitions.len(),
        inbound,
    )?;
    tracing::info!(
        node = cluster.node,
        "cluster mode: values and dashboards shared through redis"
    );
    Ok(ClusterShared {
        node: cluster.node,
        publisher: publisher.sender(),
        generation: Arc::clone(&publisher.generation),
        nodes: Arc::clone(&publisher.nodes),
        known: Arc::clone(&publisher.known),
        advertised,
        subscriber: Arc::new(subscriber),
        publish_counters: Arc::clone(&publisher.counters),
        redis_url: redis.url.clone(),
    })
}

/// Standalone with `--redis`: the mirror's writer, and per shard its outcome inbox and
/// the claim on its stored windows (made before the shards start, so each restores its
/// windows before it serves).
pub struct StandaloneMirror {
    interval: std::time::Duration,
    writer: Writer,
    own: Mutex<Vec<Option<StandaloneParts>>>,
}

/// A shard's outcome inbox and claim, until the shard takes them.
type StandaloneParts = (Arc<Inbox<Flushed>>, Claim);

impl StandaloneMirror {
    pub fn connect(settings: RedisSettings, shards: usize) -> anyhow::Result<Self> {
        let mut conn = redis::connect(&settings.url).map_err(|e| anyhow!(e))?;
        let mut own = Vec::with_capacity(shards);
        let mut outboxes = Vec::with_capacity(shards);
        for shard in 0..shards {
            let claim = redis::claim(&mut conn, Scope::Shard, shard as u32)
                .map_err(|e| anyhow!("state mirror: {e}"))?;
            // The shard polls its outcomes: nothing waits for this bell.
            let (_, bell) = Doorbell::new();
            let outbox = Arc::new(Inbox::new(FLUSH_OUTCOMES, bell));
            outboxes.push(Arc::clone(&outbox));
            own.push(Some((outbox, claim)));
        }
        tracing::info!("state mirror: redis at {} (standalone)", settings.url);
        Ok(Self {
            interval: settings.interval,
            writer: Writer::start(settings, outboxes),
            own: Mutex::new(own),
        })
    }

    /// Shard `id`'s link to the mirror and its claim.
    pub fn take(&self, id: usize) -> Option<(MirrorLink, Claim)> {
        let (outbox, claim) = self.own.lock().ok()?.get_mut(id)?.take()?;
        Some((
            MirrorLink::new(self.writer.sender(), outbox, self.interval, true),
            claim,
        ))
    }
}
