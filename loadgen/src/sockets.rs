//! WebSocket clients: N streams over D dashboards and over the nodes given, on a few
//! threads with an epoll loop each. For every `update` frame they record the push delay
//! (receive time - `sent_at`) and, per widget, the freshness (receive time -
//! `latest_event_time`); a sample of them follows every event to the frame that first
//! shows it (`visible`). A stream that closes reconnects to the next node, as the web UI
//! does, and the gap between its last update before and its first update after is
//! recorded.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use serde::Deserialize;
use serde_json::{Value, json};
use tungstenite::client::client_with_config;
use tungstenite::handshake::client::ClientHandshake;
use tungstenite::handshake::{HandshakeError, MidHandshake};
use tungstenite::protocol::WebSocketConfig;
use tungstenite::{Message, WebSocket};

use livedash_engine::NewDashboard;

use crate::client::{self, now_ms, target_addr};
use crate::ingest::metric_name;
use crate::stats::Stats;

/// Source addresses rotate over 127.0.0.x past this many streams, so one address never
/// runs out of ephemeral ports.
const STREAMS_PER_SOURCE: usize = 20_000;

/// Creates `count` dashboards of `widgets` count widgets each (over the producers'
/// metrics); returns their ids.
pub fn create_dashboards(
    target: &str,
    token: Option<&str>,
    count: usize,
    widgets: usize,
    metrics: usize,
    refresh_s: f64,
) -> anyhow::Result<Vec<String>> {
    let mut client =
        client::Client::connect(target_addr(target)?)?.with_token_opt(token.map(str::to_string));
    let mut ids = Vec::with_capacity(count);
    for d in 0..count {
        let specs: Vec<Value> = (0..widgets)
            .map(|w| {
                json!({
                    "metric_name": metric_name((d * widgets + w) % metrics.max(1)),
                    "aggregation": "count", "window_seconds": 60,
                    "refresh_interval_seconds": refresh_s,
                })
            })
            .collect();
        let new = NewDashboard {
            name: format!("loadgen {d}"),
            layout: Value::Null,
            widgets: serde_json::from_value(Value::Array(specs))?,
        };
        let dashboard = client
            .create_dashboard(&new)
            .map_err(|e| anyhow::anyhow!("creating a dashboard: {e}"))?;
        ids.push(dashboard.dashboard_id.to_string());
    }
    Ok(ids)
}

/// Checks that dashboard `id` exists on `target`, so a wrong id is reported at once.
pub fn check_dashboard(target: &str, token: Option<&str>, id: &str) -> anyhow::Result<()> {
    let mut client =
        client::Client::connect(target_addr(target)?)?.with_token_opt(token.map(str::to_string));
    let r = client.send("GET", &format!("/dashboards/{id}"), "application/json", b"")?;
    match r.status {
        200 => Ok(()),
        404 => anyhow::bail!("dashboard {id} does not exist on {target}"),
        status => anyhow::bail!(
            "dashboard {id} on {target}: HTTP {status}: {}",
            String::from_utf8_lossy(&r.body)
        ),
    }
}

#[derive(Deserialize)]
struct Update {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    sent_at: Option<i64>,
    #[serde(default)]
    widgets: Vec<UpdatedWidget>,
}

#[derive(Deserialize)]
struct UpdatedWidget {
    latest_event_time: Option<i64>,
}

/// Records the push delay and freshness of an `update` frame of stream `index`, and
/// what a followed stream's frames show.
pub fn record(stats: &Stats, index: usize, text: &str) {
    let received = now_ms();
    if let Some(v) = stats.visible.get() {
        v.frame(stats, index, text);
    }
    let Ok(frame) = serde_json::from_str::<Update>(text) else {
        return;
    };
    if frame.kind != "update" || !stats.measuring() {
        return;
    }
    Stats::count(&stats.updates_received, 1);
    if let Some(sent) = frame.sent_at {
        stats.record(&stats.push, (received - sent).max(0) as u64 * 1000);
    }
    for w in frame.widgets {
        if let Some(t) = w.latest_event_time {
            stats.record(&stats.freshness, (received - t).max(0) as u64 * 1000);
        }
    }
}

/// What a thread does with each text frame a stream receives, given the stream's index.
pub type OnText = Arc<dyn Fn(usize, &str) + Send + Sync>;

/// Where the streams connect and what they do.
#[derive(Clone)]
pub struct Plan {
    /// The nodes: stream `i` starts on `addrs[i % n]`.
    pub addrs: Vec<SocketAddr>,
    pub dashboards: Vec<String>,
    pub sockets: usize,
    /// Client threads, each with its own event loop.
    pub threads: usize,
    pub token: Option<String>,
    /// Counts connected streams and errors.
    pub stats: Arc<Stats>,
    pub on_text: OnText,
}

impl std::fmt::Debug for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plan")
            .field("addrs", &self.addrs)
            .field("dashboards", &self.dashboards.len())
            .field("sockets", &self.sockets)
            .field("threads", &self.threads)
            .finish_non_exhaustive()
    }
}

