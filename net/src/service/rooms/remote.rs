//! Cluster mode: the values of widgets other nodes own, as rooms keep them: read from
//! Redis when a room opens (or after values were lost), and heard over Pub/Sub.

use std::collections::VecDeque;
use std::sync::Arc;

use livedash_engine::limits::MAX_DETAIL_HISTORY_LEN;
use livedash_engine::{Detail, HistoryPoint, Widget, WidgetValue};
use livedash_replication::redis::values::StoredValue;
use uuid::Uuid;

use super::{Delivery, Rooms};
use crate::frames::WidgetUpdate;
use crate::service::metrics::Stamp;

/// A widget another node owns, as a room last heard of it.
#[derive(Debug, Clone, PartialEq)]
pub struct RemoteState {
    pub value: WidgetValue,
    pub history: Vec<HistoryPoint>,
    pub details: Vec<(i64, Arc<Detail>)>,
}

/// Merges `stored` points into `heard`, by time (one point per time), keeping the last
/// `keep`.
fn merge<T>(heard: &mut VecDeque<(i64, T)>, stored: Vec<(i64, T)>, keep: usize) {
    let mut all: Vec<(i64, T)> = stored.into_iter().chain(heard.drain(..)).collect();
    all.sort_by_key(|p| p.0);
    all.dedup_by_key(|p| p.0);
    let skip = all.len().saturating_sub(keep.max(1));
    heard.extend(all.into_iter().skip(skip));
}

/// Appends `point`, dropping the oldest beyond `keep` (at least one is kept).
fn push_bounded<T>(heard: &mut VecDeque<T>, point: T, keep: usize) {
    if heard.len() >= keep.max(1) {
        heard.pop_front();
    }
    heard.push_back(point);
}

impl Rooms {
    /// A read of the stored values of dashboard `id` begins: values heard from now on
    /// take precedence over what it returns.
    pub fn begin_read(&mut self, id: Uuid) {
        if let Some(room) = self.rooms.get_mut(&id) {
            room.heard.clear();
        }
    }

    /// Cluster mode: the stored values of other nodes' widgets, read when the room
    /// opened (or again after values were lost). Histories merge with the points already
    /// heard; a value newer than the one here replaces it and is returned (to be sent).
    pub fn stored(
        &mut self,
        id: Uuid,
        stored: Vec<StoredValue>,
        local: impl Fn(&str) -> bool,
        history_len: usize,
    ) -> Vec<WidgetValue> {
        let Some(room) = self.rooms.get_mut(&id) else {
            return Vec::new();
        };
        room.loaded = true;
        let mut taken = Vec::new();
        for s in stored {
            let wid = s.value.widget_id;
            if !room.others(&wid, &local) {
                continue;
            }
            merge(
                room.remote_history.entry(wid).or_default(),
                s.history,
                history_len,
            );
            let details = room.remote_details.entry(wid).or_default();
            merge(details, s.details, history_len.min(MAX_DETAIL_HISTORY_LEN));
            // A value's window end moves once per pane, so a newer value may share it:
            // one stored after the read began wins unless Pub/Sub brought one since.
            let newer = room.latest.get(&wid).is_none_or(|v| {
                v.window_end < s.value.window_end
                    || (v.window_end == s.value.window_end
                        && *v != s.value
                        && !room.heard.contains(&wid))
            });
            if newer {
                room.latest.insert(wid, s.value.clone());
                taken.push(s.value);
            }
        }
        taken
    }

    /// Whether the room's stored values were read (cluster mode); `None` without a room.
    pub fn loaded(&self, id: Uuid) -> Option<bool> {
        self.rooms.get(&id).map(|r| r.loaded)
    }

    /// Cluster mode: values another node published for dashboard `id`, heard at `now`.
    /// Those of widgets on the dashboard that this node does not own are kept (latest
    /// and history) and returned, to be framed; they are fresh.
    pub fn remote(
        &mut self,
        id: Uuid,
        values: Vec<WidgetValue>,
        local: impl Fn(&str) -> bool,
        history_len: usize,
        now: i64,
    ) -> Vec<WidgetValue> {
        let Some(room) = self.rooms.get_mut(&id) else {
            return Vec::new();
        };
        let mut out = Vec::with_capacity(values.len());
        for v in values {
            if !room.others(&v.widget_id, &local) {
                continue;
            }
            let history = room.remote_history.entry(v.widget_id).or_default();
            push_bounded(history, (now, v.value), history_len);
            if let Some(detail) = &v.detail {
                let details = room.remote_details.entry(v.widget_id).or_default();
                let keep = history_len.min(MAX_DETAIL_HISTORY_LEN);
                push_bounded(details, (now, Arc::clone(detail)), keep);
            }
            room.stale_sent.remove(&v.widget_id);
            room.heard.insert(v.widget_id);
            room.latest.insert(v.widget_id, v.clone());
            out.push(v);
        }
        out
    }

    /// Cluster mode: a widget another node owns, as this room last heard of it, with
    /// its history (and that of its series or distributions).
    pub fn remote_state(&self, id: Uuid, widget: &Uuid) -> Option<RemoteState> {
        let room = self.rooms.get(&id)?;
        let value = room.latest.get(widget)?.clone();
        let history = room
            .remote_history
            .get(widget)
            .map(|h| h.iter().copied().collect())
            .unwrap_or_default();
        let details = room
            .remote_details
            .get(widget)
            .map(|h| h.iter().cloned().collect())
            .unwrap_or_default();
        Some(RemoteState {
            value,
            history,
            details,
        })
    }

    /// Cluster mode: an `update` frame for each room where a widget turned stale or
    /// fresh again, as `stale(widget)` says.
    pub fn stale_frames(&mut self, now: i64, stale: impl Fn(&Widget) -> bool) -> Vec<Delivery> {
        let mut out = Vec::new();
        for (id, room) in &mut self.rooms {
            let mut updates = Vec::new();
            for w in &room.dashboard.widgets {
                let Some(v) = room.latest.get(&w.widget_id) else {
                    continue;
                };
                let is_stale = stale(w);
                if is_stale != room.stale_sent.contains(&w.widget_id) {
                    updates.push(WidgetUpdate::of(v, is_stale));
                }
            }
            for u in &updates {
                if u.stale {
                    room.stale_sent.insert(u.widget_id);
                } else {
                    room.stale_sent.remove(&u.widget_id);
                }
            }
            if updates.is_empty() {
                continue;
            }
            match room.encode(now, &updates) {
                Ok(frame) => out.push(Delivery {
                    frame,
                    stamp: Stamp::framed(now),
                    outboxes: room.outboxes.clone(),
                }),
                Err(e) => tracing::error!("cannot encode an update of dashboard {id}: {e}"),
            }
        }
        out
    }
}
