//! livedash engine: the data model, sliding-window aggregation and the shard state machine.
//! Pure computation: no I/O, no clocks (time is always passed in), no async runtime.
//! Every other crate builds on these types; this crate depends on none of them.

pub mod batch;
pub mod limits;
pub mod model;
pub mod query;
pub mod routing;
pub mod shard;
pub mod validate;
pub mod window;

pub mod prefetch;
mod serde_helpers;

pub use model::{
    Aggregation, Dashboard, DashboardUpdate, IngestReply, MetricEvent, NewDashboard, RejectedEvent,
    Tags, Widget, WidgetPatch, WidgetReading, WidgetSpec, tick_phase_ms,
};
pub use query::{QueryId, QueryIndex, QueryKey, Split, SplitValues};
pub use routing::{Placement, partition_for, shard_for};
pub use shard::{
    ApplyOutcome, Detail, Grouping, HistoryPoint, IngestStats, QueryChanges, Rejection, Shard,
    ShardConfig, WidgetValue,
};
pub use validate::ValidationError;
pub use window::{Distribution, PaneChanges, PaneState, SlidingWindow, WindowSpec};