/// One stream on a thread's event loop.
enum Client {
    Handshaking(MidHandshake<ClientHandshake<TcpStream>>),
    Open(WebSocket<TcpStream>),
    Done,
}

/// First wait before a closed stream reconnects (doubling, with jitter, to `RETRY_MAX`).
const RETRY_MIN: Duration = Duration::from_millis(250);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// A stream and what it needs to come back after a close.
struct Stream {
    client: Client,
    /// The stream's index (its dashboard and first node follow from it).
    index: usize,
    /// The node it uses now, an index into the plan's addresses.
    node: usize,
    last_update: Option<Instant>,
    /// Closed: the last update before the close, for the gap.
    gap_from: Option<Instant>,
    retry_at: Option<Instant>,
    retries: u32,
}

impl Stream {
    /// Waits (doubling, with jitter) before trying again, on the next node.
    fn back_off(&mut self, now: Instant, nodes: usize) {
        let wait = RETRY_MIN
            .saturating_mul(1 << self.retries.min(5))
            .min(RETRY_MAX);
        self.retry_at = Some(now + jittered(wait, self.index, self.retries));
        self.retries += 1;
        self.node = (self.node + 1) % nodes.max(1);
    }
}

/// True for an `update` frame (the server writes the type first).
fn is_update(text: &str) -> bool {
    text.starts_with("{\"type\":\"update\"")
}

/// Connects one socket from `source` (on loopback the connection is made at once), then
/// makes it non-blocking.
fn connect(addr: SocketAddr, source: Ipv4Addr) -> std::io::Result<TcpStream> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    socket.bind(&SocketAddr::V4(SocketAddrV4::new(source, 0)).into())?;
    socket.connect(&addr.into())?;
    socket.set_nonblocking(true)?;
    Ok(TcpStream::from_std(std::net::TcpStream::from(socket)))
}

impl Client {
    /// Advances the stream after its socket became ready; returns false once it ended.
    fn ready(
        &mut self,
        index: usize,
        stats: &Stats,
        on_text: &OnText,
        updated: &mut Option<Instant>,
    ) -> bool {
        loop {
            match std::mem::replace(self, Client::Done) {
                Client::Handshaking(mid) => match mid.handshake() {
                    Ok((ws, _)) => {
                        Stats::count(&stats.sockets_connected, 1);
                        stats.reached.store(true, Ordering::Relaxed);
                        *self = Client::Open(ws);
                        // Frames may already wait behind the handshake's response.
                    }
                    Err(HandshakeError::Interrupted(mid)) => {
                        *self = Client::Handshaking(mid);
                        return true;
                    }
                    Err(HandshakeError::Failure(e)) => {
                        refused(stats, &e);
                        Stats::count(&stats.errors, 1);
                        return false;
                    }
                },
                Client::Open(mut ws) => {
                    // Edge-triggered: read until the socket is drained.
                    loop {
                        match ws.read() {
                            Ok(Message::Text(text)) => {
                                if is_update(&text) {
                                    *updated = Some(Instant::now());
                                }
                                on_text(index, &text);
                            }
                            Ok(Message::Close(frame)) => {
                                // 4xxx: the node will not serve this stream (no such
                                // dashboard, deleted): trying again cannot help.
                                if let Some(f) =
                                    frame.filter(|f| (4000..5000).contains(&u16::from(f.code)))
                                {
                                    stats.fail(format!(
                                        "the node closed a stream: {} {}",
                                        u16::from(f.code),
                                        f.reason
                                    ));
                                }
                                break;
                            }
                            Ok(_) => {}
                            Err(tungstenite::Error::Io(e))
                                if e.kind() == std::io::ErrorKind::WouldBlock =>
                            {
                                // Pongs the read queued go out now, or at the next event.
                                let _ = ws.flush();
                                *self = Client::Open(ws);
                                return true;
                            }
                            Err(_) => break,
                        }
                    }
                    stats.sockets_connected.fetch_sub(1, Ordering::Relaxed);
                    return false;
                }
                Client::Done => return false,
            }
        }
    }
}

/// Opens stream `index` to node `node`, registered under `token`.
fn open(plan: &Plan, poll: &Poll, index: usize, node: usize, token: usize) -> Client {
    let sources = plan.sockets.div_ceil(STREAMS_PER_SOURCE).max(1);
    let source = Ipv4Addr::new(127, 0, 0, 1 + (index % sources) as u8);
    let addr = plan.addrs[node];
    let mut url = format!(
        "ws://{addr}/stream/{}",
        plan.dashboards[index % plan.dashboards.len()]
    );
    if let Some(t) = &plan.token {
        url = format!("{url}?token={t}");
    }
    let opened = connect(addr, source).and_then(|mut tcp| {
        poll.registry().register(
            &mut tcp,
            Token(token),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        Ok(tcp)
    });
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0);
    let tcp = match opened {
        Ok(tcp) => tcp,
        Err(e) => {
            Stats::count(&plan.stats.errors, 1);
            if plan.addrs.len() == 1 && !plan.stats.reached.load(Ordering::Relaxed) {
                plan.stats.fail(format!("cannot reach {addr}: {e}"));
            }
            return Client::Done;
        }
    };
    match client_with_config(url, tcp, Some(config)) {
        Ok((ws, _)) => {
            Stats::count(&plan.stats.sockets_connected, 1);
            plan.stats.reached.store(true, Ordering::Relaxed);
            Client::Open(ws)
        }
        Err(HandshakeError::Interrupted(mid)) => Client::Handshaking(mid),
        Err(HandshakeError::Failure(e)) => {
            refused(&plan.stats, &e);
            Stats::count(&plan.stats.errors, 1);
            Client::Done
        }
    }
}

