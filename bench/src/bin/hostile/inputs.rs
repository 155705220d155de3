//! The hostile inputs, each at ten times the size it was found at, and the memory each
//! may cost by the node's budgets.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use livedash_loadgen::client::{Client, now_ms};
use serde_json::{Value, json};

/// The node the inputs run against, and the settings their bounds follow.
pub struct Ctx {
    pub addr: SocketAddr,
    pub shards: usize,
    pub data_dir: std::path::PathBuf,
    pub max_body: u64,
}

/// Memory an input may add by the node's budgets, with how it is reckoned.
pub struct Bound {
    pub bytes: u64,
    pub rule: String,
}

/// One input: what it sends, and what it found (statuses, counts). `prepare` runs
/// before the measurement and hands `run` what it made (a dashboard id).
pub struct Input {
    pub name: &'static str,
    pub sends: &'static str,
    pub bound: fn(&Ctx) -> Bound,
    pub prepare: fn(&Ctx) -> Result<String, String>,
    pub run: fn(&Ctx, &str) -> Result<String, String>,
}

fn nothing(_: &Ctx) -> Result<String, String> {
    Ok(String::new())
}

const MIB: u64 = 1 << 20;
/// What any input may add beyond its own rule: allocator slack, buffers of the probes.
const SLACK: u64 = 32 * MIB;

fn bound(bytes: u64, rule: impl Into<String>) -> Bound {
    Bound {
        bytes: bytes + SLACK,
        rule: rule.into(),
    }
}

fn client(ctx: &Ctx) -> Result<Client, String> {
    Client::connect(ctx.addr).map_err(|e| e.to_string())
}

fn raw(ctx: &Ctx) -> Result<TcpStream, String> {
    let s = TcpStream::connect(ctx.addr).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .map_err(|e| e.to_string())?;
    Ok(s)
}

