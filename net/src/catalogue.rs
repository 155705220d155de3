//! The dashboard catalogue: every dashboard and widget definition, owned by one shard.
//! Changes are prepared (validated, all or nothing, ids minted) without touching the
//! dashboards, made durable by the caller, then committed; `Change` lists what the owning
//! shards must apply. Each commit bumps a version, so copies elsewhere can tell old from new.

use hashbrown::HashMap;
use livedash_engine::{Dashboard, DashboardUpdate, NewDashboard, Widget, WidgetPatch, validate};
use serde_json::Value;
use uuid::Uuid;

/// The too-old horizon never drops below this, so events sent before any dashboard
/// exists are still checked against a sensible window.
pub const MIN_HORIZON_MS: i64 = 300_000;

/// Why the catalogue refused a request.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Refusal {
    #[error("no dashboard {0}")]
    NoDashboard(Uuid),
    #[error("dashboard {dashboard} has no widget {widget}")]
    NoWidget { dashboard: Uuid, widget: Uuid },
    /// The request would make an invalid dashboard; the reason names the field.
    #[error("{0}")]
    Invalid(String),
    /// A stored widget could not be read back (a fault of the node, not the request).
    #[error("a stored widget cannot be read: {0}")]
    Unreadable(String),
    /// The change would pass one of the node's budgets; the reason names it.
    #[error("{0}")]
    OverBudget(String),
}

/// A prepared change: the dashboard as it will be (or `None` when deleted) and the widget
/// changes for the shards that own the widgets' metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub id: Uuid,
    pub dashboard: Option<Dashboard>,
    pub upserts: Vec<Widget>,
    pub removals: Vec<Widget>,
}

/// A dashboard (or its absence) as of a catalogue version.
#[derive(Debug, Clone, PartialEq)]
pub struct Versioned {
    pub version: u64,
    pub dashboard: Option<Dashboard>,
}

/// Where new dashboard and widget ids come from.
pub type IdSource = Box<dyn FnMut() -> Uuid + Send>;

/// Every dashboard, by id.
pub struct Catalogue {
    dashboards: HashMap<Uuid, Dashboard>,
    /// Bumped by every commit.
    version: u64,
    /// The version of each dashboard's last change (deletions included): the
    /// catalogue's version then, or in a cluster the shared catalogue's version of it.
    versions: HashMap<Uuid, u64>,
    /// Bumped by every commit (local or remote, whatever its version).
    revision: u64,
    ids: IdSource,
    budgets: Budgets,
}

impl std::fmt::Debug for Catalogue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Catalogue")
            .field("dashboards", &self.dashboards.len())
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

fn invalid(e: impl std::fmt::Display) -> Refusal {
    Refusal::Invalid(e.to_string())
}

impl Catalogue {
    /// A catalogue holding `dashboards` that mints random (v4) ids.
    pub fn new(dashboards: Vec<Dashboard>) -> Self {
        Self::with_ids(dashboards, Box::new(Uuid::new_v4))
    }

    /// A catalogue that takes new ids from `ids`.
    pub fn with_ids(dashboards: Vec<Dashboard>, ids: IdSource) -> Self {
        Self {
            dashboards: dashboards
                .into_iter()
                .map(|d| (d.dashboard_id, d))
                .collect(),
            version: 0,
            versions: HashMap::new(),
            revision: 0,
            ids,
            budgets: Budgets::default(),
        }
    }

    /// This catalogue, refusing changes that would pass `budgets`.
    pub fn with_budgets(mut self, budgets: Budgets) -> Self {
        self.budgets = budgets;
        self
    }

    /// A catalogue of a cluster: the dashboards with their shared versions.
    pub fn shared(stored: Vec<(Dashboard, u64)>) -> Self {
        let mut catalogue = Self::new(Vec::new());
        for (d, version) in stored {
            catalogue.versions.insert(d.dashboard_id, version);
            catalogue.dashboards.insert(d.dashboard_id, d);
        }
        catalogue
    }

    /// Counts every commit, local or remote: what was read at one revision is current
    /// until the next.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// The version of dashboard `id`'s last change (0 when none is known).
    pub fn version_of(&self, id: Uuid) -> u64 {
        self.versions.get(&id).copied().unwrap_or(0)
    }

    /// The ids of every dashboard.
    pub fn ids(&self) -> Vec<Uuid> {
        self.dashboards.keys().copied().collect()
    }

