//! The wire data model: metric events, widgets and dashboards, with their serde shapes.
//! Field names are the JSON names of the HTTP API; checks live in `validate`.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::serde_helpers;

/// Key-value labels of an event, and the equality filter of a widget.
pub type Tags = BTreeMap<String, String>;

/// One measurement sent by a producer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricEvent {
    /// Metric name, e.g. `api.request.latency_ms`.
    pub metric_name: String,
    /// The measured value; must be finite.
    pub value: f64,
    /// Labels used by widget filters. Values may be given as strings, numbers or booleans.
    #[serde(default, deserialize_with = "serde_helpers::tags")]
    pub tags: Tags,
    /// Event time in milliseconds since the Unix epoch, supplied by the producer.
    /// Also accepted as an RFC 3339 string such as `2026-11-29T14:00:00.250Z`.
    #[serde(deserialize_with = "serde_helpers::event_time")]
    pub event_time: i64,
}

/// How a widget folds the events of its window into one number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Aggregation {
    Sum,
    Avg,
    Min,
    Max,
    Count,
    P50,
    P90,
    P95,
    P99,
    /// The window's distribution: bucket bounds and counts, from the histogram the
    /// percentiles use (`Distribution`).
    Histogram,
}

impl Aggregation {
    /// Every aggregation whose value is one number, in wire order.
    pub const NUMERIC: [Aggregation; 9] = [
        Self::Sum,
        Self::Avg,
        Self::Min,
        Self::Max,
        Self::Count,
        Self::P50,
        Self::P90,
        Self::P95,
        Self::P99,
    ];

    /// The quantile in (0, 1] for percentile aggregations, `None` for the others.
    pub fn quantile(self) -> Option<f64> {
        match self {
            Self::P50 => Some(0.50),
            Self::P90 => Some(0.90),
            Self::P95 => Some(0.95),
            Self::P99 => Some(0.99),
            _ => None,
        }
    }

    /// Every aggregation, in wire order: the numeric ones, then `histogram`.
    pub const ALL: [Aggregation; 10] = {
        let mut all = [Self::Histogram; 10];
        let mut i = 0;
        while i < Self::NUMERIC.len() {
            all[i] = Self::NUMERIC[i];
            i += 1;
        }
        all
    };

    /// True when the window must keep a histogram for this aggregation (percentiles
    /// and distributions).
    pub fn is_percentile(self) -> bool {
        self.quantile().is_some() || self == Self::Histogram
    }

    /// True when the parts of a split window add up to the whole for this aggregation,
    /// so what the top parts leave is worth reporting as `other`.
    pub fn adds_up(self) -> bool {
        matches!(self, Self::Sum | Self::Count)
    }

    /// The lower-case wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sum => "sum",
            Self::Avg => "avg",
            Self::Min => "min",
            Self::Max => "max",
            Self::Count => "count",
            Self::P50 => "p50",
            Self::P90 => "p90",
            Self::P95 => "p95",
            Self::P99 => "p99",
            Self::Histogram => "histogram",
        }
    }
}

impl fmt::Display for Aggregation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A widget as a user writes it: everything but the ids the server assigns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WidgetSpec {
    /// The metric this widget aggregates.
    pub metric_name: String,
    /// The aggregation applied over the window.
    pub aggregation: Aggregation,
    /// Sliding window length in whole seconds (1 s to 24 h).
    pub window_seconds: u64,
    /// How often the value is recomputed and pushed, in seconds (0.1 s to 1 h).
    pub refresh_interval_seconds: f64,
    /// Tag equality filter: only events carrying every one of these tags count.
    #[serde(default, deserialize_with = "serde_helpers::tags")]
    pub filter: Tags,
    /// Free-form display options (chart type, colours, thresholds...), a JSON object.
    #[serde(default)]
    pub display_config: serde_json::Map<String, serde_json::Value>,
    /// Splits the window by the value of this tag: the widget's value is then one
    /// aggregate per tag value (`series`), the `top` largest, besides the whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_by: Option<String>,
    /// With `group_by`: how many tag values are reported (default 10, at most 50).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top: Option<u32>,
}

