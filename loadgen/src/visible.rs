//! Per-event end-to-end latency: for each event the producers sent, the time from its
//! event time to the first frame that shows it on a screen.
//!
//! The producers note every event's metric and event time (`sent`). A sample of the
//! streams, spread over the dashboards and over the join order (`observers`), keeps per
//! widget the newest event time it has shown. A frame whose `latest_event_time` for a
//! widget passes that mark makes every event of the widget's metric in between visible at
//! the frame's arrival. Events from several producer connections interleave: an event
//! counts as shown once a newer event of the same metric is, although it may reach the
//! node a little later; the error is the producers' send spread, a few milliseconds.
//! Widgets this run did not create (a tag filter, another metric) are not followed.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use serde::Deserialize;
use serde_json::Value;

use crate::client::now_ms;
use crate::ingest::METRIC_PREFIX;
use crate::stats::Stats;

/// Streams followed per run (fewer if the run has fewer).
pub const OBSERVERS: usize = 64;

/// Event times older than this are forgotten: a widget that did not show them by then
/// never will.
const KEEP_MS: i64 = 120_000;

/// Events by metric number, then by event time (ms): how many.
type Sent = Vec<BTreeMap<i64, u32>>;

/// One followed stream: per widget id, the metric number and the newest event time shown.
#[derive(Debug, Default)]
struct Observer {
    widgets: HashMap<String, (usize, Option<i64>)>,
}

/// What the producers sent and what the followed streams have shown.
#[derive(Debug, Default)]
pub struct Visible {
    sent: Mutex<Sent>,
    observers: HashMap<usize, Mutex<Observer>>,
}

#[derive(Deserialize)]
struct Frame {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    dashboard: Option<Value>,
    #[serde(default)]
    widgets: Vec<Shown>,
}

#[derive(Deserialize)]
struct Shown {
    widget_id: String,
    #[serde(default)]
    latest_event_time: Option<i64>,
}

impl Visible {
    /// Follows a sample of `sockets` streams spread evenly over the `dashboards` (stream
    /// `i` watches dashboard `i % dashboards`) and over each dashboard's streams, which
    /// join its room in index order.
    pub fn new(sockets: usize, dashboards: usize) -> Self {
        let n = OBSERVERS.min(sockets);
        let d = dashboards.clamp(1, sockets.max(1));
        let rounds = n.div_ceil(d);
        let observers = (0..n)
            .map(|k| {
                let dashboard = k % d;
                // Streams of this dashboard: dashboard, dashboard + d, ...
                let streams = (sockets - dashboard).div_ceil(d);
                let position = (k / d) * streams / rounds;
                (dashboard + d * position, Mutex::new(Observer::default()))
            })
            .collect();
        Self {
            sent: Mutex::default(),
            observers,
        }
    }

    /// True when stream `index` is followed.
    pub fn follows(&self, index: usize) -> bool {
        self.observers.contains_key(&index)
    }

    /// Notes events sent with event time `t`, one per metric number in `metrics`.
    pub fn sent(&self, t: i64, metrics: &[usize]) {
        if self.observers.is_empty() {
            return;
        }
        let Ok(mut sent) = self.sent.lock() else {
            return;
        };
        for &m in metrics {
            if sent.len() <= m {
                sent.resize_with(m + 1, BTreeMap::new);
            }
            let times = &mut sent[m];
            *times.entry(t).or_insert(0) += 1;
            // Only a metric that gets events grows: it is the one to trim.
            while times
                .first_key_value()
                .is_some_and(|(&at, _)| at < t - KEEP_MS)
            {
                times.pop_first();
            }
        }
    }

    /// Takes back events noted by `sent` that the node did not accept.
    pub fn unsent(&self, t: i64, metrics: &[usize]) {
        let Ok(mut sent) = self.sent.lock() else {
            return;
        };
        for &m in metrics {
            if let Some(n) = sent.get_mut(m).and_then(|times| times.get_mut(&t)) {
                *n = n.saturating_sub(1);
            }
        }
    }

