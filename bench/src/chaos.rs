//! The kill -9 chaos run: two nodes in cluster mode with the state mirror, on a private
//! broker and Redis, while a producer writes events to the topic at a steady rate. Each
//! run kills the node that follows the group's leader with SIGKILL, under load; the
//! survivor must take its partitions over and serve exactly the values of every event the
//! broker acknowledged (count, min and max equal, sums of integers equal); then the killed
//! node is restarted on its data and both must again agree with the truth.
//!
//! The leader always survives: tansu 0.6 never completes a rebalance whose leader died.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use livedash_engine::{MetricEvent, NewDashboard, batch, partition_for};
use livedash_loadgen::broker::Broker;
use livedash_loadgen::client::{Client, now_ms};
use livedash_loadgen::redis::RedisServer;
use rdkafka::ClientConfig;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use serde_json::{Value, json};

use crate::node::{Node, start_binary};

const TOPIC: &str = "chaos.events";
const PARTITIONS: u32 = 4;
const AGGREGATIONS: [&str; 4] = ["sum", "count", "min", "max"];
/// How long a node may take to serve exact values after a kill or a restart.
const PATIENCE: Duration = Duration::from_secs(90);

/// What to run.
#[derive(Debug, Clone)]
pub struct Chaos {
    /// The `livedash` binary.
    pub node: PathBuf,
    pub runs: usize,
    /// Events per second the producer writes.
    pub rate: u64,
    pub metrics: usize,
}

/// One run's outcome.
#[derive(Debug, Clone)]
pub struct RunResult {
    /// Every widget on the survivor, and then on both nodes, equalled the truth.
    pub exact: bool,
    /// From the kill to exact values on the survivor.
    pub takeover: Duration,
    /// From the restart to exact values on both nodes.
    pub rejoin: Duration,
    /// Widgets that never matched, as "node metric aggregation: got, want".
    pub wrong: Vec<String>,
    /// Events acknowledged so far.
    pub events: u64,
}

/// Per metric: sum, count, min, max of the acknowledged events.
type Truth = BTreeMap<String, [f64; 4]>;

fn metric(i: usize) -> String {
    format!("chaos.{i}")
}

/// The producer: writes `rate` events/s in 100 ms batches, one record per partition;
/// a batch counts in the truth once the broker acknowledged all of it.
struct Load {
    stop: Arc<AtomicBool>,
    paused: Arc<AtomicBool>,
    /// True while a batch is being written (so a pause waits for it).
    busy: Arc<AtomicBool>,
    truth: Arc<Mutex<Truth>>,
    thread: Option<std::thread::JoinHandle<Result<(), String>>>,
}

