//! Values between nodes (cluster mode), the watcher's side: one Pub/Sub connection per
//! node, on a thread of its own. It listens to the owners' beats and the catalogue's
//! change notices always, and to a dashboard's values only while a shard of this node
//! streams that dashboard (the subscription filter). Values go to the shards that asked,
//! through their inboxes; after a reconnect every shard re-reads the stored values of
//! what it streams and the catalogue reloads, since messages sent meanwhile are lost.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use livedash_engine::WidgetValue;
use redis::Msg;
use uuid::Uuid;

use super::catalogue::{CATALOGUE_CHANNEL, parse_notice};
use super::values::{BEAT_CHANNEL, BEATS_KEY, ValuesMessage, values_channel};
use super::{Backoff, connect};
use crate::inbox::Inbox;

/// How long a read waits before the thread looks at new subscriptions.
const POLL: Duration = Duration::from_millis(50);
/// Longest wait for Redis to confirm a subscription.
const CONFIRM_WAIT: Duration = Duration::from_secs(2);
/// How long the thread waits for a shard to make room in its inbox.
const PATIENCE: Duration = Duration::from_millis(50);
const VALUES_PREFIX: &str = "livedash:v:";

/// What the subscriber hands a shard.
#[derive(Debug)]
pub enum Inbound {
    /// Changed values of a dashboard the shard streams, from another node.
    Values {
        dashboard: Uuid,
        values: Vec<WidgetValue>,
    },
    /// A dashboard changed (catalogue shard only).
    Catalogue { id: Uuid, version: u64 },
}

/// When each partition's owner was last heard refreshing, by this node's clock (ms).
#[derive(Debug)]
pub struct Beats(Box<[AtomicI64]>);

impl Beats {
    pub fn new(partitions: usize) -> Self {
        Self((0..partitions).map(|_| AtomicI64::new(0)).collect())
    }

    /// When partition `p`'s owner last refreshed (0: never heard).
    pub fn last(&self, p: u32) -> i64 {
        self.0
            .get(p as usize)
            .map_or(0, |b| b.load(Ordering::Acquire))
    }

    fn heard(&self, p: u32, at: i64) {
        if let Some(b) = self.0.get(p as usize) {
            b.fetch_max(at, Ordering::AcqRel);
        }
    }
}

enum Command {
    /// Shard `shard` streams `dashboard`: the reply says whether the subscription is in
    /// place (false while Redis is away: it is made at the reconnect).
    Watch {
        shard: usize,
        dashboard: Uuid,
        done: Sender<bool>,
    },
    Unwatch {
        shard: usize,
        dashboard: Uuid,
    },
}

/// Counters of the subscriber, for `/stats`.
#[derive(Debug, Default)]
pub struct SubscribeCounters {
    /// Messages received (values, beats, notices).
    pub messages: AtomicU64,
    /// Values handed to shards.
    pub values: AtomicU64,
    /// Messages a shard had no room for (it re-reads the stored values instead).
    pub dropped: AtomicU64,
    /// Dashboards subscribed to now.
    pub channels: AtomicU64,
    pub reconnects: AtomicU64,
}

/// The subscriber, shared by the shards.
pub struct Subscriber {
    commands: Mutex<Sender<Command>>,
    pub beats: Arc<Beats>,
    /// Per shard: re-read the stored values of every dashboard it streams.
    pub resync: Arc<[AtomicBool]>,
    /// The catalogue must reload every dashboard.
    pub reload: Arc<AtomicBool>,
    pub connected: Arc<AtomicBool>,
    pub counters: Arc<SubscribeCounters>,
    _thread: JoinHandle<()>,
}

impl std::fmt::Debug for Subscriber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscriber")
            .field("connected", &self.connected)
            .finish_non_exhaustive()
    }
}

