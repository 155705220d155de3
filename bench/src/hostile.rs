//! Hostile workloads shared by the `hostile` benchmark and the node's tests.

use serde_json::{Value, json};

/// Two events per metric at time `t`: the smallest and the largest magnitude a value may
/// have (5e-324 and 1e200), which stretch a percentile histogram as far as it can go.
pub fn extreme_events(metrics: &[String], t: i64) -> Vec<Value> {
    metrics
        .iter()
        .flat_map(|m| {
            [
                json!({"metric_name": m, "value": 5e-324, "event_time": t}),
                json!({"metric_name": m, "value": 1e200, "event_time": t}),
            ]
        })
        .collect()
}
