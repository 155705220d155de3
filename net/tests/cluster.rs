//! The cluster against a real Redis and a real Kafka-compatible broker (both started per
//! test), with node processes on loopback: a widget one node owns streams to a browser on
//! another; an edit on one node reaches streams on the others; of two concurrent edits of
//! one dashboard one wins and the other gets 409, and no accepted edit is lost; a node
//! killed under load hands its partitions and its streams to the survivors, which then
//! serve exact values; Redis restarted: other nodes' values go stale, then fresh again,
//! and nothing is lost.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::cluster::{PARTITIONS, add, batch, cluster, eventually, owned};
use common::{Client, ReplyExt, Server, create_dashboard};
use livedash_engine::Placement;
use serde_json::{Value, json};
use tungstenite::{Message, WebSocket};

type Ws = WebSocket<TcpStream>;

fn start(args: &[String]) -> Server {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Server::start(&args)
}

/// Waits until `nodes` own every partition between them, each at least one.
fn split(clients: &mut [Client]) -> Vec<Vec<u32>> {
    eventually(90, "the partitions to be shared by every node", || {
        let owned: Vec<Vec<u32>> = clients.iter_mut().map(owned).collect();
        let total: usize = owned.iter().map(Vec::len).sum();
        (total == PARTITIONS as usize && owned.iter().all(|o| !o.is_empty())).then_some(owned)
    })
}

/// One metric per partition, two per partition in all.
fn metrics() -> Vec<String> {
    let placement = Placement::cluster(PARTITIONS, 2);
    let mut out = Vec::new();
    for p in 0..PARTITIONS {
        out.extend(
            (0..)
                .map(|i| format!("cluster.{i}"))
                .filter(|m| placement.partition(m) == p)
                .take(2),
        );
    }
    out
}

fn partition(metric: &str) -> u32 {
    Placement::cluster(PARTITIONS, 2).partition(metric)
}

fn sum_widgets(metrics: &[String]) -> Value {
    metrics
        .iter()
        .map(|m| {
            json!({"metric_name": m, "aggregation": "sum", "window_seconds": 300,
                   "refresh_interval_seconds": 0.2})
        })
        .collect()
}

/// `sum_widgets`, each split by host (its value is still the metric's sum).
fn sums_by_host(metrics: &[String]) -> Value {
    let mut widgets = sum_widgets(metrics);
    for w in widgets.as_array_mut().unwrap() {
        w["group_by"] = json!("host");
    }
    widgets
}

fn ws_connect(addr: SocketAddr, dashboard: &Value) -> Ws {
    let stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let url = format!(
        "ws://{addr}/stream/{}",
        dashboard["dashboard_id"].as_str().unwrap()
    );
    let (ws, response) = tungstenite::client(url.as_str(), stream).unwrap();
    assert_eq!(response.status(), 101);
    ws
}

/// The next JSON text frame, or `None` once the stream closed or failed.
fn next_frame(ws: &mut Ws) -> Option<Value> {
    loop {
        match ws.read() {
            Ok(Message::Text(t)) => return Some(serde_json::from_str(&t).unwrap()),
            Ok(Message::Close(c)) => {
                eprintln!("stream closed: {c:?}");
                return None;
            }
            Err(e) => {
                eprintln!("stream failed: {e}");
                return None;
            }
            Ok(_) => {}
        }
    }
}

/// What a stream showed: per widget id its latest value and stale flag, and the live
/// nodes of the last snapshot.
#[derive(Debug, Default)]
struct Screen {
    values: BTreeMap<String, (Option<f64>, bool)>,
    nodes: Vec<String>,
    dashboard: Option<Value>,
}

impl Screen {
    fn take(&mut self, frame: &Value) {
        match frame["type"].as_str() {
            Some("snapshot") => {
                self.values.clear();
                for w in frame["widgets"].as_array().unwrap() {
                    self.take_widget(w);
                }
                self.nodes = frame["nodes"]
                    .as_array()
                    .map(|n| n.iter().map(|u| u.as_str().unwrap().to_owned()).collect())
                    .unwrap_or_default();
                self.dashboard = Some(frame["dashboard"].clone());
            }
            Some("update") => frame["widgets"]
                .as_array()
                .unwrap()
                .iter()
                .for_each(|w| self.take_widget(w)),
            Some("dashboard") => self.dashboard = Some(frame["dashboard"].clone()),
            _ => {}
        }
    }

    fn take_widget(&mut self, w: &Value) {
        self.values.insert(
            w["widget_id"].as_str().unwrap().to_owned(),
            (w["value"].as_f64(), w["stale"].as_bool().unwrap_or(false)),
        );
    }

