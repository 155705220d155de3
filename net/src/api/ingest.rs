//! `POST /ingest`: parse on the receiving shard, split the events by owner shard, apply
//! the local part in place and send one message per other owner, then merge the answers.

use std::rc::Rc;

use glommio::spawn_local;
use livedash_engine::{MetricEvent, shard_for};
use serde_json::json;

use crate::http::{Request, Response};
use crate::ingest::{self, Precision, Rejected};
use crate::node::mesh::{Call, Reply};
use crate::node::{ShardCtx, now_ms};

pub async fn handle(ctx: &Rc<ShardCtx>, req: Request) -> Response {
    let media = req.content_type.as_deref().map(|c| {
        c.split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase()
    });
    let parsed = match media.as_deref() {
        None | Some("application/json") => ingest::json(&req.body),
        Some("text/plain") => match Precision::parse(req.query_param("precision").as_deref()) {
            Ok(precision) => ingest::line_protocol(&req.body, precision, now_ms()),
            Err(reason) => return Response::error(400, &reason),
        },
        Some(other) => {
            return Response::error(
                415,
                &format!(
                    "content-type {other} is not supported; send application/json or \
                     text/plain (InfluxDB line protocol)"
                ),
            );
        }
    };
    let parsed = match parsed {
        Ok(p) => p,
        Err(reason) => return Response::error(400, &reason),
    };
    match dispatch(ctx, parsed).await {
        Ok((accepted, rejected)) => {
            Response::json(200, &json!({ "accepted": accepted, "rejected": rejected }))
        }
        Err(response) => response,
    }
}

/// Applies parsed events on their owner shards: the local part in place, one message per
/// other owner. Returns the accepted count and every rejection, by index.
pub async fn dispatch(
    ctx: &Rc<ShardCtx>,
    parsed: ingest::Parsed,
) -> Result<(usize, Vec<Rejected>), Response> {
    let mut rejected = parsed.rejected;
    let mut accepted = 0;

    // Split by owner, remembering each event's index in the body.
    let mut batches: Vec<(Vec<MetricEvent>, Vec<u32>)> = vec![(Vec::new(), Vec::new()); ctx.shards];
    for (ev, origin) in parsed.events.into_iter().zip(parsed.origin) {
        let (events, origins) = &mut batches[shard_for(&ev.metric_name, ctx.shards)];
        events.push(ev);
        origins.push(origin);
    }
    let mut calls = Vec::new();
    let mut local = None;
    for (to, (events, origins)) in batches.into_iter().enumerate() {
        if events.is_empty() {
            continue;
        }
        if to == ctx.id {
            local = Some((events, origins));
        } else {
            let ctx = Rc::clone(ctx);
            calls.push((
                origins,
                spawn_local(async move { ctx.call(to, Call::Ingest(events)).await }),
            ));
        }
    }
    let mut merge = |reply: Reply, origins: &[u32]| -> Result<(), Response> {
        match reply {
            Reply::Ingested {
                accepted: n,
                rejected: refused,
            } => {
                accepted += n;
                rejected.extend(refused.into_iter().map(|(i, r)| Rejected {
                    index: origins[i] as usize,
                    reason: r.reason().to_string(),
                }));
                Ok(())
            }
            Reply::Failed(reason) => Err(Response::error(503, &reason)),
            other => Err(Response::error(500, &format!("unexpected reply {other:?}"))),
        }
    };
    let mut failure = None;
    if let Some((events, origins)) = local {
        let reply = ctx.handle(Call::Ingest(events)).await;
        if let Err(r) = merge(reply, &origins) {
            failure = Some(r);
        }
    }
    for (origins, task) in calls {
        if let Err(r) = merge(task.await, &origins) {
            failure = Some(r);
        }
    }
    if let Some(response) = failure {
        return Err(response);
    }
    rejected.sort_by_key(|r| r.index);
    Ok((accepted, rejected))
}
