//! Budgets on what clients make the node keep: dashboards, widgets, queries, histogram
//! buckets, and values too large to sum. Each test sends the hostile input, checks the
//! answer and the node's memory, and checks that the node still serves.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{ReplyExt, Server};
use serde_json::{Value, json};
use tungstenite::Message;
use tungstenite::protocol::frame::coding::CloseCode;

fn now_ms() -> i64 {
    livedash_loadgen::client::now_ms()
}

fn widget(metric: &str, aggregation: &str) -> Value {
    json!({"metric_name": metric, "aggregation": aggregation, "window_seconds": 60,
           "refresh_interval_seconds": 1})
}

#[test]
fn dashboards_widgets_and_queries_over_their_budgets_get_429() {
    let node = Server::start(&[
        "--max-dashboards",
        "2",
        "--max-widgets",
        "4",
        "--max-queries",
        "2",
    ]);
    let mut c = node.client();
    let create = |c: &mut common::Client, widgets: Value| {
        c.json(
            "POST",
            "/dashboards",
            &json!({"name": "d", "widgets": widgets}),
        )
    };
    // Two widgets of one query (sum and max of `a` over 60 s), then one of `b`.
    let first = create(&mut c, json!([widget("a", "sum"), widget("a", "max")]));
    assert_eq!(first.status, 201, "{}", first.error());
    let second = create(&mut c, json!([widget("b", "sum")]));
    assert_eq!(second.status, 201, "{}", second.error());
    let third = create(&mut c, json!([]));
    assert_eq!(third.status, 429);
    assert!(
        third.error().contains("max_dashboards"),
        "{}",
        third.error()
    );
    let second: Value = serde_json::from_slice(&second.body).unwrap();
    let patch = format!(
        "/dashboards/{}/widgets",
        second["dashboard_id"].as_str().unwrap()
    );
    // A third query passes max_queries (2): refused, nothing added.
    let r = c.json("PATCH", &patch, &json!({"add": [widget("c", "sum")]}));
    assert_eq!(r.status, 429);
    assert!(r.error().contains("max_queries"), "{}", r.error());
    // A widget of a query already held is within it, and reaches max_widgets (4).
    let r = c.json("PATCH", &patch, &json!({"add": [widget("b", "p99")]}));
    assert_eq!(r.status, 200, "{}", r.error());
    let r = c.json("PATCH", &patch, &json!({"add": [widget("b", "min")]}));
    assert_eq!(r.status, 429);
    assert!(r.error().contains("max_widgets"), "{}", r.error());
    let all: Value = serde_json::from_slice(&c.get("/dashboards").body).unwrap();
    let widgets: usize = all
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["widgets"].as_array().unwrap().len())
        .sum();
    assert_eq!(widgets, 4, "nothing refused was kept");
    // Deleting makes room again.
    let id = second["dashboard_id"].as_str().unwrap();
    assert_eq!(c.delete(&format!("/dashboards/{id}")).status, 204);
    assert_eq!(create(&mut c, json!([widget("e", "sum")])).status, 201);
}

#[test]
fn values_whose_sum_would_overflow_are_refused() {
    let node = Server::start(&[]);
    let mut c = node.client();
    let d = common::create_dashboard(
        &mut c,
        "big",
        json!([
            widget("big", "sum"),
            widget("big", "avg"),
            widget("big", "count")
        ]),
    );
    let t = now_ms();
    let r = c.json(
        "POST",
        "/ingest",
        &json!([
            {"metric_name": "big", "value": 1.7e308, "event_time": t},
            {"metric_name": "big", "value": -1.7e308, "event_time": t},
            {"metric_name": "big", "value": 1e200, "event_time": t},
            {"metric_name": "big", "value": 1e200, "event_time": t},
        ]),
    );
    assert_eq!(r.status, 200, "{}", r.error());
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["accepted"], 2);
    assert_eq!(v["rejected_total"], 2);
    let reason = v["rejected"][0]["reason"].as_str().unwrap();
    assert!(reason.contains("out of range"), "{reason}");
    // Two of the largest values allowed still make a finite sum and average.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let count = common::snapshot(&mut c, &d, 2)["value"].as_f64();
        if count == Some(2.0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "count never reached 2: {count:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let sum = common::snapshot(&mut c, &d, 0)["value"].as_f64();
    assert_eq!(sum, Some(2e200));
    let avg = common::snapshot(&mut c, &d, 1)["value"].as_f64();
    assert_eq!(avg, Some(1e200));
}

#[test]
fn extreme_values_cost_each_percentile_window_a_bounded_histogram() {
    let node = Server::start(&["--shards", "2"]);
    let mut c = node.client();
    // 400 percentile widgets on 400 metrics: 400 windows with a histogram each.
    let metrics: Vec<String> = (0..400).map(|i| format!("spread{i}")).collect();
    let mut dashboards = vec![];
    for chunk in metrics.chunks(100) {
        let widgets: Vec<Value> = chunk.iter().map(|m| widget(m, "p99")).collect();
        dashboards.push(common::create_dashboard(&mut c, "spread", json!(widgets)));
    }
    let before = node.peak_rss_bytes();
    // The smallest and the largest magnitude allowed, once each per metric: unbounded,
    // each histogram would span about 110,000 buckets (0.9 MB), 350 MB in all.
    let events = livedash_bench::hostile::extreme_events(&metrics, now_ms());
    let r = c.json("POST", "/ingest", &Value::Array(events));
    assert_eq!(r.status, 200, "{}", r.error());
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["accepted"], 800, "{v}");
    // Every window has both values once its widget refreshed.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let p99 = common::snapshot(&mut c, &dashboards[3], 99)["value"].as_f64();
        if p99.is_some_and(|p| (p - 1e200).abs() <= 1e200 / 64.0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "p99 never reached 1e200: {p99:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let grown = node.peak_rss_bytes().saturating_sub(before);
    // Within budget: 2 stores of at most 4,096 buckets (33 KB) per window.
    assert!(grown < 64 << 20, "peak memory grew by {grown} bytes");
    assert_eq!(c.get("/healthz").status, 200);
}

