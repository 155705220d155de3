//! Dashboard streams over a real WebSocket client, against the real binary on loopback.
//! Helpers outside `#[test]` functions unwrap too: a failure there is a test failure.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{ReplyExt, Server, create_dashboard, now_ms};
use livedash_engine::shard_for;
use serde_json::{Value, json};
use tungstenite::protocol::frame::FrameSocket;
use tungstenite::protocol::frame::coding::{CloseCode, Control, Data, OpCode};
use tungstenite::{Message, WebSocket};

type Ws = WebSocket<TcpStream>;

/// The timing check and the flood test do not run at the same time: the flood would
/// measure the machine, not the node.
static HEAVY: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn exclusive() -> std::sync::MutexGuard<'static, ()> {
    HEAVY
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn connect(server: &Server, path: &str) -> Ws {
    let stream = TcpStream::connect(server.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let url = format!("ws://{}{path}", server.addr);
    let (ws, response) = tungstenite::client(url.as_str(), stream).unwrap();
    assert_eq!(response.status(), 101);
    ws
}

/// The next JSON text frame (pings are answered by the library).
fn next_frame(ws: &mut Ws) -> Value {
    loop {
        match ws.read().unwrap() {
            Message::Text(t) => return serde_json::from_str(&t).unwrap(),
            Message::Close(c) => panic!("closed: {c:?}"),
            _ => {}
        }
    }
}

/// Reads frames until `pred` holds for one; panics after `limit`.
fn wait_for(ws: &mut Ws, limit: Duration, mut pred: impl FnMut(&Value) -> bool) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        assert!(
            Instant::now() < deadline,
            "no matching frame within {limit:?}"
        );
        let f = next_frame(ws);
        if pred(&f) {
            return f;
        }
    }
}

fn close_code(ws: &mut Ws) -> Option<CloseCode> {
    loop {
        match ws.read() {
            Ok(Message::Close(c)) => return c.map(|c| c.code),
            Ok(_) => {}
            Err(_) => return None,
        }
    }
}

/// Two metrics, one owned by each of two shards.
fn metric_per_shard() -> [String; 2] {
    let find = |shard| {
        (0..)
            .map(|i| format!("stream.metric.{i}"))
            .find(|m| shard_for(m, 2) == shard)
            .unwrap()
    };
    [find(0), find(1)]
}

fn widget(metric: &str, agg: &str, refresh: f64) -> Value {
    json!({"metric_name": metric, "aggregation": agg, "window_seconds": 60, "refresh_interval_seconds": refresh})
}

fn update_of(frame: &Value, widget_id: &str) -> Option<Value> {
    (frame["type"] == "update")
        .then(|| {
            frame["widgets"]
                .as_array()?
                .iter()
                .find(|w| w["widget_id"] == widget_id)
                .cloned()
        })
        .flatten()
}

