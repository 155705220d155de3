//! The mirror's writer thread: takes each shard's flush (the changed panes of its
//! partitions and the offset they reflect), stores every partition in one atomic script
//! call that checks the partition's epoch first, and hands the outcome back to the shard.
//! If Redis is down, flushes fail at once while the writer backs off (with jitter) between
//! reconnects; the shards keep their changes and send them whole once Redis is back.

use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, LazyLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use livedash_engine::QueryChanges;
use redis::{Connection, Script};

use super::{
    RedisSettings, Scope, connect, epoch_key, index_key, offset_key, query_key, random_fraction,
};
use crate::inbox::Inbox;

/// Stores one partition's flush. KEYS: epoch, offset, index, then one hash per query.
/// ARGV: the writer's epoch ('' to claim the partition), next offset, replace (1: drop
/// every stored query of the partition first), the prefix of its query keys, then per
/// query: id, full (1: replace it), ttl ms, latest, panes set, slots deleted, the
/// (slot, pane) pairs, the deleted slots.
///
/// Answers {1, epoch} when stored; {0, 0} when a newer owner's epoch is there; {-1, 0}
/// when there is no epoch at all (Redis lost its data); {-2, 0} when a claim finds the
/// stored state ahead of the claimer's position. Epochs only grow: a writer with a
/// newer epoch than the stored one (after Redis lost writes) raises it.
const FLUSH_SCRIPT: &str = r"
local owner = tonumber(redis.call('GET', KEYS[1]) or '')
local mine = tonumber(ARGV[1])
if mine == nil then
  local at = tonumber(redis.call('GET', KEYS[2]) or '')
  if at ~= nil and at > tonumber(ARGV[2]) then return {-2, 0} end
  mine = redis.call('INCR', KEYS[1])
elseif owner == nil then
  return {-1, 0}
elseif mine < owner then
  return {0, 0}
elseif mine > owner then
  redis.call('SET', KEYS[1], mine)
end
if ARGV[3] == '1' then
  for _, id in ipairs(redis.call('SMEMBERS', KEYS[3])) do
    redis.call('DEL', ARGV[4] .. id)
  end
  redis.call('DEL', KEYS[3])
end
local a = 5
for i = 4, #KEYS do
  local k = KEYS[i]
  local id, full, ttl, latest = ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3]
  local nset, ndel = tonumber(ARGV[a + 4]), tonumber(ARGV[a + 5])
  a = a + 6
  if full == '1' then redis.call('DEL', k) end
  local j = 0
  while j < nset do
    local n = math.min(nset - j, 200)
    redis.call('HSET', k, unpack(ARGV, a + 2 * j, a + 2 * (j + n) - 1))
    j = j + n
  end
  a = a + 2 * nset
  j = 0
  while j < ndel do
    local n = math.min(ndel - j, 200)
    redis.call('HDEL', k, unpack(ARGV, a + j, a + j + n - 1))
    j = j + n
  end
  a = a + ndel
  redis.call('HSET', k, 'latest', latest)
  redis.call('PEXPIRE', k, ttl)
  redis.call('SADD', KEYS[3], id)
end
redis.call('SET', KEYS[2], ARGV[2])
return {1, mine}
";

static SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(FLUSH_SCRIPT));

/// How long stored panes outlive their window: the margin covers a node that is down
/// for a while and the allowed clock skew.
const TTL_MARGIN_MS: i64 = 10 * 60 * 1000;
/// Backoff between reconnects while Redis is down.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// One partition's part of a flush.
#[derive(Debug, Clone)]
pub struct PartitionFlush {
    pub partition: u32,
    /// The shard's epoch for it; `None` when it has none yet (Redis was down when the
    /// partition was taken, or lost its data): the write claims one, unless the stored
    /// state is ahead of `next_offset`, and the shard sends every pane.
    pub epoch: Option<u64>,
    /// The first offset the state does not reflect.
    pub next_offset: i64,
    /// Drop every query stored for the partition first (the shard sends all of its own:
    /// the first write after taking the partition).
    pub replace: bool,
    pub queries: Vec<QueryChanges>,
}