    /// Widgets whose fresh value is not the metric's sum, as (metric, shown, want).
    fn wrong(&self, dashboard: &Value, sums: &BTreeMap<String, f64>) -> Vec<String> {
        dashboard["widgets"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|w| {
                let metric = w["metric_name"].as_str().unwrap();
                let shown = self.values.get(w["widget_id"].as_str().unwrap());
                let want = sums.get(metric).copied();
                (shown.map(|s| s.0) != Some(want) || shown.is_some_and(|s| s.1))
                    .then(|| format!("{metric}: {shown:?}, want {want:?}"))
            })
            .collect()
    }

    /// `Ok` once every widget shows its metric's sum, fresh; otherwise the ones that do not.
    fn exact(&self, dashboard: &Value, sums: &BTreeMap<String, f64>) -> Result<(), String> {
        let wrong = self.wrong(dashboard, sums);
        if wrong.is_empty() {
            Ok(())
        } else {
            Err(wrong.join("; "))
        }
    }
}

/// Reads `ws` into `screen` until `done(screen)` is `Ok`; panics after `secs` seconds
/// with what `done` said last.
fn watch(
    ws: &mut Ws,
    screen: &mut Screen,
    secs: u64,
    what: &str,
    done: impl Fn(&Screen) -> Result<(), String>,
) {
    let give_up = Instant::now() + Duration::from_secs(secs);
    while let Err(missing) = done(screen) {
        assert!(
            Instant::now() < give_up,
            "timed out waiting for {what} ({missing}): {screen:?}"
        );
        let frame = next_frame(ws)
            .unwrap_or_else(|| panic!("stream closed waiting for {what} ({missing}): {screen:?}"));
        screen.take(&frame);
    }
}

/// `Ok` when `cond` holds.
fn holds(cond: bool) -> Result<(), String> {
    if cond { Ok(()) } else { Err("not yet".into()) }
}

fn ingest(c: &mut Client, metrics: &[String], sums: &mut BTreeMap<String, f64>, seed: usize) {
    let (events, more) = batch(metrics, 400, seed);
    let r = c.json("POST", "/ingest", &events);
    assert_eq!(r.status, 200, "{}", r.error());
    add(sums, &more);
}

#[test]
fn any_node_streams_any_widget_and_edits_reach_every_node() {
    let (_broker, _redis, args) = cluster("cluster-stream");
    let (a, b) = (start(&args), start(&args));
    let mut clients = [a.client(), b.client()];
    let owned = split(&mut clients);
    let [mut ca, mut cb] = clients;
    let metrics = metrics();
    // Every partition has widgets, so some widgets are A's and some are B's. Each is
    // split by host: its series and their history travel between nodes too.
    let dash = create_dashboard(&mut ca, "cluster", sums_by_host(&metrics));
    let id = dash["dashboard_id"].as_str().unwrap().to_owned();
    eventually(10, "the dashboard on the other node", || {
        (cb.get(&format!("/dashboards/{id}")).status == 200).then_some(())
    });
    let mut on_b = ws_connect(b.addr, &dash);
    let mut screen_b = Screen::default();
    screen_b.take(&next_frame(&mut on_b).unwrap());
    let mut sums = BTreeMap::new();
    for seed in 0..3 {
        ingest(&mut ca, &metrics, &mut sums, seed);
    }
    watch(&mut on_b, &mut screen_b, 30, "every value on B", |s| {
        s.exact(&dash, &sums)
    });
    assert!(
        metrics.iter().any(|m| owned[0].contains(&partition(m))),
        "some widget on B's screen is A's"
    );
    // A new stream on B gets a snapshot with every value, those of A's widgets from
    // what A stored in Redis, and the live nodes.
    let mut again = ws_connect(b.addr, &dash);
    let mut fresh = Screen::default();
    let snapshot = next_frame(&mut again).unwrap();
    fresh.take(&snapshot);
    assert!(fresh.wrong(&dash, &sums).is_empty(), "{fresh:?}");
    // With every widget's series by host, and their recent history, A's widgets too.
    for w in snapshot["widgets"].as_array().unwrap() {
        let series = w["series"].as_object().expect("a grouped widget's series");
        let parts: f64 = series.values().map(|v| v.as_f64().unwrap()).sum();
        assert!(
            series
                .keys()
                .all(|h| ["h0", "h1", "h2"].contains(&h.as_str())),
            "{w}"
        );
        assert_eq!(
            Some(parts),
            w["value"].as_f64(),
            "every event has a host: {w}"
        );
        let details = w["detail_history"].as_array().expect("detail history");
        assert!(details.last().unwrap()[1]["series"].is_object(), "{w}");
    }
    assert_eq!(fresh.nodes.len(), 2, "{:?}", fresh.nodes);
    // An edit on B reaches a stream on A.
    let mut on_a = ws_connect(a.addr, &dash);
    let mut screen_a = Screen::default();
    screen_a.take(&next_frame(&mut on_a).unwrap());
    let patch = json!({"add": [{"metric_name": metrics[0], "aggregation": "count",
                                 "window_seconds": 60, "refresh_interval_seconds": 0.2}]});
    let r = cb.json("PATCH", &format!("/dashboards/{id}/widgets"), &patch);
    assert_eq!(r.status, 200, "{}", r.error());
    watch(&mut on_a, &mut screen_a, 10, "the edit on A", |s| {
        holds(
            s.dashboard
                .as_ref()
                .is_some_and(|d| d["widgets"].as_array().unwrap().len() == metrics.len() + 1),
        )
    });
    let on_a_now = ca.get(&format!("/dashboards/{id}")).json();
    assert_eq!(
        on_a_now["widgets"].as_array().unwrap().len(),
        metrics.len() + 1
    );
    // Deleted on A: the stream on B closes with 4410.
    assert_eq!(ca.delete(&format!("/dashboards/{id}")).status, 204);
    let give_up = Instant::now() + Duration::from_secs(10);
    let closed = loop {
        match on_b.read() {
            Ok(Message::Close(c)) => break c.map(|c| u16::from(c.code)),
            Ok(_) if Instant::now() < give_up => {}
            other => panic!("no close: {other:?}"),
        }
    };
    assert_eq!(closed, Some(4410));
}

