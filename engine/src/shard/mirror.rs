//! The shard's side of the state mirror: the changed panes of the queries a caller picks
//! (by partition, in cluster mode), the restore of a query from stored panes, and the
//! backfill of one query from past events.

use hashbrown::HashSet;

use super::Shard;
use crate::model::MetricEvent;
use crate::query::{QueryKey, Split};
use crate::window::InsertOutcome;
use crate::window::{PaneChanges, PaneState, SlidingWindow};

/// One query's changes since the mirror last read it.
#[derive(Debug, Clone)]
pub struct QueryChanges {
    pub key: QueryKey,
    /// Milliseconds the window spans: what is stored for it can expire after that.
    pub span_ms: i64,
    /// Newest event time in the window.
    pub latest: Option<i64>,
    pub panes: PaneChanges,
}

impl Shard {
    /// The changed panes of every query `wanted` picks, with each window's clock moved to
    /// `now_ms` first (so panes that slid out are reported deleted).
    pub fn mirror_changes(
        &mut self,
        now_ms: i64,
        mut wanted: impl FnMut(&QueryKey) -> bool,
    ) -> Vec<QueryChanges> {
        let now = self.now(now_ms);
        let mut out = Vec::new();
        for q in self.queries.iter_mut() {
            if !wanted(&q.key) {
                continue;
            }
            q.window.advance(now);
            let panes = q.window.take_changes();
            if panes.is_empty() {
                continue;
            }
            out.push(QueryChanges {
                key: q.key.clone(),
                span_ms: q.window.spec().span_ms(),
                latest: q.window.latest(),
                panes,
            });
        }
        out
    }

    /// Makes the next `mirror_changes` of the queries `wanted` picks (and of the parts
    /// of the splits it picks) send every live pane.
    pub fn forget_mirror(&mut self, mut wanted: impl FnMut(&QueryKey) -> bool) {
        for q in self.queries.iter_mut() {
            let picked = match q.key.whole() {
                Some((whole, _)) => wanted(&whole),
                None => wanted(&q.key),
            };
            if picked {
                q.window.forget_mirror();
            }
        }
    }

    /// The keys of every live query that widgets use (not the parts of splits: their
    /// split makes them).
    pub fn query_keys(&mut self) -> Vec<QueryKey> {
        self.queries
            .iter_mut()
            .filter(|q| q.key.whole().is_none())
            .map(|q| q.key.clone())
            .collect()
    }