#[test]
fn snapshot_then_updates_across_shards() {
    let _alone = exclusive();
    let server = Server::start(&["--shards", "2"]);
    let mut http = server.client();
    let [a, b] = metric_per_shard();
    let d = create_dashboard(
        &mut http,
        "live",
        json!([widget(&a, "sum", 0.2), widget(&b, "max", 0.2)]),
    );
    let id = d["dashboard_id"].as_str().unwrap();
    let (wa, wb) = (
        d["widgets"][0]["widget_id"].as_str().unwrap(),
        d["widgets"][1]["widget_id"].as_str().unwrap(),
    );
    let now = now_ms();
    http.json(
        "POST",
        "/ingest",
        &json!([
            {"metric_name": a, "value": 2, "event_time": now},
            {"metric_name": b, "value": 7, "event_time": now}
        ]),
    );
    std::thread::sleep(Duration::from_millis(500));

    // Whichever shard takes the socket, one of the two widgets is owned by the other one.
    let mut ws = connect(&server, &format!("/stream/{id}"));
    let snap = next_frame(&mut ws);
    assert_eq!(snap["type"], "snapshot");
    assert_eq!(snap["dashboard"], d);
    let widgets = snap["widgets"].as_array().unwrap();
    assert_eq!(widgets.len(), 2);
    assert_eq!(
        (
            widgets[0]["widget_id"].as_str(),
            widgets[0]["value"].as_f64()
        ),
        (Some(wa), Some(2.0))
    );
    assert_eq!(
        (
            widgets[1]["widget_id"].as_str(),
            widgets[1]["value"].as_f64()
        ),
        (Some(wb), Some(7.0))
    );
    assert_eq!(widgets[0]["stale"], json!(false));
    let history = widgets[0]["history"].as_array().unwrap();
    assert!(!history.is_empty(), "history is drawn at once");
    assert_eq!(history.last().unwrap()[1], json!(2.0));

    // New events reach the client within the refresh interval plus 200 ms.
    for (metric, widget_id, value, expect) in [(&a, wa, 3.0, 5.0), (&b, wb, 9.0, 9.0)] {
        let sent = Instant::now();
        let r = http.json(
            "POST",
            "/ingest",
            &json!([{"metric_name": metric, "value": value, "event_time": now_ms()}]),
        );
        assert_eq!(r.json()["accepted"], json!(1));
        let f = wait_for(&mut ws, Duration::from_secs(5), |f| {
            update_of(f, widget_id).is_some_and(|w| w["value"].as_f64() == Some(expect))
        });
        let elapsed = sent.elapsed();
        assert!(
            elapsed <= Duration::from_millis(400),
            "update took {elapsed:?}"
        );
        assert!(f["seq"].as_u64().unwrap() >= 1);
        assert!(f["sent_at"].as_i64().unwrap() >= now);
        let w = update_of(&f, widget_id).unwrap();
        assert!(w["latest_event_time"].as_i64().unwrap() >= now);
    }

    // SIGTERM with a stream open: the stream is closed with 1001 and the node exits 0.
    drop(http);
    let (status, dir) = server.terminate();
    assert!(status.success(), "exit status {status}");
    assert_eq!(close_code(&mut ws), Some(CloseCode::Away));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn edits_stream_live_and_delete_closes_with_4410() {
    let server = Server::start(&["--shards", "2"]);
    let mut http = server.client();
    let [a, b] = metric_per_shard();
    let d = create_dashboard(&mut http, "edit", json!([widget(&a, "count", 0.2)]));
    let id = d["dashboard_id"].as_str().unwrap().to_string();
    let mut ws = connect(&server, &format!("/stream/{id}"));
    assert_eq!(next_frame(&mut ws)["type"], "snapshot");

    let r = http.json(
        "PATCH",
        &format!("/dashboards/{id}/widgets"),
        &json!({"add": [widget(&b, "sum", 0.2)]}),
    );
    assert_eq!(r.status, 200);
    let added = r.json()["widgets"][1]["widget_id"]
        .as_str()
        .unwrap()
        .to_string();
    let f = wait_for(&mut ws, Duration::from_secs(5), |f| {
        f["type"] == "dashboard"
    });
    assert_eq!(f["dashboard"]["widgets"].as_array().unwrap().len(), 2);
    http.json(
        "POST",
        "/ingest",
        &json!([{"metric_name": b, "value": 4, "event_time": now_ms()}]),
    );
    wait_for(&mut ws, Duration::from_secs(5), |f| {
        update_of(f, &added).is_some_and(|w| w["value"].as_f64() == Some(4.0))
    });

    let first = d["widgets"][0]["widget_id"].as_str().unwrap().to_string();
    let r = http.json(
        "PATCH",
        &format!("/dashboards/{id}/widgets"),
        &json!({"remove": [first]}),
    );
    assert_eq!(r.status, 200);
    wait_for(&mut ws, Duration::from_secs(5), |f| {
        f["type"] == "dashboard" && f["dashboard"]["widgets"].as_array().unwrap().len() == 1
    });
    // The removed widget no longer streams.
    http.json("POST", "/ingest", &json!([{"metric_name": a, "value": 1, "event_time": now_ms()}, {"metric_name": b, "value": 1, "event_time": now_ms()}]));
    let f = wait_for(&mut ws, Duration::from_secs(5), |f| {
        update_of(f, &added).is_some()
    });
    assert!(update_of(&f, &first).is_none());

    assert_eq!(http.delete(&format!("/dashboards/{id}")).status, 204);
    assert_eq!(close_code(&mut ws), Some(CloseCode::from(4410)));
}

#[test]
fn refusals() {
    let server = Server::start(&["--read-token", "rt"]);
    let mut http = server.client().with_token("rt");
    let _ = &mut http;
    // Without the token the upgrade is refused with 401.
    let stream = TcpStream::connect(server.addr).unwrap();
    let url = format!("ws://{}/stream/{}", server.addr, uuid::Uuid::new_v4());
    match tungstenite::client(url.as_str(), stream) {
        Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(r))) => {
            assert_eq!(r.status(), 401)
        }
        other => panic!("expected 401, got {other:?}"),
    }
    // With it, an unknown dashboard closes with 4404.
    let mut ws = connect(
        &server,
        &format!("/stream/{}?token=rt", uuid::Uuid::new_v4()),
    );
    assert_eq!(close_code(&mut ws), Some(CloseCode::from(4404)));
    let mut ws = connect(&server, "/stream/not-a-uuid?token=rt");
    assert_eq!(close_code(&mut ws), Some(CloseCode::from(4404)));
    // A foreign Origin is refused with 403 (cross-site WebSocket hijacking).
    let stream = TcpStream::connect(server.addr).unwrap();
    let request = tungstenite::http::Request::builder()
        .uri(format!(
            "ws://{}/stream/{}?token=rt",
            server.addr,
            uuid::Uuid::new_v4()
        ))
        .header("Host", server.addr.to_string())
        .header("Origin", "http://evil.example")
        .header("Connection", "Upgrade")
        .header("Upgrade", "websocket")
        .header("Sec-WebSocket-Version", "13")
        .header(
            "Sec-WebSocket-Key",
            tungstenite::handshake::client::generate_key(),
        )
        .body(())
        .unwrap();
    match tungstenite::client(request, stream) {
        Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(r))) => {
            assert_eq!(r.status(), 403)
        }
        other => panic!("expected 403, got {other:?}"),
    }
    // A plain GET on a stream path says it wants an upgrade.
    assert_eq!(http.get("/stream/x").status, 426);
}

