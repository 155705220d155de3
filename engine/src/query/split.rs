//! Split queries (`group_by`): a query whose window takes every event its filter passes
//! (the whole) and hands each one on to a part of its own for the event's value of one
//! tag. A part is a query like any other (its key names the split's tag and the value),
//! so it is mirrored, restored and backfilled alike, but no metric route lists it: only
//! its split feeds it, so an event is never counted twice. Parts are made as tag values
//! arrive, at most `max_parts` per split and `max_parts_total` per shard, and go once
//! their window is empty.

use hashbrown::HashMap;

use super::{Query, QueryId, QueryIndex, QueryKey};
use crate::model::{Aggregation, Tags};
use crate::window::SlidingWindow;

/// How a query relates to a split.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub enum Split {
    /// A plain query.
    #[default]
    None,
    /// The whole of a split by tag `by`'s values.
    By(Box<str>),
    /// The part of a split by tag `by` whose events carry `value`.
    Part { by: Box<str>, value: Box<str> },
}

/// A split query's parts, by tag value.
#[derive(Debug, Default)]
pub(super) struct Parts {
    by_value: HashMap<Box<str>, QueryId>,
}

impl Parts {
    pub(super) fn ids(&self) -> impl Iterator<Item = QueryId> + '_ {
        self.by_value.values().copied()
    }
}

/// What a refresh of a split widget reads: the top values by tag value, largest first,
/// and what the other events add up to (for sums and counts, when there are any).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SplitValues {
    pub top: Vec<(String, f64)>,
    pub other: Option<f64>,
}

impl QueryKey {
    /// The key of the part of this split for tag value `value`.
    fn part(&self, value: &str) -> Option<Self> {
        let Split::By(by) = &self.split else {
            return None;
        };
        Some(Self {
            split: Split::Part {
                by: by.clone(),
                value: value.into(),
            },
            ..self.clone()
        })
    }

    /// For a part, the key of its split and its tag value.
    pub fn whole(&self) -> Option<(Self, &str)> {
        let Split::Part { by, value } = &self.split else {
            return None;
        };
        let whole = Self {
            split: Split::By(by.clone()),
            ..self.clone()
        };
        Some((whole, value))
    }
}

impl QueryIndex {
    /// Counts an event the split `whole` took in the part of its tag value (made if
    /// there is room), at the whole's clock.
    pub(crate) fn insert_part(&mut self, whole: QueryId, tags: &Tags, time_ms: i64, value: f64) {
        let Some(part) = self.part_for(whole, tags) else {
            return;
        };
        let Some(clock) = self.get(whole).map(|q| q.window.window_end() - 1) else {
            return;
        };
        if let Some(q) = self.get_mut(part) {
            q.window.advance(clock);
            q.window.insert(time_ms, value);
        }
    }

    /// The part of split `whole` for the tag value `tags` carry, made if there is room;
    /// `None` when the event has no such tag or the split is full (counted).
    fn part_for(&mut self, whole: QueryId, tags: &Tags) -> Option<QueryId> {
        let q = self.get(whole)?;
        let Split::By(by) = &q.key.split else {
            return None;
        };
        let tag = tags.get(&**by)?;
        self.make_part(whole, tag)
    }

    /// The part of split `whole` for `value`, made (empty, at the whole's clock) if it
    /// is not there yet; `None` when the split is full (counted) or `whole` is not a
    /// split.
    fn make_part(&mut self, whole: QueryId, value: &str) -> Option<QueryId> {
        let max_parts = self.max_parts;
        let q = self.get(whole)?;
        let parts = q.parts.as_ref()?;
        if let Some(&id) = parts.by_value.get(value) {
            return Some(id);
        }
        if parts.by_value.len() >= max_parts || self.parts_total >= self.max_parts_total {
            self.parts_refused += 1;
            return None;
        }
        let key = q.key.part(value)?;
        let window = SlidingWindow::new(
            q.window.spec(),
            q.window.window_end() - 1,
            q.window.has_histogram(),
        );
        let id = self.add_slot(Query {
            window,
            widgets: 0,
            percentile_widgets: 0,
            key: key.clone(),
            parts: None,
        });
        self.by_key.insert(key, id);
        self.parts_total += 1;
        if let Some(parts) = self.get_mut(whole).and_then(|q| q.parts.as_mut()) {
            parts.by_value.insert(value.into(), id);
        }
        Some(id)
    }

    /// The part `key` names, made if its split is here (and has room): for a restore of
    /// stored parts. `None` when `key` is no part or its split is not here.
    pub fn part_of_key(&mut self, key: &QueryKey) -> Option<QueryId> {
        let (whole, value) = key.whole()?;
        let whole = self.id_of(&whole)?;
        self.make_part(whole, value)
    }