    /// Reads a text frame of stream `index`; a followed stream's frames record, in
    /// `stats.e2e`, the latency of every event they show first.
    pub fn frame(&self, stats: &Stats, index: usize, text: &str) {
        let Some(observer) = self.observers.get(&index) else {
            return;
        };
        let received = now_ms();
        let Ok(frame) = serde_json::from_str::<Frame>(text) else {
            return;
        };
        let Ok(mut observer) = observer.lock() else {
            return;
        };
        match frame.kind.as_str() {
            // A new start (the stream may have reconnected): what the snapshot shows
            // counts as seen, without a latency.
            "snapshot" => {
                observer.widgets = followed(frame.dashboard.as_ref());
                for w in &frame.widgets {
                    if let Some((_, mark)) = observer.widgets.get_mut(&w.widget_id) {
                        *mark = Some(w.latest_event_time.unwrap_or(received));
                    }
                }
            }
            // The dashboard changed: widgets kept keep their marks.
            "dashboard" => {
                let mut now = followed(frame.dashboard.as_ref());
                for (id, (_, mark)) in &mut now {
                    *mark = observer
                        .widgets
                        .get(id)
                        .and_then(|(_, m)| *m)
                        .or(Some(received));
                }
                observer.widgets = now;
            }
            "update" => {
                let Ok(sent) = self.sent.lock() else {
                    return;
                };
                let measuring = stats.measuring();
                for w in &frame.widgets {
                    let (Some((metric, mark)), Some(latest)) =
                        (observer.widgets.get_mut(&w.widget_id), w.latest_event_time)
                    else {
                        continue;
                    };
                    let from = mark.map_or(i64::MIN, |m| m.saturating_add(1));
                    if latest < from {
                        continue;
                    }
                    if measuring && let Some(times) = sent.get(*metric) {
                        for (&t, &n) in times.range(from..=latest) {
                            if n > 0 {
                                let us = (received - t).max(0) as u64 * 1000;
                                stats.record_n(&stats.e2e, us, u64::from(n));
                            }
                        }
                    }
                    *mark = Some(latest);
                }
            }
            _ => {}
        }
    }
}

/// The widgets of `dashboard` this run can follow: on one of the producers' metrics,
/// without a tag filter; by id, with no mark yet.
fn followed(dashboard: Option<&Value>) -> HashMap<String, (usize, Option<i64>)> {
    let Some(widgets) = dashboard.and_then(|d| d["widgets"].as_array()) else {
        return HashMap::new();
    };
    widgets
        .iter()
        .filter(|w| w["filter"].as_object().is_none_or(|f| f.is_empty()))
        .filter_map(|w| {
            let id = w["widget_id"].as_str()?.to_string();
            let metric = w["metric_name"]
                .as_str()?
                .strip_prefix(METRIC_PREFIX)?
                .parse()
                .ok()?;
            Some((id, (metric, None)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    fn snapshot(latest: i64) -> String {
        serde_json::json!({
            "type": "snapshot",
            "dashboard": {"widgets": [
                {"widget_id": "a", "metric_name": "loadgen.metric.3", "filter": {}},
                {"widget_id": "b", "metric_name": "other", "filter": {}},
            ]},
            "widgets": [{"widget_id": "a", "latest_event_time": latest}],
        })
        .to_string()
    }

    fn update(latest: i64) -> String {
        serde_json::json!({
            "type": "update", "seq": 1, "sent_at": latest,
            "widgets": [
                {"widget_id": "a", "latest_event_time": latest},
                {"widget_id": "b", "latest_event_time": latest},
            ],
        })
        .to_string()
    }

    #[test]
    fn every_event_counts_once_when_a_frame_first_shows_it() {
        let v = Visible::new(1, 1);
        assert!(v.follows(0));
        let stats = Stats::default();
        stats.measuring.store(true, Ordering::Relaxed);
        let now = now_ms();
        v.sent(now - 5_000, &[3]);
        v.frame(&stats, 0, &snapshot(now - 5_000));
        // Two events of metric 3, one of metric 4, one taken back.
        v.sent(now - 1_000, &[3, 3, 4]);
        v.sent(now - 900, &[3]);
        v.unsent(now - 900, &[3]);
        v.sent(now - 500, &[3]);
        v.frame(&stats, 0, &update(now - 1_000));
        let total = |s: &Stats| s.e2e.lock().unwrap().count();
        assert_eq!(total(&stats), 2, "the two events of 1 s ago");
        v.frame(&stats, 0, &update(now - 1_000));
        assert_eq!(
            total(&stats),
            2,
            "a frame that shows nothing new adds nothing"
        );
        v.frame(&stats, 0, &update(now - 500));
        assert_eq!(total(&stats), 3);
        let p = Stats::percentiles(&stats.e2e);
        assert!(p.max >= 1_000.0 && p.max < 5_000.0, "{p:?}");
        // A stream not followed records nothing.
        v.sent(now - 100, &[3]);
        v.frame(&stats, 7, &update(now - 100));
        assert_eq!(total(&stats), 3);
    }

    #[test]
    fn observers_spread_over_the_streams() {
        for (sockets, dashboards) in [(10_000, 10), (10_000, 100), (100, 7), (3, 10)] {
            let v = Visible::new(sockets, dashboards);
            assert_eq!(v.observers.len(), OBSERVERS.min(sockets));
            assert!(v.observers.keys().all(|&i| i < sockets));
            let watched: std::collections::HashSet<usize> =
                v.observers.keys().map(|i| i % dashboards).collect();
            assert_eq!(watched.len(), dashboards.min(OBSERVERS).min(sockets));
        }
        // Early and late joiners alike.
        let v = Visible::new(10_000, 10);
        assert!(v.observers.keys().any(|&i| i < 1_000));
        assert!(v.observers.keys().any(|&i| i > 8_000));
    }
}