/// A dashboard of 200 sum widgets on `prefix.0` .. `prefix.199`, refreshed every 100 ms:
/// each update frame carries 200 values when all change.
fn flood_dashboard(http: &mut common::Client, prefix: &str) -> (Value, String) {
    let widgets: Vec<Value> = (0..200)
        .map(|i| widget(&format!("{prefix}.{i}"), "sum", 0.1))
        .collect();
    let d = create_dashboard(http, prefix, Value::Array(widgets));
    let id = d["dashboard_id"].as_str().unwrap().to_string();
    (d, id)
}

/// One event for every widget of `flood_dashboard(prefix)`.
fn flood(http: &mut common::Client, prefix: &str, value: f64) {
    let t = now_ms();
    let events: Vec<Value> = (0..200)
        .map(|i| json!({"metric_name": format!("{prefix}.{i}"), "value": value, "event_time": t}))
        .collect();
    assert_eq!(
        http.json("POST", "/ingest", &Value::Array(events)).status,
        200
    );
}

/// A stream whose socket has a tiny receive buffer: a 200-value frame does not fit, so
/// while the client does not read, the node's writes stop part-way through frames.
fn tiny_window_stream(server: &Server, id: &str) -> Ws {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&server.addr.into()).unwrap();
    let socket: TcpStream = socket.into();
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let url = format!("ws://{}/stream/{id}", server.addr);
    tungstenite::client(url.as_str(), socket).unwrap().0
}

