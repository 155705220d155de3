//! The state mirror against a real Redis and a real Kafka-compatible broker (both started
//! per test): a node killed with SIGKILL and restarted, or a survivor taking a dead
//! node's partitions over, serves exactly the values of every event acknowledged; with an
//! empty Redis the windows are rebuilt from the topic; a stale owner's write is refused;
//! Redis going away and coming back under load loses nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;

use common::cluster::{PARTITIONS, cluster, eventually, owned, stats};
use common::{Client, ReplyExt, Server, create_dashboard, now_ms};
use livedash_loadgen::redis::RedisServer;
use livedash_replication::redis::{
    Flush, FlushResult, PartitionFlush, RedisSettings, Scope, Writer, claim, connect,
};
use livedash_replication::{Doorbell, Inbox};
use serde_json::{Value, json};

const AGGREGATIONS: [&str; 4] = ["sum", "count", "min", "max"];

fn start(dir: Option<std::path::PathBuf>, args: &[String]) -> Server {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match dir {
        Some(dir) => Server::start_in(dir, &args),
        None => Server::start(&args),
    }
}

/// A new node that owns every partition (the only member of its group), and a client.
fn start_owning_all(args: &[String]) -> (Server, Client) {
    restart_owning_all(None, args)
}

/// The same on data directory `dir`. Until the node owns the partitions, its readings
/// of their widgets are what the dead owner last stored in Redis: a test of restored
/// windows waits for the takeover.
fn restart_owning_all(dir: Option<std::path::PathBuf>, args: &[String]) -> (Server, Client) {
    let node = start(dir, args);
    let mut c = node.client();
    eventually(30, "the node to own every partition", || {
        (owned(&mut c).len() == PARTITIONS as usize).then_some(())
    });
    (node, c)
}

/// Per metric: sum, count, min and max of every event sent.
#[derive(Debug, Default)]
struct Truth(BTreeMap<String, [f64; 4]>);

impl Truth {
    fn add(&mut self, metric: &str, v: f64) {
        let e =
            self.0
                .entry(metric.to_owned())
                .or_insert([0.0, 0.0, f64::INFINITY, f64::NEG_INFINITY]);
        e[0] += v;
        e[1] += 1.0;
        e[2] = e[2].min(v);
        e[3] = e[3].max(v);
    }

    fn of(&self, metric: &str, aggregation: usize) -> Option<f64> {
        self.0.get(metric).map(|e| e[aggregation])
    }
}

fn metrics() -> Vec<String> {
    (0..8).map(|i| format!("mirror.{i}")).collect()
}

/// One widget per metric and aggregation, 5-minute windows.
fn dashboard(c: &mut Client) -> Value {
    let specs: Vec<Value> = metrics()
        .iter()
        .flat_map(|m| {
            AGGREGATIONS.map(|a| {
                json!({"metric_name": m, "aggregation": a, "window_seconds": 300,
                       "refresh_interval_seconds": 0.2})
            })
        })
        .collect();
    create_dashboard(c, "mirror", Value::Array(specs))
}

/// Sends `n` events with integer values; each is added to `truth` once acknowledged.
fn ingest(c: &mut Client, truth: &mut Truth, n: usize, seed: usize) {
    let metrics = metrics();
    let now = now_ms();
    let events: Vec<(String, f64)> = (0..n)
        .map(|i| {
            let m = metrics[(i * 5 + seed) % metrics.len()].clone();
            (m, ((i * 37 + seed * 11) % 1000) as f64 - 300.0)
        })
        .collect();
    let body: Vec<Value> = events
        .iter()
        .enumerate()
        .map(|(i, (m, v))| json!({"metric_name": m, "value": v, "event_time": now - (i as i64 % 2000)}))
        .collect();
    let r = c.json("POST", "/ingest", &Value::Array(body));
    assert_eq!(r.status, 200, "{}", r.error());
    for (m, v) in events {
        truth.add(&m, v);
    }
}

