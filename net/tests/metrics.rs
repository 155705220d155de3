//! `/metrics` read by the Prometheus client library's own text parser (Python's
//! `prometheus_client`): the scrape parses, counters move as events are ingested and
//! streams open, and the end-to-end alert fires over a lowered threshold and clears
//! after. Also `/healthz`'s reasons and the self-dashboard.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Client, ReplyExt, Server, create_dashboard, now_ms, snapshot};
use serde_json::{Value, json};

/// The parser's reading of one scrape: family name → (type, samples of
/// (sample name, labels, value)).
type Scrape = BTreeMap<String, (String, Vec<(String, BTreeMap<String, String>, f64)>)>;

const PARSER: &str = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = {}
for family in text_string_to_metric_families(sys.stdin.read()):
    out[family.name] = [family.type, [[s.name, s.labels, s.value] for s in family.samples]]
print(json.dumps(out))
"#;

/// Scrapes `/metrics`, checks its content type and parses it with the reference parser.
fn scrape(c: &mut Client) -> Scrape {
    let reply = c.get("/metrics");
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    let content_type = reply
        .headers
        .iter()
        .find(|(k, _)| k == "content-type")
        .map(|(_, v)| v.as_str());
    assert_eq!(content_type, Some("text/plain; version=0.0.4"));
    let mut python = Command::new("python3")
        .args(["-c", PARSER])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 is needed to parse /metrics");
    python.stdin.take().unwrap().write_all(&reply.body).unwrap();
    let out = python.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("No module named 'prometheus_client'"),
        "the Prometheus parser is missing: install it with `python3 -m pip install prometheus-client==0.26.0` (bash .ci/run does)"
    );
    assert!(
        out.status.success(),
        "the parser refused the scrape: {stderr}"
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The sum of family `name`'s samples named `sample` whose labels include `with`.
fn total(s: &Scrape, name: &str, sample: &str, with: &[(&str, &str)]) -> f64 {
    let (_, samples) = s
        .get(name)
        .unwrap_or_else(|| panic!("no family {name} in the scrape"));
    samples
        .iter()
        .filter(|(n, labels, _)| {
            n == sample
                && with
                    .iter()
                    .all(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, _, v)| v)
        .sum()
}

fn kind(s: &Scrape, name: &str) -> String {
    s.get(name).map(|(t, _)| t.clone()).unwrap_or_default()
}

fn open_stream(server: &Server, dashboard: &Value) -> tungstenite::WebSocket<TcpStream> {
    let stream = TcpStream::connect(server.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let url = format!(
        "ws://{}/stream/{}",
        server.addr,
        dashboard["dashboard_id"].as_str().unwrap()
    );
    let (mut ws, _) = tungstenite::client(url.as_str(), stream).unwrap();
    // The snapshot.
    ws.read().unwrap();
    ws
}

fn events(metric: &str, n: usize, t: i64) -> Value {
    (0..n)
        .map(|i| json!({"metric_name": metric, "value": i as f64, "event_time": t}))
        .collect()
}

fn eventually(limit: Duration, what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !ok() {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_scrape_parses_and_its_counters_move() {
    let server = Server::start(&["--shards", "2", "--ws-ping-interval-ms", "1000"]);
    let mut c = server.client();
    let before = scrape(&mut c);
    assert_eq!(kind(&before, "livedash_events_accepted"), "counter");
    assert_eq!(kind(&before, "livedash_push_delay_seconds"), "histogram");
    assert_eq!(kind(&before, "livedash_e2e_latency_seconds"), "histogram");
    assert_eq!(kind(&before, "livedash_streams_open"), "gauge");
    assert!(
        total(
            &before,
            "livedash_process_resident_memory_bytes",
            "livedash_process_resident_memory_bytes",
            &[]
        ) > 0.0
    );
    assert!(
        total(
            &before,
            "livedash_process_open_fds",
            "livedash_process_open_fds",
            &[]
        ) > 0.0
    );
    assert_eq!(total(&before, "livedash_alert", "livedash_alert", &[]), 0.0);
    let accepted = |s: &Scrape| {
        total(
            s,
            "livedash_events_accepted",
            "livedash_events_accepted_total",
            &[],
        )
    };
    assert_eq!(accepted(&before), 0.0);

    let dashboard = create_dashboard(
        &mut c,
        "metrics",
        json!([{"metric_name": "m.load", "aggregation": "sum", "window_seconds": 60,
                "refresh_interval_seconds": 0.2}]),
    );
    let mut streams: Vec<_> = (0..3).map(|_| open_stream(&server, &dashboard)).collect();
    let reply = c.json("POST", "/ingest", &events("m.load", 100, now_ms()));
    assert_eq!(reply.status, 200);
    let line = format!("m load=5 {}\nm load=\"x\"\n", now_ms() * 1_000_000);
    let reply = c.send("POST", "/ingest", "text/plain", line.as_bytes());
    assert_eq!(reply.status, 200);
    // Every stream sees the sum of all 101 events (0 + 1 + ... + 99, and 5).
    for ws in &mut streams {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            assert!(Instant::now() < deadline, "no update with every event");
            if let tungstenite::Message::Text(t) = ws.read().unwrap() {
                let frame: Value = serde_json::from_str(&t).unwrap();
                if frame["widgets"][0]["value"] == 4955.0 {
                    break;
                }
            }
        }
    }

    let after = scrape(&mut c);
    assert_eq!(accepted(&after), 101.0);
    let rejected = total(
        &after,
        "livedash_events_rejected",
        "livedash_events_rejected_total",
        &[("reason", "string_field")],
    );
    assert_eq!(rejected, 1.0);
    let requests = |format| {
        total(
            &after,
            "livedash_ingest_requests",
            "livedash_ingest_requests_total",
            &[("format", format)],
        )
    };
    assert_eq!(requests("json"), 1.0);
    assert_eq!(requests("line"), 1.0);
    assert!(
        total(
            &after,
            "livedash_ingest_bytes",
            "livedash_ingest_bytes_total",
            &[("format", "line")]
        ) >= line.len() as f64
    );
    assert_eq!(
        total(
            &after,
            "livedash_streams_open",
            "livedash_streams_open",
            &[]
        ),
        3.0
    );
    assert!(
        total(
            &after,
            "livedash_subscriptions",
            "livedash_subscriptions",
            &[]
        ) >= 1.0
    );
    assert!(
        total(
            &after,
            "livedash_frames_written",
            "livedash_frames_written_total",
            &[]
        ) >= 3.0
    );
    assert!(
        total(
            &after,
            "livedash_stream_bytes_sent",
            "livedash_stream_bytes_sent_total",
            &[]
        ) > 0.0
    );
    assert!(
        total(
            &after,
            "livedash_values_computed",
            "livedash_values_computed_total",
            &[]
        ) >= 1.0
    );
    assert!(total(&after, "livedash_widgets", "livedash_widgets", &[]) == 1.0);
    assert!(
        total(
            &after,
            "livedash_window_memory_bytes",
            "livedash_window_memory_bytes",
            &[]
        ) > 0.0
    );
    // The histograms counted the frames: push delay per frame written, end to end per
    // frame that showed the new events, and the refresh runs.
    let count = |name: &str| total(&after, name, &format!("{name}_count"), &[]);
    assert!(count("livedash_push_delay_seconds") >= 3.0);
    assert!(count("livedash_e2e_latency_seconds") >= 3.0);
    assert!(count("livedash_tick_duration_seconds") >= 1.0);
    let inf = total(
        &after,
        "livedash_push_delay_seconds",
        "livedash_push_delay_seconds_bucket",
        &[("le", "+Inf")],
    );
    assert_eq!(inf, count("livedash_push_delay_seconds"));

    // Streams that leave count as closed by the client (noticed at the next keep-alive
    // sweep, every second here).
    for mut ws in streams {
        ws.close(None).unwrap();
        while ws.read().is_ok() {}
    }
    eventually(
        Duration::from_secs(10),
        "the streams did not count as closed",
        || {
            let s = scrape(&mut c);
            total(&s, "livedash_streams_open", "livedash_streams_open", &[]) == 0.0
                && total(
                    &s,
                    "livedash_stream_closes",
                    "livedash_stream_closes_total",
                    &[("code", "client")],
                ) == 3.0
        },
    );

    // Suggestions moved to /api/metric-names; /healthz is ok.
    let names = c.get("/api/metric-names");
    assert_eq!(names.status, 200);
    assert!(names.json().is_array());
    assert_eq!(c.get("/healthz").json()["status"], "ok");
}

#[test]
fn metrics_can_be_turned_off() {
    let server = Server::start(&["--metrics", "false"]);
    let reply = server.client().get("/metrics");
    assert_eq!(reply.status, 404);
    assert!(
        reply.error().contains("--metrics false"),
        "{}",
        reply.error()
    );
}

#[test]
fn the_e2e_alert_fires_over_its_threshold_and_clears_after() {
    let server = Server::start(&[
        "--shards",
        "2",
        "--alert-e2e-p95-ms",
        "500",
        "--alert-window-seconds",
        "3",
    ]);
    let mut c = server.client();
    let dashboard = create_dashboard(
        &mut c,
        "alerts",
        json!([{"metric_name": "m.late", "aggregation": "max", "window_seconds": 60,
                "refresh_interval_seconds": 0.2}]),
    );
    let _ws = open_stream(&server, &dashboard);
    let alert = |c: &mut Client| {
        total(
            &scrape(c),
            "livedash_alert",
            "livedash_alert",
            &[("alert", "e2e_latency")],
        )
    };
    let health = |c: &mut Client| c.get("/healthz").json();
    // Events stamped 5 s ago: every frame shows them 5 s after their event time.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        c.json("POST", "/ingest", &events("m.late", 1, now_ms() - 5_000));
        let h = health(&mut c);
        if h["status"] == "degraded" {
            let reason = h["reasons"][0].as_str().unwrap_or_default().to_owned();
            assert!(reason.contains("end-to-end latency p95"), "{reason}");
            assert!(reason.contains("above 500 ms"), "{reason}");
            break;
        }
        assert!(Instant::now() < deadline, "the alert never fired: {h}");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(alert(&mut c), 1.0);
    // Fresh events: once the late frames leave the 3 s window, the alert clears.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        c.json("POST", "/ingest", &events("m.late", 1, now_ms()));
        let h = health(&mut c);
        if h["status"] == "ok" {
            assert_eq!(h["reasons"], json!([]));
            break;
        }
        assert!(Instant::now() < deadline, "the alert never cleared: {h}");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(alert(&mut c), 0.0);
    // The widget shows the newest event all along: nothing was lost.
    let value = snapshot(&mut c, &dashboard, 0);
    assert!(value["count"].as_u64().unwrap() > 2);
}

#[test]
fn the_node_feeds_its_own_dashboard() {
    let server = Server::start(&["--self-dashboard", "true"]);
    let mut c = server.client();
    let find = |c: &mut Client| {
        c.get("/dashboards")
            .json()
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["name"] == "livedash node")
            .cloned()
    };
    let mut own = None;
    eventually(Duration::from_secs(10), "no self-dashboard", || {
        own = find(&mut c);
        own.is_some()
    });
    let own = c
        .get(&format!(
            "/dashboards/{}",
            own.unwrap()["dashboard_id"].as_str().unwrap()
        ))
        .json();
    let position = |metric: &str| {
        own["widgets"]
            .as_array()
            .unwrap()
            .iter()
            .position(|w| w["metric_name"] == metric)
            .unwrap_or_else(|| panic!("no {metric} widget"))
    };
    let rate = position("livedash.events_per_second");
    let streams = position("livedash.open_streams");
    // Load, and a stream on the self-dashboard itself: both show within seconds.
    let _ws = open_stream(&server, &own);
    eventually(
        Duration::from_secs(15),
        "the self-dashboard never showed the load",
        || {
            c.json("POST", "/ingest", &events("other.metric", 500, now_ms()));
            let rate = snapshot(&mut c, &own, rate)["value"]
                .as_f64()
                .unwrap_or(0.0);
            let open = snapshot(&mut c, &own, streams)["value"]
                .as_f64()
                .unwrap_or(0.0);
            rate > 0.0 && open >= 1.0
        },
    );
    // A restart keeps the one dashboard.
    let dir = server.kill9();
    let server = Server::start_in(dir, &["--self-dashboard", "true"]);
    std::thread::sleep(Duration::from_millis(1500));
    let mut c = server.client();
    let named = c
        .get("/dashboards")
        .json()
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["name"] == "livedash node")
        .count();
    assert_eq!(named, 1);
}

#[test]
fn json_logs_are_one_object_per_line() {
    let dir = common::fresh_dir();
    let mut child = Command::new(env!("CARGO_BIN_EXE_livedash"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--self-dashboard",
            "false",
            "--data-dir",
        ])
        .arg(&dir)
        .env("LIVEDASH_LOG_FORMAT", "json")
        .env("LIVEDASH_LOG", "info")
        // An unknown variable: its warning is one of the lines.
        .env("LIVEDASH_SHARDZ", "2")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut banner = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut banner,
    )
    .unwrap();
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let text = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<Value> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(lines.len() >= 2, "{text}");
    for line in &lines {
        assert!(
            line["level"].is_string() && line["timestamp"].is_string(),
            "{line}"
        );
        assert!(line["fields"]["message"].is_string(), "{line}");
    }
    let warning = lines
        .iter()
        .find(|l| l["level"] == "WARN")
        .unwrap_or_else(|| panic!("no warning in {text}"));
    let message = warning["fields"]["message"].as_str().unwrap();
    assert!(
        message.contains("LIVEDASH_SHARDZ") && message.contains("rename it to LIVEDASH_SHARDS"),
        "{message}"
    );
}
