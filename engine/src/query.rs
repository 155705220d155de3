//! Queries and the index that routes an event's metric name to the queries it feeds.
//! A query is (metric, tag filter, window); every widget needing one shares its state.

use hashbrown::HashMap;
use smallvec::SmallVec;

use crate::model::{Tags, WidgetSpec};
use crate::window::{InsertOutcome, SlidingWindow, WindowSpec};

/// Identity of a query: widgets with equal keys share one window.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct QueryKey {
    pub metric: Box<str>,
    /// Filter entries, sorted by key.
    pub filter: Box<[(Box<str>, Box<str>)]>,
    pub window_seconds: u64,
}

impl QueryKey {
    /// The query a widget needs.
    pub fn of(spec: &WidgetSpec) -> Self {
        Self {
            metric: spec.metric_name.as_str().into(),
            filter: spec.filter.iter().map(|(k, v)| (k.as_str().into(), v.as_str().into())).collect(),
            window_seconds: spec.window_seconds,
        }
    }

    /// True when `tags` carries every filter entry.
    #[inline]
    pub fn matches(&self, tags: &Tags) -> bool {
        self.filter.iter().all(|(k, v)| tags.get(&**k).is_some_and(|t| **t == **v))
    }
}

/// Handle of a live query in a `QueryIndex`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct QueryId(u32);

/// One query's state and how many widgets use it.
#[derive(Debug)]
pub struct Query {
    pub key: QueryKey,
    pub window: SlidingWindow,
    widgets: u32,
    percentile_widgets: u32,
}

/// All queries of a shard, by key and by metric name.
#[derive(Debug, Default)]
pub struct QueryIndex {
    /// Ids kept inline: most metrics have one or two queries, and the hot path then
    /// needs no extra pointer chase.
    by_metric: HashMap<Box<str>, SmallVec<[QueryId; 2]>>,
    by_key: HashMap<QueryKey, QueryId>,
    slots: Vec<Option<Query>>,
    free: Vec<u32>,
}

impl QueryIndex {
    /// Takes a reference on the query for `key`, creating it (empty, clock at `now_ms`)
    /// if no widget uses it yet. `percentile` says whether the caller needs a histogram.
    pub fn acquire(&mut self, key: QueryKey, percentile: bool, now_ms: i64, max_skew_ms: i64) -> QueryId {
        let id = match self.by_key.get(&key) {
            Some(&id) => id,
            None => {
                let spec = WindowSpec::for_window(key.window_seconds, max_skew_ms);
                let query = Query {
                    key: key.clone(),
                    window: SlidingWindow::new(spec, now_ms, false),
                    widgets: 0,
                    percentile_widgets: 0,
                };
                let id = match self.free.pop() {
                    Some(i) => {
                        self.slots[i as usize] = Some(query);
                        QueryId(i)
                    }
                    None => {
                        self.slots.push(Some(query));
                        QueryId((self.slots.len() - 1) as u32)
                    }
                };
                self.by_metric.entry(key.metric.clone()).or_default().push(id);
                self.by_key.insert(key, id);
                id
            }
        };
        if let Some(q) = self.get_mut(id) {
            q.widgets += 1;
            if percentile {
                q.percentile_widgets += 1;
                q.window.set_histogram(true);
            }
        }
        id
    }

    /// Drops a reference taken by `acquire`; the query goes when its last widget does,
    /// and its histogram goes when its last percentile widget does.
    pub fn release(&mut self, id: QueryId, percentile: bool) {
        let Some(q) = self.get_mut(id) else { return };
        q.widgets = q.widgets.saturating_sub(1);
        if percentile {
            q.percentile_widgets = q.percentile_widgets.saturating_sub(1);
            if q.percentile_widgets == 0 {
                q.window.set_histogram(false);
            }
        }
        if q.widgets > 0 {
            return;
        }
        let Some(query) = self.slots[id.0 as usize].take() else { return };
        self.free.push(id.0);
        self.by_key.remove(&query.key);
        if let Some(ids) = self.by_metric.get_mut(&query.key.metric) {
            ids.retain(|i| *i != id);
            if ids.is_empty() {
                self.by_metric.remove(&query.key.metric);
            }
        }
    }