/// What one shard sends in one flush.
#[derive(Debug, Clone)]
pub struct Flush {
    pub shard: usize,
    pub partitions: Vec<PartitionFlush>,
}

/// How one partition's write went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushResult {
    /// Stored under this epoch.
    Stored { epoch: u64 },
    /// Refused: another node claimed the partition since.
    Fenced,
    /// Refused: Redis holds no epoch for the partition (it lost its data). The shard
    /// claims the partition again and sends every pane.
    Lost,
    /// A claim refused: the stored state is ahead of the shard's position (it is
    /// catching up, or is not the owner any more). Tried again later.
    Behind,
    /// Not stored (Redis unreachable or an error); the shard sends it again.
    Failed,
}

/// The outcome of a flush, back to its shard.
#[derive(Debug, Clone, Default)]
pub struct Flushed {
    pub results: Vec<(u32, FlushResult)>,
    /// Bytes of pane data sent, and how long the write took.
    pub bytes: usize,
    pub took: Duration,
    pub error: Option<String>,
}

/// The running writer.
#[derive(Debug)]
pub struct Writer {
    tx: Sender<Flush>,
    thread: Option<JoinHandle<()>>,
}

impl Writer {
    /// Starts the writer; outcomes go to `outboxes[flush.shard]`.
    pub fn start(settings: RedisSettings, outboxes: Vec<Arc<Inbox<Flushed>>>) -> Self {
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("livedash-mirror".into())
            .spawn(move || Worker::new(settings).run(&rx, &outboxes))
            .ok();
        Self { tx, thread }
    }

    /// A handle shards submit with (cloned per shard).
    pub fn sender(&self) -> Sender<Flush> {
        self.tx.clone()
    }

    /// Ends the thread once the flushes sent so far are written.
    pub fn stop(mut self) {
        drop(self.tx);
        if let Some(t) = self.thread.take()
            && t.join().is_err()
        {
            tracing::error!("the redis mirror thread panicked");
        }
    }
}

struct Worker {
    settings: RedisSettings,
    conn: Option<Connection>,
    /// While Redis is down: since when, the last error, and when to try again.
    down_since: Option<Instant>,
    retry_at: Instant,
    backoff: Duration,
    last_error: Option<String>,
}

impl Worker {
    fn new(settings: RedisSettings) -> Self {
        Self {
            settings,
            conn: None,
            down_since: None,
            retry_at: Instant::now(),
            backoff: BACKOFF_MIN,
            last_error: None,
        }
    }

    fn run(&mut self, rx: &Receiver<Flush>, outboxes: &[Arc<Inbox<Flushed>>]) {
        loop {
            let flush = match rx.recv_timeout(Duration::from_secs(1)) {
                Ok(flush) => flush,
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => return,
            };
            let shard = flush.shard;
            let flushed = self.write(flush);
            if let Some(outbox) = outboxes.get(shard)
                && outbox
                    .push_waiting(flushed, Duration::from_secs(5))
                    .is_err()
            {
                tracing::error!(shard, "a shard did not take its mirror outcome in time");
            }
        }
    }

    fn write(&mut self, flush: Flush) -> Flushed {
        let started = Instant::now();
        let failed = |error: String| Flushed {
            results: flush
                .partitions
                .iter()
                .map(|p| (p.partition, FlushResult::Failed))
                .collect(),
            error: Some(error),
            took: started.elapsed(),
            ..Flushed::default()
        };
        let scope = self.settings.scope;
        let conn = match self.connection() {
            Ok(conn) => conn,
            Err(e) => return failed(e),
        };
        match store(conn, scope, &SCRIPT, &flush) {
            Ok((results, bytes)) => {
                self.up();
                Flushed {
                    results,
                    bytes,
                    took: started.elapsed(),
                    error: None,
                }
            }
            Err(e) => {
                self.down(e.clone());
                failed(e)
            }
        }
    }

