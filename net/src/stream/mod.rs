//! `WS /stream/{dashboard_id}`: a snapshot on connect, then one `update` frame per tick
//! with the widgets that changed, `dashboard` frames on edits, pings to find dead peers,
//! and a bounded, conflating outbox per connection so one slow client delays nobody.

pub mod frames;
pub mod hub;

use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_lite::AsyncWriteExt;
use glommio::net::TcpStream;
use std::io::{ErrorKind, Read, Write};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{CloseFrame, Role, WebSocketConfig, WebSocketContext};
use tungstenite::{Bytes, Message};
use uuid::Uuid;

use self::frames::{Frame, WidgetSnapshot};
use self::hub::{Hub, Outbox};
use crate::api::Access;
use crate::http::{Request, Response};
use crate::node::mesh::{Call, Reply};
use crate::node::{ShardCtx, now_ms};

/// Limits for what a client may send (pongs, a close: little).
fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(1024)
        .write_buffer_size(0)
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

/// The client's side of the protocol: tungstenite's state, fed by reads that never wait.
/// What tungstenite answers (pongs, the close handshake) and the server's own control
/// frames collect in `replies`, which the writer sends in order with the data frames.
struct Peer {
    ws: WebSocketContext,
    replies: Vec<u8>,
}

/// The socket as tungstenite sees it: reads from the (non-blocking) socket, writes into
/// the replies buffer.
struct PeerIo<'a> {
    socket: socket2::SockRef<'a>,
    replies: &'a mut Vec<u8>,
}

impl Read for PeerIo<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        (&*self.socket).read(buf)
    }
}

impl Write for PeerIo<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.replies.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// What a read of everything the peer sent so far found.
#[derive(Debug, PartialEq)]
enum Heard {
    Nothing,
    Something,
    /// The peer closed, broke the protocol or went away.
    Gone,
}

impl Peer {
    fn new() -> Self {
        Self {
            ws: WebSocketContext::new(Role::Server, Some(ws_config())),
            replies: Vec::new(),
        }
    }

    fn io<'a>(&'a mut self, socket: &'a TcpStream) -> (&'a mut WebSocketContext, PeerIo<'a>) {
        let io = PeerIo {
            socket: socket2::SockRef::from(socket),
            replies: &mut self.replies,
        };
        (&mut self.ws, io)
    }

    /// Reads what the peer sent, without waiting.
    fn hear(&mut self, socket: &TcpStream) -> Heard {
        let (ws, mut io) = self.io(socket);
        let mut heard = Heard::Nothing;
        loop {
            match ws.read(&mut io) {
                Ok(Message::Close(_)) => {
                    // Queues the answer to the peer's close.
                    let _ = ws.flush(&mut io);
                    return Heard::Gone;
                }
                Ok(_) => heard = Heard::Something,
                Err(tungstenite::Error::Io(e)) if e.kind() == ErrorKind::WouldBlock => {
                    return heard;
                }
                Err(tungstenite::Error::Io(e)) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return Heard::Gone,
            }
        }
    }

    fn ping(&mut self, socket: &TcpStream) {
        let (ws, mut io) = self.io(socket);
        let _ = ws.write(&mut io, Message::Ping(Default::default()));
        let _ = ws.flush(&mut io);
    }

    fn close(&mut self, socket: &TcpStream, code: u16, reason: &str) {
        let frame = CloseFrame {
            code: CloseCode::from(code),
            reason: reason.to_string().into(),
        };
        let (ws, mut io) = self.io(socket);
        let _ = ws.close(&mut io, Some(frame));
    }

    /// Writes the queued replies; false if the socket failed or timed out.
    async fn send_replies(&mut self, socket: &mut TcpStream) -> bool {
        if self.replies.is_empty() {
            return true;
        }
        let sent = socket.write_all(&self.replies).await.is_ok();
        self.replies.clear();
        sent
    }
}