    pub fn get(&self, id: Uuid) -> Option<&Dashboard> {
        self.dashboards.get(&id)
    }

    /// Dashboard `id` (or its absence) as of now.
    pub fn versioned(&self, id: Uuid) -> Versioned {
        Versioned {
            version: self.version_of(id),
            dashboard: self.get(id).cloned(),
        }
    }

    /// Every dashboard, by name then id.
    pub fn list(&self) -> Vec<&Dashboard> {
        let mut all: Vec<&Dashboard> = self.dashboards.values().collect();
        all.sort_by(|a, b| {
            a.name
                .cmp(&b.name)
                .then(a.dashboard_id.cmp(&b.dashboard_id))
        });
        all
    }

    /// A widget of a dashboard.
    pub fn widget(&self, dashboard: Uuid, widget: Uuid) -> Result<&Widget, Refusal> {
        let d = self.get(dashboard).ok_or(Refusal::NoDashboard(dashboard))?;
        d.widgets
            .iter()
            .find(|w| w.widget_id == widget)
            .ok_or(Refusal::NoWidget { dashboard, widget })
    }

    /// The too-old horizon every shard applies: the longest window, at least
    /// `MIN_HORIZON_MS`.
    pub fn horizon_ms(&self) -> i64 {
        self.longest_window_ms().max(MIN_HORIZON_MS)
    }

