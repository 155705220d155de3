//! `WS /stream/{dashboard_id}`: a snapshot on connect, then one `update` frame per tick
//! with the widgets that changed, `dashboard` frames on edits, pings to find dead peers,
//! and a bounded, conflating outbox per connection so one slow client delays nobody.

pub mod frames;
pub mod hub;

use std::rc::Rc;
use std::time::{Duration, Instant};

use async_tungstenite::WebSocketStream;
use futures_util::StreamExt;
use glommio::net::TcpStream;
use tungstenite::Message;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use uuid::Uuid;

use self::frames::{Frame, WidgetSnapshot};
use self::hub::{Hub, Outbox};
use crate::api::Access;
use crate::http::{Request, Response};
use crate::node::mesh::{Call, Reply};
use crate::node::{ShardCtx, now_ms};

/// Buffers sized for many mostly idle sockets: clients send little (pongs, close).
fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(1024)
        .write_buffer_size(0)
        .max_write_buffer_size(4 * 1024 * 1024)
        .max_message_size(Some(64 * 1024))
        .max_frame_size(Some(64 * 1024))
}

/// Who may open a stream, decided before the upgrade.
pub fn accept(ctx: &ShardCtx, req: &Request) -> Result<Uuid, Response> {
    let Some(rest) = req.path.strip_prefix("/stream/") else {
        return Err(Response::error(
            404,
            &format!("no WebSocket endpoint at {}", req.path),
        ));
    };
    let token = req.query_param("token");
    if crate::api::allows(&ctx.config, Access::Read, token.as_deref().or(req.bearer())).is_err() {
        return Err(Response::error(
            401,
            "a read token is required (?token= or Authorization: Bearer)",
        ));
    }
    if let Some(origin) = &req.origin
        && !origin_allowed(origin, req.host.as_deref(), &ctx.config.allowed_origins)
    {
        return Err(Response::error(
            403,
            &format!("origin {origin} is not allowed"),
        ));
    }
    // An id that is not a UUID names no dashboard: the stream closes with 4404.
    Ok(Uuid::parse_str(rest).unwrap_or(Uuid::nil()))
}

/// Same-origin unless listed: the `Origin` host must equal `Host`, or the origin must be
/// in the allow-list.
fn origin_allowed(origin: &str, host: Option<&str>, allowed: &[String]) -> bool {
    if allowed
        .iter()
        .any(|a| a.trim_end_matches('/').eq_ignore_ascii_case(origin))
    {
        return true;
    }
    let origin_host = origin.split_once("://").map_or(origin, |(_, h)| h);
    host.is_some_and(|h| h.eq_ignore_ascii_case(origin_host))
}

async fn close(ws: &mut WebSocketStream<TcpStream>, code: u16, reason: &str) {
    let frame = CloseFrame {
        code: CloseCode::from(code),
        reason: reason.to_string().into(),
    };
    let _ = ws.close(Some(frame)).await;
}

/// Runs one stream until the client leaves, the dashboard is deleted, the client is too
/// slow or silent, or the node stops.
pub async fn session(ctx: Rc<ShardCtx>, dashboard_id: Uuid, mut stream: TcpStream) {
    let slow = Duration::from_millis(ctx.config.slow_client_timeout_ms);
    let _ = stream.set_write_timeout(Some(slow));
    let outbox = Rc::new(Outbox::new());
    let Some(dashboard) = Hub::join(&ctx, dashboard_id, &outbox).await else {
        let mut ws =
            WebSocketStream::from_raw_socket(stream, Role::Server, Some(ws_config())).await;
        close(&mut ws, 4404, "no such dashboard").await;
        return;
    };
    let snapshot = snapshot(&ctx, &dashboard).await;
    // The snapshot (large: it carries history) is written before the WebSocket state
    // exists, so the state's write buffer never grows to its size and stays small for
    // the life of the connection.
    let mut bytes = Vec::with_capacity(snapshot.len() + 10);
    let sent = tungstenite::protocol::frame::Frame::message(
        tungstenite::Bytes::from(snapshot),
        tungstenite::protocol::frame::coding::OpCode::Data(
            tungstenite::protocol::frame::coding::Data::Text,
        ),
        true,
    )
    .format(&mut bytes)
    .is_ok()
        && futures_lite::AsyncWriteExt::write_all(&mut stream, &bytes)
            .await
            .is_ok();
    drop(bytes);
    if sent {
        let ws = WebSocketStream::from_raw_socket(stream, Role::Server, Some(ws_config())).await;
        if let Some((code, reason)) = pump(&ctx, dashboard_id, &outbox, ws).await {
            tracing::debug!(shard = ctx.id, "stream closed: {code} {reason}");
        }
    }
    Hub::leave(&ctx, dashboard_id, &outbox).await;
}

