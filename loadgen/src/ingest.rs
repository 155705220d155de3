//! Open-loop HTTP producers: requests are scheduled at fixed intended times for the target
//! rate, whatever the server does; a request's latency is measured from its intended send
//! time, so a server that falls behind shows up as latency (no coordinated omission).

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::client::{Client, ClientError, now_ms, target_addr};
use crate::stats::Stats;

/// Body format of ingest requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Json,
    Line,
}

/// What the producers send.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The nodes (`http://HOST:PORT`): connection `c` starts on `targets[c % n]` and
    /// moves to the next one after a failure.
    pub targets: Vec<String>,
    /// Events per second, all connections together.
    pub rate: u64,
    pub batch: usize,
    pub connections: usize,
    pub metrics: usize,
    pub tags: usize,
    pub format: Format,
    pub token: Option<String>,
}

/// A small xorshift generator per thread: cheap, and no shared state.
#[derive(Debug)]
pub struct Rng(pub u64);

impl Rng {
    /// The next 64 random bits.
    pub fn bits(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// One synthetic event's metric number, host tag number and value: the stream both
    /// the producers and the Redis baseline send.
    pub fn event(&mut self, metrics: usize, tags: usize) -> (usize, u64, f64) {
        let r = self.bits();
        let metric = (r % metrics.max(1) as u64) as usize;
        let host = (r >> 20) % tags.max(1) as u64;
        let value = ((r >> 32) % 100_000) as f64 / 100.0;
        (metric, host, value)
    }
}

/// What every producer metric name starts with; the metric's number follows.
pub const METRIC_PREFIX: &str = "loadgen.metric.";

/// The metric names the producers use (and the socket dashboards watch).
pub fn metric_name(i: usize) -> String {
    format!("{METRIC_PREFIX}{i}")
}

/// Writes one request body into `out` and the metric number of each event into
/// `metrics`; returns the events' event time.
fn body(plan: &Plan, rng: &mut Rng, out: &mut String, metrics: &mut Vec<usize>) -> i64 {
    out.clear();
    metrics.clear();
    let t = now_ms();
    if plan.format == Format::Json {
        out.push('[');
    }
    for i in 0..plan.batch {
        let (metric, host, value) = rng.event(plan.metrics, plan.tags);
        metrics.push(metric);
        match plan.format {
            Format::Json => {
                if i > 0 {
                    out.push(',');
                }
                let _ = write!(
                    out,
                    r#"{{"metric_name":"{}","value":{value},"tags":{{"host":"h{host}"}},"event_time":{t}}}"#,
                    metric_name(metric)
                );
            }
            Format::Line => {
                // measurement.field = metric name: "loadgen.metric" + "." + field "N".
                let _ = writeln!(out, "loadgen.metric,host=h{host} {metric}={value} {t}");
            }
        }
    }
    if plan.format == Format::Json {
        out.push(']');
    }
    t
}

/// The open-loop schedule the producers of a run share: batch k is due at start + k times
/// the interval the target rate gives, whatever the server does.
#[derive(Debug)]
pub struct Schedule {
    start: Instant,
    interval: Duration,
    until: Instant,
    next: AtomicU64,
}

impl Schedule {
    pub fn new(plan: &Plan, until: Instant) -> Self {
        Self {
            start: Instant::now(),
            interval: Duration::from_secs_f64(plan.batch as f64 / plan.rate.max(1) as f64),
            until,
            next: AtomicU64::new(0),
        }
    }

