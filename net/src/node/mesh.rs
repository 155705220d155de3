//! Messages between shards over glommio's channel mesh, as calls with replies. A call to
//! the own shard runs in place; a call to another shard is one message each way.

use livedash_engine::{Dashboard, MetricEvent, Rejection, Widget, shard::WidgetValue};
use serde::Serialize;
use uuid::Uuid;

use crate::http::{Request, Response};
use crate::stream::frames::WidgetSnapshot;

/// What one shard asks of another.
#[derive(Debug)]
pub enum Call {
    /// Apply events owned by the receiver.
    Ingest(Vec<MetricEvent>),
    /// Install and remove widgets owned by the receiver, and set the time horizon.
    Widgets {
        upsert: Vec<Widget>,
        remove: Vec<Uuid>,
        horizon_ms: i64,
    },
    /// The current value of a widget the receiver owns.
    Value(Uuid),
    /// A dashboards API request, for the catalogue shard.
    Http(Request),
    /// Counters, for `/stats`.
    Stats,
    /// Shard `shard` starts (`add`) or stops (`remove`) streaming these widgets of
    /// `dashboard`, which the receiver owns.
    Interest {
        shard: usize,
        dashboard: Uuid,
        add: Vec<Uuid>,
        remove: Vec<Uuid>,
    },
    /// Current values and history of widgets the receiver owns.
    Snapshot(Vec<Uuid>),
    /// Changed values (with their dashboard) for the receiver's streams.
    Push(Vec<(Uuid, WidgetValue)>),
    /// A dashboard was created, changed or (with `None`) deleted.
    DashboardChanged(Uuid, Option<Dashboard>),
    /// A dashboard, from the catalogue shard.
    GetDashboard(Uuid),
    /// Metric names this shard saw recently.
    RecentMetrics,
}

/// The answer to a `Call`.
#[derive(Debug)]
pub enum Reply {
    /// Accepted count, and the batch positions of refused events.
    Ingested {
        accepted: usize,
        rejected: Vec<(usize, Rejection)>,
    },
    Done,
    Failed(String),
    Value {
        value: Option<WidgetValue>,
        stale: bool,
    },
    Http(Response),
    Stats(ShardStats),
    Snapshot(Vec<WidgetSnapshot>),
    Dashboard(Option<Dashboard>),
    Metrics(Vec<String>),
}

/// Counters of one shard.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct ShardStats {
    pub shard: usize,
    pub accepted: u64,
    pub unmatched: u64,
    pub rejected_too_old: u64,
    pub rejected_too_far_ahead: u64,
    pub widgets: usize,
    pub queries: usize,
    pub window_bytes: usize,
    /// Time spent applying events to windows, in nanoseconds.
    pub engine_apply_ns: u64,
    /// Events handed to the engine (accepted or refused by time).
    pub engine_events: u64,
    pub connections: usize,
    /// Open WebSocket streams.
    pub streams: usize,
    /// Stream frames queued for connections, and written to their sockets.
    pub frames_queued: u64,
    pub frames_written: u64,
    /// Sum and maximum of the time from framing to socket write, in ms.
    pub write_lag_ms_sum: u64,
    pub write_lag_ms_max: u64,
}

/// One message on the mesh.
#[derive(Debug)]
pub enum Msg {
    Call { from: usize, id: u64, call: Call },
    Reply { id: u64, reply: Reply },
}
