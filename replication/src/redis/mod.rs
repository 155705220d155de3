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

pub mod claim;
pub mod writer;

use std::time::Duration;

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