/// The status of the answer on `s` (0 if none came).
fn status(s: &mut TcpStream) -> u16 {
    let mut buf = [0u8; 512];
    let mut got = Vec::new();
    while !got.windows(2).any(|w| w == b"\r\n") {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&got)
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

fn post(ctx: &Ctx, content_type: &str, body: &[u8]) -> Result<(u16, Value), String> {
    let reply = client(ctx)?
        .send("POST", "/ingest", content_type, body)
        .map_err(|e| e.to_string())?;
    let v = serde_json::from_slice(&reply.body).unwrap_or(Value::Null);
    Ok((reply.status, v))
}

fn line(ctx: &Ctx, _: &str) -> Result<String, String> {
    let tags: String = (0..100_000).map(|i| format!(",t{i}=v{i}")).collect();
    let fields: Vec<String> = (0..100_000).map(|i| format!("f{i}={i}")).collect();
    let body = format!("m{tags} {}\n", fields.join(","));
    let t = Instant::now();
    let (status, v) = post(ctx, "text/plain", body.as_bytes())?;
    Ok(format!(
        "{:.1} MB line: {status} in {} ms ({})",
        body.len() as f64 / 1e6,
        t.elapsed().as_millis(),
        v["error"]
            .as_str()
            .unwrap_or("")
            .chars()
            .take(60)
            .collect::<String>()
    ))
}

fn zeros_len(ctx: &Ctx) -> usize {
    (40 * MIB).min(ctx.max_body) as usize
}

fn zeros(ctx: &Ctx, _: &str) -> Result<String, String> {
    let n = zeros_len(ctx) / 2;
    let mut body = Vec::with_capacity(n * 2 + 1);
    body.push(b'[');
    for _ in 1..n {
        body.extend_from_slice(b"0,");
    }
    body.extend_from_slice(b"0]");
    let mut c = client(ctx)?;
    let reply = c
        .send("POST", "/ingest", "application/json", &body)
        .map_err(|e| e.to_string())?;
    let v: Value = serde_json::from_slice(&reply.body).unwrap_or(Value::Null);
    Ok(format!(
        "{} MiB of zeros: {}, {} refused, {} listed, answer {} bytes",
        body.len() >> 20,
        reply.status,
        v["rejected_total"],
        v["rejected"].as_array().map_or(0, Vec::len),
        reply.body.len()
    ))
}

const SILENT: usize = 400;

fn declared(ctx: &Ctx, _: &str) -> Result<String, String> {
    let head = format!(
        "POST /ingest HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n[",
        ctx.max_body
    );
    let mut held = Vec::new();
    for _ in 0..SILENT {
        let mut s = raw(ctx)?;
        s.write_all(head.as_bytes()).map_err(|e| e.to_string())?;
        held.push(s);
    }
    std::thread::sleep(Duration::from_secs(3));
    Ok(format!(
        "{SILENT} connections declaring {} MiB, one byte sent, held 3 s",
        ctx.max_body >> 20
    ))
}

/// Sends `head`, then `unit` repeated up to `total` bytes or until the node answers.
fn endless(ctx: &Ctx, head: &str, unit: &[u8], total: usize) -> Result<(u16, usize), String> {
    let mut s = raw(ctx)?;
    s.write_all(head.as_bytes()).map_err(|e| e.to_string())?;
    let block: Vec<u8> = unit.iter().copied().cycle().take(64 * 1024).collect();
    let mut sent = 0;
    s.set_write_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    while sent < total {
        match s.write(&block) {
            Ok(n) => sent += n,
            Err(_) => break,
        }
    }
    Ok((status(&mut s), sent))
}

fn chunked(ctx: &Ctx, _: &str) -> Result<String, String> {
    let head = "POST /ingest HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
                Transfer-Encoding: chunked\r\n\r\n";
    let (ext, ext_sent) = endless(ctx, &format!("{head}1;"), b"a", 160 << 20)?;
    let (trailer, trailer_sent) = endless(ctx, &format!("{head}0\r\n"), b"x-a: b\r\n", 160 << 20)?;
    Ok(format!(
        "160 MiB extension: {ext} after {} KiB; 160 MiB trailers: {trailer} after {} KiB",
        ext_sent >> 10,
        trailer_sent >> 10
    ))
}

/// A dashboard of one widget per metric, aggregated with `aggregation`.
fn dashboard(
    ctx: &Ctx,
    metrics: &[String],
    aggregation: &str,
    extra: Value,
) -> Result<String, String> {
    let widgets: Vec<Value> = metrics
        .iter()
        .map(|m| {
            let mut w = json!({"metric_name": m, "aggregation": aggregation,
                               "window_seconds": 60, "refresh_interval_seconds": 1});
            if !extra.is_null() {
                w["display_config"] = extra.clone();
            }
            w
        })
        .collect();
    let body = json!({"name": "hostile", "widgets": widgets});
    let reply = client(ctx)?
        .send(
            "POST",
            "/dashboards",
            "application/json",
            &serde_json::to_vec(&body).map_err(|e| e.to_string())?,
        )
        .map_err(|e| e.to_string())?;
    if reply.status != 201 {
        return Err(format!("creating a dashboard: {}", reply.reason()));
    }
    let v: Value = serde_json::from_slice(&reply.body).map_err(|e| e.to_string())?;
    Ok(v["dashboard_id"].as_str().unwrap_or_default().to_string())
}

fn pings(ctx: &Ctx, _: &str) -> Result<String, String> {
    let id = dashboard(ctx, &["pinged".to_string()], "sum", Value::Null)?;
    let stream = raw(ctx)?;
    let url = format!("ws://{}/stream/{id}", ctx.addr);
    let (mut ws, _) = tungstenite::client(url.as_str(), stream).map_err(|e| e.to_string())?;
    let socket = ws.get_mut();
    let mut reader = socket.try_clone().map_err(|e| e.to_string())?;
    let drain = std::thread::spawn(move || {
        let mut buf = vec![0u8; 1 << 16];
        let mut got = 0usize;
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 {
                break;
            }
            got += n;
        }
        got
    });
    let ping = [0x89u8, 0x80, 1, 2, 3, 4];
    let block: Vec<u8> = ping.iter().copied().cycle().take(6 * 10_000).collect();
    socket
        .set_write_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    let until = Instant::now() + Duration::from_secs(10);
    let mut sent = 0usize;
    while Instant::now() < until {
        match socket.write(&block[sent % block.len()..]) {
            Ok(n) => sent += n,
            Err(_) => break,
        }
    }
    let _ = socket.shutdown(std::net::Shutdown::Both);
    let pongs = drain.join().unwrap_or(0);
    Ok(format!(
        "10 s of pings: {} MB sent, {} MB of pongs read",
        sent / 1_000_000,
        pongs / 1_000_000
    ))
}

fn names(ctx: &Ctx, _: &str) -> Result<String, String> {
    let mut c = client(ctx)?;
    let t = now_ms();
    for batch in 0..100 {
        let events: Vec<Value> = (0..10_000)
            .map(|i| json!({"metric_name": format!("n{batch}.{i}"), "value": 1.0, "event_time": t}))
            .collect();
        let body = serde_json::to_vec(&events).map_err(|e| e.to_string())?;
        let reply = c
            .send("POST", "/ingest", "application/json", &body)
            .map_err(|e| e.to_string())?;
        if reply.status != 200 {
            return Err(format!("ingest: {}", reply.reason()));
        }
    }
    let reply = c
        .send("GET", "/api/metric-names", "application/json", b"")
        .map_err(|e| e.to_string())?;
    let kept = serde_json::from_slice::<Value>(&reply.body)
        .ok()
        .and_then(|v| v.as_array().map(Vec::len))
        .unwrap_or(0);
    Ok(format!("1,000,000 distinct names: {kept} remembered"))
}