/// Runs one stream until the client leaves, the dashboard is deleted, the client is too
/// slow or silent, or the node stops.
pub async fn session(ctx: Rc<ShardCtx>, dashboard_id: Uuid, mut stream: TcpStream) {
    let slow = Duration::from_millis(ctx.config.slow_client_timeout_ms);
    let _ = stream.set_write_timeout(Some(slow));
    // Reads (at keep-alive sweeps) and the hub's direct writes must never wait; the
    // writer's own writes wait through the executor.
    let socket = socket2::SockRef::from(&stream);
    if socket.set_nonblocking(true).is_err() {
        return;
    }
    // Bounds what a client that stopped reading pins in kernel memory; past it, frames
    // queue in the node, where they are conflated.
    let _ = socket.set_send_buffer_size(ctx.config.stream_send_buffer_bytes);
    let mut peer = Peer::new();
    let outbox = Rc::new(Outbox::new());
    let Some(dashboard) = Hub::join(&ctx, dashboard_id, &outbox).await else {
        peer.close(&stream, 4404, "no such dashboard");
        peer.send_replies(&mut stream).await;
        return;
    };
    let snapshot = snapshot(&ctx, &dashboard).await;
    let sent = stream.write_all(&snapshot).await.is_ok();
    drop(snapshot);
    if sent && let Some((code, reason)) = pump(&ctx, dashboard_id, &outbox, stream, peer).await {
        tracing::debug!(shard = ctx.id, "stream closed: {code} {reason}");
    }
    Hub::leave(&ctx, dashboard_id, &outbox).await;
}

/// The `snapshot` frame: every widget's value now and its history, from the owners.
async fn snapshot(ctx: &Rc<ShardCtx>, dashboard: &livedash_engine::Dashboard) -> Bytes {
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
}

/// The stream's writer: sleeps until the hub queues what the socket did not take at once,
/// a keep-alive sweep or a close wakes it; returns the close code the server chose, if it
/// chose one.
///
/// While it sleeps, the socket sits in the outbox for the hub's direct writes. No read is
/// kept armed: what the peer sends (pongs, a close) is read at the next sweep, without
/// waiting, and a peer that went away is noticed then or at the next failed write. With
/// thousands of streams per shard, that saves a poll per frame and per socket.
async fn pump(
    ctx: &Rc<ShardCtx>,
    dashboard_id: Uuid,
    outbox: &Rc<Outbox>,
    stream: TcpStream,
    mut peer: Peer,
) -> Option<(u16, String)> {
    let ping_every = Duration::from_millis(ctx.config.ws_ping_interval_ms);
    outbox.socket.replace(Some(stream));
    loop {
        outbox.wake_rx.recv().await?;
        let mut stream = outbox.socket.borrow_mut().take()?;
        // The rest of a frame the hub began goes out before any other byte.
        if let Some((rest, framed_at)) = outbox.take_tail() {
            if stream.write_all(&rest).await.is_err() {
                return Some((1008, "client too slow".into()));
            }
            ctx.hub.written(now_ms() - framed_at);
        }
        if outbox.take_ping() {
            match peer.hear(&stream) {
                Heard::Gone => {
                    peer.send_replies(&mut stream).await;
                    return None;
                }
                Heard::Something => outbox.last_heard.set(Instant::now()),
                Heard::Nothing => {}
            }
            if outbox.last_heard.get().elapsed() > 2 * ping_every {
                outbox.close(1001, "no answer to pings");
            } else {
                peer.ping(&stream);
            }
        }
        if let Some(closing) = outbox.closing() {
            peer.close(&stream, closing.code, &closing.reason);
            peer.send_replies(&mut stream).await;
            return Some((closing.code, closing.reason));
        }
        // The socket's write timeout is the slow-client limit: a client that takes
        // nothing for that long is dropped (a close frame cannot reach it anyway).
        if !peer.send_replies(&mut stream).await
            || !write_pending(ctx, dashboard_id, outbox, &mut stream).await
        {
            return Some((1008, "client too slow".into()));
        }
        // Nothing is left to write: the hub may write to the socket again.
        outbox.socket.replace(Some(stream));
    }
}

/// Writes every queued frame (or, after an overflow, the frames that resynchronise the
/// client). False if the socket failed.
async fn write_pending(
    ctx: &Rc<ShardCtx>,
    dashboard_id: Uuid,
    outbox: &Outbox,
    stream: &mut TcpStream,
) -> bool {
    loop {
        let frame = if outbox.take_resync() {
            let mut frames = ctx.hub.resync_frames(dashboard_id);
            let last = frames.pop();
            for f in frames {
                if stream.write_all(&f).await.is_err() {
                    return false;
                }
            }
            last.map(|f| (f, now_ms()))
        } else {
            outbox.pop()
        };
        let Some((frame, framed_at)) = frame else {
            return true;
        };
        if stream.write_all(&frame).await.is_err() {
            return false;
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