/// A handshake the node answered with a client error (no token, a wrong one): the run
/// cannot go on.
fn refused(stats: &Stats, e: &tungstenite::Error) {
    if let tungstenite::Error::Http(response) = e
        && response.status().is_client_error()
    {
        let body = response
            .body()
            .as_deref()
            .map(String::from_utf8_lossy)
            .unwrap_or_default();
        stats.fail(format!(
            "the node refused a stream: HTTP {}: {}",
            response.status().as_u16(),
            body.trim()
        ));
    }
}

/// A wait in [base, 1.5 base) that differs from stream to stream and try to try.
fn jittered(base: Duration, index: usize, retries: u32) -> Duration {
    let spread = (index as u64).wrapping_mul(2_654_435_761) ^ (u64::from(retries) * 40_503);
    base + base.mul_f64((spread % 1000) as f64 / 2000.0)
}

/// One client thread: opens `mine` (stream indexes) in waves and serves them on one
/// epoll loop until `stop` is set; a stream that closes comes back on the next node.
fn client_thread(plan: &Plan, mine: &[usize], stop: &AtomicBool) -> std::io::Result<()> {
    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(1024);
    let mut streams: Vec<Stream> = Vec::with_capacity(mine.len());
    let mut waves = mine.chunks(100);
    let mut next_wave = Instant::now();
    let nodes = plan.addrs.len().max(1);
    while !stop.load(Ordering::Relaxed) {
        // Pace the connects: let a wave get going before the next.
        if Instant::now() >= next_wave
            && let Some(wave) = waves.next()
        {
            for &index in wave {
                let node = index % nodes;
                let client = open(plan, &poll, index, node, streams.len());
                let mut stream = Stream {
                    client,
                    index,
                    node,
                    last_update: None,
                    gap_from: None,
                    retry_at: None,
                    retries: 0,
                };
                if matches!(stream.client, Client::Done) {
                    // Refused at once: tried again on the next node.
                    stream.back_off(Instant::now(), nodes);
                }
                streams.push(stream);
            }
            next_wave = Instant::now() + Duration::from_millis(20);
        }
        poll.poll(&mut events, Some(Duration::from_millis(20)))?;
        for event in &events {
            let Some(s) = streams.get_mut(event.token().0) else {
                continue;
            };
            let before = s.last_update;
            let mut updated = None;
            let alive = s
                .client
                .ready(s.index, &plan.stats, &plan.on_text, &mut updated);
            if let Some(at) = updated {
                s.last_update = Some(at);
                if let Some(from) = s.gap_from.take() {
                    // Back, and updates flow again: one reconnect, one gap.
                    Stats::count(&plan.stats.reconnects, 1);
                    plan.stats
                        .record(&plan.stats.gap, at.duration_since(from).as_micros() as u64);
                }
                s.retries = 0;
            }
            if !alive {
                s.client = Client::Done;
                // Reconnect to the next node; the gap runs from the last update.
                if s.gap_from.is_none() {
                    s.gap_from = s.last_update.or(before);
                }
                s.back_off(Instant::now(), nodes);
            }
        }
        let now = Instant::now();
        for (token, s) in streams.iter_mut().enumerate() {
            if s.retry_at.is_some_and(|at| at <= now) {
                s.retry_at = None;
                s.client = open(plan, &poll, s.index, s.node, token);
                if matches!(s.client, Client::Done) {
                    s.back_off(now, nodes);
                }
            }
        }
    }
    Ok(())
}

/// Opens `plan.sockets` streams spread over the dashboards from `plan.threads` threads,
/// each serving its share on one epoll loop (as a browser's network thread does); they
/// run until `stop` is set.
pub fn run(plan: Plan, stop: Arc<AtomicBool>) -> anyhow::Result<Vec<JoinHandle<()>>> {
    let threads = plan.threads.max(1);
    let mut handles = Vec::with_capacity(threads);
    for t in 0..threads {
        let (plan, stop) = (plan.clone(), Arc::clone(&stop));
        let mine: Vec<usize> = (t..plan.sockets).step_by(threads).collect();
        let handle = std::thread::Builder::new()
            .name("loadgen-ws".into())
            .spawn(move || {
                if let Err(e) = client_thread(&plan, &mine, &stop) {
                    eprintln!("a client thread stopped: {e}");
                    Stats::count(&plan.stats.errors, 1);
                }
            })?;
        handles.push(handle);
    }
    Ok(handles)
}