    /// Changes whether one widget of the query needs percentiles.
    pub fn set_percentile(&mut self, id: QueryId, was: bool, now: bool) {
        if was == now {
            return;
        }
        if let Some(q) = self.get_mut(id) {
            if now {
                q.percentile_widgets += 1;
            } else {
                q.percentile_widgets = q.percentile_widgets.saturating_sub(1);
            }
            q.window.set_histogram(q.percentile_widgets > 0);
        }
    }

    pub fn get(&self, id: QueryId) -> Option<&Query> {
        self.slots.get(id.0 as usize)?.as_ref()
    }

    pub fn get_mut(&mut self, id: QueryId) -> Option<&mut Query> {
        self.slots.get_mut(id.0 as usize)?.as_mut()
    }

    /// Feeds one event to every query of its metric whose filter matches; returns how
    /// many queries counted it.
    #[inline]
    pub fn insert(&mut self, metric: &str, tags: &Tags, time_ms: i64, value: f64, now_ms: i64) -> usize {
        let Some(ids) = self.by_metric.get(metric) else { return 0 };
        let mut counted = 0;
        for id in ids {
            let Some(Some(q)) = self.slots.get_mut(id.0 as usize) else { continue };
            if !q.key.matches(tags) {
                continue;
            }
            q.window.advance(now_ms);
            if q.window.insert(time_ms, value) == InsertOutcome::Counted {
                counted += 1;
            }
        }
        counted
    }

    /// Longest window of any live query, in ms (0 when there is none).
    pub fn longest_window_ms(&self) -> i64 {
        self.by_key.keys().map(|k| k.window_seconds as i64 * 1000).max().unwrap_or(0)
    }

    /// Number of live queries.
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    /// True when there is no query.
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    /// Heap bytes held by the window states.
    pub fn heap_bytes(&self) -> usize {
        self.slots.iter().flatten().map(|q| q.window.heap_bytes()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Aggregation;

    fn spec(metric: &str, filter: &[(&str, &str)], window: u64) -> WidgetSpec {
        WidgetSpec {
            metric_name: metric.into(),
            aggregation: Aggregation::Sum,
            window_seconds: window,
            refresh_interval_seconds: 1.0,
            filter: filter.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            display_config: Default::default(),
        }
    }

    #[test]
    fn shared_and_filtered() {
        let mut idx = QueryIndex::default();
        let a = idx.acquire(QueryKey::of(&spec("m", &[], 60)), false, 0, 5000);
        let b = idx.acquire(QueryKey::of(&spec("m", &[], 60)), true, 0, 5000);
        let c = idx.acquire(QueryKey::of(&spec("m", &[("host", "a")], 60)), false, 0, 5000);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(idx.len(), 2);
        assert!(idx.get(a).unwrap().window.has_histogram());
        let tags_b = Tags::from([("host".to_string(), "b".to_string())]);
        let tags_a = Tags::from([("host".to_string(), "a".to_string()), ("dc".into(), "x".into())]);
        assert_eq!(idx.insert("m", &tags_b, 10, 1.0, 10), 1);
        assert_eq!(idx.insert("m", &tags_a, 10, 1.0, 10), 2);
        assert_eq!(idx.insert("other", &tags_a, 10, 1.0, 10), 0);
        idx.release(b, true);
        assert!(!idx.get(a).unwrap().window.has_histogram());
        assert_eq!(idx.get(a).unwrap().window.count(), 2);
        idx.release(a, false);
        assert!(idx.get(a).is_none());
        assert_eq!(idx.longest_window_ms(), 60_000);
        idx.release(c, false);
        assert!(idx.is_empty());
        assert_eq!(idx.insert("m", &tags_a, 10, 1.0, 10), 0);
        let d = idx.acquire(QueryKey::of(&spec("n", &[], 5)), false, 0, 5000);
        assert_eq!(d, c, "freed slots are reused");
    }
}
