//! Grouped widgets (`group_by`, `top`) and `histogram` widgets over the HTTP API and a
//! dashboard stream, against the real binary on loopback.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{ReplyExt, Server, create_dashboard, now_ms, snapshot};
use serde_json::{Value, json};
use tungstenite::{Message, WebSocket};

fn widget(extra: Value) -> Value {
    let mut w = json!({
        "metric_name": "http.latency", "aggregation": "sum", "window_seconds": 60,
        "refresh_interval_seconds": 0.2
    });
    for (k, v) in extra.as_object().unwrap() {
        w[k] = v.clone();
    }
    w
}

/// 60 events over four routes (10, 20, 30 of three, and none for the rest), plus 5
/// without a route, all 1 ms to 60 ms.
fn events(now: i64) -> (Vec<Value>, Vec<f64>) {
    let mut out = Vec::new();
    let mut values = Vec::new();
    for i in 0..65 {
        let route = match i {
            0..10 => Some("/a"),
            10..30 => Some("/b"),
            30..60 => Some("/c"),
            _ => None,
        };
        let value = (i % 60 + 1) as f64;
        values.push(value);
        let mut tags = json!({"host": "h1"});
        if let Some(r) = route {
            tags["route"] = json!(r);
        }
        out.push(
            json!({"metric_name": "http.latency", "value": value, "tags": tags,
                        "event_time": now - 1_000 - i}),
        );
    }
    (out, values)
}

#[test]
fn grouped_and_histogram_widgets_report_series_and_distributions() {
    let server = Server::start(&["--shards", "2", "--histogram-widget-buckets", "8"]);
    let mut c = server.client();
    let dashboard = create_dashboard(
        &mut c,
        "charts",
        json!([
            widget(json!({"group_by": "route", "top": 2})),
            widget(json!({"group_by": "route", "aggregation": "count"})),
            widget(json!({"group_by": "route", "aggregation": "max", "top": 5})),
            widget(json!({"aggregation": "histogram"})),
        ]),
    );
    let now = now_ms();
    let (events, values) = events(now);
    let r = c.json("POST", "/ingest", &Value::Array(events));
    assert_eq!(r.status, 200, "{}", r.error());
    std::thread::sleep(Duration::from_millis(600));

    // Sums of the two largest routes; the rest (route /a and the events without a
    // route) in `other`.
    let sum = |range: std::ops::Range<usize>| values[range].iter().sum::<f64>();
    let s = snapshot(&mut c, &dashboard, 0);
    assert_eq!(s["series"], json!({"/c": sum(30..60), "/b": sum(10..30)}));
    assert_eq!(s["other"], json!(sum(0..10) + sum(60..65)));
    assert_eq!(s["value"], json!(sum(0..65)));
    let path = format!(
        "/dashboards/{}/widgets/{}/snapshot",
        dashboard["dashboard_id"].as_str().unwrap(),
        dashboard["widgets"][0]["widget_id"].as_str().unwrap()
    );
    let raw = String::from_utf8(c.get(&path).body).unwrap();
    let at = |k: &str| raw.find(k).unwrap();
    assert!(at("\"/c\"") < at("\"/b\""), "largest first: {raw}");

    let s = snapshot(&mut c, &dashboard, 1);
    assert_eq!(s["series"], json!({"/c": 30.0, "/b": 20.0, "/a": 10.0}));
    assert_eq!(s["other"], json!(5.0), "the events without a route");

    // Max adds up to nothing: no `other`.
    let s = snapshot(&mut c, &dashboard, 2);
    assert_eq!(s["series"], json!({"/c": 60.0, "/b": 30.0, "/a": 10.0}));
    assert!(s.get("other").is_none_or(Value::is_null), "{s}");

    // The distribution: 65 values in at most 8 buckets, in order, within 1 and 60.
    let s = snapshot(&mut c, &dashboard, 3);
    let dist = &s["value"];
    assert_eq!(dist["count"], json!(65));
    let buckets = dist["buckets"].as_array().unwrap();
    assert!(!buckets.is_empty() && buckets.len() <= 8, "{dist}");
    let total: u64 = buckets.iter().map(|b| b[2].as_u64().unwrap()).sum();
    assert_eq!(total, 65);
    assert_eq!(buckets[0][0], json!(1.0));
    assert_eq!(buckets[buckets.len() - 1][1], json!(60.0));
    for pair in buckets.windows(2) {
        assert!(pair[0][1].as_f64().unwrap() <= pair[1][0].as_f64().unwrap());
    }
    for b in buckets {
        let (lo, hi) = (b[0].as_f64().unwrap(), b[1].as_f64().unwrap());
        let inside = values.iter().filter(|v| lo <= **v && **v <= hi).count() as u64;
        assert!(
            b[2].as_u64().unwrap() <= inside,
            "{b} holds more than its range"
        );
    }

    // A stream's snapshot carries the same shapes, with their recent history.
    let id = dashboard["dashboard_id"].as_str().unwrap();
    let stream = TcpStream::connect(server.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let url = format!("ws://{}/stream/{id}", server.addr);
    let (mut ws, _) = tungstenite::client(url.as_str(), stream).unwrap();
    let frame = next_frame(&mut ws);
    assert_eq!(frame["type"], "snapshot");
    let w = &frame["widgets"];
    assert_eq!(w[0]["series"]["/c"], json!(sum(30..60)));
    assert_eq!(w[3]["value"]["count"], json!(65));
    let details = w[0]["detail_history"].as_array().unwrap();
    assert!(!details.is_empty());
    assert!(details.last().unwrap()[1]["series"]["/c"].is_number());
    assert!(w[3]["detail_history"].as_array().unwrap().last().unwrap()[1]["buckets"].is_array());
    assert!(
        w.as_array()
            .unwrap()
            .iter()
            .all(|x| x["history"].is_array())
    );

    // A new route comes into the top over the stream.
    let more: Vec<Value> = (0..50)
        .map(|i| {
            json!({"metric_name": "http.latency", "value": 100.0, "tags": {"route": "/d"},
                   "event_time": now_ms() - 500 - i})
        })
        .collect();
    let r = c.json("POST", "/ingest", &Value::Array(more));
    assert_eq!(r.status, 200, "{}", r.error());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        assert!(Instant::now() < deadline, "no update with route /d");
        let f = next_frame(&mut ws);
        let grouped = f["widgets"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|u| u["widget_id"] == dashboard["widgets"][0]["widget_id"]);
        if let Some(u) = grouped
            && u["series"].get("/d").is_some()
        {
            assert_eq!(u["series"], json!({"/d": 5000.0, "/c": sum(30..60)}));
            assert_eq!(u["other"], json!(sum(0..30) + sum(60..65)));
            break;
        }
    }
}

