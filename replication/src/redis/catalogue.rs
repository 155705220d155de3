//! The shared dashboard catalogue of a cluster: every dashboard in one Redis hash, each
//! with a version that every write checks and bumps in one script call (compare-and-set),
//! and a Pub/Sub notice of each change so every node reloads what changed.
//!
//! Keys: `livedash:dashboards` (field: dashboard id, value: `<version> <json>`);
//! channel `livedash:catalogue` (message: `<id> <version>`).

use std::sync::LazyLock;

use livedash_engine::Dashboard;
use redis::Script;
use uuid::Uuid;

use super::Reconnecting;
use super::values::{history_key, latest_key};

/// The hash that holds every dashboard.
pub const DASHBOARDS_KEY: &str = "livedash:dashboards";
/// Where every change is announced.
pub const CATALOGUE_CHANNEL: &str = "livedash:catalogue";
/// Set by every write: its absence means Redis lost the catalogue (a restart without
/// persistence), which the nodes then write back from their copies.
pub const KEPT_KEY: &str = "livedash:catalogue:kept";

/// Writes a dashboard if its stored version is the one the writer started from.
/// KEYS: the dashboards hash, the kept marker, then (on a delete) the keys of its values
/// to drop. ARGV: id, expected version, json ('' to delete), channel.
/// Answers {1, new version} when written, {0, stored version} when another write came
/// first (0: no such dashboard), {-1, 0} when Redis lost the catalogue (no marker): the
/// nodes write their copies back first.
const CAS_SCRIPT: &str = r"
if redis.call('EXISTS', KEYS[2]) == 0 then return {-1, 0} end
local cur = redis.call('HGET', KEYS[1], ARGV[1])
local v = 0
if cur then v = tonumber(string.match(cur, '^(%d+)')) or 0 end
if v ~= tonumber(ARGV[2]) then return {0, v} end
local nv = v + 1
if ARGV[3] == '' then
  redis.call('HDEL', KEYS[1], ARGV[1])
  for i = 3, #KEYS do redis.call('DEL', KEYS[i]) end
else
  redis.call('HSET', KEYS[1], ARGV[1], nv .. ' ' .. ARGV[3])
end
redis.call('PUBLISH', ARGV[4], ARGV[1] .. ' ' .. nv)
return {1, nv}
";

static CAS: LazyLock<Script> = LazyLock::new(|| Script::new(CAS_SCRIPT));

/// Writes back what a node holds after Redis lost the catalogue, or where Redis holds an
/// older version: the highest version of each dashboard wins, whichever node writes
/// first. KEYS: the dashboards hash, the kept marker. ARGV: channel, then id and
/// `<version> <json>` per dashboard.
const RESTORE_SCRIPT: &str = r"
for i = 2, #ARGV, 2 do
  local mine = tonumber(string.match(ARGV[i + 1], '^(%d+)'))
  local cur = redis.call('HGET', KEYS[1], ARGV[i])
  local v = -1
  if cur then v = tonumber(string.match(cur, '^(%d+)')) or -1 end
  if v < mine then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
    redis.call('PUBLISH', ARGV[1], ARGV[i] .. ' ' .. mine)
  end
end
redis.call('SET', KEYS[2], '1')
return 1
";

static RESTORE: LazyLock<Script> = LazyLock::new(|| Script::new(RESTORE_SCRIPT));

/// How a compare-and-set write ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// Stored as this version.
    Stored(u64),
    /// Another write came first: the stored version (0 when the dashboard is gone).
    Conflict(u64),
    /// Redis lost the catalogue: nothing was written.
    Lost,
}

/// A dashboard as stored, with its version.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredDashboard {
    pub version: u64,
    pub dashboard: Dashboard,
}

/// The catalogue's Redis client, used from the catalogue shard's blocking thread.
#[derive(Debug)]
pub struct SharedCatalogue {
    redis: Reconnecting,
}

fn parse(id: &str, stored: &str) -> Result<StoredDashboard, String> {
    let (version, json) = stored
        .split_once(' ')
        .ok_or_else(|| format!("dashboard {id} in redis has no version"))?;
    let version = version
        .parse()
        .map_err(|e| format!("dashboard {id} in redis: version {version:?}: {e}"))?;
    let dashboard = serde_json::from_str(json)
        .map_err(|e| format!("dashboard {id} in redis is not a dashboard: {e}"))?;
    Ok(StoredDashboard { version, dashboard })
}