    /// Longest window of any widget, in ms (0 without widgets).
    pub fn longest_window_ms(&self) -> i64 {
        let secs = self
            .dashboards
            .values()
            .flat_map(|d| &d.widgets)
            .map(|w| w.spec.window_seconds)
            .max()
            .unwrap_or(0);
        i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX)
    }

    /// A dashboard with a new name or layout, or a new dashboard, or a deletion, or a
    /// widget patch, as a prepared change.
    pub fn prepare(&mut self, edit: Edit) -> Result<Change, Refusal> {
        let change = match edit {
            Edit::Create(new) => self.create(new),
            Edit::Update(id, update) => self.update(id, update),
            Edit::Delete(id) => self.delete(id),
            Edit::Patch(id, patch) => self.patch(id, patch),
        }?;
        self.within_budgets(&change)?;
        Ok(change)
    }

    fn create(&mut self, new: NewDashboard) -> Result<Change, Refusal> {
        for (i, spec) in new.widgets.iter().enumerate() {
            validate::widget(spec).map_err(|e| invalid(format!("widgets[{i}].{e}")))?;
        }
        let id = (self.ids)();
        let widgets: Vec<Widget> = new
            .widgets
            .into_iter()
            .map(|s| Widget::new((self.ids)(), id, s))
            .collect();
        let dashboard = Dashboard {
            dashboard_id: id,
            name: new.name,
            layout: new.layout,
            widgets: widgets.clone(),
        };
        validate::dashboard(&dashboard).map_err(invalid)?;
        Ok(Change {
            id,
            dashboard: Some(dashboard),
            upserts: widgets,
            removals: Vec::new(),
        })
    }

    fn update(&self, id: Uuid, update: DashboardUpdate) -> Result<Change, Refusal> {
        let mut dashboard = self.get(id).ok_or(Refusal::NoDashboard(id))?.clone();
        dashboard.name = update.name;
        if let Some(layout) = update.layout {
            dashboard.layout = layout;
        }
        validate::dashboard(&dashboard).map_err(invalid)?;
        Ok(Change {
            id,
            dashboard: Some(dashboard),
            upserts: Vec::new(),
            removals: Vec::new(),
        })
    }

    fn delete(&self, id: Uuid) -> Result<Change, Refusal> {
        let dashboard = self.get(id).ok_or(Refusal::NoDashboard(id))?;
        Ok(Change {
            id,
            dashboard: None,
            upserts: Vec::new(),
            removals: dashboard.widgets.clone(),
        })
    }

    /// Adds, changes and removes widgets; any invalid part refuses the whole patch.
    fn patch(&mut self, id: Uuid, patch: WidgetPatch) -> Result<Change, Refusal> {
        let mut dashboard = self.get(id).ok_or(Refusal::NoDashboard(id))?.clone();
        let mut upserts = Vec::new();
        let mut removals = Vec::new();
        let mut touched = Vec::new();
        for (i, fields) in patch.update.into_iter().enumerate() {
            let widget_id = fields
                .get("widget_id")
                .and_then(Value::as_str)
                .and_then(|s| Uuid::parse_str(s).ok())
                .ok_or_else(|| invalid(format!("update[{i}]: widget_id (a UUID) is required")))?;
            if touched.contains(&widget_id) {
                return Err(invalid(format!(
                    "update[{i}]: widget {widget_id} is named twice"
                )));
            }
            touched.push(widget_id);
            let widget = dashboard
                .widgets
                .iter_mut()
                .find(|w| w.widget_id == widget_id)
                .ok_or_else(|| {
                    invalid(format!(
                        "update[{i}]: dashboard {id} has no widget {widget_id}"
                    ))
                })?;
            let mut merged = match serde_json::to_value(&widget.spec) {
                Ok(Value::Object(map)) => map,
                Ok(other) => return Err(Refusal::Unreadable(format!("not an object: {other}"))),
                Err(e) => return Err(Refusal::Unreadable(e.to_string())),
            };
            for (key, value) in fields {
                if key != "widget_id" {
                    merged.insert(key, value);
                }
            }
            widget.spec = serde_json::from_value(Value::Object(merged))
                .map_err(|e| invalid(format!("update[{i}]: {e}")))?;
            validate::widget(&widget.spec).map_err(|e| invalid(format!("update[{i}].{e}")))?;
            upserts.push(widget.clone());
        }
        for (i, widget_id) in patch.remove.into_iter().enumerate() {
            if touched.contains(&widget_id) {
                return Err(invalid(format!(
                    "remove[{i}]: widget {widget_id} is also updated or removed twice"
                )));
            }
            touched.push(widget_id);
            let at = dashboard
                .widgets
                .iter()
                .position(|w| w.widget_id == widget_id)
                .ok_or_else(|| {
                    invalid(format!(
                        "remove[{i}]: dashboard {id} has no widget {widget_id}"
                    ))
                })?;
            removals.push(dashboard.widgets.remove(at));
        }
        // A removed widget leaves the layout too.
        if let Some(items) = dashboard
            .layout
            .get_mut("items")
            .and_then(Value::as_object_mut)
        {
            for w in &removals {
                items.remove(&w.widget_id.to_string());
            }
        }
        for (i, spec) in patch.add.into_iter().enumerate() {
            validate::widget(&spec).map_err(|e| invalid(format!("add[{i}].{e}")))?;
            let widget = Widget::new((self.ids)(), id, spec);
            dashboard.widgets.push(widget.clone());
            upserts.push(widget);
        }
        validate::dashboard(&dashboard).map_err(invalid)?;
        Ok(Change {
            id,
            dashboard: Some(dashboard),
            upserts,
            removals,
        })
    }

    /// Makes a prepared (and stored) change visible; returns the new version.
    pub fn commit(&mut self, change: &Change) -> u64 {
        let version = self.version + 1;
        self.commit_at(change, version)
    }

    /// Makes a change visible as version `version` of its dashboard (cluster mode: the
    /// shared catalogue's version); returns it.
    pub fn commit_at(&mut self, change: &Change, version: u64) -> u64 {
        self.revision += 1;
        self.versions.insert(change.id, version);
        match &change.dashboard {
            Some(d) => {
                self.dashboards.insert(change.id, d.clone());
            }
            None => {
                self.dashboards.remove(&change.id);
            }
        }
        self.version = self.version.max(version);
        version
    }

    /// Cluster mode: dashboard `id` is `dashboard` (`None`: deleted) as of `version` of
    /// the shared catalogue. The change to make here, unless this catalogue is as new
    /// already.
    pub fn remote(&self, id: Uuid, dashboard: Option<Dashboard>, version: u64) -> Option<Change> {
        if version <= self.version_of(id) {
            return None;
        }
        let old = self.get(id).map(|d| d.widgets.clone()).unwrap_or_default();
        let upserts = dashboard
            .as_ref()
            .map(|d| d.widgets.clone())
            .unwrap_or_default();
        let removals = old
            .into_iter()
            .filter(|w| !upserts.iter().any(|u| u.widget_id == w.widget_id))
            .collect();
        Some(Change {
            id,
            dashboard,
            upserts,
            removals,
        })
    }
}

/// One edit of the catalogue, as the API and the demo ask for it.
#[derive(Debug, Clone, PartialEq)]
pub enum Edit {
    Create(NewDashboard),
    Update(Uuid, DashboardUpdate),
    Delete(Uuid),
    Patch(Uuid, WidgetPatch),
}

mod budget;
pub use budget::Budgets;

#[cfg(test)]
mod tests;