#[test]
fn concurrent_edits_one_wins_the_other_gets_409_and_none_is_lost() {
    let (_broker, _redis, args) = cluster("cluster-edits");
    let (a, b) = (start(&args), start(&args));
    let mut ca = a.client();
    let dash = create_dashboard(&mut ca, "edits", sum_widgets(&metrics()[..1]));
    let id = dash["dashboard_id"].as_str().unwrap().to_owned();
    let mut cb = b.client();
    eventually(10, "the dashboard on B", || {
        (cb.get(&format!("/dashboards/{id}")).status == 200).then_some(())
    });
    let path = format!("/dashboards/{id}/widgets");
    let (mut won, mut conflicts) = (0, 0);
    for round in 0..40 {
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(2));
        let edits: Vec<_> = [a.addr, b.addr]
            .into_iter()
            .enumerate()
            .map(|(n, addr)| {
                let (barrier, path) = (barrier.clone(), path.clone());
                std::thread::spawn(move || {
                    let mut c = Client::connect(addr);
                    let patch = json!({"add": [{"metric_name": format!("edit.{round}.{n}"),
                        "aggregation": "sum", "window_seconds": 60, "refresh_interval_seconds": 1}]});
                    barrier.wait();
                    let r = c.json("PATCH", &path, &patch);
                    (r.status, r.error())
                })
            })
            .collect();
        for edit in edits {
            let (status, error) = edit.join().unwrap();
            match status {
                200 => won += 1,
                409 => {
                    assert!(error.contains("read it again"), "{error}");
                    conflicts += 1;
                }
                other => panic!("status {other}: {error}"),
            }
        }
        if conflicts >= 3 && round >= 10 {
            break;
        }
    }
    assert!(conflicts > 0, "no edit ever conflicted");
    // Every edit that got 200 is in the dashboard, on both nodes.
    for c in [&mut ca, &mut cb] {
        eventually(10, "every accepted edit on both nodes", || {
            let d = c.get(&format!("/dashboards/{id}")).json();
            (d["widgets"].as_array().unwrap().len() == 1 + won).then_some(())
        });
    }
}

