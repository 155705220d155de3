//! loadgen against a real node for a few seconds at small scale: the report's counts must
//! agree with each other.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde_json::Value;

/// The `livedash` binary of the same build (next to this test's directory).
fn livedash_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .map(PathBuf::from)
        .unwrap_or_default();
    let bin = dir.join("livedash");
    assert!(
        bin.exists(),
        "{} is missing: build it with `cargo build --bin livedash` (cargo test --workspace does)",
        bin.display()
    );
    bin
}

/// Starts a node on a free port with a private data directory; returns it and its address.
fn start_node(data: &std::path::Path) -> (std::process::Child, String) {
    start_node_with(data, &[])
}

fn start_node_with(data: &std::path::Path, extra: &[&str]) -> (std::process::Child, String) {
    let mut node = Command::new(livedash_bin())
        .args(["--listen", "127.0.0.1:0", "--shards", "2", "--data-dir"])
        .arg(data)
        .args(extra)
        .env("LIVEDASH_LOG", "warn")
        // The tests count the dashboards loadgen leaves behind: no self-dashboard.
        .env("LIVEDASH_SELF_DASHBOARD", "false")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut banner = String::new();
    BufReader::new(node.stdout.take().unwrap())
        .read_line(&mut banner)
        .unwrap();
    let addr = banner
        .split("http://")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap()
        .to_string();
    (node, addr)
}

