//! Values between nodes (cluster mode), the owner's side: a publisher thread takes each
//! shard's changed values, publishes them once per dashboard on Redis Pub/Sub, keeps each
//! widget's latest value and bounded history in Redis for snapshots on any node, beats
//! for the partitions the shard refreshed (so others can tell a live owner from a dead
//! one), and every second advertises this node in the registry of live nodes.
//!
//! Keys and channels:
//! - `livedash:v:<dashboard>`: channel of a dashboard's changed values,
//!   `{"node": id, "values": [WidgetValue, ...]}`;
//! - `livedash:latest:<dashboard>`: hash, widget id to its latest `WidgetValue` (JSON);
//! - `livedash:hist:<widget>`: list of `[time, value]` (when published), newest last,
//!   bounded;
//! - `livedash:dhist:<widget>`: grouped and `histogram` widgets, list of `[time,
//!   detail]` (a series or a distribution), newest last, bounded;
//! - `livedash:beat`: channel, `<node> <partition>,<partition>,...`; `livedash:beats`:
//!   hash, partition to the time of its owner's last refresh (ms);
//! - `livedash:nodes`: hash, node id to `{"url", "at", "partitions"}`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use livedash_engine::limits::MAX_DETAIL_HISTORY_LEN;
use livedash_engine::{Detail, HistoryPoint, WidgetValue};
use redis::Connection;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{Backoff, Reconnecting, connect};
use crate::kafka::Partitions;

pub const BEAT_CHANNEL: &str = "livedash:beat";
pub const BEATS_KEY: &str = "livedash:beats";
pub const NODES_KEY: &str = "livedash:nodes";
/// Stored values of a dashboard nobody updates any more go after this long.
const VALUES_TTL_MS: u64 = 24 * 3600 * 1000;
/// How often a node advertises itself.
const ADVERTISE_EVERY: Duration = Duration::from_secs(1);
/// A node not heard from for this long is not listed as live.
pub const NODE_LIVE_MS: i64 = 5_000;
/// At most this many node URLs are remembered.
const MAX_KNOWN: usize = 1024;
/// A node not heard from for this long leaves the registry.
const NODE_FORGET_MS: i64 = 60_000;

pub fn values_channel(dashboard: Uuid) -> String {
    format!("livedash:v:{dashboard}")
}

pub fn latest_key(dashboard: Uuid) -> String {
    format!("livedash:latest:{dashboard}")
}

pub fn history_key(widget: Uuid) -> String {
    format!("livedash:hist:{widget}")
}

pub fn detail_history_key(widget: Uuid) -> String {
    format!("livedash:dhist:{widget}")
}

/// A message on a dashboard's channel.
#[derive(Debug, Serialize, Deserialize)]
pub struct ValuesMessage {
    pub node: String,
    pub values: Vec<WidgetValue>,
}

/// A node as the registry lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub id: String,
    /// Where browsers reach it.
    pub url: String,
    /// When it last advertised itself (ms since the epoch, its clock).
    pub at: i64,
    /// The Kafka partitions it owned then.
    pub partitions: Vec<u32>,
}

/// What one shard hands the publisher after a refresh.
#[derive(Debug, Default)]
pub struct Publish {
    /// The partitions the shard owns and just refreshed.
    pub beat: Vec<u32>,
    /// Changed values, by dashboard.
    pub values: Vec<(Uuid, Vec<WidgetValue>)>,
}

/// Who this node is, for the publisher.
#[derive(Debug, Clone)]
pub struct PublisherSettings {
    pub url: String,
    pub node: String,
    /// Where browsers reach this node: set once its listener is bound; the node is
    /// advertised from then on.
    pub advertised: Arc<std::sync::OnceLock<String>>,
    /// History points kept per widget.
    pub history_len: usize,
}

/// Counters of the publisher, for `/stats`.
#[derive(Debug, Default)]
pub struct PublishCounters {
    /// Pub/Sub messages sent (values and beats).
    pub messages: AtomicU64,
    pub values: AtomicU64,
    /// Batches lost because Redis was unreachable (the shards publish every value again
    /// once it is back).
    pub failed: AtomicU64,
}

/// The running publisher.
#[derive(Debug)]
pub struct Publisher {
    tx: Sender<Publish>,
    /// Bumped at every (re)connect: shards then publish every value they own again, since
    /// Redis may have lost what they published before.
    pub generation: Arc<AtomicU64>,
    /// The live nodes, as of the last advertisement.
    pub nodes: Arc<Mutex<Vec<NodeInfo>>>,
    /// The URL of every node seen since this one started (a page served by a node that
    /// died still streams from the others).
    pub known: Arc<Mutex<Vec<String>>>,
    pub counters: Arc<PublishCounters>,
    _thread: JoinHandle<()>,
}