/// The `snapshot` frame: every widget's value now and its history, from the owners.
async fn snapshot(ctx: &Rc<ShardCtx>, dashboard: &livedash_engine::Dashboard) -> String {
    let per_owner = hub::by_owner(dashboard.widgets.iter(), ctx.shards);
    let mut widgets: Vec<WidgetSnapshot> = Vec::with_capacity(dashboard.widgets.len());
    for (owner, ids) in per_owner.into_iter().enumerate() {
        if ids.is_empty() {
            continue;
        }
        if let Reply::Snapshot(mut part) = ctx.call(owner, Call::Snapshot(ids)).await {
            widgets.append(&mut part);
        }
    }
    let order = |id: &Uuid| dashboard.widgets.iter().position(|w| &w.widget_id == id);
    widgets.sort_by_key(|w| order(&w.current.widget_id));
    Frame::Snapshot {
        dashboard,
        widgets: &widgets,
    }
    .encode()
    .to_string()
}

/// Moves frames from the outbox to the socket until the stream ends; returns the close
/// code the server chose, if it chose one.
///
/// The loop waits on its outbox only. What the peer sends (pongs, a close) is read when a
/// keep-alive sweep wakes the loop, without waiting; a peer that went away is noticed then
/// or at the next failed write. Not keeping a read armed saves a poll re-arm per frame
/// sent, which matters with thousands of streams per shard.
async fn pump(
    ctx: &Rc<ShardCtx>,
    dashboard_id: Uuid,
    outbox: &Rc<Outbox>,
    mut ws: WebSocketStream<TcpStream>,
) -> Option<(u16, String)> {
    let ping_every = Duration::from_millis(ctx.config.ws_ping_interval_ms);
    loop {
        outbox.wake_rx.recv().await?;
        if outbox.take_ping() {
            while let Some(heard) = futures_lite::future::poll_once(ws.next()).await {
                match heard {
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return None,
                    Some(Ok(_)) => outbox.last_heard.set(Instant::now()),
                }
            }
            if outbox.last_heard.get().elapsed() > 2 * ping_every {
                outbox.close(1001, "no answer to pings");
            } else if ws.send(Message::Ping(Default::default())).await.is_err() {
                return Some((1008, "client too slow".into()));
            }
        }
        if let Some(outcome) = write_pending(ctx, dashboard_id, outbox, &mut ws).await {
            return outcome;
        }
    }
}

/// Sends the close the server decided on, or every queued frame. `Some` ends the stream.
async fn write_pending(
    ctx: &Rc<ShardCtx>,
    dashboard_id: Uuid,
    outbox: &Outbox,
    ws: &mut WebSocketStream<TcpStream>,
) -> Option<Option<(u16, String)>> {
    let too_slow = || Some(Some((1008, "client too slow".to_string())));
    if let Some(closing) = outbox.closing() {
        close(ws, closing.code, &closing.reason).await;
        return Some(Some((closing.code, closing.reason)));
    }
    loop {
        let frame = if outbox.take_resync() {
            let mut frames = ctx.hub.resync_frames(dashboard_id);
            let last = frames.pop();
            for f in frames {
                if ws.send(Message::Text(f)).await.is_err() {
                    return too_slow();
                }
            }
            last.map(|f| (f, now_ms()))
        } else {
            outbox.pop()
        };
        // Nothing queued: the stream goes on.
        let (frame, framed_at) = frame?;
        // The socket's write timeout is the slow-client limit: a client that takes
        // nothing for that long is dropped (a close frame cannot reach it anyway).
        if ws.send(Message::Text(frame)).await.is_err() {
            return too_slow();
        }
        ctx.hub.written(now_ms() - framed_at);
    }
}

#[cfg(test)]
mod tests {
    use super::origin_allowed;

    #[test]
    fn origins() {
        assert!(origin_allowed(
            "http://127.0.0.1:8080",
            Some("127.0.0.1:8080"),
            &[]
        ));
        assert!(!origin_allowed(
            "http://evil.example",
            Some("127.0.0.1:8080"),
            &[]
        ));
        let list = vec!["https://dash.example.com".to_string()];
        assert!(origin_allowed(
            "https://dash.example.com",
            Some("10.0.0.1:8080"),
            &list
        ));
        assert!(!origin_allowed(
            "https://other.example.com",
            Some("10.0.0.1:8080"),
            &list
        ));
    }
}