impl Subscriber {
    /// Starts the thread. `inboxes[s]` is shard `s`'s; notices go to shard 0's.
    pub fn start(
        url: String,
        node: String,
        partitions: usize,
        inboxes: Vec<Arc<Inbox<Inbound>>>,
    ) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel();
        let beats = Arc::new(Beats::new(partitions));
        let resync: Arc<[AtomicBool]> = inboxes.iter().map(|_| AtomicBool::new(false)).collect();
        let reload = Arc::new(AtomicBool::new(false));
        let connected = Arc::new(AtomicBool::new(false));
        let counters = Arc::new(SubscribeCounters::default());
        let run = Run {
            url,
            node,
            inboxes,
            beats: Arc::clone(&beats),
            resync: Arc::clone(&resync),
            reload: Arc::clone(&reload),
            connected: Arc::clone(&connected),
            counters: Arc::clone(&counters),
            subs: HashMap::new(),
        };
        let thread = std::thread::Builder::new()
            .name("livedash-subscribe".into())
            .spawn(move || run.run(&rx))?;
        Ok(Self {
            commands: Mutex::new(tx),
            beats,
            resync,
            reload,
            connected,
            counters,
            _thread: thread,
        })
    }

    fn send(&self, command: Command) {
        if let Ok(tx) = self.commands.lock() {
            // The thread lives as long as the process.
            tx.send(command).ok();
        }
    }

    /// Shard `shard` streams `dashboard` from now on; the receiver answers once the
    /// subscription is in place (true) or Redis is away (false).
    pub fn watch(&self, shard: usize, dashboard: Uuid) -> Receiver<bool> {
        let (done, answer) = mpsc::channel();
        self.send(Command::Watch {
            shard,
            dashboard,
            done,
        });
        answer
    }

    /// Shard `shard` no longer streams `dashboard`.
    pub fn unwatch(&self, shard: usize, dashboard: Uuid) {
        self.send(Command::Unwatch { shard, dashboard });
    }
}

enum Change {
    Subscribe,
    Unsubscribe,
}

/// Subscribes to or unsubscribes from one channel, waiting for the confirmation with the
/// connection's normal timeout (the short poll is for messages only).
fn change(ps: &mut redis::PubSub<'_>, change: Change, channel: &str) -> Result<(), String> {
    ps.set_read_timeout(Some(CONFIRM_WAIT))
        .map_err(|e| e.to_string())?;
    let done = match change {
        Change::Subscribe => ps.subscribe(channel),
        Change::Unsubscribe => ps.unsubscribe(channel),
    };
    done.and_then(|()| ps.set_read_timeout(Some(POLL)))
        .map_err(|e| e.to_string())
}

