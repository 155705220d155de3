//! The dashboard catalogue: every dashboard and widget definition, owned by shard 0.
//! Changes are prepared (validated, all or nothing) without touching state, made durable
//! by the caller, then committed; `Change` lists what the owning shards must apply.

use hashbrown::HashMap;
use livedash_engine::{Dashboard, Widget, WidgetSpec, validate};
use serde::Deserialize;
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::api::ApiError;

/// The too-old horizon never drops below this, so events sent before any dashboard
/// exists are still checked against a sensible window.
pub const MIN_HORIZON_MS: i64 = 300_000;

/// `POST /dashboards` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewDashboard {
    pub name: String,
    #[serde(default)]
    pub layout: Value,
    #[serde(default)]
    pub widgets: Vec<WidgetSpec>,
}

/// `PUT /dashboards/{id}` body: the new name, and the new layout if given.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DashboardUpdate {
    pub name: String,
    #[serde(default)]
    pub layout: Option<Value>,
}

/// `PATCH /dashboards/{id}/widgets` body.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WidgetPatch {
    #[serde(default)]
    pub add: Vec<WidgetSpec>,
    /// Each entry: `widget_id` plus the fields to change.
    #[serde(default)]
    pub update: Vec<Map<String, Value>>,
    #[serde(default)]
    pub remove: Vec<Uuid>,
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

/// Every dashboard, by id.
#[derive(Debug, Default)]
pub struct Catalogue {
    dashboards: HashMap<Uuid, Dashboard>,
}

fn bad(reason: impl Into<String>) -> ApiError {
    ApiError::new(400, reason)
}

fn not_found(id: Uuid) -> ApiError {
    ApiError::new(404, format!("no dashboard {id}"))
}

impl Catalogue {
    pub fn new(dashboards: Vec<Dashboard>) -> Self {
        Self {
            dashboards: dashboards
                .into_iter()
                .map(|d| (d.dashboard_id, d))
                .collect(),
        }
    }