/// Widgets whose value differs from the truth, as (widget, got, want).
fn wrong(
    c: &mut Client,
    dashboard: &Value,
    truth: &Truth,
) -> Vec<(String, Option<f64>, Option<f64>)> {
    let id = dashboard["dashboard_id"].as_str().unwrap();
    let mut out = Vec::new();
    for (i, w) in dashboard["widgets"].as_array().unwrap().iter().enumerate() {
        let metric = w["metric_name"].as_str().unwrap();
        let agg = i % AGGREGATIONS.len();
        let r = c.get(&format!(
            "/dashboards/{id}/widgets/{}/snapshot",
            w["widget_id"].as_str().unwrap()
        ));
        let got = if r.status == 200 {
            r.json()["value"].as_f64()
        } else {
            None
        };
        let want = truth.of(metric, agg);
        if got != want {
            let why = if r.status == 200 {
                String::new()
            } else {
                format!(" ({}: {})", r.status, r.error())
            };
            out.push((format!("{metric} {}{why}", AGGREGATIONS[agg]), got, want));
        }
    }
    out
}

fn ready(c: &mut Client) -> bool {
    c.get("/readyz").status == 200
}

/// A mirror counter summed over the node's shards.
fn mirror_counter(c: &mut Client, name: &str) -> u64 {
    stats(c)["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["mirror"][name].as_u64().unwrap_or(0))
        .sum()
}

fn exact(c: &mut Client, dashboard: &Value, truth: &Truth, secs: u64, what: &str) {
    let mut last = Vec::new();
    let done = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        eventually(secs, what, || {
            last = wrong(c, dashboard, truth);
            (last.is_empty() && ready(c)).then_some(())
        })
    }));
    assert!(done.is_ok(), "{what}: still wrong: {last:?}");
}

#[test]
fn killed_and_restarted_node_restores_exact_values() {
    let (_broker, _redis, args) = cluster("restart");
    let (a, mut c) = start_owning_all(&args);
    let dash = dashboard(&mut c);
    let mut truth = Truth::default();
    for round in 0..3 {
        ingest(&mut c, &mut truth, 500, round);
    }
    exact(&mut c, &dash, &truth, 20, "values before the kill");
    // More events, acknowledged, then SIGKILL at once: some are applied and not yet
    // stored, some not even consumed.
    ingest(&mut c, &mut truth, 500, 3);
    let dir = a.kill9();

    let (_b, mut c) = restart_owning_all(Some(dir), &args);
    exact(&mut c, &dash, &truth, 60, "values after the restart");
    assert!(
        mirror_counter(&mut c, "restored_partitions") > 0,
        "nothing was restored: {}",
        stats(&mut c)
    );
    ingest(&mut c, &mut truth, 500, 4);
    exact(&mut c, &dash, &truth, 20, "values after more events");
}

