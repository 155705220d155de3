//! The original design's alerts, evaluated on the catalogue shard once a second from
//! every shard's counters: end-to-end latency (its 95th percentile over the alert window
//! above the threshold) and Kafka lag (a partition further behind than the shortest
//! widget window). Each shows as a gauge in `/metrics`, a reason in `/healthz`, and a
//! warning when it starts and when it ends.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;

use serde::Serialize;

use super::Services;
use super::calls::Alerts;
use super::mesh::ShardCall;
use super::metrics::{Buckets, LATENCY_BOUNDS};
use super::stats::ShardStats;
use crate::config::Config;

/// The alerts, as the `alert` label names them.
pub const ALERTS: [&str; 2] = ["e2e_latency", "kafka_lag"];

/// One alert's state.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlertState {
    pub alert: &'static str,
    /// Why it fires, and what to do; `None` while it does not.
    pub reason: Option<String>,
    /// When it started firing (epoch ms).
    pub since_ms: Option<i64>,
}

/// The catalogue shard's view of the node's health.
#[derive(Debug)]
pub struct Health {
    /// Copies of the node's end-to-end histogram, one per evaluation, over the window.
    e2e_seen: RefCell<VecDeque<(i64, Buckets)>>,
    alerts: RefCell<Vec<AlertState>>,
}

impl Default for Health {
    fn default() -> Self {
        Self {
            e2e_seen: RefCell::new(VecDeque::new()),
            alerts: RefCell::new(
                ALERTS
                    .iter()
                    .map(|&alert| AlertState {
                        alert,
                        reason: None,
                        since_ms: None,
                    })
                    .collect(),
            ),
        }
    }
}

impl Health {
    /// Evaluates every alert at `now` (epoch ms) from every shard's counters.
    pub fn evaluate(&self, config: &Config, shards: &[ShardStats], now: i64) {
        let e2e = self.e2e_reason(config, shards, now);
        self.set(0, e2e, now);
        self.set(1, lag_reason(shards), now);
    }

    /// The end-to-end latency p95 over the window, if it is above the threshold.
    fn e2e_reason(&self, config: &Config, shards: &[ShardStats], now: i64) -> Option<String> {
        let mut e2e = Buckets::empty(LATENCY_BOUNDS);
        for s in shards {
            e2e.merge(&s.metrics.e2e);
        }
        let window_ms =
            i64::try_from(config.alert_window_seconds.saturating_mul(1000)).unwrap_or(i64::MAX);
        let mut seen = self.e2e_seen.borrow_mut();
        seen.push_back((now, e2e.clone()));
        // The oldest copy kept is at most one window old: the baseline.
        while seen.len() > 1 && seen.get(1).is_some_and(|(t, _)| now - t >= window_ms) {
            seen.pop_front();
        }
        let (_, baseline) = seen.front()?;
        let p95 = e2e.since(baseline).quantile(0.95)?;
        let threshold = config.alert_e2e_p95_ms as f64 / 1000.0;
        (p95 > threshold).then(|| {
            format!(
                "end-to-end latency p95 over the last {} s is {:.0} ms, above {} ms: compare \
                 livedash_push_delay_seconds (the node) with livedash_kafka_behind_seconds \
                 (consumption) and the producers' clocks",
                config.alert_window_seconds,
                p95 * 1000.0,
                config.alert_e2e_p95_ms
            )
        })
    }

    /// Records alert `i`'s new state, with a warning when it starts or ends.
    fn set(&self, i: usize, reason: Option<String>, now: i64) {
        let mut alerts = self.alerts.borrow_mut();
        let Some(a) = alerts.get_mut(i) else { return };
        match (&a.reason, &reason) {
            (None, Some(why)) => {
                tracing::warn!(alert = a.alert, "alert started: {why}");
                a.since_ms = Some(now);
            }
            (Some(_), None) => {
                tracing::warn!(alert = a.alert, "alert ended: nothing to do");
                a.since_ms = None;
            }
            _ => {}
        }
        a.reason = reason;
    }

