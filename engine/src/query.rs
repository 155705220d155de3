//! Queries and the index that routes an event's metric name to the queries it feeds.
//! A query is (metric, tag filter, window); every widget needing one shares its state.

use std::hash::BuildHasher;

use hashbrown::{DefaultHashBuilder, HashMap, HashTable};
use smallvec::SmallVec;

use crate::model::{Tags, WidgetSpec};
use crate::window::{InsertOutcome, SlidingWindow, WindowSpec};

mod split;
pub use split::{Split, SplitValues};

/// Identity of a query: widgets with equal keys share one window.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct QueryKey {
    pub metric: Box<str>,
    /// Filter entries, sorted by key.
    pub filter: Box<[(Box<str>, Box<str>)]>,
    pub window_seconds: u64,
    /// Whether the window is split by a tag's values, or is one part of such a split.
    pub split: Split,
}

impl QueryKey {
    /// The query a widget needs.
    pub fn of(spec: &WidgetSpec) -> Self {
        Self {
            metric: spec.metric_name.as_str().into(),
            filter: spec
                .filter
                .iter()
                .map(|(k, v)| (k.as_str().into(), v.as_str().into()))
                .collect(),
            window_seconds: spec.window_seconds,
            split: spec
                .group_by
                .as_deref()
                .map_or(Split::None, |by| Split::By(by.into())),
        }
    }

    /// A name for this query that every node derives alike, to store its state under:
    /// `[metric, window seconds, [[tag, value], ...]]` in JSON, followed by the split's
    /// tag (and, for a part, its value).
    pub fn stable_id(&self) -> String {
        let head = (&self.metric, self.window_seconds, &self.filter);
        match &self.split {
            Split::None => serde_json::to_string(&head),
            Split::By(by) => serde_json::to_string(&(head.0, head.1, head.2, by)),
            Split::Part { by, value } => {
                serde_json::to_string(&(head.0, head.1, head.2, by, value))
            }
        }
        .unwrap_or_default()
    }

    /// The key `stable_id` was made from.
    pub fn from_stable_id(id: &str) -> Option<Self> {
        type Filter = Box<[(Box<str>, Box<str>)]>;
        let parts: Vec<serde_json::Value> = serde_json::from_str(id).ok()?;
        let text = |i: usize| -> Option<Box<str>> { Some(parts.get(i)?.as_str()?.into()) };
        let split = match parts.len() {
            3 => Split::None,
            4 => Split::By(text(3)?),
            5 => Split::Part {
                by: text(3)?,
                value: text(4)?,
            },
            _ => return None,
        };
        Some(Self {
            metric: text(0)?,
            window_seconds: parts[1].as_u64()?,
            filter: serde_json::from_value::<Filter>(parts[2].clone()).ok()?,
            split,
        })
    }

    /// True when `tags` carries every filter entry (and, for a part of a split, its
    /// tag value).
    #[inline]
    pub fn matches(&self, tags: &Tags) -> bool {
        self.filter
            .iter()
            .all(|(k, v)| tags.get(&**k).is_some_and(|t| **t == **v))
            && match &self.split {
                Split::Part { by, value } => tags.get(&**by).is_some_and(|t| **t == **value),
                _ => true,
            }
    }
}

/// Longest metric name kept inside its index entry.
const INLINE_NAME: usize = 38;

/// A metric name as the index stores it: inline when short (most names are), so a lookup
/// compares bytes that arrived in the same cache line as the entry.
#[derive(Debug, Clone)]
enum NameKey {
    Inline { len: u8, bytes: [u8; INLINE_NAME] },
    Heap(Box<str>),
}

impl NameKey {
    fn new(name: &str) -> Self {
        if name.len() <= INLINE_NAME {
            let mut bytes = [0; INLINE_NAME];
            bytes[..name.len()].copy_from_slice(name.as_bytes());
            Self::Inline {
                len: name.len() as u8,
                bytes,
            }
        } else {
            Self::Heap(name.into())
        }
    }

    #[inline]
    fn as_bytes(&self) -> &[u8] {
        match self {
            Self::Inline { len, bytes } => &bytes[..*len as usize],
            Self::Heap(name) => name.as_bytes(),
        }
    }
}

/// The queries of one metric (kept inline: most metrics have one or two).
#[derive(Debug)]
struct MetricEntry {
    name: NameKey,
    queries: SmallVec<[Route; 2]>,
}

const _: () = assert!(size_of::<MetricEntry>() <= 64);

