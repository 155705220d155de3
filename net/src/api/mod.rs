//! The HTTP front end: routing, access control, and the JSON error shape. Each route turns
//! its request into a call on a service and the service's answer (or error) into a
//! response.

pub mod dashboards;
pub mod ingest;
pub mod prometheus;
pub mod stats;

use std::rc::Rc;

use serde_json::json;

use crate::access::{self, Access, Denied};
use crate::http::{Request, Response};
use crate::service::calls::Alerts;
use crate::service::calls::IngestError;
use crate::service::catalogue::CatalogueError;
use crate::service::mesh::{CallError, Failure};
use crate::service::{CATALOGUE_SHARD, Services};

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

/// No token or an unknown one is 401; a valid token of the wrong kind is 403.
impl From<Denied> for ApiError {
    fn from(e: Denied) -> Self {
        let status = match e {
            Denied::Missing | Denied::Invalid => 401,
            Denied::WrongKind { .. } => 403,
        };
        Self::new(status, e.to_string())
    }
}

/// A shard that did not answer. One that got the request but answered too late may have
/// applied it: 504 says so (read before retrying an edit); one that never got it, 503.
impl From<CallError> for ApiError {
    fn from(e: CallError) -> Self {
        match e.failure {
            Failure::TimedOut(_) => Self::new(
                504,
                format!("{e}; the request may have been applied: check before retrying"),
            ),
            _ => Self::new(503, e.to_string()),
        }
    }
}

impl From<CatalogueError> for ApiError {
    fn from(e: CatalogueError) -> Self {
        use crate::catalogue::Refusal;
        if let CatalogueError::Shard(call) = e {
            return call.into();
        }
        let status = match &e {
            CatalogueError::Refused(Refusal::NoDashboard(_) | Refusal::NoWidget { .. }) => 404,
            CatalogueError::Refused(Refusal::Invalid(_)) => 400,
            CatalogueError::Refused(Refusal::Unreadable(_)) => 500,
            CatalogueError::Refused(Refusal::OverBudget(_)) => 429,
            CatalogueError::Store(_) | CatalogueError::Install(_) | CatalogueError::NoCatalogue => {
                500
            }
            CatalogueError::NotReady | CatalogueError::ShuttingDown | CatalogueError::Shard(_) => {
                503
            }
            CatalogueError::NotOwned(_) => 421,
            CatalogueError::Conflict(_) => 409,
        };
        Self::new(status, e.to_string())
    }
}

/// A batch a shard did not take (see `CallError`), or one the Kafka brokers did not
/// acknowledge: 503, with how much of it was written.
impl From<IngestError> for ApiError {
    fn from(e: IngestError) -> Self {
        match e {
            IngestError::Call(e) => e.into(),
            IngestError::Produce(e) => Self::new(503, e.to_string()),
            IngestError::NotDurable(reason) => Self::new(503, reason),
        }
    }
}

/// Checks a request from its head alone (host, origin, route, method, token), before its
/// body is read.
pub fn admit(svc: &Services, req: &Request) -> Result<(), Response> {
    // Health checks answer whatever name they come by (an orchestrator probes the
    // node's own address); they tell nothing a rebound page could use.
    let health = matches!(req.path.as_str(), "/healthz" | "/readyz");
    let host = req.host.as_deref();
    let peers = || {
        svc.cluster
            .as_ref()
            .map(crate::service::cluster::ClusterLink::known_urls)
            .unwrap_or_default()
    };
    let refused = |why| Response::from(ApiError::new(403, why));
    if !health {
        access::check_host(&svc.config, host).map_err(refused)?;
    }
    access::check_origin(&svc.config, host, req.origin.as_deref(), peers).map_err(refused)?;
    let segments: Vec<&str> = req.path.trim_matches('/').split('/').collect();
    let method = req.method.as_str();
    let (access, allowed): (Access, &[&str]) = match segments.as_slice() {
        [""] | ["d", _] | ["assets", _] => (Access::Open, &["GET", "HEAD"]),
        ["metrics"] | ["api", "metric-names"] => (Access::Read, &["GET", "HEAD"]),
        ["healthz"] | ["readyz"] => (Access::Open, &["GET", "HEAD"]),
        ["ingest"] | ["api", "v2", "write"] | ["write"] => (Access::Ingest, &["POST"]),
        ["stats"] => (Access::Read, &["GET"]),
        ["stream", _] => {
            return Err(ApiError::new(
                426,
                "this endpoint is a WebSocket: send an Upgrade request",
            )
            .into());
        }
        ["dashboards", ..] => match method {
            "GET" | "HEAD" => (Access::Read, dashboards::METHODS),
            _ => (Access::Admin, dashboards::METHODS),
        },
        _ => return Err(ApiError::new(404, format!("no route for {}", req.path)).into()),
    };
    if !allowed.contains(&method) {
        return Err(ApiError::new(405, format!("{method} is not allowed on {}", req.path)).into());
    }
    // InfluxDB 1.x clients may pass the token as the `p` (password) query parameter.
    let v1_password = (segments.as_slice() == ["write"])
        .then(|| req.query_param("p"))
        .flatten();
    let token = req.bearer().or(v1_password.as_deref());
    access::allows(&svc.config, access, token).map_err(|e| Response::from(ApiError::from(e)))?;
    // A write says what it sends: a form on another site can post only form encodings
    // and text/plain without the browser asking first, and text/plain is taken only as
    // line protocol on /ingest (where the Origin check above already ran). The InfluxDB
    // endpoints take line protocol whatever the content type, as their clients send it.
    let media = req.media_type();
    let json_write = matches!(method, "POST" | "PUT" | "PATCH")
        && matches!(segments.as_slice(), ["ingest"] | ["dashboards", ..]);
    let line_ok = segments.as_slice() == ["ingest"] && media.as_deref() == Some("text/plain");
    if json_write && media.as_deref() != Some("application/json") && !line_ok {
        return Err(ApiError::new(
            415,
            format!(
                "content-type {} is not taken here; send application/json{}",
                media.as_deref().unwrap_or("(none)"),
                if segments.as_slice() == ["ingest"] {
                    " or text/plain (InfluxDB line protocol)"
                } else {
                    ""
                }
            ),
        )
        .into());
    }
    Ok(())
}