impl Load {
    fn start(brokers: &str, rate: u64, metrics: usize) -> Result<Self, String> {
        let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "1")
            .create()
            .map_err(|e| format!("producer: {e}"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let paused = Arc::new(AtomicBool::new(false));
        let busy = Arc::new(AtomicBool::new(false));
        let truth = Arc::new(Mutex::new(Truth::new()));
        let thread = {
            let (stop, paused, busy, truth) = (
                Arc::clone(&stop),
                Arc::clone(&paused),
                Arc::clone(&busy),
                Arc::clone(&truth),
            );
            std::thread::spawn(move || -> Result<(), String> {
                let per_batch = (rate / 10).max(1) as usize;
                let mut n = 0usize;
                let mut next = Instant::now();
                while !stop.load(Ordering::Acquire) {
                    busy.store(true, Ordering::Release);
                    if paused.load(Ordering::Acquire) {
                        busy.store(false, Ordering::Release);
                        std::thread::sleep(Duration::from_millis(10));
                        next = Instant::now();
                        continue;
                    }
                    let now = now_ms();
                    let events: Vec<MetricEvent> = (0..per_batch)
                        .map(|_| {
                            n += 1;
                            MetricEvent {
                                metric_name: metric(n % metrics),
                                value: ((n * 31) % 2000) as f64 - 500.0,
                                tags: Default::default(),
                                event_time: now - (n as i64 % 1000),
                            }
                        })
                        .collect();
                    let mut by_partition: BTreeMap<u32, Vec<&MetricEvent>> = BTreeMap::new();
                    for ev in &events {
                        by_partition
                            .entry(partition_for(&ev.metric_name, PARTITIONS))
                            .or_default()
                            .push(ev);
                    }
                    for (p, evs) in &by_partition {
                        let value = batch::encode(evs.iter().copied());
                        let record = BaseRecord::<str, [u8]>::to(TOPIC)
                            .partition(*p as i32)
                            .key(&evs[0].metric_name)
                            .payload(&value);
                        producer
                            .send(record)
                            .map_err(|(e, _)| format!("send: {e}"))?;
                    }
                    producer
                        .flush(Duration::from_secs(30))
                        .map_err(|e| format!("the broker did not acknowledge a batch: {e}"))?;
                    {
                        let mut t = truth.lock().unwrap_or_else(PoisonError::into_inner);
                        for ev in &events {
                            let e = t.entry(ev.metric_name.clone()).or_insert([
                                0.0,
                                0.0,
                                f64::INFINITY,
                                f64::NEG_INFINITY,
                            ]);
                            e[0] += ev.value;
                            e[1] += 1.0;
                            e[2] = e[2].min(ev.value);
                            e[3] = e[3].max(ev.value);
                        }
                    }
                    busy.store(false, Ordering::Release);
                    next += Duration::from_millis(100);
                    if let Some(wait) = next.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                }
                busy.store(false, Ordering::Release);
                Ok(())
            })
        };
        Ok(Self {
            stop,
            paused,
            busy,
            truth,
            thread: Some(thread),
        })
    }

    /// Stops writing once the batch in progress is acknowledged; returns the truth.
    fn pause(&self) -> Truth {
        self.paused.store(true, Ordering::Release);
        while self.busy.load(Ordering::Acquire) {
            std::thread::sleep(Duration::from_millis(5));
        }
        self.truth
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn resume(&self) {
        self.paused.store(false, Ordering::Release);
    }

    fn stop(mut self) -> Result<(), String> {
        self.stop.store(true, Ordering::Release);
        match self.thread.take().map(std::thread::JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err("the producer panicked".into()),
            None => Ok(()),
        }
    }
}

/// A node of the run, with its own dashboard (one widget per metric and aggregation).
struct Member {
    node: Option<Node>,
    addr: SocketAddr,
    dir: PathBuf,
    dashboard: Value,
}

fn node_args<'a>(brokers: &'a str, redis: &'a str) -> Vec<&'a str> {
    vec![
        "--shards",
        "2",
        "--kafka-brokers",
        brokers,
        "--kafka-topic",
        TOPIC,
        "--kafka-group",
        "chaos",
        "--redis",
        redis,
    ]
}

impl Member {
    fn start(bin: &Path, dir: PathBuf, args: &[&str], metrics: usize) -> Result<Self, String> {
        let (node, addr) = start_binary(bin, &dir, args)?;
        let mut c = Client::connect(addr).map_err(|e| e.to_string())?;
        let specs: Vec<Value> = (0..metrics)
            .flat_map(|m| {
                AGGREGATIONS.map(|a| {
                    json!({"metric_name": metric(m), "aggregation": a,
                           "window_seconds": 3600, "refresh_interval_seconds": 0.2})
                })
            })
            .collect();
        let new = NewDashboard {
            name: "chaos".into(),
            layout: Value::Null,
            widgets: serde_json::from_value(Value::Array(specs)).map_err(|e| e.to_string())?,
        };
        let dashboard = c
            .create_dashboard(&new)
            .map_err(|e| format!("creating the dashboard: {e}"))?;
        Ok(Self {
            node: Some(node),
            addr,
            dir,
            dashboard: serde_json::to_value(dashboard).map_err(|e| e.to_string())?,
        })
    }

    fn kill(&mut self) {
        if let Some(node) = self.node.take() {
            node.kill_keeping_data();
        }
    }

    fn restart(&mut self, bin: &Path, args: &[&str]) -> Result<(), String> {
        let (node, addr) = start_binary(bin, &self.dir, args)?;
        self.node = Some(node);
        self.addr = addr;
        Ok(())
    }

    /// The partitions this node owns.
    fn owned(&self) -> usize {
        let Ok(mut c) = Client::connect(self.addr) else {
            return 0;
        };
        let Ok(reply) = c.send("GET", "/stats", "application/json", b"") else {
            return 0;
        };
        let stats: Value = reply.decode().unwrap_or(Value::Null);
        stats["shards"]
            .as_array()
            .map(|shards| {
                shards
                    .iter()
                    .map(|s| s["kafka"]["partitions"].as_array().map_or(0, Vec::len))
                    .sum()
            })
            .unwrap_or(0)
    }

    /// Per widget the node owns: (name, got, want) where they differ; `None` when the
    /// node cannot be asked, or is not ready.
    fn wrong(&self, truth: &Truth) -> Option<(usize, Vec<String>)> {
        let mut c = Client::connect(self.addr).ok()?;
        if c.send("GET", "/readyz", "text/plain", b"").ok()?.status != 200 {
            return None;
        }
        let id = self.dashboard["dashboard_id"].as_str()?;
        let mut owned = 0;
        let mut out = Vec::new();
        for (i, w) in self.dashboard["widgets"].as_array()?.iter().enumerate() {
            let m = w["metric_name"].as_str()?;
            let agg = i % AGGREGATIONS.len();
            let path = format!(
                "/dashboards/{id}/widgets/{}/snapshot",
                w["widget_id"].as_str()?
            );
            let reply = c.send("GET", &path, "text/plain", b"").ok()?;
            if reply.status == 421 {
                continue;
            }
            owned += 1;
            let got = reply.decode::<Value>().ok()?["value"].as_f64();
            let want = match truth.get(m) {
                Some(e) => Some(e[agg]),
                // A count with no event is 0; the others have no value.
                None => (AGGREGATIONS[agg] == "count").then_some(0.0),
            };
            if got != want {
                out.push(format!("{m} {}: {got:?}, want {want:?}", AGGREGATIONS[agg]));
            }
        }
        Some((owned, out))
    }
}

/// Waits until every member serves every widget exactly (in a cluster a node answers for
/// the widgets of other nodes' partitions from what their owners published); the time it
/// took, or what was still wrong.
fn settle(members: &[&Member], truth: &Truth, widgets: usize) -> Result<Duration, Vec<String>> {
    let widgets = widgets * members.len();
    let started = Instant::now();
    let mut last = vec!["no answer".to_string()];
    while started.elapsed() < PATIENCE {
        let mut owned = 0;
        let mut wrong = Vec::new();
        let mut answered = true;
        for m in members {
            match m.wrong(truth) {
                Some((n, w)) => {
                    owned += n;
                    wrong.extend(w);
                }
                None => answered = false,
            }
        }
        if answered && owned == widgets && wrong.is_empty() {
            return Ok(started.elapsed());
        }
        if answered {
            last = wrong;
            if owned != widgets {
                last.push(format!("{owned} of {widgets} widget readings answered"));
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(last)
}

/// Runs `cfg.runs` kill -9 runs; `each` sees every run's result as it ends.
pub fn run(cfg: &Chaos, mut each: impl FnMut(usize, &RunResult)) -> Result<Vec<RunResult>, String> {
    let broker = Broker::start();
    broker.create_topic(TOPIC, PARTITIONS);
    let redis = RedisServer::start();
    let (brokers, url) = (broker.addr(), redis.url());
    let args = node_args(&brokers, &url);
    let scratch = std::env::temp_dir().join(format!("livedash-chaos-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    // The leader first, alone, then the follower.
    let leader = Member::start(&cfg.node, scratch.join("leader"), &args, cfg.metrics)?;
    let give_up = Instant::now() + PATIENCE;
    while leader.owned() < PARTITIONS as usize {
        if Instant::now() > give_up {
            return Err("the first node did not get the partitions".into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut follower = Member::start(&cfg.node, scratch.join("follower"), &args, cfg.metrics)?;
    let widgets = cfg.metrics * AGGREGATIONS.len();
    let load = Load::start(&brokers, cfg.rate, cfg.metrics)?;
    let mut results = Vec::with_capacity(cfg.runs);
    for run in 0..cfg.runs {
        // Wait for the pair to share the partitions, under load, then a while longer.
        let give_up = Instant::now() + PATIENCE;
        while follower.owned() == 0 {
            if Instant::now() > give_up {
                return Err(format!("run {run}: the follower never got partitions"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        std::thread::sleep(Duration::from_millis(1500 + (run as u64 * 937) % 2500));
        follower.kill();
        let killed = Instant::now();
        let truth = load.pause();
        let takeover = settle(&[&leader], &truth, widgets).map(|_| killed.elapsed());
        follower.restart(&cfg.node, &args)?;
        let restarted = Instant::now();
        load.resume();
        std::thread::sleep(Duration::from_secs(2));
        let truth = load.pause();
        let rejoin = settle(&[&leader, &follower], &truth, widgets).map(|_| restarted.elapsed());
        load.resume();
        let events = truth.values().map(|e| e[1] as u64).sum();
        let mut wrong = Vec::new();
        if let Err(w) = &takeover {
            wrong.extend(w.iter().map(|w| format!("survivor {w}")));
        }
        if let Err(w) = &rejoin {
            wrong.extend(w.iter().map(|w| format!("after restart {w}")));
        }
        let result = RunResult {
            exact: takeover.is_ok() && rejoin.is_ok(),
            takeover: takeover.unwrap_or(PATIENCE),
            rejoin: rejoin.unwrap_or(PATIENCE),
            wrong,
            events,
        };
        each(run, &result);
        results.push(result);
    }
    load.stop()?;
    drop(follower);
    drop(leader);
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(results)
}