/// Handle of a live query in a `QueryIndex`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct QueryId(u32);

impl QueryId {
    /// The id as a dense index (below `QueryIndex::id_bound`).
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// A query an event's metric feeds, as the metric index lists it: with whether the query
/// has a tag filter, so inserting into an unfiltered query reads nothing of it beyond its
/// window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub id: QueryId,
    filtered: bool,
    /// The query splits its events by a tag's values among parts of its own.
    split: bool,
}

/// One query's state and how many widgets use it. Laid out so that what an insert reads
/// (the window's header) sits in the first cache lines of a line-aligned slot, which
/// `QueryIndex::prefetch` loads.
#[derive(Debug)]
#[repr(C, align(64))]
pub struct Query {
    pub window: SlidingWindow,
    widgets: u32,
    percentile_widgets: u32,
    pub key: QueryKey,
    /// A split query's parts, by tag value.
    parts: Option<Box<split::Parts>>,
}

/// Bytes of a `Query` an insert touches, from its start: the window's hot fields (the key
/// is read only for filtered queries).
const QUERY_HOT_BYTES: usize = std::mem::offset_of!(Query, window) + SlidingWindow::HOT_BYTES;

const _: () = assert!(
    QUERY_HOT_BYTES <= 128,
    "an insert reads two cache lines of a query"
);

/// All queries of a shard, by key and by metric name.
#[derive(Debug)]
pub struct QueryIndex {
    /// Metric name to its queries, in one flat table: a lookup touches the table and
    /// nothing else.
    by_metric: HashTable<MetricEntry>,
    hasher: DefaultHashBuilder,
    by_key: HashMap<QueryKey, QueryId>,
    slots: Vec<Option<Query>>,
    free: Vec<u32>,
    /// Most parts one split query keeps, and all split queries together.
    max_parts: usize,
    max_parts_total: usize,
    /// Parts live now.
    parts_total: usize,
    /// Events of split queries that found no room for a part of their tag value.
    parts_refused: u64,
}

impl Default for QueryIndex {
    fn default() -> Self {
        Self::new(
            crate::limits::DEFAULT_MAX_GROUP_VALUES,
            crate::limits::DEFAULT_MAX_GROUP_WINDOWS,
        )
    }
}

impl QueryIndex {
    /// An empty index whose split queries keep at most `max_parts` parts each, and
    /// `max_parts_total` together.
    pub fn new(max_parts: usize, max_parts_total: usize) -> Self {
        Self {
            by_metric: HashTable::new(),
            hasher: DefaultHashBuilder::default(),
            by_key: HashMap::new(),
            slots: Vec::new(),
            free: Vec::new(),
            max_parts,
            max_parts_total,
            parts_total: 0,
            parts_refused: 0,
        }
    }

    /// Takes a reference on the query for `key`, creating it (empty, clock at `now_ms`)
    /// if no widget uses it yet. `percentile` says whether the caller needs a histogram.
    pub fn acquire(
        &mut self,
        key: QueryKey,
        percentile: bool,
        now_ms: i64,
        max_skew_ms: i64,
    ) -> QueryId {
        let id = match self.by_key.get(&key) {
            Some(&id) => id,
            None => {
                let spec = WindowSpec::for_window(key.window_seconds, max_skew_ms);
                let split = matches!(key.split, Split::By(_));
                let id = self.add_slot(Query {
                    window: SlidingWindow::new(spec, now_ms, false),
                    widgets: 0,
                    percentile_widgets: 0,
                    key: key.clone(),
                    parts: split.then(Box::default),
                });
                let route = Route {
                    id,
                    filtered: !key.filter.is_empty(),
                    split,
                };
                let hash = self.hasher.hash_one(key.metric.as_bytes());
                let entry = self.by_metric.entry(
                    hash,
                    |e| e.name.as_bytes() == key.metric.as_bytes(),
                    |e| self.hasher.hash_one(e.name.as_bytes()),
                );
                entry
                    .or_insert_with(|| MetricEntry {
                        name: NameKey::new(&key.metric),
                        queries: SmallVec::new(),
                    })
                    .into_mut()
                    .queries
                    .push(route);
                self.by_key.insert(key, id);
                id
            }
        };
        if let Some(q) = self.get_mut(id) {
            q.widgets += 1;
            if percentile {
                q.percentile_widgets += 1;
            }
        }
        if percentile {
            self.set_histogram(id, true);
        }
        id
    }

