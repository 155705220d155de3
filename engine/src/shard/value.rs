//! What a refresh computes for a widget, and its wire shape: one number for most
//! widgets; for a grouped widget also its `series` (and `other`); for a `histogram`
//! widget a distribution in place of the number.

use std::sync::Arc;

use serde::de::Deserializer;
use serde::ser::{SerializeMap, SerializeStruct, Serializer};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::model::Aggregation;
use crate::query::QueryIndex;
use crate::window::Distribution;

use super::WidgetState;

/// A widget's value at one instant.
#[derive(Debug, Clone, PartialEq)]
pub struct WidgetValue {
    pub widget_id: Uuid,
    /// `None` for an empty window (except `count` and `histogram`, whose number is the
    /// count). A grouped widget's number is the aggregate of the whole window.
    pub value: Option<f64>,
    /// End of the window (exclusive), epoch ms.
    pub window_end: i64,
    /// Newest event time in the window, epoch ms.
    pub latest_event_time: Option<i64>,
    /// Events in the window.
    pub count: u64,
    /// Grouped and `histogram` widgets: what one number does not say.
    pub detail: Option<Arc<Detail>>,
}

/// The part of a value that is more than one number.
#[derive(Debug, Clone, PartialEq)]
pub enum Detail {
    /// A grouped widget: the top values by tag value, largest first, and what the other
    /// events add up to (sums and counts, when there are any).
    Series {
        top: Vec<(String, f64)>,
        other: Option<f64>,
    },
    /// A `histogram` widget's distribution.
    Distribution(Distribution),
}

/// A grouped widget's top values by tag value, largest first.
pub type Series = [(String, f64)];

/// `(time_ms, value)`: one point of a widget's recent history, at the refresh that
/// computed it.
pub type HistoryPoint = (i64, Option<f64>);

/// `{"tag value": number, ...}` in the order given.
struct SeriesMap<'a>(&'a [(String, f64)]);

impl Serialize for SeriesMap<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (tag, v) in self.0 {
            map.serialize_entry(tag, v)?;
        }
        map.end()
    }
}

/// A detail on its own (the snapshot's history of details): `{"series": {...},
/// "other": n}` or `{"count": n, "buckets": [...]}`.
impl Serialize for Detail {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Detail::Series { top, other } => {
                let mut st = s.serialize_struct("Series", 2)?;
                series_fields(&mut st, top, *other)?;
                st.end()
            }
            Detail::Distribution(d) => d.serialize(s),
        }
    }
}

impl WidgetValue {
    /// A grouped widget's series and other total.
    pub fn series(&self) -> Option<(&Series, Option<f64>)> {
        match self.detail.as_deref() {
            Some(Detail::Series { top, other }) => Some((top, *other)),
            _ => None,
        }
    }
}

/// Writes a reading into a value's struct as every answer and frame has it: `value`
/// (the number, or a `histogram` widget's distribution), then `series` and `other`
/// for a grouped widget.
pub fn serialize_reading<S: SerializeStruct>(
    st: &mut S,
    value: Option<f64>,
    detail: Option<&Detail>,
) -> Result<(), S::Error> {
    match detail {
        Some(Detail::Distribution(d)) => st.serialize_field("value", d)?,
        _ => st.serialize_field("value", &value)?,
    }
    match detail {
        Some(Detail::Series { top, other }) => series_fields(st, top, *other),
        _ => {
            st.skip_field("series")?;
            st.skip_field("other")
        }
    }
}

/// `series` (in its order) and, when there is one, `other`.
fn series_fields<S: SerializeStruct>(
    st: &mut S,
    top: &Series,
    other: Option<f64>,
) -> Result<(), S::Error> {
    st.serialize_field("series", &SeriesMap(top))?;
    match other {
        Some(o) => st.serialize_field("other", &o),
        None => st.skip_field("other"),
    }
}

impl Serialize for WidgetValue {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("WidgetValue", 7)?;
        st.serialize_field("widget_id", &self.widget_id)?;
        serialize_reading(&mut st, self.value, self.detail.as_deref())?;
        st.serialize_field("window_end", &self.window_end)?;
        st.serialize_field("latest_event_time", &self.latest_event_time)?;
        st.serialize_field("count", &self.count)?;
        st.end()
    }
}

/// The wire shape read back (values other nodes stored or published).
#[derive(Deserialize)]
struct WireIn {
    widget_id: Uuid,
    #[serde(default)]
    value: WireNumberIn,
    window_end: i64,
    latest_event_time: Option<i64>,
    count: u64,
    #[serde(default)]
    series: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(default)]
    other: Option<f64>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum WireNumberIn {
    Number(Option<f64>),
    Distribution(Distribution),
}