struct Run {
    url: String,
    node: String,
    inboxes: Vec<Arc<Inbox<Inbound>>>,
    beats: Arc<Beats>,
    resync: Arc<[AtomicBool]>,
    reload: Arc<AtomicBool>,
    connected: Arc<AtomicBool>,
    counters: Arc<SubscribeCounters>,
    /// Dashboard to the bits of the shards that stream it.
    subs: HashMap<Uuid, u64>,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Run {
    fn run(mut self, rx: &Receiver<Command>) {
        let mut backoff = Backoff::new("redis subscriber");
        loop {
            let mut conn = match connect(&self.url) {
                Ok(c) => c,
                Err(e) => {
                    backoff.down(&e);
                    let until = std::time::Instant::now() + backoff.wait();
                    while std::time::Instant::now() < until {
                        match rx.recv_timeout(POLL) {
                            // Without a connection, a command cannot fail.
                            Ok(command) => self.command(command, None).unwrap_or(()),
                            Err(mpsc::RecvTimeoutError::Timeout) => {}
                            Err(mpsc::RecvTimeoutError::Disconnected) => return,
                        }
                    }
                    continue;
                }
            };
            backoff.up();
            if let Err(e) = self.listen(&mut conn, rx) {
                tracing::warn!(
                    "redis subscriber: {e}; reconnecting; nothing to do unless it repeats: then check that redis (--redis) is reachable and that its client-output-buffer-limit for pubsub does not cut this node off"
                );
            }
            self.connected.store(false, Ordering::Release);
            self.counters.reconnects.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Subscribes to everything wanted, then hands messages on until the connection fails.
    fn listen(
        &mut self,
        conn: &mut redis::Connection,
        rx: &Receiver<Command>,
    ) -> Result<(), String> {
        // Beats stored while this node was not listening: an owner that refreshed
        // recently counts as alive until its next beat arrives.
        let stored: HashMap<u32, i64> = redis::cmd("HGETALL")
            .arg(BEATS_KEY)
            .query(conn)
            .map_err(|e| e.to_string())?;
        let now = now_ms();
        for (p, at) in stored {
            self.beats.heard(p, at.min(now));
        }
        let mut ps = conn.as_pubsub();
        // One channel per command: each waits for its own confirmation.
        let mut channels = vec![BEAT_CHANNEL.to_owned(), CATALOGUE_CHANNEL.to_owned()];
        channels.extend(self.subs.keys().map(|d| values_channel(*d)));
        for channel in channels {
            change(&mut ps, Change::Subscribe, &channel)?;
        }
        self.connected.store(true, Ordering::Release);
        // What was published while nobody listened is lost: shards re-read the stored
        // values, and the catalogue reloads.
        self.reload.store(true, Ordering::Release);
        for (flag, inbox) in self.resync.iter().zip(&self.inboxes) {
            flag.store(true, Ordering::Release);
            inbox.ring();
        }
        loop {
            loop {
                match rx.try_recv() {
                    Ok(command) => self.command(command, Some(&mut ps))?,
                    Err(mpsc::TryRecvError::Empty) => break,
                    Err(mpsc::TryRecvError::Disconnected) => return Ok(()),
                }
            }
            match ps.get_message() {
                Ok(msg) => self.dispatch(&msg),
                Err(e) if e.is_timeout() => {}
                Err(e) => return Err(e.to_string()),
            }
        }
    }

    fn command(
        &mut self,
        command: Command,
        ps: Option<&mut redis::PubSub<'_>>,
    ) -> Result<(), String> {
        match command {
            Command::Watch {
                shard,
                dashboard,
                done,
            } => {
                let bits = self.subs.entry(dashboard).or_insert(0);
                let first = *bits == 0;
                *bits |= 1 << shard;
                self.counters
                    .channels
                    .store(self.subs.len() as u64, Ordering::Relaxed);
                let Some(ps) = ps else {
                    done.send(false).ok();
                    return Ok(());
                };
                if first {
                    change(ps, Change::Subscribe, &values_channel(dashboard))?;
                }
                done.send(true).ok();
            }
            Command::Unwatch { shard, dashboard } => {
                let Some(bits) = self.subs.get_mut(&dashboard) else {
                    return Ok(());
                };
                *bits &= !(1 << shard);
                if *bits != 0 {
                    return Ok(());
                }
                self.subs.remove(&dashboard);
                self.counters
                    .channels
                    .store(self.subs.len() as u64, Ordering::Relaxed);
                if let Some(ps) = ps {
                    change(ps, Change::Unsubscribe, &values_channel(dashboard))?;
                }
            }
        }
        Ok(())
    }

    fn dispatch(&mut self, msg: &Msg) {
        self.counters.messages.fetch_add(1, Ordering::Relaxed);
        let channel = msg.get_channel_name();
        let payload = msg.get_payload_bytes();
        if channel == BEAT_CHANNEL {
            let text = String::from_utf8_lossy(payload);
            let Some((node, partitions)) = text.split_once(' ') else {
                return;
            };
            if node == self.node {
                return;
            }
            let now = now_ms();
            for p in partitions.split(',').filter_map(|p| p.parse().ok()) {
                self.beats.heard(p, now);
            }
        } else if channel == CATALOGUE_CHANNEL {
            let Some((id, version)) = parse_notice(&String::from_utf8_lossy(payload)) else {
                return;
            };
            if let Some(inbox) = self.inboxes.first()
                && inbox
                    .push_waiting(Inbound::Catalogue { id, version }, PATIENCE)
                    .is_err()
            {
                // The full reload catches it.
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                self.reload.store(true, Ordering::Release);
                inbox.ring();
            }
        } else if let Some(id) = channel.strip_prefix(VALUES_PREFIX) {
            let Ok(dashboard) = Uuid::parse_str(id) else {
                return;
            };
            let Some(&bits) = self.subs.get(&dashboard) else {
                return;
            };
            let Ok(message) = serde_json::from_slice::<ValuesMessage>(payload) else {
                tracing::warn!(
                    "redis subscriber: an unreadable message on {channel}; its values are skipped: check that every node runs the same livedash version and that nothing else publishes on that channel"
                );
                return;
            };
            if message.node == self.node {
                // This node's own values reached its streams directly.
                return;
            }
            let mut rest = bits;
            while rest != 0 {
                let shard = rest.trailing_zeros() as usize;
                rest &= rest - 1;
                let Some(inbox) = self.inboxes.get(shard) else {
                    continue;
                };
                let item = Inbound::Values {
                    dashboard,
                    values: message.values.clone(),
                };
                self.counters
                    .values
                    .fetch_add(message.values.len() as u64, Ordering::Relaxed);
                if inbox.push_waiting(item, PATIENCE).is_err() {
                    self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                    self.resync[shard].store(true, Ordering::Release);
                    inbox.ring();
                }
            }
        }
    }
}
