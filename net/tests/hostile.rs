//! Hostile inputs: each must be cheap to refuse, answered clearly, and leave the node
//! serving everyone else with nothing already accepted lost.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{ReplyExt, Server};
use serde_json::{Value, json};

/// The node still answers and still ingests.
fn still_serving(node: &Server) {
    let mut c = node.client();
    assert_eq!(c.get("/healthz").status, 200);
    let r = c.json(
        "POST",
        "/ingest",
        &json!([{"metric_name": "after", "value": 1.0, "event_time": now_ms()}]),
    );
    assert_eq!(r.status, 200, "{}", r.error());
}

fn now_ms() -> i64 {
    livedash_loadgen::client::now_ms()
}

#[test]
fn a_body_of_millions_of_bad_events_is_counted_not_listed() {
    let node = Server::start(&["--shards", "2"]);
    let before = node.peak_rss_bytes();
    // 4 MiB: two million elements that are not events.
    let mut body = String::with_capacity(4 << 20);
    body.push('[');
    for _ in 0..2_000_000 {
        body.push_str("0,");
    }
    body.push_str("0]");
    let mut c = node.client();
    let r = c.send("POST", "/ingest", "application/json", body.as_bytes());
    assert_eq!(r.status, 200, "{}", r.error());
    assert!(
        r.body.len() < 32 * 1024,
        "the answer lists a few, counts the rest: {} bytes",
        r.body.len()
    );
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["accepted"], 0);
    assert_eq!(v["rejected_total"], 2_000_001);
    let listed = v["rejected"].as_array().unwrap();
    assert_eq!(listed.len(), 100);
    assert_eq!(listed[0]["index"], 0);
    assert!(listed[0]["reason"].as_str().unwrap().contains("expected"));
    // Before, this body cost the node about 2 GiB.
    let grown = node.peak_rss_bytes().saturating_sub(before);
    assert!(grown < 256 << 20, "peak memory grew by {grown} bytes");
    let stats: Value = serde_json::from_slice(&c.get("/stats").body).unwrap();
    let refused: u64 = stats["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["refused"]["not_an_event"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(refused, 2_000_001, "every refusal is counted");
    still_serving(&node);
}

#[test]
fn a_line_of_thousands_of_tags_and_fields_is_refused_once() {
    let node = Server::start(&["--shards", "2"]);
    let tags: String = (0..5_000).map(|i| format!(",t{i}=v{i}")).collect();
    let fields: Vec<String> = (0..5_000).map(|i| format!("f{i}={i}")).collect();
    let t = now_ms();
    let body = format!("m{tags} {} {t}\nok,host=a v=2 {t}\n", fields.join(","));
    let mut c = node.client();
    let r = c.send(
        "POST",
        "/ingest?precision=ms",
        "text/plain",
        body.as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.error());
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["accepted"], 1, "{v}");
    assert_eq!(
        v["rejected_total"], 1,
        "one refusal for the whole line: {v}"
    );
    assert!(
        v["rejected"][0]["reason"].as_str().unwrap().contains("32"),
        "{v}"
    );
    // The same line alone: nothing parses, a 400 that says why.
    let alone = format!("m{tags} {} {t}\n", fields.join(","));
    let r = c.send(
        "POST",
        "/ingest?precision=ms",
        "text/plain",
        alone.as_bytes(),
    );
    assert_eq!(r.status, 400);
    assert!(r.error().contains("tags"), "{}", r.error());
    still_serving(&node);
}

#[test]
fn a_signed_content_length_is_refused() {
    let node = Server::start(&[]);
    for length in ["+2", "-2"] {
        let mut c = node.client();
        std::io::Write::write_all(
            &mut c.stream,
            format!(
                "POST /ingest HTTP/1.1\r\nHost: localhost\r\nContent-Length: {length}\r\n\r\n[]"
            )
            .as_bytes(),
        )
        .unwrap();
        let r = c.read_reply();
        assert_eq!(r.status, 400, "{length}");
        assert!(r.error().contains("content-length"), "{}", r.error());
    }
    still_serving(&node);
}

