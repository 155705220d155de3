//! Cluster mode's link between nodes, one per shard: what the shard owns goes out (each
//! changed value once, on Redis Pub/Sub, with a beat per refresh for the partitions it
//! owns), what other nodes own comes in (values of the dashboards this shard streams,
//! catalogue notices), and which nodes are live.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use livedash_engine::WidgetValue;
use livedash_replication::Inbox;
use livedash_replication::redis::Reconnecting;
use livedash_replication::redis::subscriber::{Inbound, Subscriber};
use livedash_replication::redis::values::{NodeInfo, Publish, PublishCounters, StoredValue};
use uuid::Uuid;

use super::hub::Hub;
use super::{CATALOGUE_SHARD, Services, catalogue};

/// Beats go out at most this often per shard: often enough for the shortest refresh
/// interval (a value is stale after two intervals without a beat).
const BEAT_EVERY: Duration = Duration::from_millis(90);
/// What a beat may be late by before a value counts as stale: one beat period and the
/// trip through the publisher, Redis and the subscriber.
const BEAT_SLACK_MS: i64 = 150;
/// Longest wait for the subscriber to confirm a new subscription.
const WATCH_WAIT: Duration = Duration::from_secs(2);

/// The parts of the cluster every shard shares.
#[derive(Debug, Clone)]
pub struct ClusterShared {
    pub node: String,
    pub publisher: Sender<Publish>,
    /// The publisher's connection count: a new one means Redis may have lost what was
    /// published, so every owned value goes out again.
    pub generation: Arc<AtomicU64>,
    pub nodes: Arc<Mutex<Vec<NodeInfo>>>,
    /// Every node URL seen since this node started.
    pub known: Arc<Mutex<Vec<String>>>,
    pub advertised: Arc<OnceLock<String>>,
    pub subscriber: Arc<Subscriber>,
    pub publish_counters: Arc<PublishCounters>,
    pub redis_url: String,
}

/// One shard's link to the other nodes.
#[derive(Debug)]
pub struct ClusterLink {
    pub shared: ClusterShared,
    /// What the subscriber hands this shard.
    pub inbound: Arc<Inbox<Inbound>>,
    /// This shard's own connection for stored values (snapshots), used on its blocking
    /// threads, so no shard waits behind another's reads.
    values: Arc<Reconnecting>,
    published_generation: Cell<u64>,
    /// Per partition: owned at the last publish (a partition gained is published whole).
    owned_before: RefCell<Vec<bool>>,
    last_beat: Cell<Option<Instant>>,
}

impl ClusterLink {
    pub fn new(shared: ClusterShared, inbound: Arc<Inbox<Inbound>>, partitions: usize) -> Self {
        Self {
            values: Arc::new(Reconnecting::lazy(&shared.redis_url)),
            shared,
            inbound,
            published_generation: Cell::new(0),
            owned_before: RefCell::new(vec![false; partitions]),
            last_beat: Cell::new(None),
        }
    }

    /// The URLs of the live nodes (this one included once it advertised itself).
    pub fn node_urls(&self) -> Vec<String> {
        let mut urls: Vec<String> = self
            .shared
            .nodes
            .lock()
            .map(|n| n.iter().map(|n| n.url.clone()).collect())
            .unwrap_or_default();
        if let Some(me) = self.shared.advertised.get()
            && !urls.contains(me)
        {
            urls.push(me.clone());
        }
        urls
    }

    /// The URLs of every node seen since this one started: pages they served may open
    /// streams here.
    pub fn known_urls(&self) -> Vec<String> {
        self.shared
            .known
            .lock()
            .map(|k| k.clone())
            .unwrap_or_default()
    }

    /// True when the owner of partition `p` has not been heard refreshing for two
    /// refresh intervals (plus `BEAT_SLACK_MS`: beats have a period and a way to travel).
    pub fn stale(&self, partition: u32, interval_ms: i64, now: i64) -> bool {
        now - self.shared.subscriber.beats.last(partition) > 2 * interval_ms + BEAT_SLACK_MS
    }
}

/// After a refresh: publishes the changed values of owned widgets, and beats for the
/// partitions this shard owns. Everything owned goes out again after Redis came back,
/// and a partition just gained goes out whole.
pub fn publish(svc: &Services, changed: &[WidgetValue]) {
    let (Some(link), Some(kafka)) = (&svc.cluster, &svc.kafka) else {
        return;
    };
    let mut beat = Vec::new();
    let mut gained = HashSet::new();
    {
        let mut before = link.owned_before.borrow_mut();
        for (p, was) in before.iter_mut().enumerate() {
            if p % svc.shards != svc.id {
                continue;
            }
            let owned = kafka.partitions.get(p).is_some_and(|s| s.owned());
            if owned {
                beat.push(p as u32);
                if !*was {
                    gained.insert(p as u32);
                }
            }
            *was = owned;
        }
    }
    let generation = link.shared.generation.load(Ordering::Acquire);
    let everything = link.published_generation.replace(generation) != generation;
    let engine = svc.engine.borrow();
    let mut values: Vec<&WidgetValue> = changed.iter().collect();
    if everything || !gained.is_empty() {
        let sent: HashSet<Uuid> = changed.iter().map(|v| v.widget_id).collect();
        for id in engine.widget_ids() {
            let Some(w) = engine.widget(id) else { continue };
            let p = svc.placement.partition(&w.spec.metric_name);
            let owned = kafka.partitions.get(p as usize).is_some_and(|s| s.owned());
            if owned
                && (everything || gained.contains(&p))
                && !sent.contains(id)
                && let Some(v) = engine.last_value(id)
            {
                values.push(v);
            }
        }
    }
    let due = link
        .last_beat
        .get()
        .is_none_or(|at| at.elapsed() >= BEAT_EVERY);
    if values.is_empty() && (beat.is_empty() || !due) {
        return;
    }
    if due {
        link.last_beat.set(Some(Instant::now()));
    } else {
        beat.clear();
    }
    let mut by_dashboard: HashMap<Uuid, Vec<WidgetValue>> = HashMap::new();
    for v in values {
        if let Some(w) = engine.widget(&v.widget_id) {
            by_dashboard
                .entry(w.dashboard_id)
                .or_default()
                .push(v.clone());
        }
    }
    // The publisher lives as long as the process.
    link.shared
        .publisher
        .send(Publish {
            beat,
            values: by_dashboard.into_iter().collect(),
        })
        .ok();
}