const EXTREME_WIDGETS: usize = 4_000;

fn extremes(ctx: &Ctx, _: &str) -> Result<String, String> {
    let metrics: Vec<String> = (0..EXTREME_WIDGETS).map(|i| format!("x{i}")).collect();
    for chunk in metrics.chunks(200) {
        dashboard(ctx, chunk, "p99", Value::Null)?;
    }
    let events = livedash_bench::hostile::extreme_events(&metrics, now_ms());
    let body = serde_json::to_vec(&events).map_err(|e| e.to_string())?;
    let (status, v) = post(ctx, "application/json", &body)?;
    // Let every widget refresh with both values in its window.
    std::thread::sleep(Duration::from_secs(2));
    Ok(format!(
        "{EXTREME_WIDGETS} p99 widgets, {} events at 5e-324 and 1e200: {status}",
        v["accepted"]
    ))
}

fn dashboards(ctx: &Ctx, _: &str) -> Result<String, String> {
    let mut refused = 0;
    for _ in 0..2_000 {
        if dashboard(ctx, &[], "sum", Value::Null).is_err() {
            refused += 1;
        }
    }
    Ok(format!("2,000 more dashboards: {refused} refused with 429"))
}

/// Display options nested `depth` deep around `zeros` zeros: pretty-printed, one line
/// each.
fn deep(depth: usize, zeros: usize) -> Value {
    let mut v = json!(vec![0; zeros]);
    for _ in 1..depth {
        v = json!([v]);
    }
    json!({ "deep": v })
}

fn pretty(ctx: &Ctx, _: &str) -> Result<String, String> {
    let metrics: Vec<String> = (0..200).map(|i| format!("p{i}")).collect();
    // Ten times the size found (nested 100 deep around 3,000 zeros) is refused; the
    // largest allowed (8 deep around 500 zeros) is stored.
    let refused = dashboard(ctx, &metrics, "sum", deep(100, 3_000)).is_err();
    dashboard(ctx, &metrics, "sum", deep(8, 500))?;
    let largest = std::fs::read_dir(ctx.data_dir.join("dashboards"))
        .map_err(|e| e.to_string())?
        .filter_map(Result::ok)
        .filter_map(|e| e.metadata().ok().map(|m| m.len()))
        .max()
        .unwrap_or(0);
    Ok(format!(
        "display options 100 deep around 3,000 zeros per widget: {}; 8 deep around 500: stored in {:.2} MB",
        if refused { "refused" } else { "ACCEPTED" },
        largest as f64 / 1e6
    ))
}

/// A connection that sends `request` and never reads.
fn unread(ctx: &Ctx, request: &str) -> Result<TcpStream, String> {
    let mut s = raw(ctx)?;
    s.write_all(request.as_bytes()).map_err(|e| e.to_string())?;
    Ok(s)
}

fn large_dashboard(ctx: &Ctx) -> Result<String, String> {
    let metrics: Vec<String> = (0..200).map(|i| format!("s{i}")).collect();
    dashboard(ctx, &metrics, "sum", json!({"note": "x".repeat(12_000)}))
}

const UNREAD: usize = 400;

fn slow_lists(ctx: &Ctx, _: &str) -> Result<String, String> {
    let list = client(ctx)?
        .send("GET", "/dashboards", "application/json", b"")
        .map_err(|e| e.to_string())?
        .body
        .len();
    let mut held = Vec::new();
    for _ in 0..UNREAD {
        held.push(unread(
            ctx,
            "GET /dashboards HTTP/1.1\r\nHost: localhost\r\n\r\n",
        )?);
    }
    std::thread::sleep(Duration::from_secs(3));
    Ok(format!(
        "{UNREAD} unread lists of {:.1} MB, held 3 s",
        list as f64 / 1e6
    ))
}

fn slow_snapshots(ctx: &Ctx, id: &str) -> Result<String, String> {
    let mut held = Vec::new();
    for _ in 0..UNREAD {
        held.push(unread(
            ctx,
            &format!(
                "GET /stream/{id} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n\
                 Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
                 Sec-WebSocket-Version: 13\r\n\r\n"
            ),
        )?);
    }
    std::thread::sleep(Duration::from_secs(3));
    Ok(format!(
        "{UNREAD} unread snapshots of a 2.5 MB dashboard, held 3 s"
    ))
}

