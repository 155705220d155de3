//! `seed-baseline`: the original design's window algorithm on a real Redis, fed the same
//! kind of event stream as the producers, as fast as one pipelined connection allows;
//! then the same events into livedash over HTTP, so both rates come from one run.
//!
//! Per event: ZADD to the query's sorted set (score = event time) and INCRBYFLOAT of its
//! running sum. Per batch and key: read the entries older than the window, remove them
//! (ZREMRANGEBYSCORE) and take their values off the running sum. Every second: one read
//! per query (GET of the running sum for sum widgets, ZRANGEBYSCORE for max).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::client::now_ms;
use crate::ingest::{Rng, metric_name};

/// What to feed.
#[derive(Debug, Clone)]
pub struct Baseline {
    pub redis: String,
    pub duration: Duration,
    pub batch: usize,
    pub metrics: usize,
    pub tags: usize,
    pub window_ms: i64,
}

fn key(metric: usize) -> String {
    format!("lg:win:{}", metric_name(metric))
}

/// Runs the Redis baseline; returns events per second.
pub fn run_redis(b: &Baseline) -> anyhow::Result<f64> {
    let client = redis::Client::open(b.redis.as_str()).context("--redis is not a Redis URL")?;
    let mut con = client
        .get_connection()
        .with_context(|| format!("connecting to {}", b.redis))?;
    // Start clean: drop the keys a previous run left.
    let mut clear = redis::pipe();
    for m in 0..b.metrics {
        clear
            .cmd("DEL")
            .arg(key(m))
            .arg(format!("{}:sum", key(m)))
            .ignore();
    }
    clear.query::<()>(&mut con)?;

    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let started = Instant::now();
    let mut last_refresh = Instant::now();
    let mut events = 0u64;
    let mut seq = 0u64;
    while started.elapsed() < b.duration {
        let now = now_ms();
        let mut pipe = redis::pipe();
        let mut keys = HashSet::new();
        for _ in 0..b.batch {
            let (metric, host, value) = rng.event(b.metrics, b.tags);
            let k = key(metric);
            seq += 1;
            // Members must be unique; the value rides in the member.
            pipe.cmd("ZADD")
                .arg(&k)
                .arg(now)
                .arg(format!("{seq}:h{host}:{value}"))
                .ignore();
            pipe.cmd("INCRBYFLOAT")
                .arg(format!("{k}:sum"))
                .arg(value)
                .ignore();
            keys.insert(k);
        }
        pipe.query::<()>(&mut con)?;
        // Expire: read what slid out, remove it, take it off the running sums.
        let cutoff = now - b.window_ms;
        let keys: Vec<String> = keys.into_iter().collect();
        let mut read = redis::pipe();
        for k in &keys {
            read.cmd("ZRANGEBYSCORE")
                .arg(k)
                .arg("-inf")
                .arg(format!("({cutoff}"));
            read.cmd("ZREMRANGEBYSCORE")
                .arg(k)
                .arg("-inf")
                .arg(format!("({cutoff}"))
                .ignore();
        }
        let expired: Vec<Vec<String>> = read.query(&mut con)?;
        let mut fix = redis::pipe();
        let mut fixes = 0;
        for (k, members) in keys.iter().zip(expired) {
            let gone: f64 = members
                .iter()
                .filter_map(|m| m.rsplit(':').next()?.parse::<f64>().ok())
                .sum();
            if !members.is_empty() {
                fix.cmd("INCRBYFLOAT")
                    .arg(format!("{k}:sum"))
                    .arg(-gone)
                    .ignore();
                fixes += 1;
            }
        }
        if fixes > 0 {
            fix.query::<()>(&mut con)?;
        }
        events += b.batch as u64;
        if last_refresh.elapsed() >= Duration::from_secs(1) {
            last_refresh = Instant::now();
            let mut refresh = redis::pipe();
            for m in 0..b.metrics {
                refresh.cmd("GET").arg(format!("{}:sum", key(m)));
                refresh
                    .cmd("ZRANGEBYSCORE")
                    .arg(key(m))
                    .arg(now - b.window_ms)
                    .arg(now)
                    .ignore();
            }
            refresh.query::<Vec<Option<String>>>(&mut con)?;
        }
    }
    Ok(events as f64 / started.elapsed().as_secs_f64())
}