/// Sends batches through `addr` until `stop`; returns the sums of those acknowledged.
fn load(
    addr: SocketAddr,
    metrics: Vec<String>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<BTreeMap<String, f64>> {
    std::thread::spawn(move || {
        let mut c = Client::connect(addr);
        let mut sums = BTreeMap::new();
        let mut seed = 100;
        while !stop.load(std::sync::atomic::Ordering::Acquire) {
            let (events, more) = batch(&metrics, 200, seed);
            seed += 1;
            let r = c.json("POST", "/ingest", &events);
            if r.status == 200 {
                add(&mut sums, &more);
            } else {
                // Not acknowledged: counted nowhere, sent again as another batch.
                c = Client::connect(addr);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        sums
    })
}

#[test]
fn a_killed_node_hands_over_partitions_and_streams_with_exact_values() {
    let (_broker, _redis, args) = cluster("cluster-kill");
    let nodes = [start(&args), start(&args), start(&args)];
    let mut clients: Vec<Client> = nodes.iter().map(Server::client).collect();
    let owned = split(&mut clients);
    let metrics = metrics();
    let dash = create_dashboard(&mut clients[0], "failover", sum_widgets(&metrics));
    let mut sums = BTreeMap::new();
    ingest(&mut clients[0], &metrics, &mut sums, 1);
    // A stream on every node.
    let mut streams: Vec<(Ws, Screen)> = nodes
        .iter()
        .map(|n| {
            let mut ws = ws_connect(n.addr, &dash);
            let mut screen = Screen::default();
            screen.take(&next_frame(&mut ws).unwrap());
            (ws, screen)
        })
        .collect();
    for (ws, screen) in &mut streams {
        watch(ws, screen, 30, "every value before the kill", |s| {
            s.exact(&dash, &sums)
                .and_then(|()| holds(s.nodes.len() == 3))
        });
    }
    // The victim owns partitions; load runs through a survivor meanwhile.
    let victim = owned.iter().position(|o| !o.is_empty()).unwrap().max(1);
    let survivor = if victim == 1 { 0 } else { 1 };
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let loader = load(nodes[survivor].addr, metrics.clone(), stop.clone());
    std::thread::sleep(Duration::from_secs(2));
    let [n0, n1, n2] = nodes;
    let mut alive = Vec::new();
    for (i, n) in [n0, n1, n2].into_iter().enumerate() {
        if i == victim {
            n.kill9();
        } else {
            alive.push(n);
        }
    }
    // The victim's stream closes; the client reconnects to a live node from the list
    // its snapshot gave, and gets a snapshot there.
    let (mut lost, mut lost_screen) = streams.remove(victim);
    while next_frame(&mut lost).is_some() {}
    let victim_url = format!(
        "http://{}",
        lost.get_ref()
            .peer_addr()
            .map_or_else(|_| String::new(), |a| a.to_string(),)
    );
    let elsewhere: SocketAddr = lost_screen
        .nodes
        .iter()
        .filter(|u| **u != victim_url)
        .filter_map(|u| u.strip_prefix("http://")?.parse().ok())
        .find(|a| alive.iter().any(|n| n.addr == *a))
        .expect("a live node in the snapshot's list");
    let mut moved = ws_connect(elsewhere, &dash);
    lost_screen.take(&next_frame(&mut moved).unwrap());
    streams.push((moved, lost_screen));
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, std::sync::atomic::Ordering::Release);
    add(&mut sums, &loader.join().unwrap());
    let mut survivors: Vec<Client> = alive.iter().map(Server::client).collect();
    eventually(60, "the survivors to own every partition", || {
        let total: usize = survivors
            .iter_mut()
            .map(|c| common::cluster::owned(c).len())
            .sum();
        (total == PARTITIONS as usize).then_some(())
    });
    for (ws, screen) in &mut streams {
        watch(ws, screen, 60, "exact values after the failover", |s| {
            s.exact(&dash, &sums)
        });
    }
}

#[test]
fn redis_restarted_values_go_stale_then_fresh_and_nothing_is_lost() {
    let (_broker, mut redis, args) = cluster("cluster-redis");
    let (a, b) = (start(&args), start(&args));
    let mut clients = [a.client(), b.client()];
    let owned = split(&mut clients);
    let [mut ca, mut cb] = clients;
    let metrics = metrics();
    let dash = create_dashboard(&mut ca, "redis", sum_widgets(&metrics));
    let id = dash["dashboard_id"].as_str().unwrap().to_owned();
    let mut sums = BTreeMap::new();
    ingest(&mut ca, &metrics, &mut sums, 1);
    let mut ws = ws_connect(b.addr, &dash);
    let mut screen = Screen::default();
    screen.take(&next_frame(&mut ws).unwrap());
    watch(&mut ws, &mut screen, 30, "every value on B", |s| {
        s.exact(&dash, &sums)
    });
    // A's widgets, as B shows them.
    let of_a: Vec<String> = dash["widgets"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| owned[0].contains(&partition(w["metric_name"].as_str().unwrap())))
        .map(|w| w["widget_id"].as_str().unwrap().to_owned())
        .collect();
    assert!(!of_a.is_empty());
    redis.stop();
    watch(&mut ws, &mut screen, 15, "A's widgets stale on B", |s| {
        holds(of_a.iter().all(|w| s.values.get(w).is_some_and(|v| v.1)))
    });
    // Events keep coming while Redis is away (Kafka takes them).
    ingest(&mut ca, &metrics, &mut sums, 2);
    redis.restart();
    ingest(&mut cb, &metrics, &mut sums, 3);
    watch(&mut ws, &mut screen, 60, "fresh, exact values on B", |s| {
        s.exact(&dash, &sums)
    });
    // Redis lost the catalogue; the nodes wrote it back, and edits work again.
    eventually(20, "an edit after the restart", || {
        let r = cb.json(
            "PUT",
            &format!("/dashboards/{id}"),
            &json!({"name": "renamed"}),
        );
        (r.status == 200).then_some(())
    });
    eventually(10, "the edit on A", || {
        (ca.get(&format!("/dashboards/{id}")).json()["name"] == "renamed").then_some(())
    });
}
