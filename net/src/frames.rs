//! The JSON messages of a dashboard stream, as the browser receives them, each encoded
//! once as a complete WebSocket frame.

use std::sync::Arc;

use livedash_engine::shard::{WidgetValue, serialize_reading};
use livedash_engine::{Dashboard, Detail, HistoryPoint};
use serde::Serialize;
use serde::ser::{SerializeStruct, Serializer};
use tungstenite::Bytes;
use tungstenite::protocol::frame::coding::{Data, OpCode};
use uuid::Uuid;

/// One widget's value in an `update` frame: `value` (a number, or a `histogram`
/// widget's distribution), `series` and `other` for a grouped widget, and the window's
/// end, newest event and staleness.
#[derive(Debug, Clone)]
pub struct WidgetUpdate {
    pub widget_id: Uuid,
    pub value: Option<f64>,
    pub detail: Option<Arc<Detail>>,
    pub window_end: i64,
    pub latest_event_time: Option<i64>,
    pub stale: bool,
}

impl WidgetUpdate {
    pub fn of(v: &WidgetValue, stale: bool) -> Self {
        Self {
            widget_id: v.widget_id,
            value: v.value,
            detail: v.detail.clone(),
            window_end: v.window_end,
            latest_event_time: v.latest_event_time,
            stale,
        }
    }
}

impl Serialize for WidgetUpdate {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("WidgetUpdate", 7)?;
        st.serialize_field("widget_id", &self.widget_id)?;
        serialize_reading(&mut st, self.value, self.detail.as_deref())?;
        st.serialize_field("window_end", &self.window_end)?;
        st.serialize_field("latest_event_time", &self.latest_event_time)?;
        st.serialize_field("stale", &self.stale)?;
        st.end()
    }
}

/// One widget in the `snapshot` frame: its value now and its recent history; for
/// grouped and `histogram` widgets also the recent series or distributions, as
/// `detail_history: [[time_ms, {"series": {...}, "other": n} or {"count": n,
/// "buckets": [...]}], ...]`, oldest first.
#[derive(Debug, Clone, Serialize)]
pub struct WidgetSnapshot {
    #[serde(flatten)]
    pub current: WidgetUpdate,
    pub history: Vec<HistoryPoint>,
    #[serde(rename = "detail_history", skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<(i64, Arc<Detail>)>,
}

/// A widget of the dashboard this node has no value for, and why.
#[derive(Debug, Clone, Serialize)]
pub struct Unavailable {
    pub widget_id: Uuid,
    pub reason: String,
}

#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Frame<'a> {
    Snapshot {
        dashboard: &'a Dashboard,
        widgets: &'a [WidgetSnapshot],
        /// Widgets this node cannot show, and why (cluster mode).
        #[serde(skip_serializing_if = "<[_]>::is_empty")]
        unavailable: &'a [Unavailable],
        /// Cluster mode: the URLs of the live nodes, where the client may reconnect.
        #[serde(skip_serializing_if = "<[_]>::is_empty")]
        nodes: &'a [String],
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
    /// The message as a complete WebSocket text frame, encoded once and written as it is
    /// to every connection it goes to (server frames are not masked).
    pub fn encode(&self) -> Result<Bytes, serde_json::Error> {
        serde_json::to_vec(self).map(text_frame)
    }
}

/// `json` (UTF-8 by construction) as one final, unmasked WebSocket text frame.
pub fn text_frame(json: Vec<u8>) -> Bytes {
    let frame = tungstenite::protocol::frame::Frame::message(json, OpCode::Data(Data::Text), true);
    let mut out = Vec::with_capacity(frame.len());
    // Writing into a Vec cannot fail.
    let _ = frame.format(&mut out);
    Bytes::from(out)
}