    pub fn alerts(&self) -> Vec<AlertState> {
        self.alerts.borrow().clone()
    }
}

/// A partition further behind than the shortest window of any widget: its widgets show
/// values that miss events.
fn lag_reason(shards: &[ShardStats]) -> Option<String> {
    let shortest = shards.iter().filter_map(|s| s.shortest_window_ms).min()?;
    let worst = shards
        .iter()
        .filter_map(|s| s.kafka.as_ref())
        .flat_map(|k| &k.partitions)
        .filter(|p| p.behind_ms.is_some_and(|b| b > shortest))
        .max_by_key(|p| p.behind_ms)?;
    Some(format!(
        "Kafka partition {} is {} ms behind, more than the shortest widget window ({shortest} \
         ms): this node cannot keep up with the topic; add nodes (partitions move to them), \
         or look for a slow shard in livedash_tick_duration_seconds",
        worst.partition,
        worst.behind_ms.unwrap_or_default()
    ))
}

impl ShardCall for Alerts {
    type Reply = Vec<AlertState>;

    async fn run(self, svc: &Rc<Services>) -> Vec<AlertState> {
        svc.health.alerts()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::metrics::Histogram;

    fn shard_with(e2e: &Histogram) -> ShardStats {
        let mut s = ShardStats::default();
        s.metrics.e2e = e2e.snapshot();
        s
    }

    #[test]
    fn the_e2e_alert_fires_over_the_threshold_and_clears_after_the_window() {
        let mut config = crate::config::Config::defaults().unwrap();
        config.alert_e2e_p95_ms = 500;
        config.alert_window_seconds = 10;
        let health = Health::default();
        let h = Histogram::new(LATENCY_BOUNDS);
        health.evaluate(&config, &[shard_with(&h)], 0);
        for _ in 0..100 {
            h.observe(3.0);
        }
        health.evaluate(&config, &[shard_with(&h)], 1_000);
        let reason = health.alerts()[0].reason.clone();
        assert!(reason.is_some_and(|r| r.contains("above 500 ms")));
        assert_eq!(health.alerts()[0].since_ms, Some(1_000));
        // Fast frames from now on: the slow ones leave the window after 10 s.
        for t in 2..=10 {
            for _ in 0..100 {
                h.observe(0.01);
            }
            health.evaluate(&config, &[shard_with(&h)], t * 1_000);
        }
        assert!(health.alerts()[0].reason.is_some(), "still in the window");
        health.evaluate(&config, &[shard_with(&h)], 12_000);
        assert_eq!(health.alerts()[0].reason, None);
        assert_eq!(health.alerts()[1].reason, None);
    }

    #[test]
    fn the_lag_alert_fires_for_a_partition_behind_the_shortest_window() {
        use crate::service::stats::KafkaStats;
        use crate::service::topic::PartitionLag;
        let config = crate::config::Config::defaults().unwrap();
        let health = Health::default();
        let shard = |behind_ms: i64| {
            let mut s = ShardStats {
                shortest_window_ms: Some(10_000),
                ..ShardStats::default()
            };
            s.kafka = Some(Box::new(KafkaStats {
                counters: Default::default(),
                pauses: 0,
                partitions: vec![PartitionLag {
                    partition: 3,
                    position: Some(10),
                    high_watermark: Some(500),
                    lag_records: Some(490),
                    behind_ms: Some(behind_ms),
                }],
                backfills: Default::default(),
            }));
            s
        };
        health.evaluate(&config, &[shard(9_000)], 0);
        assert_eq!(health.alerts()[1].reason, None);
        health.evaluate(&config, &[shard(12_000)], 1_000);
        let reason = health.alerts()[1].reason.clone().unwrap_or_default();
        assert!(
            reason.contains("partition 3 is 12000 ms behind"),
            "{reason}"
        );
        health.evaluate(&config, &[shard(100)], 2_000);
        assert_eq!(health.alerts()[1].reason, None);
        // The end-to-end alert saw no frames: it stays quiet.
        assert_eq!(health.alerts()[0].reason, None);
    }
}
