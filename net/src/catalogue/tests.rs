//! Tests of the catalogue: prepared changes, commits, versions, budgets.

use super::*;
use livedash_engine::WidgetSpec;
use serde_json::json;

fn spec(metric: &str) -> WidgetSpec {
    serde_json::from_value(json!({
        "metric_name": metric, "aggregation": "sum", "window_seconds": 60,
        "refresh_interval_seconds": 1.0
    }))
    .unwrap()
}

/// A catalogue minting ids 1, 2, 3...
fn counting() -> Catalogue {
    let mut next = 0u128;
    Catalogue::with_ids(
        Vec::new(),
        Box::new(move || {
            next += 1;
            Uuid::from_u128(next)
        }),
    )
}

fn with_one_widget() -> (Catalogue, Uuid, Uuid) {
    let mut c = counting();
    let change = c
        .prepare(Edit::Create(NewDashboard {
            name: "ops".into(),
            layout: Value::Null,
            widgets: vec![spec("a")],
        }))
        .unwrap();
    c.commit(&change);
    let d = change.dashboard.unwrap();
    (c, d.dashboard_id, d.widgets[0].widget_id)
}

#[test]
fn remote_changes_apply_once_and_in_order() {
    let (c, id, wid) = with_one_widget();
    let mut d = c.get(id).unwrap().clone();
    assert_eq!(c.remote(id, Some(d.clone()), 1), None, "not newer");
    d.widgets[0].widget_id = Uuid::from_u128(7);
    let change = c.remote(id, Some(d.clone()), 5).unwrap();
    assert_eq!(change.upserts[0].widget_id, Uuid::from_u128(7));
    assert_eq!(change.removals[0].widget_id, wid);
    let mut c = c;
    assert_eq!(c.commit_at(&change, 5), 5);
    assert_eq!(c.versioned(id).version, 5);
    let gone = c.remote(id, None, 6).unwrap();
    assert_eq!(gone.removals.len(), 1);
    c.commit_at(&gone, 6);
    assert!(c.get(id).is_none());
    assert_eq!(
        c.remote(id, Some(d), 6),
        None,
        "a deletion is not undone by older news"
    );
}

#[test]
fn ids_come_from_the_source_and_commits_bump_the_version() {
    let (c, id, wid) = with_one_widget();
    assert_eq!((id, wid), (Uuid::from_u128(1), Uuid::from_u128(2)));
    assert_eq!(c.versioned(id).version, 1);
    assert_eq!(c.versioned(id).dashboard.unwrap().widgets.len(), 1);
    assert_eq!(c.versioned(Uuid::nil()).dashboard, None);
}

#[test]
fn prepare_changes_nothing_until_commit() {
    let (mut c, id, _) = with_one_widget();
    let change = c
        .prepare(Edit::Update(
            id,
            DashboardUpdate {
                name: "renamed".into(),
                layout: None,
            },
        ))
        .unwrap();
    assert_eq!(c.get(id).unwrap().name, "ops");
    assert_eq!(c.commit(&change), 2);
    assert_eq!(c.get(id).unwrap().name, "renamed");
}

#[test]
fn patch_updates_only_given_fields() {
    let (mut c, id, wid) = with_one_widget();
    let patch: WidgetPatch = serde_json::from_value(json!({
        "update": [{"widget_id": wid, "aggregation": "p99"}],
        "add": [spec("b")]
    }))
    .unwrap();
    let change = c.prepare(Edit::Patch(id, patch)).unwrap();
    let d = change.dashboard.unwrap();
    assert_eq!(d.widgets.len(), 2);
    assert_eq!(
        d.widgets[0].spec.aggregation,
        livedash_engine::Aggregation::P99
    );
    assert_eq!(d.widgets[0].spec.metric_name, "a");
    assert_eq!(d.widgets[1].widget_id, Uuid::from_u128(3));
    assert_eq!(change.upserts.len(), 2);
}

#[test]
fn patch_errors_name_their_place() {
    let (mut c, id, wid) = with_one_widget();
    for (body, place) in [
        (
            json!({"add": [spec("ok"), {"metric_name": "b", "aggregation": "sum", "window_seconds": 0, "refresh_interval_seconds": 1.0}]}),
            "add[1].window_seconds",
        ),
        (
            json!({"update": [{"widget_id": wid, "refresh_interval_seconds": 0.0}]}),
            "update[0].refresh_interval_seconds",
        ),
        (
            json!({"add": [{"metric_name": "a b", "aggregation": "sum", "window_seconds": 5, "refresh_interval_seconds": 1.0}]}),
            "add[0].metric_name",
        ),
    ] {
        let patch: WidgetPatch = serde_json::from_value(body).unwrap();
        let err = c.prepare(Edit::Patch(id, patch)).unwrap_err().to_string();
        assert!(err.starts_with(place), "{err}");
    }
}