impl WidgetSpec {
    /// With `group_by`: how many tag values are reported.
    pub fn top_n(&self) -> usize {
        self.top.map_or(crate::limits::DEFAULT_TOP, |n| n as usize)
    }
}

/// A widget of a dashboard.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Widget {
    pub widget_id: Uuid,
    pub dashboard_id: Uuid,
    #[serde(flatten)]
    pub spec: WidgetSpec,
}

impl Widget {
    /// A widget with the id its caller minted (the engine draws no randomness).
    pub fn new(widget_id: Uuid, dashboard_id: Uuid, spec: WidgetSpec) -> Self {
        Self {
            widget_id,
            dashboard_id,
            spec,
        }
    }

    /// The refresh interval in whole milliseconds (at least 1).
    pub fn refresh_interval_ms(&self) -> i64 {
        ((self.spec.refresh_interval_seconds * 1000.0).round() as i64).max(1)
    }

    /// Where in its refresh interval this widget ticks: see `tick_phase_ms`.
    pub fn tick_phase_ms(&self) -> i64 {
        tick_phase_ms(&self.dashboard_id, self.refresh_interval_ms())
    }
}

/// The tick phase of a dashboard's widgets that refresh every `interval_ms`: a number in
/// `0..interval_ms` hashed from the dashboard's id: the same on every node and after every
/// restart, and uniform over dashboards. Such widgets refresh at `phase + k * interval_ms` (epoch ms), so the
/// widgets of one dashboard tick together and different dashboards tick apart.
pub fn tick_phase_ms(dashboard_id: &Uuid, interval_ms: i64) -> i64 {
    let bits = dashboard_id.as_u128();
    // splitmix64's finaliser over both halves: every bit of the id moves the phase.
    let mut z = (bits as u64) ^ ((bits >> 64) as u64).rotate_left(32);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    (z % interval_ms.max(1) as u64) as i64
}

/// A dashboard: a name, a free-form layout and its widgets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Dashboard {
    pub dashboard_id: Uuid,
    pub name: String,
    /// Free-form layout (grid positions and sizes), stored as given.
    #[serde(default)]
    pub layout: serde_json::Value,
    #[serde(default)]
    pub widgets: Vec<Widget>,
}

/// `POST /dashboards` body: a dashboard without ids.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewDashboard {
    pub name: String,
    #[serde(default)]
    pub layout: serde_json::Value,
    #[serde(default)]
    pub widgets: Vec<WidgetSpec>,
}

/// `PUT /dashboards/{id}` body: the new name, and the new layout if given.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DashboardUpdate {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layout: Option<serde_json::Value>,
}

/// `PATCH /dashboards/{id}/widgets` body: widgets to add, change (only the fields given)
/// and remove, all or nothing.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WidgetPatch {
    #[serde(default)]
    pub add: Vec<WidgetSpec>,
    /// Each entry: `widget_id` plus the fields to change.
    #[serde(default)]
    pub update: Vec<serde_json::Map<String, serde_json::Value>>,
    #[serde(default)]
    pub remove: Vec<Uuid>,
}

/// One event an ingest request refused: its index in the body and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RejectedEvent {
    pub index: usize,
    pub reason: String,
}

/// The answer to an ingest request.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct IngestReply {
    /// Events applied to the windows of their shards.
    pub accepted: usize,
    /// Of the accepted events, those no widget watches: counted, not kept. Left out in
    /// cluster mode, where events are written to Kafka before any window sees them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unmatched: Option<usize>,
    /// The first refused events (at most `limits::MAX_LISTED_REJECTIONS`), by index in
    /// the body.
    pub rejected: Vec<RejectedEvent>,
    /// Every refused event, listed or not.
    #[serde(default)]
    pub rejected_total: usize,
}

/// A widget's value as `GET /dashboards/{id}/widgets/{wid}/snapshot` reports it: the
/// value's fields, and whether the owner's refreshes of the widget run more than two
/// intervals late.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WidgetReading {
    #[serde(flatten)]
    pub current: crate::shard::WidgetValue,
    pub stale: bool,
}
