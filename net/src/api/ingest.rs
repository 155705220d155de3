//! `POST /ingest`: parse the body (JSON or line protocol) on the receiving shard and hand
//! the events to the ingest service.

use std::rc::Rc;

use super::ApiError;
use crate::clock::now_ms;
use crate::http::{Request, Response};
use crate::parse::{self, Precision};
use crate::service::{Services, ingest};

pub async fn handle(svc: &Rc<Services>, req: &Request) -> Result<Response, ApiError> {
    let media = req.content_type.as_deref().map(|c| {
        c.split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase()
    });
    let parsed = match media.as_deref() {
        None | Some("application/json") => parse::json(&req.body),
        Some("text/plain") => {
            let precision = Precision::parse(req.query_param("precision").as_deref())
                .map_err(|reason| ApiError::new(400, reason))?;
            parse::line_protocol(&req.body, precision, now_ms())
        }
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
    let reply = ingest::dispatch(svc, parsed).await?;
    Ok(Response::json(200, &reply))
}
