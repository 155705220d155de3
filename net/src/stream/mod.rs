//! The WebSocket front end, `WS /stream/{dashboard_id}`: a snapshot on connect, then one
//! `update` frame per tick with the widgets that changed, `dashboard` frames on edits,
//! pings to find dead peers, and a bounded, conflating outbox per connection so one slow
//! client delays nobody. The fan-out itself is the hub's (`service::hub`).

pub mod peer;

use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_lite::AsyncWriteExt;
use glommio::net::TcpStream;
use uuid::Uuid;

use self::peer::{Heard, Peer};
use crate::access::{self, Access};
use crate::clock::now_ms;
use crate::config::Config;
use crate::http::{Request, Response};
use crate::service::Services;
use crate::service::hub::Hub;
use crate::service::metrics::Stamp;
use crate::service::outbox::Outbox;
use crate::service::snapshots;

/// Who may open a stream, decided before the upgrade. `peers` are the URLs of the nodes
/// of the cluster (cluster mode), whose pages may stream from this node too.
pub fn accept(config: &Config, peers: &[String], req: &Request) -> Result<Uuid, Response> {
    let Some(rest) = req.path.strip_prefix("/stream/") else {
        return Err(Response::error(
            404,
            &format!("no WebSocket endpoint at {}", req.path),
        ));
    };
    let token = req.query_param("token");
    if access::allows(config, Access::Read, token.as_deref().or(req.bearer())).is_err() {
        return Err(Response::error(
            401,
            "a read token is required (?token= or Authorization: Bearer)",
        ));
    }
    let host = req.host.as_deref();
    access::check_host(config, host)
        .and_then(|()| access::check_origin(config, host, req.origin.as_deref(), || peers.to_vec()))
        .map_err(|why| Response::error(403, &why))?;
    // An id that is not a UUID names no dashboard: the stream closes with 4404.
    Ok(Uuid::parse_str(rest).unwrap_or(Uuid::nil()))
}

/// Sets the socket options the stream depends on: no blocking (reads at sweeps and the
/// hub's direct writes never wait), the slow-client limit as the write timeout, and a
/// bounded kernel send buffer (what a client that stopped reading pins; past it, frames
/// queue in the node, where they are conflated).
fn prepare_socket(stream: &TcpStream, config: &Config) -> std::io::Result<()> {
    stream.set_write_timeout(Some(Duration::from_millis(config.slow_client_timeout_ms)))?;
    let socket = socket2::SockRef::from(stream);
    socket.set_nonblocking(true)?;
    socket.set_send_buffer_size(config.stream_send_buffer_bytes)
}

/// Closes a stream that cannot go on, with `code` and `reason`.
async fn refuse(mut peer: Peer, mut stream: TcpStream, code: u16, reason: &str) {
    peer.close(&stream, code, reason);
    peer.send_replies(&mut stream).await;
}

/// Runs one stream until the client leaves, the dashboard is deleted, the client is too
/// slow or silent, a shard fails to answer, or the node stops.
pub async fn session(svc: Rc<Services>, dashboard_id: Uuid, mut stream: TcpStream) {
    let peer = Peer::with_budget(svc.config.budgets.stream_read_bytes);
    let outbox = Rc::new(Outbox::with_budget(svc.config.budgets.max_queued_bytes));
    // Setting up runs in a boxed future of its own, and so do the refusal and the leave:
    // what they hold is not part of the task that an idle stream keeps for its life.
    let opened = Box::pin(open(&svc, dashboard_id, &outbox, &mut stream)).await;
    let closed = match opened {
        Ok(()) => pump(&svc, dashboard_id, &outbox, stream, peer).await,
        Err(Some((code, reason))) => {
            Box::pin(refuse(peer, stream, code, &reason)).await;
            Some((code, reason))
        }
        // The client went away before its snapshot was written.
        Err(None) => None,
    };
    svc.metrics.closed(closed.as_ref().map(|(code, _)| *code));
    if let Some((code, reason)) = closed {
        tracing::debug!(shard = svc.id, "stream closed: {code} {reason}");
    }
    Box::pin(Hub::leave(&svc, dashboard_id, &outbox)).await;
}

