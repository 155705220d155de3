//! Validation of everything a user sends, with one typed error per rejection reason.
//! Messages say what was wrong and what is allowed, so a user can act on them.

use crate::limits::*;
use crate::model::{Aggregation, Dashboard, MetricEvent, Tags, WidgetSpec};

/// Why an event, widget or dashboard was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ValidationError {
    #[error("{field} must not be empty")]
    Empty { field: &'static str },
    #[error("{field} is {len} bytes long; at most {max} are allowed")]
    TooLong {
        field: &'static str,
        len: usize,
        max: usize,
    },
    #[error("{field} contains {ch:?} at byte {at}; allowed are {NAME_CHARSET}")]
    BadNameChar {
        field: &'static str,
        ch: char,
        at: usize,
    },
    #[error("{field} contains a control character at byte {at}")]
    ControlChar { field: &'static str, at: usize },
    #[error("{field} has {count} entries; at most {max} are allowed")]
    TooMany {
        field: &'static str,
        count: usize,
        max: usize,
    },
    #[error("value must be a finite number, got {0}")]
    NonFiniteValue(f64),
    #[error("value {0} is out of range: its magnitude must be at most {MAX_VALUE_MAGNITUDE:e}")]
    ValueOutOfRange(f64),
    #[error("event_time {0} is before 1970-01-01T00:00:00Z")]
    NegativeEventTime(i64),
    #[error(
        "window_seconds must be a whole number from {MIN_WINDOW_SECONDS} to {MAX_WINDOW_SECONDS} (24 h), got {0}"
    )]
    Window(u64),
    #[error(
        "refresh_interval_seconds must be from {MIN_REFRESH_SECONDS} to {MAX_REFRESH_SECONDS} (1 h), got {0}"
    )]
    Refresh(f64),
    #[error("{field} must be a JSON object")]
    NotObject { field: &'static str },
    #[error("widget {0} appears twice on the dashboard")]
    DuplicateWidget(uuid::Uuid),
    #[error(
        "{field} holds {values} JSON values nested {depth} deep; at most {max_values} values, {MAX_JSON_DEPTH} deep, are allowed"
    )]
    TooComplex {
        field: &'static str,
        values: usize,
        depth: usize,
        max_values: usize,
    },
    #[error("top must be from 1 to {MAX_TOP}, got {0}")]
    Top(u32),
    #[error("top needs group_by: it says how many of the tag's values are reported")]
    TopWithoutGroupBy,
    #[error(
        "a histogram widget cannot set group_by: use one histogram widget per tag value (a filter), or a grouped percentile"
    )]
    GroupedHistogram,
    /// `layout.items` places a widget wrongly; the text names the place and the rule.
    #[error("layout.items{0}")]
    LayoutItem(String),
}

fn check_len(field: &'static str, text: &str, max: usize) -> Result<(), ValidationError> {
    if text.is_empty() {
        return Err(ValidationError::Empty { field });
    }
    if text.len() > max {
        return Err(ValidationError::TooLong {
            field,
            len: text.len(),
            max,
        });
    }
    Ok(())
}

/// Checks a metric name or tag key: non-empty, bounded, `NAME_CHARSET` only.
pub fn name(field: &'static str, text: &str, max: usize) -> Result<(), ValidationError> {
    check_len(field, text, max)?;
    let bad = text
        .bytes()
        .position(|b| !(b.is_ascii_alphanumeric() || NAME_PUNCTUATION.as_bytes().contains(&b)));
    match bad {
        None => Ok(()),
        Some(at) => {
            let ch = text[at..].chars().next().unwrap_or('\u{fffd}');
            Err(ValidationError::BadNameChar { field, ch, at })
        }
    }
}

/// Checks free text: non-empty, bounded, without control characters.
pub fn text(field: &'static str, text: &str, max: usize) -> Result<(), ValidationError> {
    check_len(field, text, max)?;
    match text.char_indices().find(|(_, c)| c.is_control()) {
        None => Ok(()),
        Some((at, _)) => Err(ValidationError::ControlChar { field, at }),
    }
}

