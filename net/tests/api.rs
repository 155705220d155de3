//! The HTTP API end to end, against the real binary on loopback.

mod common;

use std::io::Write as _;

use common::{Client, ReplyExt, Server, create_dashboard, now_ms, snapshot};
use livedash_engine::{Aggregation, shard_for};
use serde_json::{Value, json};

fn widget(metric: &str, agg: &str) -> Value {
    json!({
        "metric_name": metric, "aggregation": agg, "window_seconds": 60,
        "refresh_interval_seconds": 0.5
    })
}

/// Nearest-rank percentile, the definition the engine approximates.
fn nearest_rank(sorted: &[f64], q: f64) -> f64 {
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

#[test]
fn every_aggregation_matches_after_ingest_across_shards() {
    let server = Server::start(&["--shards", "2"]);
    let mut c = server.client();
    // Two metrics, one owned by each shard.
    let metrics: Vec<String> = (0..)
        .map(|i| format!("svc.latency.{i}"))
        .scan([false, false], |seen, m| {
            let s = shard_for(&m, 2);
            let fresh = !seen[s];
            seen[s] = true;
            Some(fresh.then_some(m))
        })
        .flatten()
        .take(2)
        .collect();
    let specs: Vec<Value> = metrics
        .iter()
        .flat_map(|m| {
            Aggregation::NUMERIC
                .iter()
                .map(move |a| widget(m, a.as_str()))
        })
        .collect();
    let dashboard = create_dashboard(&mut c, "all", Value::Array(specs));

    let now = now_ms();
    let mut events = Vec::new();
    let mut values: Vec<Vec<f64>> = vec![Vec::new(); 2];
    for i in 0..500 {
        let m = i % 2;
        let v = ((i * 7919) % 1000) as f64 / 10.0 - 20.0;
        values[m].push(v);
        events.push(json!({
            "metric_name": metrics[m], "value": v, "event_time": now - 5_000 + (i as i64 * 7) % 5_000,
            "tags": {"host": format!("h{}", i % 3)}
        }));
    }
    let r = c.json("POST", "/ingest", &Value::Array(events));
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json(),
        json!({"accepted": 500, "unmatched": 0, "rejected": [], "rejected_total": 0})
    );

    for (m, vals) in values.iter_mut().enumerate() {
        vals.sort_by(f64::total_cmp);
        let n = vals.len() as f64;
        let sum: f64 = vals.iter().sum();
        for (k, agg) in Aggregation::NUMERIC.iter().enumerate() {
            let s = snapshot(&mut c, &dashboard, m * Aggregation::NUMERIC.len() + k);
            assert_eq!(s["count"], json!(250));
            assert_eq!(s["stale"], json!(false));
            assert!(s["latest_event_time"].as_i64().unwrap() < now);
            let got = s["value"].as_f64().unwrap();
            let want = match agg {
                Aggregation::Sum => sum,
                Aggregation::Avg => sum / n,
                Aggregation::Min => vals[0],
                Aggregation::Max => vals[vals.len() - 1],
                Aggregation::Count => n,
                p => nearest_rank(vals, p.quantile().unwrap()),
            };
            let tolerance = if agg.is_percentile() {
                want.abs() / 128.0 + 1e-9
            } else {
                1e-9 * want.abs().max(1.0)
            };
            assert!(
                (got - want).abs() <= tolerance,
                "{agg}: got {got}, want {want}"
            );
        }
    }
}

#[test]
fn an_event_owned_by_shard_1_ingested_through_shard_0() {
    let server = Server::start(&["--shards", "2"]);
    let metric = (0..)
        .map(|i| format!("owned.by.one.{i}"))
        .find(|m| shard_for(m, 2) == 1)
        .unwrap();
    let mut admin = server.client();
    let dashboard = create_dashboard(&mut admin, "x", json!([widget(&metric, "sum")]));
    // The kernel spreads connections over the shards; keep one that landed on shard 0.
    let mut c = (0..200)
        .map(|_| server.client())
        .find_map(|mut c| (c.shard() == 0).then_some(c))
        .expect("no connection reached shard 0");
    // With an event on a metric no widget watches, on each shard: accepted, and said to
    // be unmatched.
    let unwatched: Vec<String> = (0..2)
        .map(|s| {
            (0..)
                .map(|i| format!("nobody.watches.{i}"))
                .find(|m| shard_for(m, 2) == s)
                .unwrap()
        })
        .collect();
    let t = now_ms();
    let body = json!([
        {"metric_name": metric, "value": 4.5, "event_time": t},
        {"metric_name": unwatched[0], "value": 1, "event_time": t},
        {"metric_name": unwatched[1], "value": 1, "event_time": t},
    ]);
    let reply = c.json("POST", "/ingest", &body).json();
    assert_eq!(
        (&reply["accepted"], &reply["unmatched"]),
        (&json!(3), &json!(2)),
        "{reply}"
    );
    assert_eq!(c.shard(), 0);
    let s = snapshot(&mut c, &dashboard, 0);
    assert_eq!(
        (s["value"].as_f64(), s["count"].as_u64()),
        (Some(4.5), Some(1))
    );
}