impl Publisher {
    pub fn start(settings: PublisherSettings, partitions: Partitions) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel();
        let generation = Arc::new(AtomicU64::new(0));
        let nodes = Arc::new(Mutex::new(Vec::new()));
        let known = Arc::new(Mutex::new(Vec::new()));
        let counters = Arc::new(PublishCounters::default());
        let run = Run {
            settings,
            partitions,
            generation: Arc::clone(&generation),
            nodes: Arc::clone(&nodes),
            known: Arc::clone(&known),
            counters: Arc::clone(&counters),
            conn: None,
            backoff: Backoff::new("redis publisher"),
        };
        let thread = std::thread::Builder::new()
            .name("livedash-publish".into())
            .spawn(move || run.run(&rx))?;
        Ok(Self {
            tx,
            generation,
            nodes,
            known,
            counters,
            _thread: thread,
        })
    }

    /// A sender for one shard.
    pub fn sender(&self) -> Sender<Publish> {
        self.tx.clone()
    }
}

struct Run {
    settings: PublisherSettings,
    partitions: Partitions,
    generation: Arc<AtomicU64>,
    nodes: Arc<Mutex<Vec<NodeInfo>>>,
    known: Arc<Mutex<Vec<String>>>,
    counters: Arc<PublishCounters>,
    conn: Option<Connection>,
    backoff: Backoff,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Run {
    fn run(mut self, rx: &Receiver<Publish>) {
        let mut advertised = Instant::now() - ADVERTISE_EVERY;
        loop {
            let wait = ADVERTISE_EVERY.saturating_sub(advertised.elapsed());
            let mut batch = Vec::new();
            match rx.recv_timeout(wait) {
                Ok(first) => {
                    batch.push(first);
                    batch.extend(rx.try_iter());
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            if advertised.elapsed() >= ADVERTISE_EVERY {
                advertised = Instant::now();
                if let Err(e) = self.advertise() {
                    self.lost(e);
                }
            }
            if !batch.is_empty()
                && let Err(e) = self.publish(&batch)
            {
                self.counters.failed.fetch_add(1, Ordering::Relaxed);
                self.lost(e);
            }
        }
    }

    /// A call failed: `Some` error on the connection (dropped, to be made again after the
    /// backoff), `None` while waiting out the backoff.
    fn lost(&mut self, error: Option<String>) {
        if let Some(error) = error {
            self.conn = None;
            self.backoff.down(&error);
        }
    }

    fn connection(&mut self) -> Result<&mut Connection, Option<String>> {
        if self.conn.is_none() {
            if !self.backoff.may_retry() {
                return Err(None);
            }
            let conn = connect(&self.settings.url).map_err(Some)?;
            self.backoff.up();
            self.conn = Some(conn);
            self.generation.fetch_add(1, Ordering::AcqRel);
        }
        self.conn.as_mut().ok_or(None)
    }

    /// One round trip for everything the shards sent since the last one.
    fn publish(&mut self, batch: &[Publish]) -> Result<(), Option<String>> {
        let node = self.settings.node.clone();
        let keep = self.settings.history_len.max(1) as i64;
        let keep_details = keep.min(MAX_DETAIL_HISTORY_LEN as i64);
        let now = now_ms();
        let mut pipe = redis::pipe();
        let mut messages = 0;
        let mut values = 0;
        let mut beat: Vec<u32> = batch.iter().flat_map(|p| p.beat.iter().copied()).collect();
        beat.sort_unstable();
        beat.dedup();
        if !beat.is_empty() {
            let list: Vec<String> = beat.iter().map(u32::to_string).collect();
            pipe.cmd("PUBLISH")
                .arg(BEAT_CHANNEL)
                .arg(format!("{node} {}", list.join(",")))
                .ignore();
            let mut hset = redis::cmd("HSET");
            hset.arg(BEATS_KEY);
            for p in &beat {
                hset.arg(p).arg(now);
            }
            pipe.add_command(hset).ignore();
            messages += 1;
        }
        for (dashboard, changed) in batch.iter().flat_map(|p| &p.values) {
            if changed.is_empty() {
                continue;
            }
            let message = ValuesMessage {
                node: node.clone(),
                values: changed.clone(),
            };
            let json = serde_json::to_vec(&message).map_err(|e| e.to_string())?;
            pipe.cmd("PUBLISH")
                .arg(values_channel(*dashboard))
                .arg(json)
                .ignore();
            messages += 1;
            let latest = latest_key(*dashboard);
            let mut hset = redis::cmd("HSET");
            hset.arg(&latest);
            for v in changed {
                let json = serde_json::to_vec(v).map_err(|e| e.to_string())?;
                hset.arg(v.widget_id.to_string()).arg(json);
                let history = history_key(v.widget_id);
                // At the time it was published: about when it was computed.
                let point: HistoryPoint = (now, v.value);
                let point = serde_json::to_vec(&point).map_err(|e| e.to_string())?;
                pipe.cmd("RPUSH").arg(&history).arg(point).ignore();
                pipe.cmd("LTRIM").arg(&history).arg(-keep).arg(-1).ignore();
                pipe.cmd("PEXPIRE")
                    .arg(&history)
                    .arg(VALUES_TTL_MS)
                    .ignore();
                if let Some(detail) = &v.detail {
                    let details = detail_history_key(v.widget_id);
                    let point = serde_json::to_vec(&(now, detail)).map_err(|e| e.to_string())?;
                    pipe.cmd("RPUSH").arg(&details).arg(point).ignore();
                    pipe.cmd("LTRIM")
                        .arg(&details)
                        .arg(-keep_details)
                        .arg(-1)
                        .ignore();
                    pipe.cmd("PEXPIRE")
                        .arg(&details)
                        .arg(VALUES_TTL_MS)
                        .ignore();
                }
                values += 1;
            }
            pipe.add_command(hset).ignore();
            pipe.cmd("PEXPIRE").arg(&latest).arg(VALUES_TTL_MS).ignore();
        }
        let conn = self.connection()?;
        pipe.query::<()>(conn).map_err(|e| e.to_string())?;
        self.counters
            .messages
            .fetch_add(messages, Ordering::Relaxed);
        self.counters.values.fetch_add(values, Ordering::Relaxed);
        Ok(())
    }

    /// Writes this node's entry in the registry and reads the live nodes.
    fn advertise(&mut self) -> Result<(), Option<String>> {
        let Some(url) = self.settings.advertised.get().cloned() else {
            return Ok(());
        };
        let now = now_ms();
        let me = NodeInfo {
            id: self.settings.node.clone(),
            url,
            at: now,
            partitions: (0..self.partitions.len() as u32)
                .filter(|&p| self.partitions[p as usize].owned())
                .collect(),
        };
        let json = serde_json::to_string(&me).map_err(|e| e.to_string())?;
        let conn = self.connection()?;
        let (_, all): ((), HashMap<String, String>) = redis::pipe()
            .cmd("HSET")
            .arg(NODES_KEY)
            .arg(&me.id)
            .arg(json)
            .cmd("HGETALL")
            .arg(NODES_KEY)
            .query(conn)
            .map_err(|e| e.to_string())?;
        let mut live = Vec::new();
        let mut forget = Vec::new();
        for (id, json) in all {
            match serde_json::from_str::<NodeInfo>(&json) {
                Ok(n) if now - n.at <= NODE_LIVE_MS => live.push(n),
                Ok(n) if now - n.at > NODE_FORGET_MS => forget.push(id),
                Ok(_) => {}
                Err(_) => forget.push(id),
            }
        }
        if !forget.is_empty() {
            redis::cmd("HDEL")
                .arg(NODES_KEY)
                .arg(&forget)
                .query::<()>(conn)
                .map_err(|e| e.to_string())?;
        }
        live.sort_by(|a, b| a.url.cmp(&b.url));
        if let Ok(mut known) = self.known.lock() {
            for n in &live {
                if !known.contains(&n.url) && known.len() < MAX_KNOWN {
                    known.push(n.url.clone());
                }
            }
        }
        if let Ok(mut nodes) = self.nodes.lock() {
            *nodes = live;
        }
        Ok(())
    }
}

/// A widget's stored latest value and history, as any node reads them for a snapshot.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredValue {
    pub value: WidgetValue,
    pub history: Vec<HistoryPoint>,
    /// Grouped and `histogram` widgets: their recent series or distributions.
    pub details: Vec<(i64, Arc<Detail>)>,
}

/// The stored values of `widgets` of `dashboard` (those that have one), in one round trip.
pub fn read_values(
    redis: &Reconnecting,
    dashboard: Uuid,
    widgets: &[Uuid],
) -> Result<Vec<StoredValue>, String> {
    type Stored = (HashMap<String, Vec<u8>>, Vec<Vec<Vec<u8>>>);
    let (latest, histories): Stored = redis.with(|c| {
        let mut pipe = redis::pipe();
        pipe.cmd("HGETALL").arg(latest_key(dashboard));
        let mut lists = redis::pipe();
        for w in widgets {
            lists.cmd("LRANGE").arg(history_key(*w)).arg(0).arg(-1);
            lists
                .cmd("LRANGE")
                .arg(detail_history_key(*w))
                .arg(0)
                .arg(-1);
        }
        let (latest,): (HashMap<String, Vec<u8>>,) = pipe.query(c)?;
        let histories: Vec<Vec<Vec<u8>>> = if widgets.is_empty() {
            Vec::new()
        } else {
            lists.query(c)?
        };
        Ok((latest, histories))
    })?;
    let mut out = Vec::new();
    let mut lists = histories.into_iter();
    for w in widgets {
        let (Some(history), Some(details)) = (lists.next(), lists.next()) else {
            break;
        };
        let Some(json) = latest.get(&w.to_string()) else {
            continue;
        };
        let value: WidgetValue =
            serde_json::from_slice(json).map_err(|e| format!("stored value of {w}: {e}"))?;
        let history = history
            .iter()
            .filter_map(|p| serde_json::from_slice::<HistoryPoint>(p).ok())
            .collect();
        let details = details
            .iter()
            .filter_map(|p| serde_json::from_slice::<(i64, Arc<Detail>)>(p).ok())
            .collect();
        out.push(StoredValue {
            value,
            history,
            details,
        });
    }
    Ok(out)
}