fn next_frame(ws: &mut WebSocket<TcpStream>) -> Value {
    loop {
        match ws.read().unwrap() {
            Message::Text(t) => return serde_json::from_str(&t).unwrap(),
            Message::Close(c) => panic!("closed: {c:?}"),
            _ => {}
        }
    }
}

#[test]
fn grouping_and_histogram_mistakes_get_a_reason() {
    let server = Server::start(&[]);
    let mut c = server.client();
    let cases = [
        (json!({"top": 3}), "top needs group_by"),
        (
            json!({"group_by": "route", "top": 0}),
            "top must be from 1 to 50",
        ),
        (
            json!({"group_by": "route", "top": 51}),
            "top must be from 1 to 50",
        ),
        (json!({"group_by": "a route"}), "group_by contains ' '"),
        (json!({"group_by": ""}), "group_by must not be empty"),
        (
            json!({"group_by": "route", "aggregation": "histogram"}),
            "a histogram widget cannot set group_by",
        ),
        (
            json!({"aggregation": "heatmap"}),
            "unknown variant `heatmap`",
        ),
    ];
    for (extra, reason) in cases {
        let body = json!({"name": "bad", "widgets": [widget(extra.clone())]});
        let r = c.json("POST", "/dashboards", &body);
        assert_eq!(r.status, 400, "{extra}");
        assert!(r.error().contains(reason), "{extra}: {}", r.error());
    }
    // An edit that groups a widget, then one that undoes it.
    let d = create_dashboard(&mut c, "ok", json!([widget(json!({}))]));
    let (id, wid) = (&d["dashboard_id"], &d["widgets"][0]["widget_id"]);
    let path = format!("/dashboards/{}/widgets", id.as_str().unwrap());
    let r = c.json(
        "PATCH",
        &path,
        &json!({"update": [{"widget_id": wid, "top": 4}]}),
    );
    assert_eq!(r.status, 400);
    assert!(
        r.error().contains("update[0].top needs group_by"),
        "{}",
        r.error()
    );
    let r = c.json(
        "PATCH",
        &path,
        &json!({"update": [{"widget_id": wid, "group_by": "route", "top": 4}]}),
    );
    assert_eq!(r.status, 200, "{}", r.error());
    assert_eq!(r.json()["widgets"][0]["group_by"], "route");
    assert_eq!(r.json()["widgets"][0]["top"], 4);
    let r = c.json(
        "PATCH",
        &path,
        &json!({"update": [{"widget_id": wid, "group_by": null, "top": null}]}),
    );
    assert_eq!(r.status, 200, "{}", r.error());
    assert!(r.json()["widgets"][0].get("group_by").is_none());
}
