//! The JSON messages of a dashboard stream, as the browser receives them.

use livedash_engine::shard::WidgetValue;
use livedash_engine::{Dashboard, HistoryPoint};
use serde::Serialize;
use uuid::Uuid;

/// One widget's value in an `update` frame.
#[derive(Debug, Clone, Serialize)]
pub struct WidgetUpdate {
    pub widget_id: Uuid,
    pub value: Option<f64>,
    pub window_end: i64,
    pub latest_event_time: Option<i64>,
    pub stale: bool,
}

impl WidgetUpdate {
    pub fn of(v: &WidgetValue, stale: bool) -> Self {
        Self {
            widget_id: v.widget_id,
            value: v.value,
            window_end: v.window_end,
            latest_event_time: v.latest_event_time,
            stale,
        }
    }
}

/// One widget in the `snapshot` frame: its value now and its recent history.
#[derive(Debug, Clone, Serialize)]
pub struct WidgetSnapshot {
    #[serde(flatten)]
    pub current: WidgetUpdate,
    pub history: Vec<HistoryPoint>,
}

#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Frame<'a> {
    Snapshot {
        dashboard: &'a Dashboard,
        widgets: &'a [WidgetSnapshot],
    },
    Update {
        seq: u64,
        sent_at: i64,
        widgets: &'a [WidgetUpdate],
    },
    Dashboard {
        dashboard: &'a Dashboard,
    },
}

impl Frame<'_> {
    /// The frame as text, ready to be shared by every connection it goes to.
    pub fn encode(&self) -> tungstenite::Utf8Bytes {
        serde_json::to_string(self).unwrap_or_default().into()
    }
}
