//! `GET /stats` (every shard's counters) and `GET /api/metric-names` (metric names seen
//! recently).

use std::rc::Rc;

use serde_json::json;

use super::ApiError;
use crate::http::Response;
use crate::service::{Services, stats};

pub async fn handle(svc: &Rc<Services>) -> Result<Response, ApiError> {
    let shards = stats::all_shards(svc, true).await?;
    let events: u64 = shards.iter().map(|s| s.engine_events).sum();
    let ns: u64 = shards.iter().map(|s| s.engine_apply_ns).sum();
    let per_event = (events > 0).then(|| ns as f64 / events as f64);
    let mut body = json!({ "shards": shards, "engine_ns_per_event": per_event });
    if let Some(link) = &svc.cluster {
        body["cluster"] = crate::service::cluster::stats(link);
    }
    Ok(Response::json(200, &body))
}

/// Metric names seen recently on any shard, sorted (suggestions for widget forms).
pub async fn metric_names(svc: &Rc<Services>) -> Result<Response, ApiError> {
    Ok(Response::json(200, &stats::recent_metric_names(svc).await?))
}