/// A grouped widget's windows per tag value are stored and restored with its query: after
/// a kill, the series is whole again (every route's sum, and `other` for the events
/// without a route), before and after more events.
#[test]
fn a_grouped_widget_comes_back_whole_after_a_kill() {
    let (_broker, _redis, args) = cluster("grouped");
    let (a, mut c) = start_owning_all(&args);
    let dash = create_dashboard(
        &mut c,
        "grouped",
        json!([{"metric_name": "mirror.grouped", "aggregation": "sum", "window_seconds": 300,
                "refresh_interval_seconds": 0.2, "group_by": "route", "top": 3}]),
    );
    let path = format!(
        "/dashboards/{}/widgets/{}/snapshot",
        dash["dashboard_id"].as_str().unwrap(),
        dash["widgets"][0]["widget_id"].as_str().unwrap()
    );
    let mut sums: BTreeMap<String, f64> = BTreeMap::new();
    let mut send = |c: &mut Client, round: usize| {
        let now = now_ms();
        let body: Vec<Value> = (0..200)
            .map(|i| {
                let route = ["/a", "/b", "/c", "/d", ""][(i + round) % 5];
                let v = ((i * 7 + round) % 50) as f64;
                *sums.entry(route.to_owned()).or_default() += v;
                let tags = if route.is_empty() {
                    json!({})
                } else {
                    json!({"route": route})
                };
                json!({"metric_name": "mirror.grouped", "value": v, "tags": tags,
                       "event_time": now - (i as i64 % 2000)})
            })
            .collect();
        let r = c.json("POST", "/ingest", &Value::Array(body));
        assert_eq!(r.status, 200, "{}", r.error());
        sums.clone()
    };
    // The top 3 routes by sum, and the rest (the fourth route and no route) as `other`.
    let want = |sums: &BTreeMap<String, f64>| {
        let mut routes: Vec<(&String, &f64)> = sums.iter().filter(|(r, _)| !r.is_empty()).collect();
        routes.sort_by(|x, y| y.1.total_cmp(x.1).then(x.0.cmp(y.0)));
        let series: serde_json::Map<String, Value> = routes
            .iter()
            .take(3)
            .map(|(r, v)| ((*r).clone(), json!(v)))
            .collect();
        let total: f64 = sums.values().sum();
        let top: f64 = routes.iter().take(3).map(|(_, v)| **v).sum();
        (Value::Object(series), json!(total - top))
    };
    let shows = |c: &mut Client, sums: &BTreeMap<String, f64>, what: &str| {
        let (series, other) = want(sums);
        let mut last = Value::Null;
        let done = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            eventually(60, what, || {
                last = c.get(&path).json();
                (last["series"] == series && last["other"] == other && ready(c)).then_some(())
            })
        }));
        assert!(
            done.is_ok(),
            "{what}: {last}, want {series} and other {other}"
        );
    };
    for round in 0..3 {
        send(&mut c, round);
    }
    let truth = send(&mut c, 3);
    shows(&mut c, &truth, "the series before the kill");
    let truth = send(&mut c, 4);
    let dir = a.kill9();
    let (_b, mut c) = restart_owning_all(Some(dir), &args);
    shows(&mut c, &truth, "the series after the restart");
    assert!(mirror_counter(&mut c, "restored_partitions") > 0);
    let truth = send(&mut c, 5);
    shows(&mut c, &truth, "the series after more events");
}

#[test]
fn a_survivor_takes_a_dead_nodes_partitions_over_exactly() {
    let (_broker, _redis, args) = cluster("survivor");
    // The survivor joins first and leads the group: tansu 0.6 never completes a
    // rebalance whose leader died, so the node killed here is the follower.
    let b = start(None, &args);
    let mut cb = b.client();
    eventually(30, "the first node to own every partition", || {
        (owned(&mut cb).len() == PARTITIONS as usize).then_some(())
    });
    let a = start(None, &args);
    let mut ca = a.client();
    eventually(60, "both nodes to share the partitions", || {
        let (pa, pb) = (owned(&mut ca), owned(&mut cb));
        (!pa.is_empty() && !pb.is_empty() && pa.len() + pb.len() == PARTITIONS as usize)
            .then_some(())
    });
    let _ = dashboard(&mut ca);
    let db = dashboard(&mut cb);
    let mut truth = Truth::default();
    for round in 0..4 {
        let c = if round % 2 == 0 { &mut ca } else { &mut cb };
        ingest(c, &mut truth, 500, round);
    }
    // Let the owners apply and store what they have, then kill one.
    std::thread::sleep(std::time::Duration::from_secs(1));
    let _ = a.kill9();
    eventually(60, "the survivor to own every partition", || {
        (owned(&mut cb).len() == PARTITIONS as usize).then_some(())
    });
    exact(&mut cb, &db, &truth, 30, "values on the survivor");
    assert!(mirror_counter(&mut cb, "restored_partitions") > 0);
    ingest(&mut cb, &mut truth, 500, 9);
    exact(&mut cb, &db, &truth, 20, "values after more events");
}

#[test]
fn with_an_empty_redis_the_windows_are_replayed_from_the_topic() {
    let (_broker, mut redis, args) = cluster("replay");
    let (a, mut c) = start_owning_all(&args);
    let dash = dashboard(&mut c);
    let mut truth = Truth::default();
    for round in 0..3 {
        ingest(&mut c, &mut truth, 500, round);
    }
    exact(&mut c, &dash, &truth, 20, "values before the kill");
    let dir = a.kill9();
    // Redis keeps nothing across a restart: the mirror is empty.
    redis.restart();
    let b = start(Some(dir), &args);
    let mut c = b.client();
    exact(&mut c, &dash, &truth, 60, "values rebuilt from the topic");
    assert_eq!(mirror_counter(&mut c, "restored_partitions"), 0);
}