/// Checks a metric name.
pub fn metric_name(metric: &str) -> Result<(), ValidationError> {
    name("metric_name", metric, MAX_METRIC_NAME_BYTES)
}

/// Checks a tag map (event tags or a widget filter).
pub fn tags(field: &'static str, tags: &Tags) -> Result<(), ValidationError> {
    if tags.len() > MAX_TAGS {
        return Err(ValidationError::TooMany {
            field,
            count: tags.len(),
            max: MAX_TAGS,
        });
    }
    for (key, value) in tags {
        name("tag key", key, MAX_TAG_KEY_BYTES)?;
        text("tag value", value, MAX_TAG_VALUE_BYTES)?;
    }
    Ok(())
}

/// Checks the time-independent parts of an event (clock checks happen in the shard).
pub fn event(ev: &MetricEvent) -> Result<(), ValidationError> {
    metric_name(&ev.metric_name)?;
    if !ev.value.is_finite() {
        return Err(ValidationError::NonFiniteValue(ev.value));
    }
    if ev.value.abs() > MAX_VALUE_MAGNITUDE {
        return Err(ValidationError::ValueOutOfRange(ev.value));
    }
    if ev.event_time < 0 {
        return Err(ValidationError::NegativeEventTime(ev.event_time));
    }
    tags("tags", &ev.tags)
}

/// Checks a widget definition.
pub fn widget(spec: &WidgetSpec) -> Result<(), ValidationError> {
    metric_name(&spec.metric_name)?;
    if !(MIN_WINDOW_SECONDS..=MAX_WINDOW_SECONDS).contains(&spec.window_seconds) {
        return Err(ValidationError::Window(spec.window_seconds));
    }
    let refresh = spec.refresh_interval_seconds;
    if !(refresh.is_finite() && (MIN_REFRESH_SECONDS..=MAX_REFRESH_SECONDS).contains(&refresh)) {
        return Err(ValidationError::Refresh(refresh));
    }
    tags("filter", &spec.filter)?;
    match &spec.group_by {
        Some(by) => {
            name("group_by", by, MAX_TAG_KEY_BYTES)?;
            if spec.aggregation == Aggregation::Histogram {
                return Err(ValidationError::GroupedHistogram);
            }
        }
        None if spec.top.is_some() => return Err(ValidationError::TopWithoutGroupBy),
        None => {}
    }
    if let Some(top) = spec.top
        && !(1..=MAX_TOP).contains(&(top as usize))
    {
        return Err(ValidationError::Top(top));
    }
    // The members sit one level inside the object itself.
    shape(
        "display_config",
        spec.display_config.values().map(|v| (v, 2)),
        MAX_DISPLAY_CONFIG_VALUES,
    )?;
    let size = serde_json::to_string(&spec.display_config).map_or(usize::MAX, |s| s.len());
    if size > MAX_DISPLAY_CONFIG_BYTES {
        return Err(ValidationError::TooLong {
            field: "display_config",
            len: size,
            max: MAX_DISPLAY_CONFIG_BYTES,
        });
    }
    Ok(())
}

/// Checks that the JSON trees `roots` (each with its depth, counted from the outermost
/// object at depth one) hold at most `max_values` values, nested at most
/// `MAX_JSON_DEPTH` deep; stops as soon as a limit is passed, before it walks (or lists)
/// the rest.
fn shape<'a>(
    field: &'static str,
    roots: impl Iterator<Item = (&'a serde_json::Value, usize)>,
    max_values: usize,
) -> Result<(), ValidationError> {
    use serde_json::Value;
    let mut stack: Vec<(&Value, usize)> = Vec::new();
    let (mut values, mut deepest) = (0, 0);
    let too_complex = |values, depth| ValidationError::TooComplex {
        field,
        values,
        depth,
        max_values,
    };
    for root in roots {
        stack.push(root);
        while let Some((v, depth)) = stack.pop() {
            values += 1;
            deepest = deepest.max(depth);
            let children = match v {
                Value::Array(items) => items.len(),
                Value::Object(map) => map.len(),
                _ => 0,
            };
            // Counted before they are listed: a huge array costs nothing to refuse.
            if values + stack.len() + children > max_values || deepest > MAX_JSON_DEPTH {
                return Err(too_complex(values + stack.len() + children, deepest));
            }
            match v {
                Value::Array(items) => stack.extend(items.iter().map(|i| (i, depth + 1))),
                Value::Object(map) => stack.extend(map.values().map(|i| (i, depth + 1))),
                _ => {}
            }
        }
    }
    Ok(())
}