/// Handles one request on the shard that received it.
pub async fn route(svc: &Rc<Services>, mut req: Request) -> Response {
    if let Err(refused) = admit(svc, &req) {
        return refused;
    }
    // Ingest takes the body (it may parse it on another thread).
    let ingest = match req.path.trim_matches('/') {
        "ingest" => Some(ingest::handle(svc, &mut req).await),
        "api/v2/write" | "write" => Some(ingest::influx(svc, &mut req).await),
        _ => None,
    };
    if let Some(answer) = ingest {
        return answer.unwrap_or_else(Response::from);
    }
    let segments: Vec<&str> = req.path.trim_matches('/').split('/').collect();
    let answer = match segments.as_slice() {
        [""] | ["d", _] => Ok(Response::asset("text/html; charset=utf-8", ui::INDEX)),
        ["assets", "app.js"] => Ok(Response::asset(
            "text/javascript; charset=utf-8",
            ui::APP_JS,
        )),
        ["assets", "charts.js"] => Ok(Response::asset(
            "text/javascript; charset=utf-8",
            ui::CHARTS_JS,
        )),
        ["assets", "pages.js"] => Ok(Response::asset(
            "text/javascript; charset=utf-8",
            ui::PAGES_JS,
        )),
        ["assets", "app.css"] => Ok(Response::asset("text/css; charset=utf-8", ui::APP_CSS)),
        ["assets", other] => Err(ApiError::new(404, format!("no asset {other}"))),
        ["metrics"] => prometheus::handle(svc).await,
        ["api", "metric-names"] => stats::metric_names(svc).await,
        ["healthz"] => Ok(health(svc).await),
        ["readyz"] => Ok(readiness(svc)),
        ["stats"] => stats::handle(svc).await,
        _ => dashboards::handle(svc, &req, &segments).await,
    };
    answer.unwrap_or_else(Response::from)
}

/// 200 while the node runs: `ok`, or `degraded` with the reasons (alerts that fire, or
/// a catalogue shard that did not answer), so a liveness probe does not restart a node
/// that is only slow.
async fn health(svc: &Rc<Services>) -> Response {
    let reasons: Vec<String> = match svc.call(CATALOGUE_SHARD, Alerts).await {
        Ok(alerts) => alerts.into_iter().filter_map(|a| a.reason).collect(),
        Err(e) => vec![format!("the alerts could not be read: {e}")],
    };
    let status = if reasons.is_empty() { "ok" } else { "degraded" };
    Response::json(
        200,
        &json!({ "status": status, "reasons": reasons, "shard": svc.id }),
    )
}

/// 200 when the node serves exact values; in cluster mode 503 (with the reason) until
/// the consumer joined its group, and while partitions are being taken over.
fn readiness(svc: &Services) -> Response {
    let reason = svc
        .kafka
        .as_ref()
        .and_then(|link| link.takeovers.not_ready());
    match reason {
        None => Response::json(200, &json!({ "ready": true })),
        Some(reason) => Response::json(503, &json!({ "ready": false, "reason": reason })),
    }
}

/// The web UI, embedded in the binary.
mod ui {
    pub const INDEX: &str = include_str!("../../ui/index.html");
    pub const APP_JS: &str = include_str!("../../ui/app.js");
    pub const CHARTS_JS: &str = include_str!("../../ui/charts.js");
    pub const PAGES_JS: &str = include_str!("../../ui/pages.js");
    pub const APP_CSS: &str = include_str!("../../ui/app.css");
}