/// Sets the socket up, joins the dashboard's room and writes the snapshot. An error with
/// a close code ends the stream with it; one without means the socket failed.
async fn open(
    svc: &Rc<Services>,
    dashboard_id: Uuid,
    outbox: &Rc<Outbox>,
    stream: &mut TcpStream,
) -> Result<(), Option<(u16, String)>> {
    if let Err(e) = prepare_socket(stream, &svc.config) {
        tracing::warn!(
            shard = svc.id,
            "stream socket options: {e}; the stream is closed with 1011 and its client may reconnect: nothing to do unless it repeats: then check --stream-send-buffer-bytes and --slow-client-timeout-ms, which set these options"
        );
        return Err(Some((1011, "cannot set up the stream".into())));
    }
    let dashboard = match Hub::join(svc, dashboard_id, outbox).await {
        Ok(Some(dashboard)) => dashboard,
        Ok(None) => return Err(Some((4404, "no such dashboard".into()))),
        Err(e) => return Err(Some((1011, e.to_string()))),
    };
    let snapshot = snapshots::snapshot(svc, &dashboard, Instant::now())
        .await
        .map_err(|e| Some((1011, e.to_string())))?;
    // The connection holds only the shared snapshot while a slow client reads it.
    drop(dashboard);
    crate::http::write_in_slices(stream, &snapshot)
        .await
        .map_err(|_| None)
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
    svc: &Rc<Services>,
    dashboard_id: Uuid,
    outbox: &Rc<Outbox>,
    stream: TcpStream,
    mut peer: Peer,
) -> Option<(u16, String)> {
    let ping_every = Duration::from_millis(svc.config.ws_ping_interval_ms);
    outbox.park(stream);
    loop {
        outbox.woken().await?;
        let mut stream = outbox.unpark()?;
        // The rest of a frame the hub began goes out before any other byte.
        if let Some((rest, stamp)) = outbox.take_tail() {
            if stream.write_all(&rest).await.is_err() {
                return Some((1008, "client too slow".into()));
            }
            Hub::written(svc, rest.len(), &stamp);
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
            } else if !peer.ping(&stream) {
                outbox.close(1002, "the connection can no longer be pinged");
            }
        }
        if let Some(closing) = outbox.closing() {
            peer.close(&stream, closing.code, &closing.reason);
            peer.send_replies(&mut stream).await;
            return Some((closing.code, closing.reason));
        }
        // The socket's write timeout is the slow-client limit: a client that takes
        // nothing for that long is dropped (a close frame cannot reach it anyway).
        if !peer.send_replies(&mut stream).await {
            return Some((1008, "client too slow".into()));
        }
        match write_pending(svc, dashboard_id, outbox, &mut stream).await {
            Ok(true) => {}
            Ok(false) => return Some((1008, "client too slow".into())),
            Err(e) => {
                let reason = e.to_string();
                peer.close(&stream, 1011, &reason);
                peer.send_replies(&mut stream).await;
                return Some((1011, reason));
            }
        }
        // Nothing is left to write: the hub may write to the socket again.
        outbox.park(stream);
    }
}

/// Writes every queued frame (or, after an overflow, the frames that resynchronise the
/// client). False if the socket failed; an error if the resync could not be encoded.
async fn write_pending(
    svc: &Rc<Services>,
    dashboard_id: Uuid,
    outbox: &Outbox,
    stream: &mut TcpStream,
) -> Result<bool, serde_json::Error> {
    loop {
        let frame = if outbox.take_resync() {
            let mut frames = svc.hub.resync_frames(dashboard_id)?;
            let last = frames.pop();
            for f in frames {
                if stream.write_all(&f).await.is_err() {
                    return Ok(false);
                }
            }
            last.map(|f| (f, Stamp::framed(now_ms())))
        } else {
            outbox.pop()
        };
        let Some((frame, stamp)) = frame else {
            return Ok(true);
        };
        if stream.write_all(&frame).await.is_err() {
            return Ok(false);
        }
        Hub::written(svc, frame.len(), &stamp);
    }
}
