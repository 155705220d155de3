//! What shards ask of each other, one struct per call (data only), and how a call can
//! fail. Each call's reply type and what the receiving shard does with it (`ShardCall`)
//! live in the service file of its concern; the list of calls is in `mesh`. Keeping the
//! requests and errors here spares services from importing each other to talk.

use std::time::Duration;

use livedash_engine::{MetricEvent, Widget, WidgetValue};
use uuid::Uuid;

use crate::catalogue::{Edit, Refusal, Versioned};

/// Apply events whose metrics the receiving shard owns.
#[derive(Debug)]
pub struct ApplyEvents(pub Vec<MetricEvent>);

/// Install and remove widgets whose metrics the receiver owns, and set the too-old
/// horizon.
#[derive(Debug)]
pub struct InstallWidgets {
    pub upsert: Vec<Widget>,
    pub remove: Vec<Uuid>,
    pub horizon_ms: i64,
}

/// The current value of a widget the receiver owns, and whether its refreshes run late.
#[derive(Debug)]
pub struct ReadValue(pub Uuid);

/// A widget's value as its owner shard sees it.
#[derive(Debug)]
pub enum Reading {
    /// The value, and whether its refreshes run late.
    Value(WidgetValue, bool),
    /// Not installed yet.
    Missing,
    /// Cluster mode: the partition of its metric is another node's now.
    NotOwned(u32),
}

/// The states of widgets the receiver owns (those installed; others are left out).
#[derive(Debug)]
pub struct ReadStates(pub Vec<Uuid>);

/// Shard `shard` starts (`add`) or stops (`remove`) streaming these widgets of
/// `dashboard`, which the receiver owns.
#[derive(Debug)]
pub struct Watch {
    pub shard: usize,
    pub dashboard: Uuid,
    pub add: Vec<Uuid>,
    pub remove: Vec<Uuid>,
}

/// Changed values (with their dashboard) for the receiver's streams, and the widgets
/// (dashboard, widget) refreshed at the same instant without a change.
#[derive(Debug)]
pub struct Push {
    pub values: Vec<(Uuid, WidgetValue)>,
    pub unchanged: Vec<(Uuid, Uuid)>,
    /// When the owner computed them (epoch ms).
    pub computed_at: i64,
}

/// A dashboard was created, changed or deleted (`dashboard: None`) as of a catalogue
/// version: its streams on the receiver follow.
#[derive(Debug)]
pub struct DashboardChanged {
    pub id: Uuid,
    pub news: Versioned,
}

/// Every dashboard, by name then id.
#[derive(Debug)]
pub struct ListDashboards;

/// Every dashboard, by name then id, as the JSON `GET /dashboards` answers: encoded once
/// per catalogue version and shared by every request that reads it.
#[derive(Debug)]
pub struct EncodedDashboards;

/// One dashboard as the JSON `GET /dashboards/{id}` answers, encoded once per version.
#[derive(Debug)]
pub struct EncodedDashboard(pub Uuid);

/// A dashboard (or its absence) with the catalogue version it is current at.
#[derive(Debug)]
pub struct GetDashboard(pub Uuid);

/// The metric of a widget of a dashboard.
#[derive(Debug)]
pub struct LocateWidget {
    pub dashboard: Uuid,
    pub widget: Uuid,
}

/// One edit, made on the catalogue shard; the dashboard as it is after it (`None` once
/// deleted).
#[derive(Debug)]
pub struct EditDashboards(pub Edit);

/// Counters, for `/stats`, `/metrics` and the alerts.
#[derive(Debug)]
pub struct Stats {
    /// Start the maximum write lag over (`/stats` shows the maximum since it last asked).
    pub restart_max: bool,
}

/// The alerts, as the catalogue shard evaluated them last.
#[derive(Debug)]
pub struct Alerts;

/// Metric names this shard saw recently.
#[derive(Debug)]
pub struct RecentMetrics;

/// How a call to another shard failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The message could not be sent (the peer's side of the mesh is closed).
    Unreachable,
    /// No reply within the deadline.
    TimedOut(Duration),
    /// The reply was dropped unanswered.
    Dropped,
    /// A reply of another call came back (a fault of the mesh itself).
    Mismatched,
}

/// A call to another shard that got no usable reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("shard {shard} {}", describe(*.failure, self.call))]
pub struct CallError {
    pub shard: usize,
    pub call: &'static str,
    pub failure: Failure,
}

fn describe(failure: Failure, call: &str) -> String {
    match failure {
        Failure::Unreachable => format!("is not reachable (call {call})"),
        Failure::TimedOut(d) => format!("did not answer {call} within {} ms", d.as_millis()),
        Failure::Dropped => format!("dropped {call} unanswered"),
        Failure::Mismatched => format!("answered {call} with the reply of another call"),
    }
}

/// Why a catalogue request failed.
#[derive(Debug, thiserror::Error)]
pub enum CatalogueError {
    /// The request itself is wrong (unknown id, invalid dashboard).
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error("cannot store the dashboard: {0}")]
    Store(String),
    /// An owner shard refused a widget the catalogue accepted.
    #[error("a shard refused the change: {0}")]
    Install(String),
    #[error("the widget is still being installed")]
    NotReady,
    /// Cluster mode: another node changed the dashboard first.
    #[error(
        "another node changed the dashboard at the same time (it is now at version {0}): \
         read it again and retry the change"
    )]
    Conflict(u64),
    /// Cluster mode: another node owns the partition of the widget's metric.
    #[error(
        "the widget's metric is in Kafka partition {0}, which another node owns: read it \
         from that node (GET /stats lists each node's partitions)"
    )]
    NotOwned(u32),
    #[error("the node is shutting down")]
    ShuttingDown,
    #[error("this shard has no catalogue")]
    NoCatalogue,
    #[error(transparent)]
    Shard(#[from] CallError),
}

/// A write to Kafka the broker did not acknowledge (cluster mode).
#[derive(Debug, thiserror::Error)]
#[error(
    "the Kafka brokers did not acknowledge the write ({reason}); {written} events of the \
     batch were written and the others were not: resend the batch once the brokers are back"
)]
pub struct ProduceError {
    pub reason: String,
    /// Events of the batch that were written all the same.
    pub written: usize,
}

/// Why an ingest batch was not applied or written.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(transparent)]
    Call(#[from] CallError),
    #[error(transparent)]
    Produce(#[from] ProduceError),
    /// Standalone with the state mirror: the events could not be stored.
    #[error("{0}")]
    NotDurable(String),
}