/// Checks a dashboard name.
pub fn dashboard_name(name: &str) -> Result<(), ValidationError> {
    text("name", name, MAX_DASHBOARD_NAME_CHARS * 4)?;
    let chars = name.chars().count();
    if chars > MAX_DASHBOARD_NAME_CHARS {
        return Err(ValidationError::TooLong {
            field: "name (characters)",
            len: chars,
            max: MAX_DASHBOARD_NAME_CHARS,
        });
    }
    Ok(())
}

/// Checks a dashboard layout: a JSON object (or null) of bounded size.
pub fn layout(layout: &serde_json::Value) -> Result<(), ValidationError> {
    if !(layout.is_object() || layout.is_null()) {
        return Err(ValidationError::NotObject { field: "layout" });
    }
    shape("layout", std::iter::once((layout, 1)), MAX_LAYOUT_VALUES)?;
    let size = serde_json::to_string(layout).map_or(usize::MAX, |s| s.len());
    if size > MAX_LAYOUT_BYTES {
        return Err(ValidationError::TooLong {
            field: "layout",
            len: size,
            max: MAX_LAYOUT_BYTES,
        });
    }
    Ok(())
}

/// Checks a whole dashboard: name, layout, widget count, each widget, unique ids.
pub fn dashboard(d: &Dashboard) -> Result<(), ValidationError> {
    dashboard_name(&d.name)?;
    layout(&d.layout)?;
    if d.widgets.len() > MAX_WIDGETS_PER_DASHBOARD {
        return Err(ValidationError::TooMany {
            field: "widgets",
            count: d.widgets.len(),
            max: MAX_WIDGETS_PER_DASHBOARD,
        });
    }
    let mut seen = std::collections::HashSet::with_capacity(d.widgets.len());
    for w in &d.widgets {
        widget(&w.spec)?;
        if !seen.insert(w.widget_id) {
            return Err(ValidationError::DuplicateWidget(w.widget_id));
        }
    }
    layout_items(d, &seen)
}

