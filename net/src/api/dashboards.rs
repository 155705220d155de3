//! The dashboards API, run on the catalogue shard. A change is validated, written to the
//! store, committed, and routed to the shards owning the widgets' metrics before the
//! response is sent, so a read on any connection sees it.

use std::rc::Rc;

use livedash_engine::shard_for;
use serde::de::DeserializeOwned;
use serde_json::json;
use uuid::Uuid;

use super::ApiError;
use crate::catalogue::{Catalogue, Change, DashboardUpdate, NewDashboard, WidgetPatch};
use crate::http::{Request, Response};
use crate::node::ShardCtx;
use crate::node::mesh::{Call, Reply};

fn body<T: DeserializeOwned>(req: &Request) -> Result<T, ApiError> {
    if req.body.is_empty() {
        return Err(ApiError::new(400, "a JSON body is required"));
    }
    serde_json::from_slice(&req.body).map_err(|e| ApiError::new(400, format!("invalid body: {e}")))
}

fn id(text: &str, what: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(text)
        .map_err(|_| ApiError::new(404, format!("no {what} {text} (ids are UUIDs)")))
}

pub async fn handle(ctx: &Rc<ShardCtx>, req: Request) -> Response {
    match run(ctx, &req).await {
        Ok(response) => response,
        Err(e) => e.into(),
    }
}

async fn run(ctx: &Rc<ShardCtx>, req: &Request) -> Result<Response, ApiError> {
    let host = ctx.catalogue.as_ref().ok_or_else(|| {
        ApiError::new(
            500,
            "dashboard request reached a shard without the catalogue",
        )
    })?;
    let segments: Vec<&str> = req.path.trim_matches('/').split('/').collect();
    let method = req.method.as_str();
    let read = method == "GET" || method == "HEAD";
    match (segments.as_slice(), read) {
        (["dashboards"], true) => {
            let catalogue = host.catalogue.borrow();
            Ok(Response::json(200, &catalogue.list()))
        }
        (["dashboards", d], true) => {
            let d = id(d, "dashboard")?;
            let catalogue = host.catalogue.borrow();
            let dashboard = catalogue
                .get(d)
                .ok_or_else(|| ApiError::new(404, format!("no dashboard {d}")))?;
            Ok(Response::json(200, dashboard))
        }
        (["dashboards", d, "widgets", w, "snapshot"], true) => {
            let (d, w) = (id(d, "dashboard")?, id(w, "widget")?);
            let metric = host
                .catalogue
                .borrow()
                .widget(d, w)?
                .spec
                .metric_name
                .clone();
            let owner = shard_for(&metric, ctx.shards);
            match ctx.call(owner, Call::Value(w)).await {
                Reply::Value { value, stale } => {
                    let v = value
                        .ok_or_else(|| ApiError::new(503, "the widget is still being installed"))?;
                    Ok(Response::json(
                        200,
                        &json!({
                            "widget_id": w,
                            "value": v.value,
                            "window_end": v.window_end,
                            "latest_event_time": v.latest_event_time,
                            "count": v.count,
                            "stale": stale,
                        }),
                    ))
                }
                Reply::Failed(reason) => Err(ApiError::new(503, reason)),
                other => Err(ApiError::new(500, format!("unexpected reply {other:?}"))),
            }
        }
        (["dashboards"], false) if method == "POST" => {
            let new: NewDashboard = body(req)?;
            apply(ctx, |c| c.create(new), 201).await
        }
        (["dashboards", d], false) if method == "PUT" => {
            let d = id(d, "dashboard")?;
            let update: DashboardUpdate = body(req)?;
            apply(ctx, |c| c.update(d, update), 200).await
        }
        (["dashboards", d], false) if method == "DELETE" => {
            let d = id(d, "dashboard")?;
            apply(ctx, |c| c.delete(d), 204).await
        }
        (["dashboards", d, "widgets"], false) if method == "PATCH" => {
            let d = id(d, "dashboard")?;
            let patch: WidgetPatch = body(req)?;
            apply(ctx, |c| c.patch(d, patch), 200).await
        }
        _ => Err(ApiError::new(
            if segments.len() <= 5 { 405 } else { 404 },
            format!("{method} {} is not an API endpoint", req.path),
        )),
    }
}

/// Prepares, stores, commits and routes a change, one change at a time, so two
/// concurrent edits of one dashboard never overwrite each other.
async fn apply(
    ctx: &Rc<ShardCtx>,
    prepare: impl FnOnce(&Catalogue) -> Result<Change, ApiError>,
    status: u16,
) -> Result<Response, ApiError> {
    let Some(host) = ctx.catalogue.as_ref() else {
        return Err(ApiError::new(500, "no catalogue on this shard"));
    };
    let _permit = host
        .writer
        .acquire_permit(1)
        .await
        .map_err(|_| ApiError::new(503, "the node is shutting down"))?;
    let change = prepare(&host.catalogue.borrow())?;
    // File I/O (with fsync) runs on the executor's blocking thread, so this shard keeps
    // serving ingest and streams meanwhile; the writer lock keeps changes in order.
    let store = std::sync::Arc::clone(&host.store);
    let (id, dashboard) = (change.id, change.dashboard.clone());
    glommio::executor()
        .spawn_blocking(move || match dashboard {
            Some(d) => store.put(&d),
            None => store.delete(id),
        })
        .await
        .map_err(|e| ApiError::new(500, format!("cannot store the dashboard: {e}")))?;
    host.catalogue.borrow_mut().commit(&change);
    let horizon_ms = host.catalogue.borrow().horizon_ms();
    let mut per_shard: Vec<(Vec<_>, Vec<Uuid>)> = vec![(Vec::new(), Vec::new()); ctx.shards];
    for w in &change.removals {
        per_shard[shard_for(&w.spec.metric_name, ctx.shards)]
            .1
            .push(w.widget_id);
    }
    for w in &change.upserts {
        // A widget moved to another metric may change owner: remove it everywhere else.
        let owner = shard_for(&w.spec.metric_name, ctx.shards);
        for (shard, ops) in per_shard.iter_mut().enumerate() {
            if shard != owner {
                ops.1.push(w.widget_id);
            }
        }
        per_shard[owner].0.push(w.clone());
    }
    for (to, (upsert, remove)) in per_shard.into_iter().enumerate() {
        match ctx
            .call(
                to,
                Call::Widgets {
                    upsert,
                    remove,
                    horizon_ms,
                },
            )
            .await
        {
            Reply::Done => {}
            Reply::Failed(reason) => return Err(ApiError::new(500, reason)),
            other => return Err(ApiError::new(500, format!("unexpected reply {other:?}"))),
        }
    }
    // Streams follow the edit: added widgets start, removed ones stop.
    for to in 0..ctx.shards {
        let call = Call::DashboardChanged(change.id, change.dashboard.clone());
        if let Reply::Failed(reason) = ctx.call(to, call).await {
            tracing::warn!("streams on shard {to} missed an edit: {reason}");
        }
    }
    Ok(match change.dashboard {
        Some(d) if status != 204 => Response::json(status, &d),
        _ => Response::empty(204),
    })
}