#[test]
fn a_stuck_client_is_closed_and_others_keep_receiving() {
    let _alone = exclusive();
    let server = Server::start(&["--slow-client-timeout-ms", "500"]);
    let mut http = server.client();
    let (d, id) = flood_dashboard(&mut http, "flood");
    // The stuck client never reads after the handshake.
    let _stuck = tiny_window_stream(&server, &id);
    let mut good = connect(&server, &format!("/stream/{id}"));
    assert_eq!(next_frame(&mut good)["type"], "snapshot");

    let streams = |http: &mut common::Client| -> u64 {
        http.get("/stats").json()["shards"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["streams"].as_u64().unwrap())
            .sum()
    };
    assert_eq!(streams(&mut http), 2);
    // Every widget changes every tick, so each update frame carries 200 values.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut round = 0.0;
    while streams(&mut http) > 1 {
        assert!(
            Instant::now() < deadline,
            "the stuck client was never closed"
        );
        round += 1.0;
        flood(&mut http, "flood", round);
        // The good client keeps reading and keeps getting fresh frames.
        let f = next_frame(&mut good);
        assert!(
            matches!(f["type"].as_str(), Some("update" | "dashboard")),
            "{f}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // After the stuck one is gone, the good one still receives the newest values.
    round += 1.0;
    flood(&mut http, "flood", round * 1000.0);
    let first = d["widgets"][0]["widget_id"].as_str().unwrap().to_string();
    wait_for(&mut good, Duration::from_secs(10), |f| {
        update_of(f, &first).is_some_and(|w| w["value"].as_f64().unwrap_or(0.0) >= round * 1000.0)
    });
}

#[test]
fn pings_keep_answering_peers_and_drop_silent_ones() {
    let server = Server::start(&["--shards", "2", "--ws-ping-interval-ms", "200"]);
    let mut http = server.client();
    let [a, _] = metric_per_shard();
    let d = create_dashboard(&mut http, "pings", json!([widget(&a, "count", 0.2)]));
    let path = format!("/stream/{}", d["dashboard_id"].as_str().unwrap());
    let mut answering = connect(&server, &path);
    assert_eq!(next_frame(&mut answering)["type"], "snapshot");
    // The silent client reads raw frames later, so nothing answers its pings.
    let mut silent = {
        let mut stream = TcpStream::connect(server.addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
            server.addr
        )
        .unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8];
            stream.read_exact(&mut byte).unwrap();
            head.push(byte[0]);
        }
        assert!(head.starts_with(b"HTTP/1.1 101"), "{head:?}");
        FrameSocket::new(stream)
    };

    // A client that reads answers each ping (the library sends the pong) and stays
    // connected over many intervals, while still receiving updates.
    let until = Instant::now() + Duration::from_millis(1500);
    let mut pings = 0;
    while Instant::now() < until {
        match answering.read().unwrap() {
            Message::Ping(_) => pings += 1,
            Message::Close(c) => panic!("an answering client was closed: {c:?}"),
            _ => {}
        }
    }
    assert!(pings >= 3, "{pings} pings in 1.5 s at a 200 ms interval");
    http.json(
        "POST",
        "/ingest",
        &json!([{"metric_name": a, "value": 1, "event_time": now_ms()}]),
    );
    wait_for(&mut answering, Duration::from_secs(5), |f| {
        f["type"] == "update"
    });

    // The silent client got its snapshot and pings, sent no pongs, and was dropped with
    // 1001.
    let mut opcodes = Vec::new();
    let close = loop {
        let frame = silent
            .read(None)
            .unwrap()
            .expect("a close frame before the end");
        opcodes.push(frame.header().opcode);
        if frame.header().opcode == OpCode::Control(Control::Close) {
            break frame;
        }
    };
    assert_eq!(opcodes[0], OpCode::Data(Data::Text), "the snapshot first");
    assert!(opcodes.contains(&OpCode::Control(Control::Ping)));
    let payload = close.payload();
    assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), 1001);
    assert_eq!(&payload[2..], b"no answer to pings");
}

#[test]
fn a_lagging_client_gets_whole_frames_and_a_resync() {
    let _alone = exclusive();
    let server = Server::start(&["--slow-client-timeout-ms", "10000"]);
    let mut http = server.client();
    let (d, id) = flood_dashboard(&mut http, "lag");
    let mut lagging = tiny_window_stream(&server, &id);
    assert_eq!(next_frame(&mut lagging)["type"], "snapshot");

    // Three seconds of ticks every 100 ms while the client reads nothing: more frames
    // than its queue holds.
    for round in 1..=30 {
        flood(&mut http, "lag", f64::from(round));
        std::thread::sleep(Duration::from_millis(100));
    }
    flood(&mut http, "lag", 1e6);
    // Reading again, every frame parses (a frame cut short would break the protocol), and
    // the overflow brought a resync: the dashboard, then the newest values.
    let mut kinds = Vec::new();
    let first = d["widgets"][0]["widget_id"].as_str().unwrap().to_string();
    wait_for(&mut lagging, Duration::from_secs(10), |f| {
        kinds.push(f["type"].as_str().unwrap_or_default().to_string());
        update_of(f, &first).is_some_and(|w| w["value"].as_f64().unwrap_or(0.0) >= 1e6)
    });
    assert!(
        kinds.iter().any(|k| k == "dashboard"),
        "no resync among {kinds:?}"
    );
    assert!(
        kinds.len() < 30,
        "{} frames: the backlog was not conflated",
        kinds.len()
    );
}
