//! Redis: the state mirror (cluster mode). `writer` stores each shard's changed panes with
//! the offset they reflect, fenced by the partition's epoch; `claim` is what a new owner of
//! a partition does first: bump the epoch and load the state to restore.
//!
//! Keys, per partition `p` (the braces keep a partition's keys in one Redis Cluster slot;
//! a standalone node stores each shard's windows the same way, under
//! `livedash:standalone:{s}:` for shard `s`):
//! - `livedash:{p}:epoch`: the owner's epoch, bumped by every new owner;
//! - `livedash:{p}:offset`: the next offset the stored state has not seen;
//! - `livedash:{p}:queries`: the ids of the queries stored (`QueryKey::stable_id`);
//! - `livedash:{p}:q:<id>`: one hash per query: field `latest` (newest event time), and
//!   per ring slot the pane there, postcard-encoded (`PaneState`). It expires one window
//!   (plus a margin) after its last write.

pub mod catalogue;
pub mod claim;
pub mod subscriber;
pub mod values;
pub mod writer;

use std::sync::Mutex;
use std::time::{Duration, Instant};

pub use claim::{Claim, StoredQuery, claim};
pub use writer::{Flush, FlushResult, Flushed, PartitionFlush, Writer};

/// Where the mirror is and how often shards write to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisSettings {
    /// `redis://HOST:PORT[/DB]`.
    pub url: String,
    /// How often each shard writes what changed.
    pub interval: Duration,
    pub scope: Scope,
}

/// What a stored "partition" is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// A Kafka partition (cluster mode).
    Partition,
    /// A shard of a standalone node.
    Shard,
}

impl Scope {
    fn prefix(self) -> &'static str {
        match self {
            Scope::Partition => "livedash:",
            Scope::Shard => "livedash:standalone:",
        }
    }
}

/// Longest wait for Redis to connect or answer.
const IO_TIMEOUT: Duration = Duration::from_secs(2);

pub(crate) fn epoch_key(scope: Scope, partition: u32) -> String {
    format!("{}{{{partition}}}:epoch", scope.prefix())
}

pub(crate) fn offset_key(scope: Scope, partition: u32) -> String {
    format!("{}{{{partition}}}:offset", scope.prefix())
}

pub(crate) fn index_key(scope: Scope, partition: u32) -> String {
    format!("{}{{{partition}}}:queries", scope.prefix())
}

pub(crate) fn query_key(scope: Scope, partition: u32, id: &str) -> String {
    format!("{}{{{partition}}}:q:{id}", scope.prefix())
}

/// The hash field of a query's newest event time.
pub(crate) const LATEST_FIELD: &str = "latest";

/// A connection with bounded waits.
pub fn connect(url: &str) -> Result<redis::Connection, String> {
    let client = redis::Client::open(url).map_err(|e| format!("redis url {url:?}: {e}"))?;
    let conn = client
        .get_connection_with_timeout(IO_TIMEOUT)
        .map_err(|e| format!("connecting to redis at {url}: {e}"))?;
    conn.set_read_timeout(Some(IO_TIMEOUT))
        .and_then(|()| conn.set_write_timeout(Some(IO_TIMEOUT)))
        .map_err(|e| format!("redis at {url}: {e}"))?;
    Ok(conn)
}

/// Checks that Redis answers at `url`.
pub fn check(url: &str) -> Result<(), String> {
    let mut conn = connect(url)?;
    redis::cmd("PING")
        .query::<String>(&mut conn)
        .map(drop)
        .map_err(|e| format!("redis at {url}: {e}"))
}

/// One connection for calls made now and then from a blocking thread: opened again by
/// the next call after one failed.
pub struct Reconnecting {
    url: String,
    conn: Mutex<Option<redis::Connection>>,
}

impl std::fmt::Debug for Reconnecting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reconnecting")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl Reconnecting {
    /// Connects to `url` now, so a wrong address is reported at start.
    pub fn connect(url: &str) -> Result<Self, String> {
        let conn = connect(url)?;
        Ok(Self {
            url: url.to_owned(),
            conn: Mutex::new(Some(conn)),
        })
    }

    /// A client that connects at its first call.
    pub fn lazy(url: &str) -> Self {
        Self {
            url: url.to_owned(),
            conn: Mutex::new(None),
        }
    }

    /// Runs `f` on the connection, reconnecting first if the last call failed. A call
    /// on a connection kept from before that fails for want of a connection (Redis
    /// restarted meanwhile) is made once more on a new one.
    pub fn with<T>(
        &self,
        mut f: impl FnMut(&mut redis::Connection) -> redis::RedisResult<T>,
    ) -> Result<T, String> {
        let mut slot = self
            .conn
            .lock()
            .map_err(|_| "redis client poisoned".to_owned())?;
        let mut kept = slot.is_some();
        loop {
            if slot.is_none() {
                *slot = Some(connect(&self.url)?);
            }
            let conn = slot.as_mut().ok_or("no redis connection")?;
            match f(conn) {
                Ok(v) => return Ok(v),
                Err(e) => {
                    *slot = None;
                    let dropped = e.is_io_error() || e.is_connection_dropped();
                    if kept && dropped {
                        kept = false;
                        continue;
                    }
                    return Err(format!("redis at {}: {e}", self.url));
                }
            }
        }
    }
}

/// A number in [0, 1) that differs from process to process and call to call.
pub(crate) fn random_fraction() -> f64 {
    use std::hash::BuildHasher;
    let bits = std::collections::hash_map::RandomState::new().hash_one(Instant::now());
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

/// When a thread that lost Redis may try again: 100 ms doubling to 5 s, plus up to a
/// quarter more so nodes that lost Redis together do not retry together. Logs once when
/// Redis goes away and once when it is back.
#[derive(Debug)]
pub(crate) struct Backoff {
    what: &'static str,
    backoff: Duration,
    retry_at: Instant,
    down_since: Option<Instant>,
}

impl Backoff {
    const MIN: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(5);

    pub(crate) fn new(what: &'static str) -> Self {
        Self {
            what,
            backoff: Self::MIN,
            retry_at: Instant::now(),
            down_since: None,
        }
    }

    pub(crate) fn may_retry(&self) -> bool {
        Instant::now() >= self.retry_at
    }

    /// How long until the next try.
    pub(crate) fn wait(&self) -> Duration {
        self.retry_at.saturating_duration_since(Instant::now())
    }

    pub(crate) fn down(&mut self, error: &str) {
        if self.down_since.is_none() {
            self.down_since = Some(Instant::now());
            self.backoff = Self::MIN;
            tracing::warn!(
                "{}: {error}; retrying; nothing to do unless it persists: then check that redis (--redis) is reachable",
                self.what
            );
        } else {
            self.backoff = (self.backoff * 2).min(Self::MAX);
        }
        let jitter = self.backoff.mul_f64(random_fraction() / 4.0);
        self.retry_at = Instant::now() + self.backoff + jitter;
    }

    pub(crate) fn up(&mut self) {
        if let Some(since) = self.down_since.take() {
            tracing::warn!(
                down_for_ms = since.elapsed().as_millis() as u64,
                "{}: redis is back: nothing to do",
                self.what
            );
        }
        self.backoff = Self::MIN;
    }
}