    /// Puts `query` in a free slot.
    fn add_slot(&mut self, query: Query) -> QueryId {
        match self.free.pop() {
            Some(i) => {
                self.slots[i as usize] = Some(query);
                QueryId(i)
            }
            None => {
                self.slots.push(Some(query));
                QueryId((self.slots.len() - 1) as u32)
            }
        }
    }

    /// Frees slot `id` and forgets its key; returns the query that was there.
    fn remove_slot(&mut self, id: QueryId) -> Option<Query> {
        let query = self.slots.get_mut(id.0 as usize)?.take()?;
        self.free.push(id.0);
        self.by_key.remove(&query.key);
        if matches!(query.key.split, Split::Part { .. }) {
            self.parts_total -= 1;
        }
        Some(query)
    }

    /// Drops a reference taken by `acquire`; the query goes when its last widget does,
    /// and its histogram goes when its last percentile widget does.
    pub fn release(&mut self, id: QueryId, percentile: bool) {
        let Some(q) = self.get_mut(id) else { return };
        q.widgets = q.widgets.saturating_sub(1);
        let widgets = q.widgets;
        if percentile {
            q.percentile_widgets = q.percentile_widgets.saturating_sub(1);
            if q.percentile_widgets == 0 {
                self.set_histogram(id, false);
            }
        }
        if widgets > 0 {
            return;
        }
        let Some(query) = self.remove_slot(id) else {
            return;
        };
        for part in query.parts.iter().flat_map(|p| p.ids()) {
            self.remove_slot(part);
        }
        let metric = query.key.metric.as_bytes();
        let hash = self.hasher.hash_one(metric);
        if let Ok(mut entry) = self
            .by_metric
            .find_entry(hash, |e| e.name.as_bytes() == metric)
        {
            let routes = &mut entry.get_mut().queries;
            routes.retain(|r| r.id != id);
            if routes.is_empty() {
                entry.remove();
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
            let on = q.percentile_widgets > 0;
            self.set_histogram(id, on);
        }
    }

    /// Turns the histogram of query `id` (and of its parts) on or off.
    fn set_histogram(&mut self, id: QueryId, on: bool) {
        let Some(q) = self.get_mut(id) else { return };
        q.window.set_histogram(on);
        let parts: Vec<QueryId> = q.parts.iter().flat_map(|p| p.ids()).collect();
        for part in parts {
            if let Some(p) = self.get_mut(part) {
                p.window.set_histogram(on);
            }
        }
    }

    pub fn get(&self, id: QueryId) -> Option<&Query> {
        self.slots.get(id.0 as usize)?.as_ref()
    }

    pub fn get_mut(&mut self, id: QueryId) -> Option<&mut Query> {
        self.slots.get_mut(id.0 as usize)?.as_mut()
    }

    /// The id of the live query for `key`.
    pub fn id_of(&self, key: &QueryKey) -> Option<QueryId> {
        self.by_key.get(key).copied()
    }

    /// The live query for `key`.
    pub fn find_mut(&mut self, key: &QueryKey) -> Option<&mut Query> {
        let id = *self.by_key.get(key)?;
        self.get_mut(id)
    }

    /// Every live query.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut Query> {
        self.slots.iter_mut().flatten()
    }

    /// The queries fed by `metric`, or `None` when no query watches it.
    #[inline]
    pub fn queries_of(&self, metric: &str) -> Option<&[Route]> {
        let hash = self.hasher.hash_one(metric.as_bytes());
        self.by_metric
            .find(hash, |e| e.name.as_bytes() == metric.as_bytes())
            .map(|e| &e.queries[..])
    }

    /// Starts loading query `id`'s state into cache without waiting for it.
    #[inline]
    /// Every live query's id is below this.
    pub fn id_bound(&self) -> usize {
        self.slots.len()
    }

    pub fn prefetch(&self, id: QueryId) {
        if (id.0 as usize) < self.slots.len() {
            let base = self.slots.as_ptr().wrapping_add(id.0 as usize).cast::<u8>();
            for line in (0..QUERY_HOT_BYTES).step_by(64) {
                crate::prefetch::prefetch(base.wrapping_add(line));
            }
        }
    }

