//! A peer to compare livedash's push with: the fan-out server a Rust engineer writes
//! first. tokio with one worker thread per core, tokio-tungstenite, one broadcast channel
//! per dashboard. On every tick (multiples of the interval) one task encodes an `update`
//! frame per dashboard, in livedash's JSON shape, and sends it on the dashboard's
//! channel; each connection's task receives it and writes it to its socket.
//!
//! It runs as a process of its own, as the node does (`PEER_FLAG` turns the calling
//! binary into it), so its sockets and CPU are counted apart from the clients'.

use std::collections::HashMap;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast::{self, error::RecvError};
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use livedash_loadgen::client::now_ms;

use crate::helper::Helper;

/// Hidden command-line flag that turns the calling binary into the peer server.
pub const PEER_FLAG: &str = "--peer-server";

/// Frames a slow connection may fall behind before it skips to the newest.
const CHANNEL: usize = 16;

/// The peer: `dashboards` ids, `widgets` per frame, the tick interval, worker threads,
/// and how long it may run at most.
#[derive(Debug, Clone)]
pub struct PeerPlan {
    pub dashboards: Vec<String>,
    pub widgets: usize,
    pub interval_ms: i64,
    pub workers: usize,
    pub limit: Duration,
}

/// The peer running in a child process; stopped when dropped.
#[derive(Debug)]
pub struct Peer {
    helper: Helper,
    pub addr: std::net::SocketAddr,
}

impl Peer {
    /// Starts `exe` (which must call `server_main` on `PEER_FLAG`) and waits for its port.
    pub fn start(exe: &std::path::Path, plan: &PeerPlan) -> Result<Self, String> {
        let args = [
            plan.widgets.to_string(),
            plan.interval_ms.to_string(),
            plan.workers.to_string(),
            plan.limit.as_secs().to_string(),
            plan.dashboards.join(","),
        ];
        let helper = Helper::start(exe, PEER_FLAG, &args, "peer")?;
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], helper.port));
        Ok(Self { helper, addr })
    }

    pub fn pid(&self) -> u32 {
        self.helper.pid()
    }
}

/// Parses the arguments after `PEER_FLAG`.
pub fn peer_plan(args: &[String]) -> Result<PeerPlan, String> {
    let n = |i: usize| -> Result<u64, String> {
        args.get(i)
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| format!("{PEER_FLAG}: argument {} missing or not a number", i + 1))
    };
    Ok(PeerPlan {
        widgets: n(0)? as usize,
        interval_ms: (n(1)? as i64).max(1),
        workers: (n(2)? as usize).max(1),
        limit: Duration::from_secs(n(3)?),
        dashboards: args
            .get(4)
            .map(|d| d.split(',').map(str::to_string).collect())
            .unwrap_or_default(),
    })
}

/// The peer process: listens on loopback, prints its port, serves until killed or until
/// its time limit.
pub fn server_main(plan: PeerPlan) -> Result<(), String> {
    let limit = plan.limit;
    std::thread::spawn(move || {
        std::thread::sleep(limit);
        eprintln!("peer: still running after {limit:?}, stopping");
        std::process::exit(1);
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(plan.workers)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async move {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| e.to_string())?;
        let port = listener.local_addr().map_err(|e| e.to_string())?.port();
        println!("{port}");
        std::io::stdout().flush().map_err(|e| e.to_string())?;
        let channels: Arc<HashMap<String, broadcast::Sender<Utf8Bytes>>> = Arc::new(
            plan.dashboards
                .iter()
                .map(|d| (d.clone(), broadcast::channel(CHANNEL).0))
                .collect(),
        );
        tokio::spawn(ticker(
            Arc::clone(&channels),
            plan.widgets,
            plan.interval_ms,
        ));
        loop {
            let (tcp, _) = listener.accept().await.map_err(|e| e.to_string())?;
            let _ = tcp.set_nodelay(true);
            let channels = Arc::clone(&channels);
            tokio::spawn(async move {
                let _ = serve(tcp, &channels).await;
            });
        }
    })
}

/// One connection: the handshake, a snapshot, then every frame of its dashboard.
// The handshake callback's error type is tungstenite's.
#[allow(clippy::result_large_err)]
async fn serve(
    tcp: TcpStream,
    channels: &HashMap<String, broadcast::Sender<Utf8Bytes>>,
) -> Result<(), tokio_tungstenite::tungstenite::Error> {
    let mut path = String::new();
    let ws = tokio_tungstenite::accept_hdr_async(tcp, |req: &Request, res: Response| {
        path = req.uri().path().to_string();
        Ok(res)
    })
    .await?;
    let id = path.trim_start_matches("/stream/").to_string();
    let (mut sink, mut incoming) = ws.split();
    let Some(channel) = channels.get(&id) else {
        return sink.close().await;
    };
    let mut rx = channel.subscribe();
    let snapshot = json!({"type": "snapshot", "dashboard": {"dashboard_id": id, "widgets": []}, "widgets": []});
    sink.send(Message::text(snapshot.to_string())).await?;
    loop {
        tokio::select! {
            frame = rx.recv() => match frame {
                Ok(text) => sink.send(Message::Text(text)).await?,
                Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => return Ok(()),
            },
            message = incoming.next() => match message {
                Some(Ok(Message::Close(_)) | Err(_)) | None => return Ok(()),
                Some(Ok(_)) => {}
            },
        }
    }
}

/// Every interval, on multiples of it: one frame per dashboard, encoded once.
async fn ticker(
    channels: Arc<HashMap<String, broadcast::Sender<Utf8Bytes>>>,
    widgets: usize,
    interval_ms: i64,
) {
    let ids: HashMap<&String, Vec<String>> = channels
        .keys()
        .map(|d| {
            let ids = (0..widgets)
                .map(|_| uuid::Uuid::new_v4().to_string())
                .collect();
            (d, ids)
        })
        .collect();
    for seq in 1u64.. {
        let now = now_ms();
        let tick = (now.div_euclid(interval_ms) + 1) * interval_ms;
        tokio::time::sleep(Duration::from_millis((tick - now) as u64)).await;
        for (d, tx) in channels.iter() {
            let Some(widget_ids) = ids.get(d) else {
                continue;
            };
            let updates: Vec<_> = widget_ids
                .iter()
                .enumerate()
                .map(|(w, id)| {
                    json!({
                        "widget_id": id,
                        "value": (seq * 25 + w as u64 * 7) as f64 * 12.5,
                        "window_end": tick + 1000,
                        "latest_event_time": tick - 137,
                        "stale": false,
                    })
                })
                .collect();
            let frame =
                json!({"type": "update", "seq": seq, "sent_at": now_ms(), "widgets": updates});
            // No subscriber yet is not an error.
            let _ = tx.send(Utf8Bytes::from(frame.to_string()));
        }
    }
}