    pub fn get(&self, id: Uuid) -> Option<&Dashboard> {
        self.dashboards.get(&id)
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

    /// A widget and its dashboard.
    pub fn widget(&self, dashboard: Uuid, widget: Uuid) -> Result<&Widget, ApiError> {
        let d = self.get(dashboard).ok_or_else(|| not_found(dashboard))?;
        d.widgets
            .iter()
            .find(|w| w.widget_id == widget)
            .ok_or_else(|| {
                ApiError::new(404, format!("dashboard {dashboard} has no widget {widget}"))
            })
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

    pub fn create(&self, new: NewDashboard) -> Result<Change, ApiError> {
        let id = Uuid::new_v4();
        let widgets: Vec<Widget> = new
            .widgets
            .into_iter()
            .map(|s| Widget::new(id, s))
            .collect();
        let dashboard = Dashboard {
            dashboard_id: id,
            name: new.name,
            layout: new.layout,
            widgets: widgets.clone(),
        };
        validate::dashboard(&dashboard).map_err(|e| bad(e.to_string()))?;
        Ok(Change {
            id,
            dashboard: Some(dashboard),
            upserts: widgets,
            removals: Vec::new(),
        })
    }

    pub fn update(&self, id: Uuid, update: DashboardUpdate) -> Result<Change, ApiError> {
        let mut dashboard = self.get(id).ok_or_else(|| not_found(id))?.clone();
        dashboard.name = update.name;
        if let Some(layout) = update.layout {
            dashboard.layout = layout;
        }
        validate::dashboard(&dashboard).map_err(|e| bad(e.to_string()))?;
        Ok(Change {
            id,
            dashboard: Some(dashboard),
            upserts: Vec::new(),
            removals: Vec::new(),
        })
    }

    pub fn delete(&self, id: Uuid) -> Result<Change, ApiError> {
        let dashboard = self.get(id).ok_or_else(|| not_found(id))?;
        Ok(Change {
            id,
            dashboard: None,
            upserts: Vec::new(),
            removals: dashboard.widgets.clone(),
        })
    }

    /// Adds, changes and removes widgets; any invalid part refuses the whole patch.
    pub fn patch(&self, id: Uuid, patch: WidgetPatch) -> Result<Change, ApiError> {
        let mut dashboard = self.get(id).ok_or_else(|| not_found(id))?.clone();
        let mut upserts = Vec::new();
        let mut removals = Vec::new();
        let mut touched = Vec::new();
        for (i, fields) in patch.update.into_iter().enumerate() {
            let widget_id = fields
                .get("widget_id")
                .and_then(Value::as_str)
                .and_then(|s| Uuid::parse_str(s).ok())
                .ok_or_else(|| bad(format!("update[{i}]: widget_id (a UUID) is required")))?;
            if touched.contains(&widget_id) {
                return Err(bad(format!(
                    "update[{i}]: widget {widget_id} is named twice"
                )));
            }
            touched.push(widget_id);
            let widget = dashboard
                .widgets
                .iter_mut()
                .find(|w| w.widget_id == widget_id)
                .ok_or_else(|| {
                    bad(format!(
                        "update[{i}]: dashboard {id} has no widget {widget_id}"
                    ))
                })?;
            let Ok(Value::Object(mut merged)) = serde_json::to_value(&widget.spec) else {
                return Err(ApiError::new(500, "cannot encode a stored widget"));
            };
            for (key, value) in fields {
                if key != "widget_id" {
                    merged.insert(key, value);
                }
            }
            widget.spec = serde_json::from_value(Value::Object(merged))
                .map_err(|e| bad(format!("update[{i}]: {e}")))?;
            upserts.push(widget.clone());
        }
        for (i, widget_id) in patch.remove.into_iter().enumerate() {
            if touched.contains(&widget_id) {
                return Err(bad(format!(
                    "remove[{i}]: widget {widget_id} is also updated or removed twice"
                )));
            }
            touched.push(widget_id);
            let at = dashboard
                .widgets
                .iter()
                .position(|w| w.widget_id == widget_id)
                .ok_or_else(|| {
                    bad(format!(
                        "remove[{i}]: dashboard {id} has no widget {widget_id}"
                    ))
                })?;
            removals.push(dashboard.widgets.remove(at));
        }
        for spec in patch.add {
            let widget = Widget::new(id, spec);
            dashboard.widgets.push(widget.clone());
            upserts.push(widget);
        }
        validate::dashboard(&dashboard).map_err(|e| bad(e.to_string()))?;
        Ok(Change {
            id,
            dashboard: Some(dashboard),
            upserts,
            removals,
        })
    }

    /// Makes a prepared (and stored) change visible.
    pub fn commit(&mut self, change: &Change) {
        match &change.dashboard {
            Some(d) => {
                self.dashboards.insert(change.id, d.clone());
            }
            None => {
                self.dashboards.remove(&change.id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(metric: &str) -> WidgetSpec {
        serde_json::from_value(json!({
            "metric_name": metric, "aggregation": "sum", "window_seconds": 60,
            "refresh_interval_seconds": 1.0
        }))
        .unwrap()
    }

    fn with_one_widget() -> (Catalogue, Uuid, Uuid) {
        let mut c = Catalogue::default();
        let change = c
            .create(NewDashboard {
                name: "ops".into(),
                layout: Value::Null,
                widgets: vec![spec("a")],
            })
            .unwrap();
        c.commit(&change);
        let d = change.dashboard.unwrap();
        (c, d.dashboard_id, d.widgets[0].widget_id)
    }

    #[test]
    fn patch_updates_only_given_fields() {
        let (c, id, wid) = with_one_widget();
        let patch: WidgetPatch = serde_json::from_value(json!({
            "update": [{"widget_id": wid, "aggregation": "p99"}],
            "add": [spec("b")]
        }))
        .unwrap();
        let change = c.patch(id, patch).unwrap();
        let d = change.dashboard.unwrap();
        assert_eq!(d.widgets.len(), 2);
        assert_eq!(
            d.widgets[0].spec.aggregation,
            livedash_engine::Aggregation::P99
        );
        assert_eq!(d.widgets[0].spec.metric_name, "a");
        assert_eq!(change.upserts.len(), 2);
    }

    #[test]
    fn patch_is_all_or_nothing() {
        let (c, id, wid) = with_one_widget();
        for body in [
            json!({"update": [{"widget_id": wid, "window_seconds": 0}]}),
            json!({"update": [{"widget_id": wid, "colour": "red"}]}),
            json!({"update": [{"aggregation": "max"}]}),
            json!({"remove": [Uuid::new_v4()]}),
            json!({"update": [{"widget_id": wid}], "remove": [wid]}),
            json!({"add": [spec("ok")], "remove": [Uuid::nil()]}),
        ] {
            let patch: WidgetPatch = serde_json::from_value(body.clone()).unwrap();
            let err = c.patch(id, patch).unwrap_err();
            assert_eq!(err.status, 400, "{body}: {}", err.reason);
        }
        assert_eq!(c.get(id).unwrap().widgets.len(), 1);
        assert_eq!(
            c.get(id).unwrap().widgets[0].spec.aggregation,
            livedash_engine::Aggregation::Sum
        );
    }

    #[test]
    fn delete_lists_widgets_to_remove() {
        let (mut c, id, wid) = with_one_widget();
        let change = c.delete(id).unwrap();
        assert_eq!(change.removals[0].widget_id, wid);
        c.commit(&change);
        assert!(c.get(id).is_none());
        assert_eq!(c.delete(id).unwrap_err().status, 404);
        assert_eq!(c.longest_window_ms(), 0);
    }
}