/// Opens a connection and sends `head` (and nothing more).
fn send_head(node: &Server, head: &str) -> std::net::TcpStream {
    let mut s = std::net::TcpStream::connect(node.addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    std::io::Write::write_all(&mut s, head.as_bytes()).unwrap();
    s
}

#[test]
fn a_declared_length_costs_nothing_until_its_bytes_arrive() {
    let node = Server::start(&["--shards", "2"]);
    let before = node.peak_rss_bytes();
    // Forty connections announce 16 MiB, send one byte, and go silent.
    let held: Vec<_> = (0..40)
        .map(|_| {
            send_head(
                &node,
                "POST /ingest HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
                 Content-Length: 16777216\r\n\r\n[",
            )
        })
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(500));
    still_serving(&node);
    // Before, each was zero-filled at once: 640 MiB.
    let grown = node.peak_rss_bytes().saturating_sub(before);
    assert!(grown < 64 << 20, "peak memory grew by {grown} bytes");
    drop(held);
}

#[test]
fn a_refused_request_is_answered_before_its_body() {
    let node = Server::start(&["--ingest-token", "secret"]);
    for (head, status) in [
        (
            "POST /ingest HTTP/1.1\r\nHost: localhost\r\nContent-Length: 16000000\r\n\r\n",
            401,
        ),
        (
            "POST /ingest HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer wrong\r\n\
             Content-Length: 16000000\r\n\r\n",
            401,
        ),
        (
            "POST /nowhere HTTP/1.1\r\nHost: localhost\r\nContent-Length: 16000000\r\n\r\n",
            404,
        ),
        (
            "PUT /ingest HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer secret\r\n\
             Content-Length: 16000000\r\n\r\n",
            405,
        ),
    ] {
        let mut s = send_head(&node, head);
        // No body is sent: the answer comes from the head alone, then the node closes.
        let mut answer = String::new();
        std::io::Read::read_to_string(&mut s, &mut answer).unwrap();
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status}")),
            "{head:?}: {answer}"
        );
        assert!(answer.contains("\"error\""), "{answer}");
    }
    let mut c = node.client().with_token("secret");
    let r = c.json(
        "POST",
        "/ingest",
        &json!([{"metric_name": "m", "value": 1.0, "event_time": now_ms()}]),
    );
    assert_eq!(r.status, 200, "{}", r.error());
}

#[test]
fn chunk_lines_and_trailers_are_bounded() {
    let node = Server::start(&[]);
    let head = "POST /ingest HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
                Transfer-Encoding: chunked\r\n\r\n";
    // A chunk-size line that never ends: its extension grows past 4 KiB.
    let extension = format!("{head}2;{}", "e".repeat(8_000));
    // Trailers that never end: past 16 KiB.
    let trailers = format!("{head}2\r\n[]\r\n0\r\nX-T: {}", "t".repeat(16 * 1024 + 100));
    for (request, status) in [(extension, 400), (trailers, 431)] {
        let mut s = send_head(&node, &request);
        let mut answer = String::new();
        std::io::Read::read_to_string(&mut s, &mut answer).unwrap();
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status}")),
            "{}: {answer}",
            &request[..120]
        );
    }
    still_serving(&node);
}

#[test]
fn a_flood_of_pings_costs_a_bounded_read_per_sweep() {
    let node = Server::start(&["--ws-ping-interval-ms", "100"]);
    let mut c = node.client();
    let d = common::create_dashboard(
        &mut c,
        "pinged",
        json!([{"metric_name": "m", "aggregation": "sum", "window_seconds": 60,
                "refresh_interval_seconds": 1}]),
    );
    let stream = std::net::TcpStream::connect(node.addr).unwrap();
    let url = format!(
        "ws://{}/stream/{}",
        node.addr,
        d["dashboard_id"].as_str().unwrap()
    );
    let (mut ws, _) = tungstenite::client(url.as_str(), stream).unwrap();
    let before = node.peak_rss_bytes();
    // Masked, empty pings, as fast as the socket takes them, for three seconds, while
    // another thread reads (and drops) every pong.
    let ping = [0x89u8, 0x80, 1, 2, 3, 4];
    let pings: Vec<u8> = ping
        .iter()
        .copied()
        .cycle()
        .take(ping.len() * 10_000)
        .collect();
    let socket = ws.get_mut();
    let mut reader = socket.try_clone().unwrap();
    let drain = std::thread::spawn(move || {
        let mut buf = vec![0u8; 1 << 16];
        let mut got = 0usize;
        while let Ok(n) = std::io::Read::read(&mut reader, &mut buf) {
            if n == 0 {
                break;
            }
            got += n;
        }
        got
    });
    socket.set_nonblocking(true).unwrap();
    let until = std::time::Instant::now() + std::time::Duration::from_secs(3);
    let mut sent = 0usize;
    while std::time::Instant::now() < until {
        match std::io::Write::write(socket, &pings[sent % pings.len()..]) {
            Ok(n) => sent += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            // The node may close a stream that stopped reading its pongs.
            Err(_) => break,
        }
    }
    let grown = node.peak_rss_bytes().saturating_sub(before);
    still_serving(&node);
    let _ = socket.shutdown(std::net::Shutdown::Both);
    let pongs = drain.join().unwrap();
    // Unbounded, the node grew by about a third of what it read (a pong per ping):
    // 5 MB after 19 MB of pings in three seconds here, 460 MiB in a longer flood.
    assert!(
        grown < 2 << 20,
        "peak memory grew by {grown} bytes after {sent} bytes of pings ({pongs} bytes of pongs read)"
    );
}

