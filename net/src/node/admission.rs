//! Connection budgets: how many connections a shard holds in all and from one source
//! address. A connection over either is answered 429 and closed at once, before it costs
//! more than its socket.

use std::net::IpAddr;
use std::rc::Rc;
use std::sync::OnceLock;
use std::time::Duration;

use futures_lite::AsyncWriteExt;
use glommio::net::TcpStream;

use crate::http::Response;
use crate::service::Services;

/// Open files kept back from `max_connections = 0` for the node's own (store, Redis,
/// Kafka, the mesh).
const RESERVE: u64 = 512;

/// A connection's place in the budgets, given back when it is dropped.
#[derive(Debug)]
pub struct Slot {
    svc: Rc<Services>,
    addr: Option<IpAddr>,
}

/// The node-wide connection limit: the setting, or the open-files limit less `RESERVE`.
fn node_limit(configured: usize) -> usize {
    if configured > 0 {
        return configured;
    }
    static FROM_FILES: OnceLock<usize> = OnceLock::new();
    *FROM_FILES.get_or_init(|| {
        rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(usize::MAX, |(soft, _)| {
            usize::try_from(soft.saturating_sub(RESERVE).max(1)).unwrap_or(usize::MAX)
        })
    })
}

impl Slot {
    /// A place for a connection from `addr`, or why there is none.
    pub fn take(svc: &Rc<Services>, addr: Option<IpAddr>) -> Result<Self, String> {
        let c = &svc.config.budgets;
        let shards = svc.shards.max(1);
        let total = node_limit(c.max_connections).div_ceil(shards);
        if svc.connections.get() >= total {
            return Err(format!(
                "the node holds its most connections ({}); try again later",
                node_limit(c.max_connections)
            ));
        }
        if let Some(ip) = addr
            && c.max_connections_per_address > 0
        {
            let per_shard = c.max_connections_per_address.div_ceil(shards);
            if svc.per_address.borrow().get(&ip).copied().unwrap_or(0) >= per_shard {
                return Err(format!(
                    "{ip} holds its most connections ({}); close some, or raise max_connections_per_address",
                    c.max_connections_per_address
                ));
            }
        }
        Ok(Self::force(svc, addr))
    }

    /// A place taken whatever the budgets (a stream carrying on its upgraded connection,
    /// whose own place is given back as this one is taken).
    pub fn force(svc: &Rc<Services>, addr: Option<IpAddr>) -> Self {
        svc.connections.set(svc.connections.get() + 1);
        if let Some(ip) = addr {
            *svc.per_address.borrow_mut().entry(ip).or_insert(0) += 1;
        }
        Self {
            svc: Rc::clone(svc),
            addr,
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let svc = &self.svc;
        svc.connections.set(svc.connections.get().saturating_sub(1));
        if let Some(ip) = self.addr {
            let mut per = svc.per_address.borrow_mut();
            if let Some(n) = per.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    per.remove(&ip);
                }
            }
        }
    }
}

/// Answers a connection over a budget with 429 and `why`, and closes it.
pub async fn refuse(mut stream: TcpStream, why: String) {
    if stream
        .set_write_timeout(Some(Duration::from_millis(100)))
        .is_err()
    {
        return;
    }
    let mut out = Vec::with_capacity(256);
    Response::error(429, &why).closing().write_to(&mut out);
    stream.write_all(&out).await.ok();
    stream.close().await.ok();
}