#[test]
fn patch_is_all_or_nothing() {
    let (mut c, id, wid) = with_one_widget();
    for body in [
        json!({"update": [{"widget_id": wid, "window_seconds": 0}]}),
        json!({"update": [{"widget_id": wid, "colour": "red"}]}),
        json!({"update": [{"aggregation": "max"}]}),
        json!({"remove": [Uuid::new_v4()]}),
        json!({"update": [{"widget_id": wid}], "remove": [wid]}),
        json!({"add": [spec("ok")], "remove": [Uuid::nil()]}),
    ] {
        let patch: WidgetPatch = serde_json::from_value(body.clone()).unwrap();
        let err = c.prepare(Edit::Patch(id, patch)).unwrap_err();
        assert!(matches!(err, Refusal::Invalid(_)), "{body}: {err}");
    }
    assert_eq!(c.get(id).unwrap().widgets.len(), 1);
    assert_eq!(
        c.get(id).unwrap().widgets[0].spec.aggregation,
        livedash_engine::Aggregation::Sum
    );
    assert_eq!(c.versioned(id).version, 1);
}

#[test]
fn unknown_ids_are_refused_by_kind() {
    let (mut c, id, _) = with_one_widget();
    let other = Uuid::from_u128(99);
    assert_eq!(
        c.prepare(Edit::Delete(other)),
        Err(Refusal::NoDashboard(other))
    );
    assert_eq!(
        c.widget(id, other).unwrap_err(),
        Refusal::NoWidget {
            dashboard: id,
            widget: other
        }
    );
    assert_eq!(
        c.prepare(Edit::Patch(other, WidgetPatch::default())),
        Err(Refusal::NoDashboard(other))
    );
}

#[test]
fn a_removed_widget_leaves_the_layout() {
    let (mut c, id, wid) = with_one_widget();
    let layout =
        json!({"items": {wid.to_string(): {"x": 0, "y": 0, "w": 4, "h": 3}}, "theme": "dark"});
    let change = c
        .prepare(Edit::Update(
            id,
            DashboardUpdate {
                name: "ops".into(),
                layout: Some(layout),
            },
        ))
        .unwrap();
    c.commit(&change);
    let patch: WidgetPatch = serde_json::from_value(json!({"remove": [wid]})).unwrap();
    let change = c.prepare(Edit::Patch(id, patch)).unwrap();
    let d = change.dashboard.unwrap();
    assert_eq!(d.layout, json!({"items": {}, "theme": "dark"}));
}

#[test]
fn delete_lists_widgets_to_remove() {
    let (mut c, id, wid) = with_one_widget();
    let change = c.prepare(Edit::Delete(id)).unwrap();
    assert_eq!(change.removals[0].widget_id, wid);
    c.commit(&change);
    assert!(c.get(id).is_none());
    assert_eq!(c.prepare(Edit::Delete(id)), Err(Refusal::NoDashboard(id)));
    assert_eq!(c.longest_window_ms(), 0);
    assert_eq!(c.horizon_ms(), MIN_HORIZON_MS);
}

#[test]
fn invalid_new_dashboard_is_refused() {
    let mut c = counting();
    let err = c
        .prepare(Edit::Create(NewDashboard {
            name: String::new(),
            layout: Value::Null,
            widgets: Vec::new(),
        }))
        .unwrap_err();
    assert!(
        matches!(err, Refusal::Invalid(ref r) if r.contains("name")),
        "{err}"
    );
    assert_eq!(c.versioned(Uuid::nil()).version, 0);
}

#[test]
fn budgets_refuse_growth_past_them_and_allow_shrinking() {
    let mut c = counting().with_budgets(Budgets {
        dashboards: 2,
        widgets: 3,
        queries: 2,
    });
    let create = |metrics: &[&str]| {
        Edit::Create(NewDashboard {
            name: "d".into(),
            layout: json!({}),
            widgets: metrics.iter().map(|m| spec(m)).collect(),
        })
    };
    let first = c.prepare(create(&["a", "a"])).unwrap();
    c.commit(&first);
    // Two widgets of one query; a third widget on a new query is within both budgets.
    let second = c.prepare(create(&["b"])).unwrap();
    c.commit(&second);
    let err = c.prepare(create(&[])).unwrap_err();
    assert!(
        matches!(&err, Refusal::OverBudget(r) if r.contains("max_dashboards")),
        "{err}"
    );
    let patch = |metric: &str| WidgetPatch {
        add: vec![spec(metric)],
        ..WidgetPatch::default()
    };
    let err = c.prepare(Edit::Patch(second.id, patch("b"))).unwrap_err();
    assert!(
        matches!(&err, Refusal::OverBudget(r) if r.contains("max_widgets")),
        "{err}"
    );
    // Replacing a widget by one of a third query passes the query budget.
    let old = second.dashboard.as_ref().unwrap().widgets[0].widget_id;
    let swap = WidgetPatch {
        add: vec![spec("c")],
        remove: vec![old],
        ..WidgetPatch::default()
    };
    let ok = c.prepare(Edit::Patch(second.id, swap)).unwrap();
    assert_eq!(ok.upserts.len(), 1);
    // A node holding more than its budgets (lowered at a restart) may still shrink.
    c.budgets = Budgets {
        dashboards: 1,
        widgets: 1,
        queries: 1,
    };
    let shrink = c.prepare(Edit::Delete(second.id)).unwrap();
    c.commit(&shrink);
    let rename = c.prepare(Edit::Update(
        first.id,
        DashboardUpdate {
            name: "renamed".into(),
            layout: None,
        },
    ));
    assert!(rename.is_ok());
}