    /// Takes the next batch, waits for its intended send time and returns it; `None` once
    /// the run is over or stopped.
    pub fn next(&self, stop: &AtomicBool) -> Option<Instant> {
        let k = self.next.fetch_add(1, Ordering::Relaxed);
        let intended = self.start + self.interval.mul_f64(k as f64);
        if intended >= self.until || stop.load(Ordering::Relaxed) {
            return None;
        }
        if let Some(wait) = intended.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        Some(intended)
    }
}

impl Rng {
    /// The generator of producer `c`: each producer sends its own stream.
    pub fn for_producer(c: usize) -> Self {
        Self(0x9e37_79b9_7f4a_7c15 ^ (c as u64 + 1).wrapping_mul(0x2545_f491_4f6c_dd1d))
    }
}

/// Runs the producers until `until`; returns when every thread has stopped.
pub fn run(
    plan: Plan,
    stats: Arc<Stats>,
    until: Instant,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let schedule = Arc::new(Schedule::new(&plan, until));
        let query = if plan.format == Format::Line {
            "?precision=ms"
        } else {
            ""
        };
        let addrs: Vec<_> = match plan.targets.iter().map(|t| target_addr(t)).collect() {
            Ok(addrs) => addrs,
            Err(e) => {
                stats.fail(format!("producers: {e}"));
                return;
            }
        };
        if addrs.is_empty() {
            stats.fail("producers: no target".into());
            return;
        }
        let threads: Vec<_> = (0..plan.connections.max(1))
            .map(|c| {
                let (plan, stats, schedule, stop, addrs) = (
                    plan.clone(),
                    Arc::clone(&stats),
                    Arc::clone(&schedule),
                    Arc::clone(&stop),
                    addrs.clone(),
                );
                std::thread::spawn(move || {
                    // Connected on first use, and again (to the next node) after an I/O
                    // error.
                    let mut client: Option<Client> = None;
                    let mut at = c % addrs.len();
                    let mut unreachable = 0;
                    let mut rng = Rng::for_producer(c);
                    let mut text = String::with_capacity(plan.batch * 100);
                    let mut metrics = Vec::with_capacity(plan.batch);
                    let content_type = match plan.format {
                        Format::Json => "application/json",
                        Format::Line => "text/plain; charset=utf-8",
                    };
                    while let Some(intended) = schedule.next(&stop) {
                        let t = body(&plan, &mut rng, &mut text, &mut metrics);
                        stats.sent(t, &metrics);
                        let result = match &mut client {
                            Some(c) => c.ingest_body(content_type, query, text.as_bytes()),
                            None => Client::connect(addrs[at])
                                .map(|c| client.insert(c.with_token_opt(plan.token.clone())))
                                .map_err(ClientError::from)
                                .and_then(|c| c.ingest_body(content_type, query, text.as_bytes())),
                        };
                        match &result {
                            Ok(_) => {
                                stats.reached.store(true, Ordering::Relaxed);
                                unreachable = 0;
                            }
                            Err(ClientError::Io(e)) => {
                                client = None;
                                unreachable += 1;
                                // Every node tried, none ever answered.
                                if unreachable >= addrs.len()
                                    && !stats.reached.load(Ordering::Relaxed)
                                {
                                    stats.fail(format!("cannot reach {}: {e}", addrs[at]));
                                }
                                at = (at + 1) % addrs.len();
                            }
                            Err(ClientError::Status { status, reason }) if *status < 500 => {
                                stats.fail(format!(
                                    "{} refused the events: HTTP {status}: {reason}",
                                    addrs[at]
                                ));
                            }
                            Err(_) => {}
                        }
                        let measuring = stats.measuring();
                        let latency = intended.elapsed();
                        match &result {
                            Ok(reply) => {
                                Stats::count(&stats.events_acked_total, reply.accepted as u64);
                            }
                            // An error may come after the node applied the batch; if it
                            // did, its events count as never shown.
                            Err(_) => stats.unsent(t, &metrics),
                        }
                        if !measuring {
                            continue;
                        }
                        Stats::count(&stats.events_sent, plan.batch as u64);
                        match result {
                            Ok(reply) => {
                                Stats::count(&stats.events_acked, reply.accepted as u64);
                                Stats::count(
                                    &stats.events_rejected,
                                    reply.rejected_total.max(reply.rejected.len()) as u64,
                                );
                                stats.record(&stats.ingest, latency.as_micros() as u64);
                            }
                            Err(_) => Stats::count(&stats.errors, 1),
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            let _ = t.join();
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(format: Format) -> Plan {
        Plan {
            targets: Vec::new(),
            rate: 1,
            batch: 3,
            connections: 1,
            metrics: 5,
            tags: 2,
            format,
            token: None,
        }
    }

    #[test]
    fn json_bodies_parse_as_events() {
        let mut out = String::new();
        body(&plan(Format::Json), &mut Rng(7), &mut out, &mut Vec::new());
        let events: Vec<livedash_engine::MetricEvent> = serde_json::from_str(&out).unwrap();
        assert_eq!(events.len(), 3);
        assert!(
            events
                .iter()
                .all(|e| e.metric_name.starts_with("loadgen.metric."))
        );
    }

    #[test]
    fn line_bodies_have_one_line_per_event() {
        let mut out = String::new();
        body(&plan(Format::Line), &mut Rng(7), &mut out, &mut Vec::new());
        assert_eq!(out.lines().count(), 3);
        assert!(out.lines().all(|l| l.starts_with("loadgen.metric,host=h")));
    }
}
