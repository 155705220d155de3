//! What shards ask of each other: one struct per call, data only. Each call's reply type
//! and what the receiving shard does with it (`ShardCall`) live in the service file of
//! its concern; the list of calls is in `mesh`. Keeping the requests here lets services
//! send each other calls without importing each other.

use livedash_engine::{MetricEvent, Widget, WidgetValue};
use uuid::Uuid;

use crate::catalogue::{Edit, Versioned};

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

/// Changed values (with their dashboard) for the receiver's streams.
#[derive(Debug)]
pub struct Push(pub Vec<(Uuid, WidgetValue)>);

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

/// Counters, for `/stats`.
#[derive(Debug)]
pub struct Stats;

/// Metric names this shard saw recently.
#[derive(Debug)]
pub struct RecentMetrics;