    /// Of the stored query ids `stored`, the keys of parts whose split is here and was
    /// stored too: to restore with `restore_query`, which makes them. (A split restored
    /// without its parts, or parts without their split, would disagree with each other;
    /// a split that is backfilled instead makes its parts from the events.)
    pub fn stored_parts<'a>(&mut self, stored: impl Iterator<Item = &'a str>) -> Vec<QueryKey> {
        let ids: HashSet<&str> = stored.collect();
        ids.iter()
            .filter_map(|id| QueryKey::from_stable_id(id))
            .filter(|k| {
                k.whole().is_some_and(|(whole, _)| {
                    ids.contains(whole.stable_id().as_str())
                        && self.queries.find_mut(&whole).is_some()
                })
            })
            .collect()
    }

    /// True when a widget uses the query `key` here.
    pub fn has_query(&mut self, key: &QueryKey) -> bool {
        self.queries.find_mut(key).is_some()
    }

    /// Adds past `events` to query `key` alone (those of its metric that its filter
    /// passes and that fall in its window). Returns the events counted, or `None` when no
    /// widget uses that query here.
    pub fn backfill_query(
        &mut self,
        key: &QueryKey,
        events: &[MetricEvent],
        now_ms: i64,
    ) -> Option<usize> {
        let now = self.now(now_ms);
        let id = self.queries.id_of(key)?;
        let split = matches!(key.split, Split::By(_));
        let mut counted = 0;
        for ev in events {
            if *ev.metric_name != *key.metric || !key.matches(&ev.tags) {
                continue;
            }
            let q = self.queries.get_mut(id)?;
            q.window.advance(now);
            if q.window.insert(ev.event_time, ev.value) == InsertOutcome::Counted {
                counted += 1;
                if split {
                    self.queries
                        .insert_part(id, &ev.tags, ev.event_time, ev.value);
                }
            }
        }
        Some(counted)
    }

    /// Replaces the window of query `key` with one loaded from `panes` (those still in
    /// the window at the shard's clock); a part of a split here is made first. Returns
    /// the panes loaded, or `None` when no widget uses that query here.
    pub fn restore_query(
        &mut self,
        key: &QueryKey,
        latest: Option<i64>,
        panes: &[PaneState],
        now_ms: i64,
    ) -> Option<usize> {
        let now = self.now(now_ms);
        if self.queries.find_mut(key).is_none() {
            self.queries.part_of_key(key)?;
        }
        let q = self.queries.find_mut(key)?;
        let mut window = SlidingWindow::new(q.window.spec(), now, q.window.has_histogram());
        let loaded = window.restore(latest, panes);
        q.window = window;
        Some(loaded)
    }
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;
    use crate::model::{Aggregation, MetricEvent, Tags, Widget, WidgetSpec};
    use crate::shard::ShardConfig;

    /// Every aggregation on metrics `a` and `b`, plain and (but `histogram`) grouped by
    /// host.
    fn widgets() -> Vec<Widget> {
        let mut out = Vec::new();
        for (i, agg) in Aggregation::ALL.into_iter().enumerate() {
            for (j, metric) in ["a", "b"].into_iter().enumerate() {
                for grouped in [false, true] {
                    if grouped && agg == Aggregation::Histogram {
                        continue;
                    }
                    out.push(Widget::new(
                        Uuid::from_u128((i * 4 + j * 2 + usize::from(grouped) + 1) as u128),
                        Uuid::nil(),
                        WidgetSpec {
                            metric_name: metric.into(),
                            aggregation: agg,
                            window_seconds: 30,
                            refresh_interval_seconds: 1.0,
                            filter: Tags::new(),
                            display_config: Default::default(),
                            group_by: grouped.then(|| "host".into()),
                            top: grouped.then_some(2),
                        },
                    ));
                }
            }
        }
        out
    }

    fn shard(now: i64) -> Shard {
        let mut s = Shard::new(ShardConfig::default());
        for w in widgets() {
            s.upsert_widget(w, now).unwrap();
        }
        s
    }

    /// A second shard restored from the first one's changes (of metric `a` only) reads
    /// the same values for `a`'s widgets after both go on with the same events.
    #[test]
    fn a_restored_shard_goes_on_with_the_same_values() {
        let start = 2_000_000_000;
        let mut first = shard(start);
        let mut stored: Vec<(QueryKey, Option<i64>, Vec<Option<PaneState>>)> = Vec::new();
        let events = |t: i64| -> Vec<MetricEvent> {
            (0..20)
                .map(|i| MetricEvent {
                    metric_name: if i % 3 == 0 { "b" } else { "a" }.into(),
                    value: ((t / 100 + i) % 37) as f64 * 0.5 - 3.0,
                    tags: Tags::from([("host".into(), format!("h{}", (t / 400 + i) % 4))]),
                    event_time: t - (i * 700) % 9_000,
                })
                .collect()
        };
        let mut now = start;
        for _ in 0..120 {
            now += 400;
            first.apply(&events(now), now);
            first.tick(now);
            for ch in first.mirror_changes(now, |k| &*k.metric == "a") {
                let slot = match stored.iter().position(|(k, _, _)| *k == ch.key) {
                    Some(i) => i,
                    None => {
                        stored.push((ch.key.clone(), None, vec![None; 64]));
                        stored.len() - 1
                    }
                };
                let entry = &mut stored[slot];
                entry.1 = ch.latest;
                if ch.panes.full {
                    entry.2.iter_mut().for_each(|p| *p = None);
                }
                for (s, p) in ch.panes.set {
                    entry.2[s as usize] = Some(p);
                }
                for s in ch.panes.deleted {
                    entry.2[s as usize] = None;
                }
            }
        }
        let mut second = shard(now);
        // Parts come back with their split only: the ids of the parts alone name none.
        let ids: Vec<String> = stored.iter().map(|(k, _, _)| k.stable_id()).collect();
        let mut parts = second.stored_parts(ids.iter().map(String::as_str));
        parts.sort_by_key(QueryKey::stable_id);
        let mut want: Vec<QueryKey> = stored
            .iter()
            .filter(|(k, _, _)| k.whole().is_some())
            .map(|(k, _, _)| k.clone())
            .collect();
        want.sort_by_key(QueryKey::stable_id);
        assert!(!want.is_empty());
        assert_eq!(parts, want);
        let alone: Vec<String> = want.iter().map(QueryKey::stable_id).collect();
        assert!(
            second
                .stored_parts(alone.iter().map(String::as_str))
                .is_empty()
        );
        for (key, latest, panes) in &stored {
            let panes: Vec<PaneState> = panes.iter().flatten().cloned().collect();
            assert!(second.restore_query(key, *latest, &panes, now).is_some());
        }
        for _ in 0..10 {
            now += 400;
            first.apply(&events(now), now);
            second.apply(&events(now), now);
        }
        now += 1_000;
        let mut a: Vec<_> = first.tick(now);
        let mut b: Vec<_> = second.tick(now);
        a.retain(|v| first.widget(&v.widget_id).unwrap().spec.metric_name == "a");
        b.retain(|v| second.widget(&v.widget_id).unwrap().spec.metric_name == "a");
        a.sort_by_key(|v| v.widget_id);
        b.sort_by_key(|v| v.widget_id);
        assert_eq!(a.len(), Aggregation::ALL.len() * 2 - 1);
        for (x, y) in a.iter().zip(&b) {
            assert_eq!(x.value, y.value, "{:?}", first.widget(&x.widget_id));
            assert_eq!(x.detail, y.detail, "{:?}", first.widget(&x.widget_id));
            let spec = &first.widget(&x.widget_id).unwrap().spec;
            let detailed = spec.group_by.is_some() || spec.aggregation == Aggregation::Histogram;
            assert_eq!(x.detail.is_some(), detailed, "{spec:?}");
        }
    }
}
