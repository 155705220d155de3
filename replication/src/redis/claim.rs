//! Taking a partition over: bump its epoch (from then on the previous owner's writes are
//! refused), then read the offset and the window state stored for it.

use std::collections::HashMap;

use livedash_engine::PaneState;
use redis::Connection;

use super::{LATEST_FIELD, Scope, epoch_key, index_key, offset_key, query_key};

/// One query's stored window.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StoredQuery {
    pub latest: Option<i64>,
    pub panes: Vec<PaneState>,
}

/// What a new owner of a partition starts from.
#[derive(Debug, Clone, Default)]
pub struct Claim {
    pub partition: u32,
    /// The owner's epoch: every write of the new owner carries it.
    pub epoch: u64,
    /// The first offset the stored state has not seen; `None` when nothing is stored.
    pub offset: Option<i64>,
    /// Stored windows by query id (`QueryKey::stable_id`).
    pub queries: HashMap<String, StoredQuery>,
    /// Bytes read, and stored entries that could not be decoded (skipped).
    pub bytes: usize,
    pub undecodable: usize,
}

/// Claims `partition`: bumps its epoch and loads what is stored for it.
pub fn claim(conn: &mut Connection, scope: Scope, partition: u32) -> Result<Claim, String> {
    let epoch: u64 = redis::cmd("INCR")
        .arg(epoch_key(scope, partition))
        .query(conn)
        .map_err(|e| format!("claiming partition {partition}: {e}"))?;
    let (offset, ids): (Option<i64>, Vec<String>) = redis::pipe()
        .cmd("GET")
        .arg(offset_key(scope, partition))
        .cmd("SMEMBERS")
        .arg(index_key(scope, partition))
        .query(conn)
        .map_err(|e| format!("reading partition {partition}: {e}"))?;
    let mut claim = Claim {
        partition,
        epoch,
        offset,
        ..Claim::default()
    };
    if ids.is_empty() {
        return Ok(claim);
    }
    let mut pipe = redis::pipe();
    for id in &ids {
        pipe.cmd("HGETALL").arg(query_key(scope, partition, id));
    }
    let hashes: Vec<Vec<(Vec<u8>, Vec<u8>)>> = pipe
        .query(conn)
        .map_err(|e| format!("reading partition {partition}'s windows: {e}"))?;
    let mut gone = Vec::new();
    for (id, fields) in ids.into_iter().zip(hashes) {
        if fields.is_empty() {
            gone.push(id);
            continue;
        }
        let mut stored = StoredQuery::default();
        for (field, value) in fields {
            claim.bytes += field.len() + value.len();
            if field == LATEST_FIELD.as_bytes() {
                stored.latest = std::str::from_utf8(&value)
                    .ok()
                    .and_then(|v| v.parse().ok());
                continue;
            }
            match postcard::from_bytes::<PaneState>(&value) {
                Ok(pane) => stored.panes.push(pane),
                Err(_) => claim.undecodable += 1,
            }
        }
        claim.queries.insert(id, stored);
    }
    if !gone.is_empty() {
        // Expired windows: forget their ids.
        let _: Result<(), _> = redis::cmd("SREM")
            .arg(index_key(scope, partition))
            .arg(&gone)
            .query(conn);
    }
    Ok(claim)
}