fn cross_site(ctx: &Ctx, _: &str) -> Result<String, String> {
    let mut forbidden = 0;
    let mut s = raw(ctx)?;
    for _ in 0..10_000 {
        let body = b"[]";
        let req = format!(
            "POST /ingest HTTP/1.1\r\nHost: localhost\r\nOrigin: http://evil.example\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        if s.write_all(req.as_bytes()).is_err() || s.write_all(body).is_err() {
            s = raw(ctx)?;
            continue;
        }
        if status(&mut s) == 403 {
            forbidden += 1;
        }
        // The answer's body is small; a new connection avoids reading it.
        s = raw(ctx)?;
    }
    Ok(format!(
        "10,000 writes from another origin: {forbidden} got 403"
    ))
}

fn small(ctx: &Ctx, _: &str) -> Result<String, String> {
    let mut s = raw(ctx)?;
    s.write_all(b"POST /ingest HTTP/1.1\r\nHost: localhost\r\nContent-Length: +2\r\n\r\n[]")
        .map_err(|e| e.to_string())?;
    let signed = status(&mut s);
    let t = now_ms();
    let big = json!([{"metric_name": "big", "value": 1.7e308, "event_time": t},
                     {"metric_name": "big", "value": 1.7e308, "event_time": t}]);
    let (status, v) = post(ctx, "application/json", big.to_string().as_bytes())?;
    Ok(format!(
        "Content-Length: +2: {signed}; two 1.7e308 values: {status}, {} refused",
        v["rejected_total"]
    ))
}

pub fn all() -> Vec<Input> {
    vec![
        Input {
            name: "line",
            sends: "one line of 100,000 tags and 100,000 fields",
            bound: |_| bound(3 * 3 * MIB, "3 x the body"),
            prepare: nothing,
            run: line,
        },
        Input {
            name: "zeros",
            sends: "[0,0,...] of 40 MiB",
            bound: |c| bound(3 * zeros_len(c) as u64, "3 x the body"),
            prepare: nothing,
            run: zeros,
        },
        Input {
            name: "declared",
            sends: "400 x Content-Length of max_body_bytes, then silence",
            bound: |_| bound(SILENT as u64 * 128 * 1024, "connections x 128 KiB"),
            prepare: nothing,
            run: declared,
        },
        Input {
            name: "chunked",
            sends: "a 160 MiB chunk extension, 160 MiB of trailers",
            bound: |_| bound(MIB, "1 MiB"),
            prepare: nothing,
            run: chunked,
        },
        Input {
            name: "pings",
            sends: "10 s of WebSocket pings",
            bound: |_| bound(2 * 64 * 1024, "2 x stream_read_bytes"),
            prepare: nothing,
            run: pings,
        },
        Input {
            name: "names",
            sends: "1,000,000 distinct metric names",
            bound: |c| {
                bound(
                    c.shards as u64 * 2_000 * 512,
                    "shards x max_metric_names x 512 B",
                )
            },
            prepare: nothing,
            run: names,
        },
        Input {
            name: "extremes",
            sends: "4,000 p99 widgets, 5e-324 and 1e200 in each",
            bound: |_| {
                bound(
                    EXTREME_WIDGETS as u64 * (2 * 4_096 * 8 + 16 * 1024),
                    "queries x (2 stores x max_histogram_buckets x 8 B + 16 KiB of panes)",
                )
            },
            prepare: nothing,
            run: extremes,
        },
        Input {
            name: "pretty",
            sends: "a dashboard of 200 widgets with display options nested 100 deep",
            bound: |_| bound(4 * 2 * MIB, "4 x the dashboard"),
            prepare: nothing,
            run: pretty,
        },
        Input {
            name: "slow_lists",
            sends: "400 GET /dashboards, never read",
            bound: |c| {
                bound(
                    c.shards as u64 * 2 * 40 * MIB + UNREAD as u64 * 64 * 1024,
                    "shards x 2 copies of the list + connections x 64 KiB",
                )
            },
            prepare: large_dashboard,
            run: slow_lists,
        },
        Input {
            name: "slow_snaps",
            sends: "400 stream snapshots of a 2.5 MB dashboard, never read",
            bound: |c| {
                bound(
                    c.shards as u64 * 2 * 3 * MIB + UNREAD as u64 * 64 * 1024,
                    "shards x 2 snapshots + connections x 64 KiB",
                )
            },
            prepare: large_dashboard,
            run: slow_snapshots,
        },
        Input {
            name: "cross_site",
            sends: "10,000 ingests with a foreign Origin",
            bound: |_| bound(0, "nothing"),
            prepare: nothing,
            run: cross_site,
        },
        Input {
            name: "small",
            sends: "Content-Length: +2; two 1.7e308 values",
            bound: |_| bound(0, "nothing"),
            prepare: nothing,
            run: small,
        },
        Input {
            name: "dashboards",
            sends: "2,000 dashboards on top (max_dashboards is 1,000)",
            bound: |_| bound(1_000 * 4 * 1024, "max_dashboards x 4 KiB"),
            prepare: nothing,
            run: dashboards,
        },
    ]
}