/// Streams that join a dashboard while it is being deleted: each is closed (4410 if it
/// joined before the deletion, 4404 after), none stays open.
#[test]
fn streams_joining_a_dashboard_being_deleted_are_all_closed() {
    let node = Server::start(&["--shards", "2"]);
    let mut c = node.client();
    for round in 0..10 {
        let d = common::create_dashboard(&mut c, "doomed", json!([widget("doom", "sum")]));
        let id = d["dashboard_id"].as_str().unwrap().to_string();
        // Joiners spread over the 4 ms around the deletion (which stores and fsyncs).
        let joiners: Vec<_> = (0..32)
            .map(|i| {
                let (addr, id) = (node.addr, id.clone());
                std::thread::spawn(move || {
                    std::thread::sleep(Duration::from_micros(125 * i));
                    let stream = TcpStream::connect(addr).unwrap();
                    stream
                        .set_read_timeout(Some(Duration::from_secs(10)))
                        .unwrap();
                    let url = format!("ws://{addr}/stream/{id}");
                    let Ok((mut ws, _)) = tungstenite::client(url.as_str(), stream) else {
                        return None;
                    };
                    loop {
                        match ws.read() {
                            Ok(Message::Close(frame)) => return frame.map(|f| f.code),
                            Ok(_) => {}
                            Err(e) => panic!("stream ended without a close frame: {e}"),
                        }
                    }
                })
            })
            .collect();
        std::thread::sleep(Duration::from_micros(300 * round));
        assert_eq!(c.delete(&format!("/dashboards/{id}")).status, 204);
        for j in joiners {
            let code = j
                .join()
                .expect("a stream stayed open past its read timeout");
            assert!(
                matches!(code, Some(CloseCode::Library(4410 | 4404))),
                "round {round}: closed with {code:?}"
            );
        }
    }
}

/// A connection that sends `request` and never reads, with a small receive buffer.
fn unread(node: &Server, request: &str) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&node.addr.into()).unwrap();
    let mut stream: TcpStream = socket.into();
    std::io::Write::write_all(&mut stream, request.as_bytes()).unwrap();
    stream
}

/// Slow readers of the dashboards list and of a large snapshot hold one shared copy of
/// each, not one per connection.
#[test]
fn slow_readers_of_large_answers_share_one_copy() {
    let node = Server::start(&["--shards", "2"]);
    let mut c = node.client();
    // Four dashboards of 200 widgets, each with 12 KB of display options: 2.5 MB each.
    let padding = "x".repeat(12_000);
    let mut ids = vec![];
    for d in 0..4 {
        let widgets: Vec<Value> = (0..200)
            .map(|i| {
                let mut w = widget(&format!("big{d}.{i}"), "sum");
                w["display_config"] = json!({"note": padding});
                w
            })
            .collect();
        let created = common::create_dashboard(&mut c, "large", json!(widgets));
        ids.push(created["dashboard_id"].as_str().unwrap().to_string());
    }
    let list = c.get("/dashboards");
    assert_eq!(list.status, 200);
    assert!(list.body.len() > 9_000_000, "{}", list.body.len());
    let before = node.peak_rss_bytes();
    let lists: Vec<TcpStream> = (0..40)
        .map(|_| unread(&node, "GET /dashboards HTTP/1.1\r\nHost: localhost\r\n\r\n"))
        .collect();
    let streams: Vec<TcpStream> = (0..40)
        .map(|_| {
            unread(
                &node,
                &format!(
                    "GET /stream/{} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n\
                     Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
                     Sec-WebSocket-Version: 13\r\n\r\n",
                    ids[0]
                ),
            )
        })
        .collect();
    std::thread::sleep(Duration::from_secs(2));
    let grown = node.peak_rss_bytes().saturating_sub(before);
    // One copy each would be 40 x 10 MB + 40 x 2.5 MB.
    assert!(grown < 64 << 20, "peak memory grew by {grown} bytes");
    assert_eq!(c.get("/healthz").status, 200);
    drop((lists, streams));
}

/// Dashboard bodies made of many tiny values: refused before they are read into trees
/// (413), or by the value limits (400), at a small cost.
#[test]
fn dashboards_of_many_tiny_values_are_refused_cheaply() {
    let node = Server::start(&[]);
    let mut c = node.client();
    let before = node.peak_rss_bytes();
    let many = |n: usize| {
        let mut w = widget("tiny", "sum");
        w["display_config"] = json!({"zeros": vec![0; n]});
        json!({"name": "tiny", "widgets": [w]})
    };
    // 6 MB of zeros: 3 million values, 100 MB and more as a tree.
    let r = c.json("POST", "/dashboards", &many(3_000_000));
    assert_eq!(r.status, 413, "{}", r.error());
    assert!(r.error().contains("JSON keys and values"), "{}", r.error());
    let r = c.json("POST", "/dashboards", &many(600));
    assert_eq!(r.status, 400, "{}", r.error());
    assert!(r.error().contains("display_config holds"), "{}", r.error());
    let grown = node.peak_rss_bytes().saturating_sub(before);
    assert!(grown < 48 << 20, "peak memory grew by {grown} bytes");
    assert_eq!(c.json("POST", "/dashboards", &many(100)).status, 201);
}