    /// The top `n` parts of split `whole` by their `aggregation` at `now_ms`, and what
    /// the rest adds up to when the aggregation adds up; parts whose window emptied go.
    pub fn split_values(
        &mut self,
        whole: QueryId,
        aggregation: Aggregation,
        n: usize,
        now_ms: i64,
    ) -> SplitValues {
        let Some(q) = self.get_mut(whole) else {
            return SplitValues::default();
        };
        q.window.advance(now_ms);
        let Some(parts) = q.parts.as_ref() else {
            return SplitValues::default();
        };
        let ids: Vec<QueryId> = parts.ids().collect();
        // (part, value, events), the tag value read from the part's key when needed.
        let mut values: Vec<(QueryId, f64, u64)> = Vec::with_capacity(ids.len());
        let mut emptied = Vec::new();
        for id in ids {
            let Some(q) = self.get_mut(id) else { continue };
            q.window.advance(now_ms);
            if q.window.count() == 0 {
                emptied.push(id);
            } else if let Some(v) = q.window.value(aggregation) {
                values.push((id, v, q.window.count()));
            }
        }
        for id in emptied {
            if let Some(q) = self.remove_slot(id)
                && let Split::Part { value, .. } = q.key.split
                && let Some(parts) = self.get_mut(whole).and_then(|q| q.parts.as_mut())
            {
                parts.by_value.remove(&value);
            }
        }
        values.sort_by(|a, b| {
            b.1.total_cmp(&a.1)
                .then_with(|| self.tag_of(a.0).cmp(self.tag_of(b.0)))
        });
        let rest = values.split_off(n.min(values.len()));
        let other = if aggregation.adds_up() {
            self.rest_of(whole, aggregation, &values, &rest)
        } else {
            None
        };
        SplitValues {
            top: values
                .iter()
                .map(|&(id, v, _)| (self.tag_of(id).to_owned(), v))
                .collect(),
            other,
        }
    }

    /// The tag value of part `id` ("" for a query that is no part).
    fn tag_of(&self, id: QueryId) -> &str {
        match self.get(id).map(|q| &q.key.split) {
            Some(Split::Part { value, .. }) => value,
            _ => "",
        }
    }

    /// What the events of split `whole` outside its `top` parts add up to (`None` when
    /// there are none): the `rest` of the parts, plus the events no part took (without
    /// the tag, or past the limits on parts), which only the whole counted.
    fn rest_of(
        &mut self,
        whole: QueryId,
        aggregation: Aggregation,
        top: &[(QueryId, f64, u64)],
        rest: &[(QueryId, f64, u64)],
    ) -> Option<f64> {
        let q = self.get_mut(whole)?;
        let parted: u64 = top.iter().chain(rest).map(|p| p.2).sum();
        let unparted = q.window.count().saturating_sub(parted);
        let in_rest: u64 = rest.iter().map(|p| p.2).sum();
        if unparted + in_rest == 0 {
            return None;
        }
        let rest_value: f64 = rest.iter().map(|p| p.1).sum();
        if unparted == 0 {
            return Some(rest_value);
        }
        let whole_value = q.window.value(aggregation)?;
        let parted_value: f64 = top.iter().chain(rest).map(|p| p.1).sum();
        Some(rest_value + (whole_value - parted_value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::WidgetSpec;

    fn split(metric: &str) -> QueryKey {
        QueryKey::of(&WidgetSpec {
            metric_name: metric.into(),
            aggregation: Aggregation::Count,
            window_seconds: 10,
            refresh_interval_seconds: 1.0,
            filter: Tags::new(),
            display_config: Default::default(),
            group_by: Some("route".into()),
            top: None,
        })
    }

    fn route(r: &str) -> Tags {
        Tags::from([("route".to_string(), r.to_string())])
    }

    /// Parts are bounded per split and per shard; events past either count in the whole
    /// only, and room made by parts that emptied is taken again.
    #[test]
    fn parts_are_bounded_per_split_and_per_shard() {
        let mut idx = QueryIndex::new(3, 4);
        let a = idx.acquire(split("a"), false, 0, 5000);
        let b = idx.acquire(split("b"), false, 0, 5000);
        for r in ["/1", "/2", "/3", "/4"] {
            assert_eq!(idx.insert("a", &route(r), 10, 1.0, 10), Some(1));
        }
        for r in ["/1", "/2"] {
            assert_eq!(idx.insert("b", &route(r), 10, 1.0, 10), Some(1));
        }
        assert_eq!(idx.parts_refused(), 2, "a's fourth value and b's second");
        let counts = |idx: &mut QueryIndex, q, now| {
            let v = idx.split_values(q, Aggregation::Count, 10, now);
            (v.top, v.other)
        };
        assert_eq!(
            counts(&mut idx, a, 10),
            (
                vec![("/1".into(), 1.0), ("/2".into(), 1.0), ("/3".into(), 1.0)],
                Some(1.0)
            )
        );
        assert_eq!(
            counts(&mut idx, b, 10),
            (vec![("/1".into(), 1.0)], Some(1.0))
        );
        // The window slides past every event: the parts go, and make room.
        assert_eq!(counts(&mut idx, a, 30_000), (vec![], None));
        assert_eq!(idx.len(), 3, "two wholes and b's part");
        assert_eq!(idx.insert("b", &route("/5"), 30_000, 1.0, 30_000), Some(1));
        assert_eq!(
            counts(&mut idx, b, 30_000),
            (vec![("/5".into(), 1.0)], None)
        );
        idx.release(a, false);
        idx.release(b, false);
        assert!(idx.is_empty());
        assert_eq!(idx.parts_total, 0);
    }
}