#[test]
fn redis_down_under_load_loses_nothing_and_the_mirror_catches_up() {
    let (_broker, mut redis, args) = cluster("outage");
    let (a, mut c) = start_owning_all(&args);
    let dash = dashboard(&mut c);
    let mut truth = Truth::default();
    ingest(&mut c, &mut truth, 500, 0);
    exact(&mut c, &dash, &truth, 20, "values before the outage");

    redis.stop();
    for round in 1..4 {
        ingest(&mut c, &mut truth, 500, round);
    }
    exact(
        &mut c,
        &dash,
        &truth,
        20,
        "values served from memory while redis is down",
    );
    eventually(10, "the failed writes to be counted", || {
        (mirror_counter(&mut c, "failed_flushes") > 0).then_some(())
    });

    // Back, empty: the shards write every pane again.
    redis.restart();
    eventually(30, "the mirror to catch up", || {
        (mirror_counter(&mut c, "failing_since_ms") == 0).then_some(())
    });
    ingest(&mut c, &mut truth, 500, 4);
    exact(&mut c, &dash, &truth, 20, "values after the outage");
    std::thread::sleep(std::time::Duration::from_millis(500));
    let dir = a.kill9();
    let (_b, mut c) = restart_owning_all(Some(dir), &args);
    exact(
        &mut c,
        &dash,
        &truth,
        60,
        "values restored from the caught-up mirror",
    );
    assert!(mirror_counter(&mut c, "restored_partitions") > 0);
}

/// A partition's state as one shard holds it: a sum widget of metric `m` with `events`
/// events of value 1 at `now`, and its changes since the last call.
fn changes(
    shard: &mut livedash_engine::Shard,
    events: usize,
    now: i64,
) -> Vec<livedash_engine::QueryChanges> {
    let evs: Vec<livedash_engine::MetricEvent> = (0..events)
        .map(|_| livedash_engine::MetricEvent {
            metric_name: "m".into(),
            value: 1.0,
            tags: Default::default(),
            event_time: now,
        })
        .collect();
    shard.apply(&evs, now);
    shard.mirror_changes(now, |_| true)
}

#[test]
fn a_stale_owners_write_is_refused() {
    let redis = RedisServer::start();
    let now = now_ms();
    let mut shard = livedash_engine::Shard::new(Default::default());
    let widget: livedash_engine::Widget = serde_json::from_value(json!({
        "widget_id": "00000000-0000-0000-0000-000000000001",
        "dashboard_id": "00000000-0000-0000-0000-000000000002",
        "metric_name": "m", "aggregation": "count", "window_seconds": 60,
        "refresh_interval_seconds": 1.0
    }))
    .unwrap();
    shard.upsert_widget(widget, now).unwrap();
    let (door, bell) = Doorbell::new();
    let outbox = std::sync::Arc::new(Inbox::new(4, bell));
    let writer = Writer::start(
        RedisSettings {
            url: redis.url(),
            interval: std::time::Duration::from_millis(100),
            scope: Scope::Partition,
        },
        vec![std::sync::Arc::clone(&outbox)],
    );
    let flush = |epoch: u64, next_offset: i64, queries| {
        writer
            .sender()
            .send(Flush {
                shard: 0,
                partitions: vec![PartitionFlush {
                    partition: 0,
                    epoch: Some(epoch),
                    next_offset,
                    replace: false,
                    queries,
                }],
            })
            .unwrap();
        loop {
            if let Some(out) = outbox.pop() {
                return out.results[0].1;
            }
            door.wait(std::time::Duration::from_millis(100));
        }
    };
    let mut conn = connect(&redis.url()).unwrap();
    let old = claim(&mut conn, Scope::Partition, 0).unwrap();
    assert_eq!(
        flush(old.epoch, 10, changes(&mut shard, 3, now)),
        FlushResult::Stored { epoch: old.epoch }
    );

    // Another node claims the partition: the old owner's next write is refused and
    // what the new owner found stays as it was.
    let new = claim(&mut conn, Scope::Partition, 0).unwrap();
    assert!(new.epoch > old.epoch);
    assert_eq!(new.offset, Some(10));
    assert_eq!(
        flush(old.epoch, 20, changes(&mut shard, 5, now)),
        FlushResult::Fenced
    );
    let after = claim(&mut conn, Scope::Partition, 0).unwrap();
    assert_eq!(after.offset, Some(10));
    assert_eq!(after.queries, new.queries);
    let stored = after.queries.values().next().unwrap();
    assert_eq!(stored.panes.iter().map(|p| p.count).sum::<u64>(), 3);
    writer.stop();
}

