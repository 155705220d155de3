//! Ingest over HTTP: `POST /ingest` (JSON or line protocol) and the InfluxDB write
//! endpoints (`POST /api/v2/write`, `POST /write`) that Telegraf and InfluxDB clients use
//! unchanged. Bodies may be gzip-compressed. A small body is parsed on the receiving shard;
//! a large or compressed one on the executor's blocking thread, so that its cost does not
//! hold up the shard's other connections. Then it goes to the ingest service.

use std::borrow::Cow;
use std::io::Read;
use std::rc::Rc;

use flate2::read::GzDecoder;
use livedash_engine::IngestReply;
use serde_json::json;

use super::ApiError;
use crate::clock::now_ms;
use crate::http::{Request, Response};
use crate::parse::{self, Parsed, Precision};
use crate::service::Services;
use crate::service::metrics::Format;

/// Bodies larger than this, and compressed ones, are parsed off the shard's thread.
const PARSE_ON_SHARD_UP_TO: usize = 256 * 1024;

thread_local! {
    /// One parse at a time goes to the shard's blocking threads, so the others there
    /// (the store's writes, the Kafka consumer's wait) are never all taken by parses;
    /// the rest wait here, as futures.
    static OFF_SHARD: Rc<glommio::sync::Semaphore> = Rc::new(glommio::sync::Semaphore::new(1));
}

/// How a body is read.
#[derive(Debug, Clone, Copy)]
enum Syntax {
    Json,
    Line(Precision),
}

/// `raw` as sent, or decompressed (`Content-Encoding: gzip`), at most `max` bytes.
fn decode<'a>(
    raw: &'a [u8],
    encoding: Option<&str>,
    max: usize,
) -> Result<Cow<'a, [u8]>, ApiError> {
    match encoding.map(str::trim) {
        None | Some("identity") => Ok(Cow::Borrowed(raw)),
        Some(e) if e.eq_ignore_ascii_case("gzip") => {
            let mut out = Vec::new();
            GzDecoder::new(raw)
                .take(max as u64 + 1)
                .read_to_end(&mut out)
                .map_err(|e| ApiError::new(400, format!("body is not valid gzip: {e}")))?;
            if out.len() > max {
                return Err(ApiError::new(
                    413,
                    format!("body is larger than {max} bytes once decompressed"),
                ));
            }
            Ok(Cow::Owned(out))
        }
        Some(other) => Err(ApiError::new(
            415,
            format!("content-encoding {other} is not supported; send gzip or none"),
        )),
    }
}

/// Decodes and parses the request's body (taken from it): on the shard when it is small
/// and not compressed, on the executor's blocking thread otherwise.
async fn parse(svc: &Rc<Services>, req: &mut Request, syntax: Syntax) -> Result<Parsed, ApiError> {
    let raw = std::mem::take(&mut req.body);
    let encoding = req.content_encoding.clone();
    let on_shard = raw.len() <= PARSE_ON_SHARD_UP_TO && encoding.is_none();
    let max = svc.config.max_body_bytes;
    let work = move || {
        let body = decode(&raw, encoding.as_deref(), max)?;
        match syntax {
            Syntax::Json => parse::json(&body, now_ms()),
            Syntax::Line(precision) => parse::line_protocol(&body, precision, now_ms()),
        }
        .map_err(|reason| ApiError::new(400, reason))
    };
    if on_shard {
        return work();
    }
    let turn = OFF_SHARD.with(Rc::clone);
    let _permit = turn.acquire_permit(1).await;
    glommio::executor().spawn_blocking(work).await
}

fn precision(req: &Request) -> Result<Precision, ApiError> {
    Precision::parse(req.query_param("precision").as_deref())
        .map_err(|reason| ApiError::new(400, reason))
}

/// `POST /ingest`: the answer counts what was accepted, unmatched and rejected.
pub async fn handle(svc: &Rc<Services>, req: &mut Request) -> Result<Response, ApiError> {
    let media = req.media_type();
    let format = match media.as_deref() {
        Some("text/plain") => Format::Line,
        _ => Format::Json,
    };
    svc.metrics.request(format, req.body.len());
    let syntax = match media.as_deref() {
        None | Some("application/json") => Syntax::Json,
        Some("text/plain") => Syntax::Line(precision(req)?),
        Some(other) => {
            return Err(ApiError::new(
                415,
                format!(
                    "content-type {other} is not supported; send application/json or \
                     text/plain (InfluxDB line protocol)"
                ),
            ));
        }
    };
    let parsed = parse(svc, req, syntax).await?;
    let reply = svc.submit(parsed).await?;
    Ok(Response::json(200, &reply))
}

/// `POST /api/v2/write` and `POST /write` (InfluxDB 2 and 1): line protocol whatever the
/// content type; `org`, `bucket` and `db` are accepted and ignored. 204 when every event
/// was accepted, as InfluxDB answers; 400 with InfluxDB's error shape (`code`,
/// `message`), plus ours (`error`, and the counts), when some were not.
pub async fn influx(svc: &Rc<Services>, req: &mut Request) -> Result<Response, ApiError> {
    svc.metrics.request(Format::Influx, req.body.len());
    let syntax = Syntax::Line(precision(req)?);
    let parsed = parse(svc, req, syntax).await?;
    let reply = svc.submit(parsed).await?;
    if reply.rejected_total == 0 {
        return Ok(Response::empty(204));
    }
    Ok(partial_write(&reply))
}

/// A 400 for a write some of whose events were refused: the others were applied.
fn partial_write(reply: &IngestReply) -> Response {
    let first = reply.rejected.first().map_or(String::new(), |r| {
        format!("; first: line {}: {}", r.index + 1, r.reason)
    });
    let message = format!(
        "partial write: {} events rejected, {} accepted{first}",
        reply.rejected_total, reply.accepted
    );
    Response::json(
        400,
        &json!({
            "code": "invalid",
            "message": message,
            "error": message,
            "accepted": reply.accepted,
            "unmatched": reply.unmatched,
            "rejected": reply.rejected,
            "rejected_total": reply.rejected_total,
        }),
    )
}
