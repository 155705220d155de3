//! The HTTP API: routing, access control and the JSON error shape. Ingest runs on the
//! shard that received it; dashboard requests run on the catalogue shard (0).

pub mod dashboards;
pub mod ingest;

use std::rc::Rc;

use serde_json::json;

use crate::http::{Request, Response};
use crate::node::ShardCtx;
use crate::node::mesh::{Call, Reply};

/// An API failure: a status and a reason for the `{"error": ...}` body.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: u16,
    pub reason: String,
}

impl ApiError {
    pub fn new(status: u16, reason: impl Into<String>) -> Self {
        Self {
            status,
            reason: reason.into(),
        }
    }
}

impl From<ApiError> for Response {
    fn from(e: ApiError) -> Self {
        Response::error(e.status, &e.reason)
    }
}

/// What a request needs to be allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    Open,
    Read,
    Ingest,
    Admin,
}

/// Compares without stopping at the first difference, so timing does not leak a prefix.
fn same_secret(given: &str, expected: &str) -> bool {
    given.len() == expected.len()
        && given
            .bytes()
            .zip(expected.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// Whether the token `given` grants `access` under the configured tokens (read access is
/// also granted by the admin token).
pub(crate) fn allows(
    c: &crate::config::Config,
    access: Access,
    given: Option<&str>,
) -> Result<(), ApiError> {
    let required: Vec<&str> = match access {
        Access::Open => return Ok(()),
        Access::Read => match &c.read_token {
            None => return Ok(()),
            Some(t) => [Some(t), c.admin_token.as_ref()]
                .into_iter()
                .flatten()
                .map(String::as_str)
                .collect(),
        },
        Access::Ingest => match &c.ingest_token {
            None => return Ok(()),
            Some(t) => vec![t.as_str()],
        },
        Access::Admin => match &c.admin_token {
            None => return Ok(()),
            Some(t) => vec![t.as_str()],
        },
    };
    match given {
        None => Err(ApiError::new(401, "missing Authorization: Bearer <token>")),
        Some(given) if required.iter().any(|t| same_secret(given, t)) => Ok(()),
        Some(_) => Err(ApiError::new(401, "invalid token")),
    }
}

/// The HTTP service of one shard: API requests and WebSocket streams.
#[derive(Debug)]
pub struct Api {
    pub ctx: Rc<ShardCtx>,
}

impl crate::http::Service for Api {
    type Upgrade = uuid::Uuid;

    async fn call(&self, request: Request) -> Response {
        route(&self.ctx, request).await
    }

    fn accept_upgrade(&self, request: &Request) -> Result<uuid::Uuid, Response> {
        crate::stream::accept(&self.ctx, request)
    }

    async fn websocket(&self, dashboard: uuid::Uuid, stream: glommio::net::TcpStream) {
        // A task of its own: the stream outlives the HTTP connection's task, whose state
        // (sized for the largest API request) is freed.
        // It counts as an open connection until it ends, so shutdown waits for it.
        let ctx = Rc::clone(&self.ctx);
        ctx.connections.set(ctx.connections.get() + 1);
        glommio::spawn_local(async move {
            crate::stream::session(Rc::clone(&ctx), dashboard, stream).await;
            ctx.connections.set(ctx.connections.get() - 1);
        })
        .detach();
    }
}

/// Handles one request on the shard that received it.
pub async fn route(ctx: &Rc<ShardCtx>, req: Request) -> Response {
    let segments: Vec<&str> = req.path.trim_matches('/').split('/').collect();
    let method = req.method.as_str();
    let (access, allowed): (Access, &[&str]) = match segments.as_slice() {
        [""] | ["d", _] | ["assets", _] => (Access::Open, &["GET", "HEAD"]),
        ["metrics"] => (Access::Read, &["GET", "HEAD"]),
        ["healthz"] => (Access::Open, &["GET", "HEAD"]),
        ["ingest"] => (Access::Ingest, &["POST"]),
        ["stats"] => (Access::Read, &["GET"]),
        ["stream", _] => {
            return ApiError::new(426, "this endpoint is a WebSocket: send an Upgrade request")
                .into();
        }
        ["dashboards", ..] => match method {
            "GET" | "HEAD" => (
                Access::Read,
                &["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"],
            ),
            _ => (
                Access::Admin,
                &["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"],
            ),
        },
        _ => return ApiError::new(404, format!("no route for {}", req.path)).into(),
    };
    if !allowed.contains(&method) {
        return ApiError::new(405, format!("{method} is not allowed on {}", req.path)).into();
    }
    if let Err(e) = allows(&ctx.config, access, req.bearer()) {
        return e.into();
    }
    match segments.as_slice() {
        [""] | ["d", _] => Response::asset("text/html; charset=utf-8", ui::INDEX),
        ["assets", "app.js"] => Response::asset("text/javascript; charset=utf-8", ui::APP_JS),
        ["assets", "app.css"] => Response::asset("text/css; charset=utf-8", ui::APP_CSS),
        ["assets", other] => ApiError::new(404, format!("no asset {other}")).into(),
        ["metrics"] => metrics(ctx).await,
        ["healthz"] => Response::json(200, &json!({ "status": "ok", "shard": ctx.id })),
        ["ingest"] => ingest::handle(ctx, req).await,
        ["stats"] => stats(ctx).await,
        _ => match ctx.call(0, Call::Http(req)).await {
            Reply::Http(response) => response,
            Reply::Failed(reason) => Response::error(503, &reason),
            other => Response::error(500, &format!("unexpected reply {other:?}")),
        },
    }
}

/// The web UI, embedded in the binary.
mod ui {
    pub const INDEX: &str = include_str!("../../ui/index.html");
    pub const APP_JS: &str = include_str!("../../ui/app.js");
    pub const APP_CSS: &str = include_str!("../../ui/app.css");
}

/// Metric names seen recently on any shard, sorted (suggestions for widget forms).
async fn metrics(ctx: &Rc<ShardCtx>) -> Response {
    let mut names = std::collections::BTreeSet::new();
    for to in 0..ctx.shards {
        match ctx.call(to, Call::RecentMetrics).await {
            Reply::Metrics(m) => names.extend(m),
            other => return Response::error(503, &format!("shard {to}: {other:?}")),
        }
    }
    Response::json(200, &names)
}

async fn stats(ctx: &Rc<ShardCtx>) -> Response {
    let mut shards = Vec::with_capacity(ctx.shards);
    for to in 0..ctx.shards {
        match ctx.call(to, Call::Stats).await {
            Reply::Stats(s) => shards.push(s),
            other => return Response::error(503, &format!("shard {to}: {other:?}")),
        }
    }
    let events: u64 = shards.iter().map(|s| s.engine_events).sum();
    let ns: u64 = shards.iter().map(|s| s.engine_apply_ns).sum();
    let per_event = (events > 0).then(|| ns as f64 / events as f64);
    Response::json(
        200,
        &json!({ "shards": shards, "engine_ns_per_event": per_event }),
    )
}

#[cfg(test)]
mod tests {
    use super::same_secret;

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abd", "abc"));
        assert!(!same_secret("ab", "abc"));
    }
}