#[test]
fn seed_baseline_runs_both_sides() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut redis = match Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(Stdio::null())
        .spawn()
    {
        Ok(child) => child,
        Err(e) => panic!(
            "redis-server cannot start ({e}): install it with `apt-get install -y redis-server` \
             (bash .ci/run does)"
        ),
    };
    let data = std::env::temp_dir().join(format!("loadgen-baseline-{}", std::process::id()));
    let (mut node, addr) = start_node(&data);
    // Wait for Redis to accept connections.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "redis-server did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let out = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args([
            "seed-baseline",
            "--redis",
            &format!("redis://127.0.0.1:{port}"),
        ])
        .args([
            "--target",
            &format!("http://{addr}"),
            "--duration",
            "2s",
            "--metrics",
            "100",
        ])
        .arg("--json")
        .arg(data.join("baseline.json"))
        .output()
        .unwrap();
    let baseline: Value = std::fs::read(data.join("baseline.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null);
    let _ = node.kill();
    let _ = redis.kill();
    let _ = node.wait();
    let _ = redis.wait();
    let _ = std::fs::remove_dir_all(&data);
    assert!(
        out.status.success(),
        "loadgen failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let rate = |prefix: &str| -> f64 {
        let line = text
            .lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix:?} in {text}"));
        line.split_whitespace()
            .find_map(|w| w.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    assert!(rate("original design on Redis:") > 0.0, "{text}");
    assert!(rate("livedash over HTTP:") > 0.0, "{text}");
    assert!(text.contains("livedash / original design:"), "{text}");
    assert!(
        baseline["redis_events_per_s"].as_f64() > Some(0.0)
            && baseline["ratio"].as_f64() > Some(0.0),
        "{baseline}"
    );
}

/// `GET path` on `addr`: the status and body.
fn get(addr: &str, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map_or("", |b| b.1).to_owned();
    (status, body)
}

fn loadgen(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn failures_say_why_and_exit_non_zero() {
    let data = std::env::temp_dir().join(format!("loadgen-fail-{}", std::process::id()));
    let (mut node, addr) = start_node_with(&data, &["--ingest-token", "secret"]);
    let target = format!("http://{addr}");
    let common = ["--duration", "2s", "--warmup", "0s"];
    // An unknown dashboard.
    let unknown = uuid::Uuid::new_v4().to_string();
    let out = loadgen(
        &[
            &[
                "sockets",
                "--target",
                &target,
                "--sockets",
                "2",
                "--dashboard",
                &unknown,
            ][..],
            &common,
        ]
        .concat(),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("does not exist"),
        "{err}"
    );
    assert!(err.contains("runs no producers"), "{err}");
    // A missing token.
    let out = loadgen(
        &[
            &["ingest", "--target", &target, "--rate", "1000"][..],
            &common,
        ]
        .concat(),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("HTTP 401"), "{err}");
    let _ = node.kill();
    let _ = node.wait();
    // Nobody listens.
    let out = loadgen(
        &[
            &["ingest", "--target", &target, "--rate", "1000"][..],
            &common,
        ]
        .concat(),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("cannot reach"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&data);
}

#[test]
fn ctrl_c_prints_the_report_so_far() {
    let data = std::env::temp_dir().join(format!("loadgen-int-{}", std::process::id()));
    let (mut node, addr) = start_node(&data);
    let json = data.join("int.json");
    let run = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args([
            "ingest",
            "--target",
            &format!("http://{addr}"),
            "--rate",
            "2000",
        ])
        .args(["--duration", "60s", "--warmup", "0s", "--json"])
        .arg(&json)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_secs(2));
    Command::new("kill")
        .args(["-INT", &run.id().to_string()])
        .status()
        .unwrap();
    let out = run.wait_with_output().unwrap();
    let _ = node.kill();
    let _ = node.wait();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("(interrupted)"), "{text}");
    let r: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let _ = std::fs::remove_dir_all(&data);
    assert_eq!(r["interrupted"], true, "{r}");
    assert!(r["duration_s"].as_f64().unwrap() < 30.0, "{r}");
    assert!(r["events_acked"].as_u64() > Some(0), "{r}");
    assert!(r["ingest_latency_ms"]["p99"].as_f64() > Some(0.0), "{r}");
    // Not measured, so not reported: no streams ran.
    assert!(
        r.get("e2e_latency_ms").is_none() && r.get("sockets_target").is_none(),
        "{r}"
    );
}

#[test]
fn scenario_report_is_consistent() {
    let data = std::env::temp_dir().join(format!("loadgen-smoke-{}", std::process::id()));
    let (mut node, addr) = start_node(&data);
    let json = data.join("report.json");
    let plot = data.join("report.svg");
    let out = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args([
            "scenario",
            "--target",
            &format!("http://{addr}"),
            "--rate",
            "5000",
            "--batch",
            "100",
        ])
        .args([
            "--connections",
            "2",
            "--sockets",
            "20",
            "--dashboards",
            "2",
            "--widgets",
            "5",
        ])
        .args([
            "--refresh",
            "0.2",
            "--duration",
            "3s",
            "--warmup",
            "1s",
            "--metrics",
            "50",
        ])
        .args([
            "--widget-metrics",
            "50",
            "--server-pid",
            &node.id().to_string(),
        ])
        .arg("--json")
        .arg(&json)
        .arg("--plot")
        .arg(&plot)
        .output()
        .unwrap();
    // The dashboards the run created are gone.
    let (status, listed) = get(&addr, "/dashboards");
    let _ = node.kill();
    let _ = node.wait();
    assert!(
        out.status.success(),
        "loadgen failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let n = |k: &str| {
        r[k].as_u64()
            .unwrap_or_else(|| panic!("{k} missing in {r}"))
    };
    assert_eq!(r["scenario"], "scenario");
    assert!(n("events_sent") > 0);
    assert_eq!(
        n("events_acked") + n("events_rejected"),
        n("events_sent"),
        "{r}"
    );
    assert_eq!(n("errors"), 0, "{r}");
    assert_eq!(
        (n("sockets_target"), n("sockets_connected")),
        (20, 20),
        "{r}"
    );
    assert!(n("updates_received") > 0, "{r}");
    assert_eq!((status, listed.trim()), (200, "[]"));
    assert!(r["ingest_latency_ms"]["p99"].as_f64() > Some(0.0), "{r}");
    assert!(n("e2e_events") > 0, "{r}");
    for key in ["e2e_latency_ms", "freshness_ms", "push_delay_ms"] {
        let p = &r[key];
        let v: Vec<f64> = ["p50", "p90", "p99", "p999", "max"]
            .iter()
            .map(|q| p[q].as_f64().unwrap())
            .collect();
        assert!(v.windows(2).all(|w| w[0] <= w[1]), "{key} not ordered: {p}");
        assert!(v[0] > 0.0, "{key}: {p}");
    }
    assert!(
        r["server_cpu_seconds"].as_f64().is_some() && n("server_rss_bytes") > 0,
        "{r}"
    );
    let svg = std::fs::read_to_string(&plot).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("latency over time"));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("events") && text.contains("e2e") && text.contains("freshness"),
        "{text}"
    );
    std::fs::remove_dir_all(data).unwrap();
}