/// A widget made after its events arrived shows them at once: its query is backfilled
/// from the topic up to where it started counting live, so nothing counts twice.
#[test]
fn a_new_widget_gets_its_whole_window_from_the_topic() {
    let (_broker, _redis, args) = cluster("backfill");
    let (_node, mut c) = start_owning_all(&args);
    // Events before any widget watches them.
    let mut truth = Truth::default();
    for round in 0..3 {
        ingest(&mut c, &mut truth, 500, round);
    }
    eventually(20, "the events to be consumed", || {
        let consumed: u64 = stats(&mut c)["shards"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["kafka"]["consumed_events"].as_u64().unwrap_or(0))
            .sum();
        (consumed == 1500).then_some(())
    });
    let dash = dashboard(&mut c);
    ingest(&mut c, &mut truth, 500, 3);
    exact(&mut c, &dash, &truth, 30, "backfilled values");
    // One backfill per partition with new queries, all of them ended well.
    eventually(10, "every backfill to end", || {
        let st = stats(&mut c);
        let sum = |k: &str| -> u64 {
            st["shards"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["kafka"]["backfills"][k].as_u64().unwrap_or(0))
                .sum()
        };
        (sum("running") == 0 && sum("finished") == sum("started") && sum("started") > 0)
            .then_some(())
    });
}

/// Standalone with Redis: an acknowledged event survives SIGKILL; while Redis is away
/// ingest is refused with the reason, and takes events again once it is back.
#[test]
fn standalone_with_redis_keeps_every_acknowledged_event() {
    let mut redis = RedisServer::start();
    let url = redis.url();
    let args = ["--shards", "2", "--redis", url.as_str()];
    let a = Server::start(&args);
    let mut c = a.client();
    let dash = dashboard(&mut c);
    let mut truth = Truth::default();
    for round in 0..3 {
        ingest(&mut c, &mut truth, 500, round);
    }
    exact(&mut c, &dash, &truth, 10, "values before the kill");
    let dir = a.kill9();
    let b = Server::start_in(dir, &args);
    let mut c = b.client();
    exact(&mut c, &dash, &truth, 10, "values after the restart");
    assert!(mirror_counter(&mut c, "restored_partitions") > 0);

    redis.stop();
    // Events no widget watches find out that Redis is gone.
    let probe = json!([{"metric_name": "probe", "value": 1, "event_time": now_ms()}]);
    let _ = c.json("POST", "/ingest", &probe);
    let refused = eventually(20, "ingest to be refused", || {
        let r = c.json("POST", "/ingest", &probe);
        (r.status == 503).then(|| r.error())
    });
    assert!(refused.contains("redis"), "{refused}");

    redis.restart();
    let mut round = 3;
    eventually(30, "ingest to be taken again", || {
        let metrics = metrics();
        let body: Vec<Value> = (0..40)
            .map(|i| json!({"metric_name": metrics[i % metrics.len()], "value": i, "event_time": now_ms()}))
            .collect();
        let r = c.json("POST", "/ingest", &Value::Array(body));
        round += 1;
        if r.status != 200 {
            return None;
        }
        for i in 0..40 {
            truth.add(&metrics[i % metrics.len()], i as f64);
        }
        Some(())
    });
    ingest(&mut c, &mut truth, 500, round);
    exact(&mut c, &dash, &truth, 10, "values after the outage");
    let dir = b.kill9();
    let d = Server::start_in(dir, &args);
    let mut c = d.client();
    exact(
        &mut c,
        &dash,
        &truth,
        10,
        "values restored after the outage",
    );
}