impl Default for WireNumberIn {
    fn default() -> Self {
        Self::Number(None)
    }
}

impl<'de> Deserialize<'de> for WidgetValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let w = WireIn::deserialize(d)?;
        let (value, distribution) = match w.value {
            WireNumberIn::Number(v) => (v, None),
            WireNumberIn::Distribution(dist) => (Some(dist.count as f64), Some(dist)),
        };
        let detail = match (distribution, w.series) {
            (Some(dist), _) => Some(Detail::Distribution(dist)),
            (None, Some(series)) => Some(Detail::Series {
                top: sorted_series(series),
                other: w.other,
            }),
            (None, None) => None,
        };
        Ok(Self {
            widget_id: w.widget_id,
            value,
            window_end: w.window_end,
            latest_event_time: w.latest_event_time,
            count: w.count,
            detail: detail.map(Arc::new),
        })
    }
}

/// A detail as `Serialize for Detail` writes it.
#[derive(Deserialize)]
struct DetailIn {
    #[serde(default)]
    series: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(default)]
    other: Option<f64>,
    #[serde(default)]
    count: Option<u64>,
    #[serde(default)]
    buckets: Option<Vec<(f64, f64, u64)>>,
}

impl<'de> Deserialize<'de> for Detail {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let w = DetailIn::deserialize(d)?;
        match (w.series, w.count, w.buckets) {
            (Some(series), _, _) => Ok(Detail::Series {
                top: sorted_series(series),
                other: w.other,
            }),
            (None, Some(count), Some(buckets)) => {
                Ok(Detail::Distribution(Distribution { count, buckets }))
            }
            _ => Err(serde::de::Error::custom(
                "a detail is {\"series\", \"other\"} or {\"count\", \"buckets\"}",
            )),
        }
    }
}

/// A series read back, largest first.
fn sorted_series(series: serde_json::Map<String, serde_json::Value>) -> Vec<(String, f64)> {
    let mut top: Vec<(String, f64)> = series
        .into_iter()
        .filter_map(|(k, v)| Some((k, v.as_f64()?)))
        .collect();
    top.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    top
}

impl super::Shard {
    /// A widget's value at `now`: its query's window moved to `now` and read, with a
    /// grouped widget's series or a `histogram` widget's distribution.
    pub(super) fn compute(
        queries: &mut QueryIndex,
        state: &WidgetState,
        now: i64,
        distribution_buckets: usize,
    ) -> Option<WidgetValue> {
        let query = queries.get_mut(state.query)?;
        query.window.advance(now);
        let mut value = WidgetValue {
            widget_id: state.widget.widget_id,
            value: query.window.value(state.aggregation),
            window_end: query.window.window_end(),
            latest_event_time: query.window.latest(),
            count: query.window.count(),
            detail: None,
        };
        if state.aggregation == Aggregation::Histogram {
            let d = query.window.distribution(distribution_buckets)?;
            value.detail = Some(Arc::new(Detail::Distribution(d)));
        } else if state.top > 0 {
            let split =
                queries.split_values(state.query, state.aggregation, usize::from(state.top), now);
            value.detail = Some(Arc::new(Detail::Series {
                top: split.top,
                other: split.other,
            }));
        }
        Some(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(detail: Option<Detail>) -> WidgetValue {
        WidgetValue {
            widget_id: Uuid::from_u128(7),
            value: Some(3.0),
            window_end: 2000,
            latest_event_time: Some(1999),
            count: 3,
            detail: detail.map(Arc::new),
        }
    }

    #[test]
    fn every_shape_reads_back_as_written() {
        let series = Detail::Series {
            top: vec![("b".into(), 2.0), ("a".into(), 1.0)],
            other: Some(0.5),
        };
        let dist = Detail::Distribution(Distribution {
            count: 3,
            buckets: vec![(1.0, 1.5, 2), (2.0, 2.25, 1)],
        });
        for v in [value(None), value(Some(series)), value(Some(dist))] {
            let json = serde_json::to_string(&v).unwrap();
            let back: WidgetValue = serde_json::from_str(&json).unwrap();
            assert_eq!(back, v, "{json}");
            if let Some(detail) = &v.detail {
                let json = serde_json::to_string(detail).unwrap();
                let back: Detail = serde_json::from_str(&json).unwrap();
                assert_eq!(&back, &**detail, "{json}");
            }
        }
        let json = serde_json::to_value(value(Some(Detail::Distribution(Distribution {
            count: 3,
            buckets: vec![(1.0, 2.0, 3)],
        }))))
        .unwrap();
        assert_eq!(
            json["value"],
            serde_json::json!({"count": 3, "buckets": [[1.0, 2.0, 3]]})
        );
        assert!(json.get("series").is_none());
    }
}