/// Takes what the subscriber handed this shard.
pub fn drain(svc: &Rc<Services>) {
    let Some(link) = &svc.cluster else { return };
    while let Some(item) = link.inbound.pop() {
        match item {
            Inbound::Values { dashboard, values } => Hub::remote(svc, dashboard, values),
            Inbound::Catalogue { id, version } => {
                let svc = Rc::clone(svc);
                glommio::spawn_local(async move {
                    catalogue::refresh(&svc, id, Some(version)).await;
                })
                .detach();
            }
        }
    }
    let subscriber = &link.shared.subscriber;
    if subscriber
        .resync
        .get(svc.id)
        .is_some_and(|f| f.swap(false, Ordering::AcqRel))
    {
        let svc = Rc::clone(svc);
        glommio::spawn_local(async move { Hub::reread_remote(&svc).await }).detach();
    }
    if svc.id == CATALOGUE_SHARD && subscriber.reload.swap(false, Ordering::AcqRel) {
        let svc = Rc::clone(svc);
        glommio::spawn_local(async move { catalogue::reload(&svc).await }).detach();
    }
}

/// Subscribes this shard to `dashboard`'s values and reads what is stored of them: the
/// subscription comes first, so nothing published after the read is missed.
pub async fn open(svc: &Rc<Services>, dashboard: Uuid, widgets: Vec<Uuid>) -> Vec<StoredValue> {
    let Some(link) = &svc.cluster else {
        return Vec::new();
    };
    let answer = link.shared.subscriber.watch(svc.id, dashboard);
    // Waits for the subscription without holding a blocking thread.
    let give_up = Instant::now() + WATCH_WAIT;
    let subscribed = loop {
        match answer.try_recv() {
            Ok(done) => break done,
            Err(std::sync::mpsc::TryRecvError::Empty) if Instant::now() < give_up => {
                glommio::timer::sleep(Duration::from_millis(2)).await;
            }
            Err(_) => break false,
        }
    };
    if !subscribed {
        // Without Redis there is nothing to read; the reconnect re-reads it.
        tracing::debug!(
            shard = svc.id,
            "stored values of {dashboard}: redis is unreachable"
        );
        return Vec::new();
    }
    reread(svc, dashboard, widgets).await
}

/// Reads the stored values of `widgets` of `dashboard` again (after values were lost).
pub async fn reread(svc: &Rc<Services>, dashboard: Uuid, widgets: Vec<Uuid>) -> Vec<StoredValue> {
    let Some(link) = &svc.cluster else {
        return Vec::new();
    };
    let values = Arc::clone(&link.values);
    glommio::executor()
        .spawn_blocking(move || {
            livedash_replication::redis::values::read_values(&values, dashboard, &widgets)
        })
        .await
        .unwrap_or_else(|e| {
            tracing::debug!(shard = svc.id, "stored values of {dashboard}: {e}");
            Vec::new()
        })
}

/// This shard no longer streams `dashboard`.
pub fn close(svc: &Services, dashboard: Uuid) {
    if let Some(link) = &svc.cluster {
        link.shared.subscriber.unwatch(svc.id, dashboard);
    }
}

/// The node's side of the cluster, for `/stats`: who it is, the live nodes, and what went
/// through Redis Pub/Sub.
pub fn stats(link: &ClusterLink) -> serde_json::Value {
    let shared = &link.shared;
    let (p, s) = (&shared.publish_counters, &shared.subscriber.counters);
    let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let nodes = shared.nodes.lock().map(|n| n.clone()).unwrap_or_default();
    serde_json::json!({
        "node": shared.node,
        "advertised": shared.advertised.get(),
        "nodes": nodes,
        "published": {
            "messages": get(&p.messages),
            "values": get(&p.values),
            "failed_batches": get(&p.failed),
        },
        "subscribed": {
            "connected": shared.subscriber.connected.load(Ordering::Relaxed),
            "dashboards": get(&s.channels),
            "messages": get(&s.messages),
            "values": get(&s.values),
            "dropped": get(&s.dropped),
            "reconnects": get(&s.reconnects),
        },
    })
}