    /// Readies query `id` for an event at `time_ms`: advances its clock to `now_ms` and
    /// starts loading the pane the event will land in. Calling `prefetch` and then this
    /// for a whole batch before any `insert_into` lets the cache misses of the batch
    /// overlap instead of queueing one behind the other.
    #[inline]
    pub fn warm(&mut self, id: QueryId, time_ms: i64, now_ms: i64) {
        if let Some(Some(q)) = self.slots.get_mut(id.0 as usize) {
            q.window.advance(now_ms);
            q.window.prefetch(time_ms);
        }
    }

    /// Starts loading the histogram records of query `id` an event will update (after
    /// `warm`); nothing for queries without a histogram.
    #[inline]
    pub fn warm_histogram(&self, id: QueryId, time_ms: i64, value: f64) {
        if let Some(Some(q)) = self.slots.get(id.0 as usize) {
            q.window.prefetch_histogram(time_ms, value);
        }
    }

    /// Inserts an event into the query of `route` if its tags match the filter; true if
    /// counted. The caller has advanced the query's clock (`warm` does).
    #[inline]
    pub fn insert_into(&mut self, route: Route, tags: &Tags, time_ms: i64, value: f64) -> bool {
        let counted = match self.slots.get_mut(route.id.0 as usize) {
            Some(Some(q)) if !route.filtered || q.key.matches(tags) => {
                q.window.insert(time_ms, value) == InsertOutcome::Counted
            }
            _ => false,
        };
        if counted && route.split {
            self.insert_part(route.id, tags, time_ms, value);
        }
        counted
    }

    /// Feeds one event to every query of its metric whose filter matches. Returns
    /// `None` when no query watches the metric, else how many counted the event.
    pub fn insert(
        &mut self,
        metric: &str,
        tags: &Tags,
        time_ms: i64,
        value: f64,
        now_ms: i64,
    ) -> Option<usize> {
        let routes: SmallVec<[Route; 2]> = SmallVec::from_slice(self.queries_of(metric)?);
        let mut counted = 0;
        for route in routes {
            self.warm(route.id, time_ms, now_ms);
            counted += usize::from(self.insert_into(route, tags, time_ms, value));
        }
        Some(counted)
    }

    /// Longest window of any live query, in ms (0 when there is none).
    pub fn longest_window_ms(&self) -> i64 {
        self.by_key
            .keys()
            .map(|k| k.window_seconds as i64 * 1000)
            .max()
            .unwrap_or(0)
    }

    /// Number of live queries (the parts of split queries included).
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    /// True when there is no query.
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    /// Events of split queries that found no room for a part of their own (counted in
    /// the whole only).
    pub fn parts_refused(&self) -> u64 {
        self.parts_refused
    }

    /// Heap bytes held by the window states.
    pub fn heap_bytes(&self) -> usize {
        self.slots
            .iter()
            .flatten()
            .map(|q| q.window.heap_bytes())
            .sum()
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
            filter: filter
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            display_config: Default::default(),
            group_by: None,
            top: None,
        }
    }

    #[test]
    fn shared_and_filtered() {
        let mut idx = QueryIndex::default();
        let a = idx.acquire(QueryKey::of(&spec("m", &[], 60)), false, 0, 5000);
        let b = idx.acquire(QueryKey::of(&spec("m", &[], 60)), true, 0, 5000);
        let c = idx.acquire(
            QueryKey::of(&spec("m", &[("host", "a")], 60)),
            false,
            0,
            5000,
        );
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(idx.len(), 2);
        assert!(idx.get(a).unwrap().window.has_histogram());
        let tags_b = Tags::from([("host".to_string(), "b".to_string())]);
        let tags_a = Tags::from([
            ("host".to_string(), "a".to_string()),
            ("dc".into(), "x".into()),
        ]);
        assert_eq!(idx.insert("m", &tags_b, 10, 1.0, 10), Some(1));
        assert_eq!(idx.insert("m", &tags_a, 10, 1.0, 10), Some(2));
        assert_eq!(idx.insert("other", &tags_a, 10, 1.0, 10), None);
        idx.release(b, true);
        assert!(!idx.get(a).unwrap().window.has_histogram());
        assert_eq!(idx.get(a).unwrap().window.count(), 2);
        idx.release(a, false);
        assert!(idx.get(a).is_none());
        assert_eq!(idx.longest_window_ms(), 60_000);
        idx.release(c, false);
        assert!(idx.is_empty());
        assert_eq!(idx.insert("m", &tags_a, 10, 1.0, 10), None);
        let d = idx.acquire(QueryKey::of(&spec("n", &[], 5)), false, 0, 5000);
        assert_eq!(d, c, "freed slots are reused");
    }
}