#[test]
fn line_protocol_ingest() {
    let server = Server::start(&[]);
    let mut c = server.client();
    let d = create_dashboard(
        &mut c,
        "telegraf",
        json!([
            {"metric_name": "cpu.usage_user", "aggregation": "sum", "window_seconds": 60,
             "refresh_interval_seconds": 1, "filter": {"host": "a"}},
            widget("mem.used", "max")
        ]),
    );
    let s = now_ms() / 1000;
    let body = format!(
        "cpu,host=a usage_user=1.5,usage_system=2 {s}\ncpu,host=b usage_user=10 {s}\n\
         mem,host=a used=7i {s}\nmem,host=a used=9i {s}\nbad line\nmem note=\"x\" {s}\n"
    );
    let r = c.send(
        "POST",
        "/ingest?precision=s",
        "text/plain; charset=utf-8",
        body.as_bytes(),
    );
    assert_eq!(r.status, 200);
    let j = r.json();
    assert_eq!(j["accepted"], json!(5));
    let idx: Vec<u64> = j["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["index"].as_u64().unwrap())
        .collect();
    assert_eq!(idx, [4, 5]);
    assert_eq!(snapshot(&mut c, &d, 0)["value"], json!(1.5));
    assert_eq!(snapshot(&mut c, &d, 1)["value"], json!(9.0));
    // The refused lines are counted by reason in /stats.
    let stats = c.get("/stats").json();
    let refused = |reason: &str| -> u64 {
        stats["shards"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["refused"][reason].as_u64().unwrap())
            .sum()
    };
    assert_eq!(
        (refused("string_field"), refused("unparsable_line")),
        (1, 1),
        "{stats}"
    );
    let r = c.send("POST", "/ingest?precision=d", "text/plain", body.as_bytes());
    assert_eq!(r.status, 400);
    assert!(r.error().contains("precision"));
    let r = c.send("POST", "/ingest", "text/plain", b"nothing parses here\n");
    assert_eq!(r.status, 400);
}

#[test]
fn dashboard_lifecycle() {
    let server = Server::start(&[]);
    let mut c = server.client();
    let d = create_dashboard(
        &mut c,
        "ops",
        json!([widget("a", "sum"), widget("b", "avg")]),
    );
    let id = d["dashboard_id"].as_str().unwrap().to_string();
    let w0 = d["widgets"][0]["widget_id"].as_str().unwrap().to_string();
    let w1 = d["widgets"][1]["widget_id"].as_str().unwrap().to_string();
    assert_eq!(c.get(&format!("/dashboards/{id}")).json(), d);
    assert_eq!(c.get("/dashboards").json(), json!([d]));

    let r = c.json(
        "PUT",
        &format!("/dashboards/{id}"),
        &json!({"name": "ops2", "layout": {"cols": 4}}),
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["name"], json!("ops2"));
    assert_eq!(r.json()["widgets"], d["widgets"]);

    // The typed client's patch (the same body as JSON).
    let patch: livedash_engine::WidgetPatch = serde_json::from_value(json!({
        "add": [widget("c", "p95")],
        "update": [{"widget_id": w0, "window_seconds": 300}],
        "remove": [w1]
    }))
    .unwrap();
    let patched = c
        .patch_widgets(id.parse().unwrap(), &patch)
        .unwrap_or_else(|e| panic!("{e}"));
    let patched = serde_json::to_value(patched).unwrap();
    let widgets = patched["widgets"].as_array().unwrap();
    assert_eq!(widgets.len(), 2);
    assert_eq!(widgets[0]["window_seconds"], json!(300));
    assert_eq!(widgets[1]["metric_name"], json!("c"));

    // The changed widget now uses the 300-s window.
    c.json(
        "POST",
        "/ingest",
        &json!([{"metric_name": "a", "value": 1, "event_time": now_ms() - 120_000}]),
    );
    assert_eq!(snapshot(&mut c, &patched, 0)["count"], json!(1));

    assert_eq!(c.delete(&format!("/dashboards/{id}")).status, 204);
    assert_eq!(c.get(&format!("/dashboards/{id}")).status, 404);
    assert_eq!(c.get("/dashboards").json(), json!([]));
}

#[test]
fn error_paths() {
    let server = Server::start(&["--max-body-bytes", "4096"]);
    let mut c = server.client();
    let d = create_dashboard(&mut c, "e", json!([widget("a", "sum")]));
    let id = d["dashboard_id"].as_str().unwrap();
    let wid = d["widgets"][0]["widget_id"].as_str().unwrap();
    let addr = server.addr;
    let mut checker = Client::connect(addr);
    let mut check =
        |method: &str, path: &str, ctype: &str, body: &[u8], status: u16, needle: &str| {
            // Error responses may close the connection; use a fresh one each time.
            checker = Client::connect(addr);
            let r = checker.send(method, path, ctype, body);
            assert_eq!(
                r.status,
                status,
                "{method} {path}: {}",
                String::from_utf8_lossy(&r.body)
            );
            assert!(
                r.error().contains(needle),
                "{method} {path}: {:?} lacks {needle:?}",
                r.error()
            );
        };
    let json = "application/json";
    check("GET", "/nope", json, b"", 404, "no route");
    check("DELETE", "/ingest", json, b"", 405, "not allowed");
    // A path the dashboards API does not have is 404 whatever the method; one it has,
    // asked with another method, is 405.
    check(
        "GET",
        &format!("/dashboards/{id}/snapshot"),
        json,
        b"",
        404,
        "no route",
    );
    check(
        "POST",
        &format!("/dashboards/{id}/nothing"),
        json,
        b"{}",
        404,
        "no route",
    );
    check(
        "POST",
        &format!("/dashboards/{id}"),
        json,
        b"{}",
        405,
        "not allowed",
    );
    check("DELETE", "/dashboards", json, b"", 405, "not allowed");
    check(
        "POST",
        "/ingest",
        json,
        b"[{\"metric_name\":",
        400,
        "not a JSON array",
    );
    check("POST", "/ingest", json, b"{}", 400, "not a JSON array");
    check(
        "POST",
        "/ingest",
        "application/xml",
        b"<a/>",
        415,
        "content-type",
    );
    // A write must say it sends JSON (text/plain is line protocol, on /ingest only).
    check("POST", "/ingest", "", b"[]", 415, "application/json");
    check(
        "POST",
        "/dashboards",
        "text/plain",
        b"{\"name\":\"x\"}",
        415,
        "application/json",
    );
    check("POST", "/dashboards", json, b"", 400, "body is required");
    check(
        "POST",
        "/dashboards",
        json,
        b"{\"name\":\"x\",\"colour\":1}",
        400,
        "unknown field",
    );
    check("POST", "/dashboards", json, b"{\"name\":\"\"}", 400, "name");
    check(
        "POST",
        "/dashboards",
        json,
        br#"{"name":"x","widgets":[{"metric_name":"a","aggregation":"p42","window_seconds":60,"refresh_interval_seconds":1}]}"#,
        400,
        "widgets[0].aggregation: unknown variant `p42`",
    );
    // A type error names its place too, in a patch as in a new dashboard.
    check(
        "PATCH",
        &format!("/dashboards/{id}/widgets"),
        json,
        br#"{"add":[{"metric_name":"a","aggregation":"sum","window_seconds":"60","refresh_interval_seconds":1}]}"#,
        400,
        "add[0].window_seconds: invalid type",
    );
    check(
        "POST",
        "/dashboards",
        json,
        br#"{"name":"x"} trailing"#,
        400,
        "trailing characters",
    );
    check(
        "POST",
        "/dashboards",
        json,
        br#"{"name":"x","widgets":[{"metric_name":"a","aggregation":"sum","window_seconds":60,"refresh_interval_seconds":0.01}]}"#,
        400,
        "refresh",
    );
    check(
        "GET",
        "/dashboards/not-a-uuid",
        json,
        b"",
        404,
        "no dashboard",
    );
    check(
        "GET",
        &format!("/dashboards/{}", uuid::Uuid::new_v4()),
        json,
        b"",
        404,
        "no dashboard",
    );
    check(
        "PUT",
        &format!("/dashboards/{id}"),
        json,
        b"{\"name\":\"x\",\"widgets\":[]}",
        400,
        "unknown field",
    );
    check(
        "GET",
        &format!("/dashboards/{id}/widgets/{}/snapshot", uuid::Uuid::new_v4()),
        json,
        b"",
        404,
        "no widget",
    );
    let bad_patch = format!(
        r#"{{"update":[{{"widget_id":"{wid}","window_seconds":0}}],"add":[{}]}}"#,
        widget("z", "sum")
    );
    check(
        "PATCH",
        &format!("/dashboards/{id}/widgets"),
        json,
        bad_patch.as_bytes(),
        400,
        "window",
    );
    // The refused patch changed nothing.
    assert_eq!(c.get(&format!("/dashboards/{id}")).json(), d);
    check(
        "POST",
        "/ingest",
        json,
        &vec![b' '; 5000],
        413,
        "over the limit",
    );

    // Per-event problems are reported by index; the rest is applied.
    let now = now_ms();
    let r = c.json(
        "POST",
        "/ingest",
        &json!([
            {"metric_name": "a", "value": 1, "event_time": now},
            {"metric_name": "a", "value": 1, "event_time": now - 3_600_000},
            {"metric_name": "a", "value": 1, "event_time": now + 3_600_000},
            {"metric_name": "a b", "value": 1, "event_time": now},
            {"metric_name": "a", "value": 1},
        ]),
    );
    assert_eq!(r.status, 200);
    let j = r.json();
    assert_eq!(j["accepted"], json!(1));
    let reasons: Vec<(u64, String)> = j["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["index"].as_u64().unwrap(),
                r["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        reasons.iter().map(|r| r.0).collect::<Vec<_>>(),
        [1, 2, 3, 4]
    );
    assert!(reasons[0].1.contains("older"));
    assert!(reasons[1].1.contains("future"));
    assert!(reasons[3].1.contains("event_time"));
    assert_eq!(snapshot(&mut c, &d, 0)["count"], json!(1));
}

#[test]
fn http_framing() {
    let server = Server::start(&["--header-timeout-ms", "300", "--max-body-bytes", "100000"]);
    use std::io::Write;
    // Pipelining: two requests in one write, answered in order.
    let mut c = server.client();
    c.stream
        .write_all(b"GET /healthz HTTP/1.1\r\n\r\nGET /nope HTTP/1.1\r\n\r\n")
        .unwrap();
    assert_eq!(c.read_reply().status, 200);
    assert_eq!(c.read_reply().status, 404);

    // HEAD answers with the headers of GET and no body.
    c.stream
        .write_all(b"HEAD /healthz HTTP/1.1\r\n\r\nGET /healthz HTTP/1.1\r\n\r\n")
        .unwrap();
    let mut raw = Vec::new();
    while !String::from_utf8_lossy(&raw).contains("\"status\":\"ok\"") {
        let mut chunk = [0u8; 4096];
        let n = std::io::Read::read(&mut c.stream, &mut chunk).unwrap();
        assert!(n > 0);
        raw.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8_lossy(&raw);
    assert_eq!(text.matches("HTTP/1.1 200 OK").count(), 2, "{text}");
    assert_eq!(
        text.matches("\"status\"").count(),
        1,
        "HEAD sent a body: {text}"
    );

    // Chunked body with Expect: 100-continue.
    let body = json!([{"metric_name": "m", "value": 1, "event_time": now_ms()}]).to_string();
    let (a, b) = body.split_at(10);
    let req = format!(
        "POST /ingest HTTP/1.1\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n{:x}\r\n{a}\r\n{:x}\r\n{b}\r\n0\r\n\r\n",
        a.len(),
        b.len()
    );
    c.stream.write_all(req.as_bytes()).unwrap();
    let r = c.read_reply();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["accepted"], json!(1));

    // Connection: close is honoured.
    c.stream
        .write_all(b"GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n")
        .unwrap();
    assert_eq!(c.read_reply().status, 200);
    assert!(c.closed());

    // A head that never completes gets 408 and the connection is closed (slow-loris).
    let mut slow = server.client();
    slow.stream
        .write_all(b"GET /healthz HTTP/1.1\r\nX-Slow: ")
        .unwrap();
    let r = slow.read_reply();
    assert_eq!(r.status, 408);
    assert!(slow.closed());

    // Oversized heads get 431.
    let mut big = server.client();
    let head = format!(
        "GET /healthz HTTP/1.1\r\nX-Big: {}\r\n\r\n",
        "x".repeat(20_000)
    );
    big.stream.write_all(head.as_bytes()).unwrap();
    assert_eq!(big.read_reply().status, 431);

    // Chunked bodies over the limit get 413.
    let mut huge = server.client();
    huge.stream
        .write_all(
            format!(
                "POST /ingest HTTP/1.1\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n",
                200_000
            )
            .as_bytes(),
        )
        .unwrap();
    assert_eq!(huge.read_reply().status, 413);
}

#[test]
fn tokens_are_enforced() {
    let server = Server::start(&[
        "--ingest-token",
        "in-secret",
        "--admin-token",
        "adm-secret",
        "--read-token",
        "rd-secret",
    ]);
    let mut anon = server.client();
    let mut admin = server.client().with_token("adm-secret");
    let mut ingest = server.client().with_token("in-secret");
    let mut reader = server.client().with_token("rd-secret");

    assert_eq!(anon.get("/healthz").status, 200);
    let r = anon.json("POST", "/dashboards", &json!({"name": "x"}));
    assert_eq!(
        (r.status, r.error().as_str()),
        (401, "missing Authorization: Bearer <token>")
    );
    // A valid token of the wrong kind is 403, naming the token needed.
    let r = ingest.json("POST", "/dashboards", &json!({"name": "x"}));
    assert_eq!(
        (r.status, r.error().as_str()),
        (
            403,
            "the ingest token cannot do this: it needs the admin token"
        )
    );
    assert_eq!(anon.get("/dashboards").status, 401);
    let d = create_dashboard(&mut admin, "x", json!([widget("m", "count")]));
    assert_eq!(reader.get("/dashboards").status, 200);
    assert_eq!(admin.get("/dashboards").status, 200);

    let body = json!([{"metric_name": "m", "value": 1, "event_time": now_ms()}]);
    assert_eq!(anon.json("POST", "/ingest", &body).status, 401);
    let r = admin.json("POST", "/ingest", &body);
    assert_eq!(
        (r.status, r.error().as_str()),
        (
            403,
            "the admin token cannot do this: it needs the ingest token"
        )
    );
    let r = server
        .client()
        .with_token("nope")
        .json("POST", "/ingest", &body);
    assert_eq!((r.status, r.error().as_str()), (401, "invalid token"));
    assert_eq!(
        snapshot(&mut reader, &d, 0)["count"],
        json!(0),
        "a refused ingest applied nothing"
    );
    assert_eq!(ingest.json("POST", "/ingest", &body).status, 200);
    assert_eq!(snapshot(&mut reader, &d, 0)["count"], json!(1));
}

#[test]
fn dashboards_survive_kill_9_and_sigterm_exits_cleanly() {
    let server = Server::start(&[]);
    let mut c = server.client();
    let d = create_dashboard(&mut c, "durable", json!([widget("a", "sum")]));
    let id = d["dashboard_id"].as_str().unwrap();
    let r = c.json(
        "PUT",
        &format!("/dashboards/{id}"),
        &json!({"name": "renamed"}),
    );
    assert_eq!(r.status, 200);
    let expected = r.json();
    let dir = server.kill9();

    let server = Server::start_in(dir, &[]);
    let mut c = server.client();
    assert_eq!(c.get("/dashboards").json(), json!([expected]));
    // Its widgets are live again.
    c.json(
        "POST",
        "/ingest",
        &json!([{"metric_name": "a", "value": 2, "event_time": now_ms()}]),
    );
    assert_eq!(snapshot(&mut c, &expected, 0)["value"], json!(2.0));
    drop(c);
    let (status, dir) = server.terminate();
    assert!(status.success(), "exit status {status}");
    let server = Server::start_in(dir, &[]);
    assert_eq!(server.client().get("/dashboards").json(), json!([expected]));
}

#[test]
fn bad_configuration_is_named() {
    // An unknown variable (a shell exporting something unrelated, or a typo) is a
    // warning naming the closest known one; the node still starts.
    let dir = common::fresh_dir();
    let mut node = std::process::Command::new(env!("CARGO_BIN_EXE_livedash"))
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&dir)
        .env("LIVEDASH_SHARDZ", "2")
        .env("LIVEDASH_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut banner = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(node.stdout.take().unwrap()),
        &mut banner,
    )
    .unwrap();
    assert!(banner.contains("listening"), "{banner:?}");
    node.kill().unwrap();
    let out = node.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains("LIVEDASH_SHARDZ") && log.contains("LIVEDASH_SHARDS"),
        "{log}"
    );
    // A configuration error is one line and exit code 2, even with backtraces asked for.
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("c.toml");
    std::fs::write(&file, "listen = \"127.0.0.1:0\"\nshardz = 2\n").unwrap();
    for args in [
        vec!["--config".to_string(), file.display().to_string()],
        vec!["--shards".to_string(), "many".to_string()],
        vec!["--max-body-bytes".to_string(), "0".to_string()],
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_livedash"))
            .args(&args)
            .env("RUST_BACKTRACE", "1")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("livedash: "), "{err}");
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_livedash"))
        .arg("--config")
        .arg(&file)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("shardz") && err.contains("shards"), "{err}");
    let help = std::process::Command::new(env!("CARGO_BIN_EXE_livedash"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for flag in [
        "--listen",
        "--data-dir",
        "--shards",
        "--config",
        "LIVEDASH_",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}");
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn demo_mode_creates_a_live_dashboard() {
    let server = Server::start(&["--demo"]);
    let mut c = server.client();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    // Created, then laid out on the web UI's grid: every widget has a place.
    let demo = loop {
        let list = c.get("/dashboards").json();
        if let Some(d) = list.as_array().and_then(|l| l.first()).cloned()
            && d["layout"]["items"].as_object().map(|i| i.len())
                == d["widgets"].as_array().map(Vec::len)
        {
            break d;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no laid-out demo dashboard"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert_eq!(demo["name"], json!("livedash demo"));
    let widgets = demo["widgets"].as_array().unwrap();
    assert!(widgets.len() >= 6);
    // What the README says it shows: latency per route (one route each, or one series a
    // route), its distribution, the order value.
    let latency: Vec<&Value> = widgets
        .iter()
        .filter(|w| w["metric_name"] == "demo.http.latency_ms")
        .collect();
    assert!(
        latency.iter().all(|w| w["filter"]["route"].is_string()
            || w["group_by"] == "route"
            || w["aggregation"] == "histogram"),
        "{latency:?}"
    );
    assert!(latency.iter().any(|w| w["group_by"] == "route"));
    assert!(latency.iter().any(|w| w["aggregation"] == "histogram"));
    assert!(
        widgets
            .iter()
            .any(|w| w["metric_name"] == "demo.orders.value"
                && w["aggregation"] == "sum"
                && w["display_config"]["chart"] == "stat")
    );
    // Its widgets fill up: the request counter counts within a second or two.
    let counter = demo["widgets"]
        .as_array()
        .unwrap()
        .iter()
        .position(|w| w["metric_name"] == "demo.http.requests")
        .unwrap();
    loop {
        if snapshot(&mut c, &demo, counter)["count"]
            .as_u64()
            .unwrap_or(0)
            > 0
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "demo events never arrived"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // Recent metric names are sampled, so they may take a few batches to show.
    loop {
        let names = c.get("/api/metric-names").json();
        if names
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n == "demo.cpu.usage")
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no demo metric in {names}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // A restart does not create a second demo dashboard.
    let dir = server.kill9();
    let server = Server::start_in(dir, &["--demo"]);
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(
        server
            .client()
            .get("/dashboards")
            .json()
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn a_second_node_refuses_a_taken_port_and_a_locked_data_dir() {
    let first = Server::start(&[]);
    // The same port, another data directory.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_livedash"))
        .args(["--listen", &first.addr.to_string(), "--data-dir"])
        .arg(common::fresh_dir())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("in use"), "{err}");
    // Another port, the same data directory: the holder is named.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_livedash"))
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&first.data_dir)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&format!("pid {}", first.child.id())), "{err}");
    // The first node is untouched.
    assert_eq!(first.client().get("/healthz").status, 200);
}

#[test]
fn telegraf_and_influxdb_clients_write_unchanged() {
    let server = Server::start(&["--ingest-token", "in-secret"]);
    let mut c = server.client();
    let d = create_dashboard(
        &mut c,
        "telegraf",
        json!([
            widget("cpu.usage_idle", "sum"),
            widget("cpu.usage_user", "count")
        ]),
    );
    // What Telegraf's outputs.influxdb_v2 sends: gzip, a Token, text/plain, nanoseconds.
    let ns = now_ms() * 1_000_000;
    let lines = format!(
        "cpu,cpu=cpu-total,host=h1 usage_idle=97.5,usage_user=2.5 {ns}\n\
         cpu,cpu=cpu-total,host=h2 usage_idle=90,usage_user=10i {ns}\n"
    );
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(lines.as_bytes()).unwrap();
    let body = gz.finish().unwrap();
    let telegraf = "User-Agent: Telegraf/1.32.0\r\nAuthorization: Token in-secret\r\n\
                    Content-Type: text/plain; charset=utf-8\r\nContent-Encoding: gzip\r\n";
    let r = c.post_with_headers("/api/v2/write?bucket=telegraf&org=acme", telegraf, &body);
    assert_eq!((r.status, r.body.len()), (204, 0), "{}", r.error());
    // InfluxDB 1.x: /write with the token as the password, seconds.
    let v1 = format!("cpu,host=h3 usage_idle=2.5 {}\n", now_ms() / 1000);
    let r = c.post_with_headers(
        "/write?db=telegraf&precision=s&u=me&p=in-secret",
        "Content-Type: text/plain\r\n",
        v1.as_bytes(),
    );
    assert_eq!(r.status, 204, "{}", r.error());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while snapshot(&mut c, &d, 0)["value"] != json!(190.0) {
        assert!(
            std::time::Instant::now() < deadline,
            "{}",
            snapshot(&mut c, &d, 0)
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(snapshot(&mut c, &d, 1)["count"], json!(2));
    // Some lines refused: 400 in InfluxDB's shape, the rest applied.
    let r = c.post_with_headers(
        "/api/v2/write?bucket=b&org=o&precision=ms",
        "Authorization: Token in-secret\r\n",
        format!("cpu usage_user=1 {}\ncpu note=\"hi\"\n", now_ms()).as_bytes(),
    );
    assert_eq!(r.status, 400);
    let v = r.json();
    assert_eq!(v["code"], json!("invalid"));
    assert!(
        v["message"].as_str().unwrap().contains("partial write"),
        "{v}"
    );
    assert_eq!(v["accepted"], json!(1));
    // No token, a wrong one, a body that is not gzip.
    let r = c.post_with_headers("/api/v2/write?bucket=b", "", b"cpu v=1");
    assert_eq!(r.status, 401);
    let r = c.post_with_headers("/write?db=x&p=wrong", "", b"cpu v=1");
    assert_eq!(r.status, 401);
    let mut c = server.client();
    let r = c.post_with_headers(
        "/api/v2/write",
        "Authorization: Token in-secret\r\nContent-Encoding: gzip\r\n",
        b"cpu v=1",
    );
    assert_eq!(r.status, 400, "{}", r.error());
    assert!(r.error().contains("gzip"), "{}", r.error());
}

#[test]
fn the_request_log_names_each_request() {
    use std::io::{BufRead, BufReader};
    let dir = common::fresh_dir();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_livedash"))
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&dir)
        .env("LIVEDASH_REQUEST_LOG", "1")
        .env("LIVEDASH_LOG", "warn,livedash::request=info")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut banner = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut banner)
        .unwrap();
    let addr = livedash_loadgen::client::banner_addr(&banner).unwrap();
    let mut c = Client::connect(addr);
    assert_eq!(c.get("/healthz").status, 200);
    assert_eq!(c.get("/dashboards/nope").status, 404);
    let _ = child.kill();
    let mut log = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut log).unwrap();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    let line = |path: &str| log.lines().find(|l| l.contains(path)).map(str::to_owned);
    let health = line("GET /healthz").unwrap_or_else(|| panic!("no request line in {log:?}"));
    assert!(
        health.contains("status=200") && health.contains("us="),
        "{health}"
    );
    let missing = line("GET /dashboards/nope").unwrap_or_else(|| panic!("{log:?}"));
    assert!(missing.contains("status=404"), "{missing}");
}