/// Checks `layout.items`, where the web UI places widgets: an object keyed by widget ids
/// of the dashboard, each `{"x", "y", "w", "h"}` in whole grid cells within the
/// `LAYOUT_COLUMNS` columns.
fn layout_items(
    d: &Dashboard,
    widgets: &std::collections::HashSet<uuid::Uuid>,
) -> Result<(), ValidationError> {
    let Some(items) = d.layout.get("items") else {
        return Ok(());
    };
    let bad = |at: String| Err(ValidationError::LayoutItem(at));
    let Some(items) = items.as_object() else {
        return bad(" must be an object keyed by widget id".into());
    };
    for (id, item) in items {
        let known = uuid::Uuid::parse_str(id).is_ok_and(|u| widgets.contains(&u));
        if !known {
            return bad(format!(".{id}: the dashboard has no widget {id}"));
        }
        let Some(place) = item.as_object() else {
            return bad(format!(
                ".{id} must be an object {{\"x\", \"y\", \"w\", \"h\"}}"
            ));
        };
        let cell = |key: &str, min: u64, max: u64| -> Result<u64, ValidationError> {
            match place.get(key).and_then(serde_json::Value::as_u64) {
                Some(v) if (min..=max).contains(&v) => Ok(v),
                _ => Err(ValidationError::LayoutItem(format!(
                    ".{id}.{key} must be a whole number from {min} to {max}"
                ))),
            }
        };
        let x = cell("x", 0, LAYOUT_COLUMNS - 1)?;
        cell("y", 0, MAX_LAYOUT_ROW)?;
        cell("w", 1, LAYOUT_COLUMNS - x)?;
        cell("h", 1, MAX_LAYOUT_HEIGHT)?;
        if let Some(other) = place
            .keys()
            .find(|k| !["x", "y", "w", "h"].contains(&k.as_str()))
        {
            return bad(format!(
                ".{id}.{other}: unknown field; x, y, w and h are allowed"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Aggregation;

    fn spec() -> WidgetSpec {
        WidgetSpec {
            metric_name: "api.latency_ms".into(),
            aggregation: Aggregation::P99,
            window_seconds: 60,
            refresh_interval_seconds: 1.0,
            filter: Tags::new(),
            display_config: Default::default(),
            group_by: None,
            top: None,
        }
    }

    #[test]
    fn names() {
        assert!(metric_name("api.request.latency_ms").is_ok());
        assert!(metric_name("host-1/cpu:user").is_ok());
        assert_eq!(
            metric_name(""),
            Err(ValidationError::Empty {
                field: "metric_name"
            })
        );
        let long = "a".repeat(MAX_METRIC_NAME_BYTES + 1);
        assert!(matches!(
            metric_name(&long),
            Err(ValidationError::TooLong { len: 257, .. })
        ));
        assert_eq!(
            metric_name("cpu load"),
            Err(ValidationError::BadNameChar {
                field: "metric_name",
                ch: ' ',
                at: 3
            })
        );
        assert_eq!(
            metric_name("tempé"),
            Err(ValidationError::BadNameChar {
                field: "metric_name",
                ch: 'é',
                at: 4
            })
        );
        let msg = metric_name("a b").unwrap_err().to_string();
        assert!(msg.contains("allowed are ASCII letters"), "{msg}");
    }

    #[test]
    fn events() {
        let mut ev = MetricEvent {
            metric_name: "m".into(),
            value: 1.0,
            tags: Tags::new(),
            event_time: 0,
        };
        assert!(event(&ev).is_ok());
        ev.value = f64::NAN;
        assert!(matches!(
            event(&ev),
            Err(ValidationError::NonFiniteValue(_))
        ));
        // Two of the largest finite values would make a window's sum infinite.
        for bad in [1.7e308, -1e201] {
            ev.value = bad;
            assert_eq!(event(&ev), Err(ValidationError::ValueOutOfRange(bad)));
        }
        ev.value = -MAX_VALUE_MAGNITUDE;
        assert!(event(&ev).is_ok());
        ev.value = 1.0;
        ev.event_time = -1;
        assert_eq!(event(&ev), Err(ValidationError::NegativeEventTime(-1)));
        ev.event_time = 5;
        for i in 0..=MAX_TAGS {
            ev.tags.insert(format!("k{i}"), "v".into());
        }
        assert!(matches!(
            event(&ev),
            Err(ValidationError::TooMany { count: 33, .. })
        ));
        ev.tags = Tags::from([("host".into(), "a\nb".into())]);
        assert_eq!(
            event(&ev),
            Err(ValidationError::ControlChar {
                field: "tag value",
                at: 1
            })
        );
        ev.tags = Tags::from([("".into(), "x".into())]);
        assert_eq!(event(&ev), Err(ValidationError::Empty { field: "tag key" }));
    }

    #[test]
    fn widgets() {
        assert!(widget(&spec()).is_ok());
        for (w, ok) in [(0, false), (1, true), (86_400, true), (86_401, false)] {
            let s = WidgetSpec {
                window_seconds: w,
                ..spec()
            };
            assert_eq!(widget(&s).is_ok(), ok, "window {w}");
        }
        for (r, ok) in [
            (0.05, false),
            (0.1, true),
            (3600.0, true),
            (3600.5, false),
            (f64::NAN, false),
        ] {
            let s = WidgetSpec {
                refresh_interval_seconds: r,
                ..spec()
            };
            assert_eq!(widget(&s).is_ok(), ok, "refresh {r}");
        }
        let mut s = spec();
        s.display_config
            .insert("x".into(), "y".repeat(MAX_DISPLAY_CONFIG_BYTES).into());
        assert!(matches!(
            widget(&s),
            Err(ValidationError::TooLong {
                field: "display_config",
                ..
            })
        ));
        // Small in bytes, large as a tree: many values, or deep nesting.
        let mut s = spec();
        s.display_config
            .insert("zeros".into(), serde_json::json!(vec![0; 600]));
        assert!(matches!(
            widget(&s),
            Err(ValidationError::TooComplex { values: 601, .. })
        ));
        let mut nested = serde_json::json!(0);
        for _ in 0..10 {
            nested = serde_json::json!([nested]);
        }
        s.display_config = [("deep".to_string(), nested)].into_iter().collect();
        assert!(matches!(
            widget(&s),
            Err(ValidationError::TooComplex { depth: 11, .. })
        ));
        let mut layout = serde_json::json!({"items": {}, "notes": vec![1; 5_000]});
        assert!(matches!(
            super::layout(&layout),
            Err(ValidationError::TooComplex {
                field: "layout",
                ..
            })
        ));
        layout["notes"] = serde_json::json!([1, 2]);
        assert!(super::layout(&layout).is_ok());
    }

    #[test]
    fn dashboards() {
        let id = uuid::Uuid::new_v4();
        let w = crate::model::Widget::new(uuid::Uuid::from_u128(1), id, spec());
        let mut d = Dashboard {
            dashboard_id: id,
            name: "Checkout".into(),
            layout: serde_json::json!({"cols": 12}),
            widgets: vec![w.clone()],
        };
        assert!(dashboard(&d).is_ok());
        d.widgets.push(w.clone());
        assert_eq!(
            dashboard(&d),
            Err(ValidationError::DuplicateWidget(w.widget_id))
        );
        d.widgets.pop();
        d.layout = serde_json::json!([1, 2]);
        assert_eq!(
            dashboard(&d),
            Err(ValidationError::NotObject { field: "layout" })
        );
        d.layout = serde_json::Value::Null;
        assert_eq!(dashboard(&d), Ok(()));
        let id = d.widgets[0].widget_id;
        for (items, ok) in [
            (
                serde_json::json!({id.to_string(): {"x": 0, "y": 0, "w": 12, "h": 3}}),
                true,
            ),
            (
                serde_json::json!({id.to_string(): {"x": 8, "y": 0, "w": 5, "h": 3}}),
                false,
            ),
            (
                serde_json::json!({id.to_string(): {"x": 0, "y": 0, "w": 0, "h": 3}}),
                false,
            ),
            (
                serde_json::json!({id.to_string(): {"x": 0, "y": -1, "w": 2, "h": 3}}),
                false,
            ),
            (
                serde_json::json!({id.to_string(): {"x": 0, "y": 0, "w": 2, "h": 3, "z": 1}}),
                false,
            ),
            (
                serde_json::json!({uuid::Uuid::nil().to_string(): {"x": 0, "y": 0, "w": 2, "h": 3}}),
                false,
            ),
            (serde_json::json!([]), false),
        ] {
            d.layout = serde_json::json!({ "items": items });
            assert_eq!(dashboard(&d).is_ok(), ok, "{}", d.layout);
        }
        d.layout = serde_json::json!({"items": {id.to_string(): {"x": 9, "y": 0, "w": 4, "h": 1}}});
        assert_eq!(
            dashboard(&d).unwrap_err().to_string(),
            format!("layout.items.{id}.w must be a whole number from 1 to 3")
        );
        d.layout = serde_json::Value::Null;
        d.name = "é".repeat(MAX_DASHBOARD_NAME_CHARS + 1);
        assert!(matches!(
            dashboard(&d),
            Err(ValidationError::TooLong { .. })
        ));
        d.name = String::new();
        assert_eq!(dashboard(&d), Err(ValidationError::Empty { field: "name" }));
    }
}