    /// The connection, reconnecting when the backoff allows.
    fn connection(&mut self) -> Result<&mut Connection, String> {
        if self.conn.is_none() {
            if Instant::now() < self.retry_at {
                return Err(self
                    .last_error
                    .clone()
                    .unwrap_or_else(|| "redis is unreachable".into()));
            }
            match connect(&self.settings.url) {
                Ok(conn) => self.conn = Some(conn),
                Err(e) => {
                    self.down(e.clone());
                    return Err(e);
                }
            }
        }
        self.conn
            .as_mut()
            .ok_or_else(|| "no redis connection".into())
    }

    fn down(&mut self, error: String) {
        self.conn = None;
        if self.down_since.is_none() {
            self.down_since = Some(Instant::now());
            self.backoff = BACKOFF_MIN;
            tracing::warn!(
                "redis mirror: {error}; shards keep serving from memory and catch the mirror up once it is back: check that redis (--redis) is reachable and accepts writes (standalone, ingest answers 503 until then)"
            );
        } else {
            self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
        }
        // Up to a quarter more, so nodes that lost Redis together do not retry together.
        let jitter = self.backoff.mul_f64(random_fraction() / 4.0);
        self.retry_at = Instant::now() + self.backoff + jitter;
        self.last_error = Some(error);
    }

    fn up(&mut self) {
        if let Some(since) = self.down_since.take() {
            tracing::warn!(
                down_for_ms = since.elapsed().as_millis() as u64,
                "redis mirror is back: nothing to do"
            );
        }
        self.backoff = BACKOFF_MIN;
        self.last_error = None;
    }
}

/// Writes every partition of `flush` in one round trip: partitions without an epoch
/// claim one first.
fn store(
    conn: &mut Connection,
    scope: Scope,
    script: &Script,
    flush: &Flush,
) -> Result<(Vec<(u32, FlushResult)>, usize), String> {
    let mut bytes = 0;
    let mut pipe = redis::pipe();
    for p in &flush.partitions {
        let mut call = redis::cmd("EVALSHA");
        call.arg(script.get_hash()).arg(3 + p.queries.len());
        call.arg(epoch_key(scope, p.partition))
            .arg(offset_key(scope, p.partition))
            .arg(index_key(scope, p.partition));
        let ids: Vec<String> = p.queries.iter().map(|q| q.key.stable_id()).collect();
        for id in &ids {
            call.arg(query_key(scope, p.partition, id));
        }
        call.arg(p.epoch.map_or_else(String::new, |e| e.to_string()))
            .arg(p.next_offset)
            .arg(if p.replace { "1" } else { "0" })
            .arg(query_key(scope, p.partition, ""));
        for (q, id) in p.queries.iter().zip(&ids) {
            call.arg(id)
                .arg(if q.panes.full { "1" } else { "0" })
                .arg(q.span_ms.saturating_add(TTL_MARGIN_MS))
                .arg(q.latest.map_or_else(String::new, |t| t.to_string()))
                .arg(q.panes.set.len())
                .arg(q.panes.deleted.len());
            for (slot, pane) in &q.panes.set {
                let value = postcard::to_allocvec(pane).map_err(|e| e.to_string())?;
                bytes += value.len();
                call.arg(slot).arg(value);
            }
            for slot in &q.panes.deleted {
                call.arg(slot);
            }
        }
        pipe.add_command(call);
    }
    let answers: Vec<(i64, u64)> = match pipe.query(conn) {
        Ok(a) => a,
        Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
            script
                .prepare_invoke()
                .load(conn)
                .map_err(|e| e.to_string())?;
            pipe.query(conn).map_err(|e| e.to_string())?
        }
        Err(e) => return Err(format!("writing to the redis mirror: {e}")),
    };
    let results = flush
        .partitions
        .iter()
        .zip(answers)
        .map(|(p, (answer, epoch))| {
            let result = match answer {
                1 => FlushResult::Stored { epoch },
                -1 => FlushResult::Lost,
                -2 => FlushResult::Behind,
                _ => FlushResult::Fenced,
            };
            (p.partition, result)
        })
        .collect();
    Ok((results, bytes))
}