impl SharedCatalogue {
    /// Connects to `url` (and checks it answers).
    pub fn connect(url: &str) -> Result<Self, String> {
        Ok(Self {
            redis: Reconnecting::connect(url)?,
        })
    }

    /// Every stored dashboard, and whether the catalogue was kept (false: Redis lost
    /// it, or nothing was ever written). One that cannot be read is reported, not skipped.
    pub fn load_all(&self) -> Result<(Vec<StoredDashboard>, bool), String> {
        let (all, kept): (Vec<(String, String)>, bool) = self.redis.with(|c| {
            redis::pipe()
                .cmd("HGETALL")
                .arg(DASHBOARDS_KEY)
                .cmd("EXISTS")
                .arg(KEPT_KEY)
                .query(c)
        })?;
        let all = all
            .iter()
            .map(|(id, stored)| parse(id, stored))
            .collect::<Result<_, _>>()?;
        Ok((all, kept))
    }

    /// Writes back the dashboards a node holds where Redis lost them or holds an older
    /// version (and marks the catalogue kept).
    pub fn restore(&self, dashboards: &[(Dashboard, u64)]) -> Result<(), String> {
        let mut args = Vec::with_capacity(dashboards.len() * 2);
        for (d, version) in dashboards {
            let json = serde_json::to_string(d).map_err(|e| e.to_string())?;
            args.push(d.dashboard_id.to_string());
            args.push(format!("{version} {json}"));
        }
        self.redis.with(|c| {
            RESTORE
                .key(DASHBOARDS_KEY)
                .key(KEPT_KEY)
                .arg(CATALOGUE_CHANNEL)
                .arg(&args)
                .invoke::<i64>(c)
        })?;
        Ok(())
    }

    /// Dashboard `id` as stored now, if it exists, and whether the catalogue was kept
    /// (false: Redis lost it, so a missing dashboard is not a deleted one).
    pub fn get(&self, id: Uuid) -> Result<(Option<StoredDashboard>, bool), String> {
        let (stored, kept): (Option<String>, bool) = self.redis.with(|c| {
            redis::pipe()
                .cmd("HGET")
                .arg(DASHBOARDS_KEY)
                .arg(id.to_string())
                .cmd("EXISTS")
                .arg(KEPT_KEY)
                .query(c)
        })?;
        let stored = stored.map(|s| parse(&id.to_string(), &s)).transpose()?;
        Ok((stored, kept))
    }

    /// Writes `dashboard` if the stored version is `expected` (0: it must not exist yet).
    pub fn put(&self, dashboard: &Dashboard, expected: u64) -> Result<Written, String> {
        let json = serde_json::to_string(dashboard).map_err(|e| e.to_string())?;
        self.cas(dashboard.dashboard_id, expected, &json, &[])
    }

    /// Deletes dashboard `id` (and the stored values of `widgets`) if the stored version
    /// is `expected`.
    pub fn delete(&self, id: Uuid, widgets: &[Uuid], expected: u64) -> Result<Written, String> {
        let mut drop = vec![latest_key(id)];
        drop.extend(widgets.iter().map(|w| history_key(*w)));
        self.cas(id, expected, "", &drop)
    }

    fn cas(&self, id: Uuid, expected: u64, json: &str, drop: &[String]) -> Result<Written, String> {
        let (ok, version): (i64, u64) = self.redis.with(|c| {
            let mut call = CAS.key(DASHBOARDS_KEY);
            call.key(KEPT_KEY);
            for k in drop {
                call.key(k);
            }
            call.arg(id.to_string())
                .arg(expected)
                .arg(json)
                .arg(CATALOGUE_CHANNEL)
                .invoke(c)
        })?;
        Ok(match ok {
            1 => Written::Stored(version),
            -1 => Written::Lost,
            _ => Written::Conflict(version),
        })
    }
}

/// A change notice: the dashboard and its version.
pub fn parse_notice(message: &str) -> Option<(Uuid, u64)> {
    let (id, version) = message.split_once(' ')?;
    Some((Uuid::parse_str(id).ok()?, version.parse().ok()?))
}