/// Sends `head` (a whole request without a body) and returns the status line's code.
fn status_of(node: &Server, head: &str) -> u16 {
    let mut s = send_head(node, head);
    let mut answer = String::new();
    let mut buf = [0u8; 4096];
    // The status line is enough: a refused upgrade keeps its connection open.
    while !answer.contains("\r\n") {
        match std::io::Read::read(&mut s, &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => answer.push_str(&String::from_utf8_lossy(&buf[..n])),
        }
    }
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status in {answer:?}"))
}

#[test]
fn other_hosts_and_origins_are_refused() {
    let node = Server::start(&[]);
    let me = node.addr;
    let ingest = |host: &str, origin: &str| {
        let body = format!(
            r#"[{{"metric_name":"csrf","value":1,"event_time":{}}}]"#,
            now_ms()
        );
        format!(
            "POST /ingest HTTP/1.1\r\nHost: {host}\r\n{origin}Content-Type: application/json\r\n\
             Connection: close\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    // A page on another site, or a rebound name pointing here, gets nothing done.
    assert_eq!(
        status_of(
            &node,
            "GET /dashboards HTTP/1.1\r\nHost: evil.example:8080\r\nConnection: close\r\n\r\n"
        ),
        403
    );
    assert_eq!(status_of(&node, &ingest("evil.example", "")), 403);
    // Health checks answer whatever name a probe uses.
    assert_eq!(
        status_of(
            &node,
            "GET /healthz HTTP/1.1\r\nHost: 10.1.2.3:8080\r\nConnection: close\r\n\r\n"
        ),
        200
    );
    assert_eq!(
        status_of(
            &node,
            &ingest(&me.to_string(), "Origin: http://evil.example\r\n")
        ),
        403
    );
    assert_eq!(
        status_of(
            &node,
            &format!(
                "GET /stream/{} HTTP/1.1\r\nHost: evil.example\r\nUpgrade: websocket\r\n\
                 Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\
                 Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
                uuid::Uuid::new_v4()
            )
        ),
        403
    );
    let stats: Value = serde_json::from_slice(&node.client().get("/stats").body).unwrap();
    let accepted: u64 = stats["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["accepted"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(accepted, 0, "nothing refused was applied");
    // The node's own page, and names the operator lists.
    assert_eq!(
        status_of(
            &node,
            &ingest(&me.to_string(), &format!("Origin: http://{me}\r\n"))
        ),
        200
    );
    assert_eq!(status_of(&node, &ingest("localhost:8080", "")), 200);
    drop(node);
    let listed = Server::start(&["--allowed-hosts", "dash.example.com"]);
    assert_eq!(status_of(&listed, &ingest("dash.example.com", "")), 200);
    assert_eq!(status_of(&listed, &ingest("localhost", "")), 403);
}

/// A connection from `source` that has sent nothing yet.
fn idle_from(node: &Server, source: [u8; 4]) -> std::net::TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket
        .bind(&std::net::SocketAddr::from((source, 0)).into())
        .unwrap();
    socket.connect(&node.addr.into()).unwrap();
    let s = std::net::TcpStream::from(socket);
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    s
}

/// The status a connection gets for a health check (0 if it is closed first).
fn health_on(mut s: std::net::TcpStream) -> u16 {
    let _ = std::io::Write::write_all(
        &mut s,
        b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    );
    let mut answer = String::new();
    let _ = std::io::Read::read_to_string(&mut s, &mut answer);
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[test]
fn connections_over_a_budget_get_429() {
    let node = Server::start(&[
        "--shards",
        "1",
        "--max-connections",
        "8",
        "--max-connections-per-address",
        "4",
    ]);
    // Four from one address are held; the fifth is answered 429 and closed.
    let held: Vec<_> = (0..4).map(|_| idle_from(&node, [127, 0, 0, 1])).collect();
    std::thread::sleep(std::time::Duration::from_millis(200));
    let mut fifth = idle_from(&node, [127, 0, 0, 1]);
    let mut answer = String::new();
    std::io::Read::read_to_string(&mut fifth, &mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 429"), "{answer}");
    assert!(
        answer.contains("127.0.0.1 holds its most connections"),
        "{answer}"
    );
    // Another address still gets in, up to the node's budget.
    let others: Vec<_> = (0..3).map(|_| idle_from(&node, [127, 0, 0, 2])).collect();
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert_eq!(
        health_on(idle_from(&node, [127, 0, 0, 3])),
        200,
        "the eighth"
    );
    let full = (0..4)
        .map(|_| idle_from(&node, [127, 0, 0, 2]))
        .collect::<Vec<_>>();
    std::thread::sleep(std::time::Duration::from_millis(200));
    // Seven are held now (4 + 3): one of the next four got in, the rest were refused.
    let codes: Vec<u16> = full.into_iter().map(health_on).collect();
    assert_eq!(codes.iter().filter(|&&c| c == 429).count(), 3, "{codes:?}");
    // A place given back is taken again.
    drop(held);
    drop(others);
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(health_on(idle_from(&node, [127, 0, 0, 1])), 200);
}
