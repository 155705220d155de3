//! Ingest over HTTP: `POST /ingest` (JSON or line protocol) and the InfluxDB write
//! endpoints (`POST /api/v2/write`, `POST /write`) that Telegraf and InfluxDB clients use
//! unchanged. Bodies may be gzip-compressed. Each is parsed on the receiving shard and
//! handed to the ingest service.

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

/// The body as sent, or decompressed (`Content-Encoding: gzip`), at most `max` bytes.
fn body(req: &Request, max: usize) -> Result<Cow<'_, [u8]>, ApiError> {
    match req.content_encoding.as_deref().map(str::trim) {
        None | Some("identity") => Ok(Cow::Borrowed(&req.body)),
        Some(e) if e.eq_ignore_ascii_case("gzip") => {
            let mut out = Vec::new();
            GzDecoder::new(&req.body[..])
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

fn precision(req: &Request) -> Result<Precision, ApiError> {
    Precision::parse(req.query_param("precision").as_deref())
        .map_err(|reason| ApiError::new(400, reason))
}

/// `POST /ingest`: the answer counts what was accepted, unmatched and rejected.
pub async fn handle(svc: &Rc<Services>, req: &Request) -> Result<Response, ApiError> {
    let media = req.media_type();
    let format = match media.as_deref() {
        Some("text/plain") => Format::Line,
        _ => Format::Json,
    };
    svc.metrics.request(format, req.body.len());
    let body = body(req, svc.config.max_body_bytes)?;
    let parsed = match media.as_deref() {
        None | Some("application/json") => parse::json(&body, now_ms()),
        Some("text/plain") => parse::line_protocol(&body, precision(req)?, now_ms()),
        Some(other) => {
            return Err(ApiError::new(
                415,
                format!(
                    "content-type {other} is not supported; send application/json or \
                     text/plain (InfluxDB line protocol)"
                ),
            ));
        }
    }
    .map_err(|reason| ApiError::new(400, reason))?;
    let reply = svc.submit(parsed).await?;
    Ok(Response::json(200, &reply))
}

/// `POST /api/v2/write` and `POST /write` (InfluxDB 2 and 1): line protocol whatever the
/// content type; `org`, `bucket` and `db` are accepted and ignored. 204 when every event
/// was accepted, as InfluxDB answers; 400 with InfluxDB's error shape (`code`,
/// `message`), plus ours (`error`, and the counts), when some were not.
pub async fn influx(svc: &Rc<Services>, req: &Request) -> Result<Response, ApiError> {
    svc.metrics.request(Format::Influx, req.body.len());
    let body = body(req, svc.config.max_body_bytes)?;
    let parsed: Parsed = parse::line_protocol(&body, precision(req)?, now_ms())
        .map_err(|reason| ApiError::new(400, reason))?;
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
