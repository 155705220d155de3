//! WebSocket clients: N streams over D dashboards, on a few glommio executors. For every
//! `update` frame they record the push delay (receive time - `sent_at`) and, per widget,
//! the end-to-end latency (receive time - `latest_event_time`).

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_tungstenite::tungstenite::Message;
use async_tungstenite::tungstenite::protocol::WebSocketConfig;
use futures_util::StreamExt;
use glommio::{LocalExecutorBuilder, Placement};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::ingest::{metric_name, now_ms};
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
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
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
        let body = json!({"name": format!("loadgen {d}"), "widgets": specs}).to_string();
        let mut request = agent
            .post(format!("{}/dashboards", target.trim_end_matches('/')))
            .header("Content-Type", "application/json");
        if let Some(t) = token {
            request = request.header("Authorization", format!("Bearer {t}"));
        }
        let mut response = request.send(body.as_bytes())?;
        let text = response.body_mut().read_to_string()?;
        if response.status().as_u16() != 201 {
            anyhow::bail!("creating a dashboard: {} {text}", response.status());
        }
        let v: Value = serde_json::from_str(&text)?;
        ids.push(v["dashboard_id"].as_str().unwrap_or_default().to_string());
    }
    Ok(ids)
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

fn record(stats: &Stats, text: &str) {
    let received = now_ms();
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
            stats.record(&stats.e2e, (received - t).max(0) as u64 * 1000);
        }
    }
}

async fn stream(
    url: String,
    addr: SocketAddr,
    source: Ipv4Addr,
    token: Option<String>,
    stats: Arc<Stats>,
) {
    let connect = || -> std::io::Result<glommio::net::TcpStream> {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
        socket.bind(&SocketAddr::V4(SocketAddrV4::new(source, 0)).into())?;
        socket.connect(&addr.into())?;
        socket.set_nonblocking(true)?;
        Ok(glommio::net::TcpStream::from(socket))
    };
    let Ok(tcp) = connect() else {
        Stats::count(&stats.errors, 1);
        return;
    };
    let url = match token {
        Some(t) => format!("{url}?token={t}"),
        None => url,
    };
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0);
    let Ok((mut ws, _)) = async_tungstenite::client_async_with_config(url, tcp, Some(config)).await
    else {
        Stats::count(&stats.errors, 1);
        return;
    };
    Stats::count(&stats.sockets_connected, 1);
    while let Some(msg) = ws.next().await {
        match msg {
            Ok(Message::Text(text)) => record(&stats, &text),
            Ok(Message::Close(_)) | Err(_) => break,
            Ok(_) => {}
        }
    }
    stats.sockets_connected.fetch_sub(1, Ordering::Relaxed);
}

/// Opens `sockets` streams spread over `dashboards` from `executors` threads; they run until
/// `stop` is set.
pub fn run(
    addr: SocketAddr,
    dashboards: Vec<String>,
    sockets: usize,
    executors: usize,
    token: Option<String>,
    stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<Vec<glommio::ExecutorJoinHandle<()>>> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let sources = sockets.div_ceil(STREAMS_PER_SOURCE).max(1);
    let executors = executors.max(1);
    let mut handles = Vec::with_capacity(executors);
    for e in 0..executors {
        let (dashboards, token, stats, stop) = (
            dashboards.clone(),
            token.clone(),
            Arc::clone(&stats),
            Arc::clone(&stop),
        );
        let handle = LocalExecutorBuilder::new(Placement::Fixed(e % cores))
            .io_memory(128 * 1024)
            .name("loadgen-ws")
            .spawn(move || async move {
                let mut tasks = Vec::new();
                let mine: Vec<usize> = (e..sockets).step_by(executors).collect();
                for wave in mine.chunks(100) {
                    for &i in wave {
                        let url =
                            format!("ws://{addr}/stream/{}", dashboards[i % dashboards.len()]);
                        let source = Ipv4Addr::new(127, 0, 0, 1 + (i % sources) as u8);
                        let (token, stats) = (token.clone(), Arc::clone(&stats));
                        tasks.push(glommio::spawn_local(stream(
                            url, addr, source, token, stats,
                        )));
                    }
                    // Pace the connects: let a wave get going before the next.
                    glommio::timer::sleep(Duration::from_millis(20)).await;
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                }
                while !stop.load(Ordering::Relaxed) {
                    glommio::timer::sleep(Duration::from_millis(50)).await;
                }
                drop(tasks);
            })
            .map_err(|e| anyhow::anyhow!("starting a client executor: {e}"))?;
        handles.push(handle);
    }
    Ok(handles)
}
