//! The bookkeeping of the streams one shard serves, without I/O: rooms (the connections
//! of one dashboard), joins in flight, dashboard versions, the interest each room needs
//! from the owner shards, and one encoded frame per room and tick.

use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::Arc;

use hashbrown::{HashMap, HashSet};
use livedash_engine::{Dashboard, Detail, HistoryPoint, Placement, Widget, WidgetValue};
use tungstenite::Bytes;
use uuid::Uuid;

use super::metrics::Stamp;
use super::outbox::Outbox;
use crate::catalogue::Versioned;
use crate::frames::{Frame, WidgetUpdate};

/// The connections of one dashboard on this shard.
#[derive(Debug)]
struct Room {
    /// Shared with the connections joining: a large dashboard is held once.
    dashboard: Rc<Dashboard>,
    /// Catalogue version of `dashboard`; older news is ignored.
    version: u64,
    outboxes: Vec<Rc<Outbox>>,
    /// Update frames sent to this room.
    seq: u64,
    /// The newest value of each widget, for connections that fall behind.
    latest: HashMap<Uuid, WidgetValue>,
    /// Cluster mode: the history of widgets another node owns (for snapshots here),
    /// and of their series or distributions (grouped and `histogram` widgets).
    remote_history: HashMap<Uuid, VecDeque<HistoryPoint>>,
    remote_details: HashMap<Uuid, VecDeque<(i64, Arc<Detail>)>>,
    /// Cluster mode: widgets last sent as stale.
    stale_sent: HashSet<Uuid>,
    /// Cluster mode: the stored values of other nodes' widgets were read.
    loaded: bool,
    /// Cluster mode: widgets whose value came over Pub/Sub since the last read of the
    /// stored values began: what that read returns of them is not newer.
    heard: HashSet<Uuid>,
}

impl Room {
    fn new(dashboard: Rc<Dashboard>, version: u64, outbox: &Rc<Outbox>) -> Self {
        Self {
            dashboard,
            version,
            outboxes: vec![Rc::clone(outbox)],
            seq: 0,
            latest: HashMap::new(),
            remote_history: HashMap::new(),
            remote_details: HashMap::new(),
            stale_sent: HashSet::new(),
            loaded: false,
            heard: HashSet::new(),
        }
    }

    fn widget(&self, id: &Uuid) -> Option<&Widget> {
        self.dashboard.widgets.iter().find(|w| &w.widget_id == id)
    }

    /// True for a widget of this dashboard that another node owns (`local` says which
    /// metrics this node owns).
    fn others(&self, id: &Uuid, local: &impl Fn(&str) -> bool) -> bool {
        self.widget(id).is_some_and(|w| !local(&w.spec.metric_name))
    }

    fn update_of(&self, v: &WidgetValue) -> WidgetUpdate {
        WidgetUpdate::of(v, self.stale_sent.contains(&v.widget_id))
    }

    /// The next `update` frame of this room.
    fn encode(&mut self, now: i64, updates: &[WidgetUpdate]) -> Result<Bytes, serde_json::Error> {
        self.seq += 1;
        Frame::Update {
            seq: self.seq,
            sent_at: now,
            widgets: updates,
        }
        .encode()
    }
}

/// Joins in flight for a dashboard that has no room yet.
#[derive(Debug, Default)]
struct Joining {
    count: usize,
    /// The newest change of the dashboard that arrived meanwhile.
    news: Option<Versioned>,
}

/// What the owner shards must be told: per owner shard, the widgets this shard starts
/// and stops streaming.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct InterestDelta {
    pub add: Vec<Vec<Uuid>>,
    pub remove: Vec<Vec<Uuid>>,
}

impl InterestDelta {
    fn new(shards: usize) -> Self {
        Self {
            add: vec![Vec::new(); shards],
            remove: vec![Vec::new(); shards],
        }
    }

    /// Every widget of `dashboard`, by owner, to add (`add`) or remove.
    fn whole(dashboard: &Dashboard, placement: Placement, add: bool) -> Self {
        let by_owner = by_owner(dashboard, placement);
        let none = vec![Vec::new(); placement.shards];
        if add {
            Self {
                add: by_owner,
                remove: none,
            }
        } else {
            Self {
                add: none,
                remove: by_owner,
            }
        }
    }

    /// The owners with something to change, with their widgets to add and remove.
    pub fn per_owner(self) -> impl Iterator<Item = (usize, Vec<Uuid>, Vec<Uuid>)> {
        self.add
            .into_iter()
            .zip(self.remove)
            .enumerate()
            .filter(|(_, (add, remove))| !add.is_empty() || !remove.is_empty())
            .map(|(owner, (add, remove))| (owner, add, remove))
    }
}

/// The widget ids of `dashboard`, grouped by the shard that owns each one's metric.
pub fn by_owner(dashboard: &Dashboard, placement: Placement) -> Vec<Vec<Uuid>> {
    let mut out = vec![Vec::new(); placement.shards];
    for w in &dashboard.widgets {
        out[placement.shard(&w.spec.metric_name)].push(w.widget_id);
    }
    out
}

/// How a join ended.
#[derive(Debug)]
pub enum Joined {
    /// The connection joined a room that was open already.
    Room(Rc<Dashboard>),
    /// The connection opened the room; the owners must be told of `delta`.
    Opened(Rc<Dashboard>, InterestDelta),
    /// The dashboard does not exist (or was deleted while the join was in flight).
    Missing,
}

/// What a change of a dashboard means for this shard.
#[derive(Debug)]
pub enum Changed {
    /// Nothing here shows it, or the news is older than what the room has.
    Ignored,
    /// The room is gone; its connections must be closed.
    Deleted(Vec<Rc<Outbox>>, InterestDelta),
    /// The room shows the new dashboard: `frame` goes to its connections.
    Updated {
        frame: Result<Bytes, serde_json::Error>,
        outboxes: Vec<Rc<Outbox>>,
        delta: InterestDelta,
    },
}

/// One encoded frame and the connections of its room.
#[derive(Debug)]
pub struct Delivery {
    pub frame: Bytes,
    pub stamp: Stamp,
    pub outboxes: Vec<Rc<Outbox>>,
}

/// Every room of the shard.
#[derive(Debug)]
pub struct Rooms {
    placement: Placement,
    rooms: HashMap<Uuid, Room>,
    joining: HashMap<Uuid, Joining>,
}

impl Rooms {
    pub fn new(placement: Placement) -> Self {
        Self {
            placement,
            rooms: HashMap::new(),
            joining: HashMap::new(),
        }
    }

    /// The state of dashboard `id`'s room: its dashboard version and update frames sent.
    pub fn generation(&self, id: Uuid) -> Option<(u64, u64)> {
        self.rooms.get(&id).map(|r| (r.version, r.seq))
    }

    /// Adds a connection to dashboard `id`'s room if it is open.
    pub fn join(&mut self, id: Uuid, outbox: &Rc<Outbox>) -> Option<Rc<Dashboard>> {
        let room = self.rooms.get_mut(&id)?;
        room.outboxes.push(Rc::clone(outbox));
        Some(Rc::clone(&room.dashboard))
    }

    /// A join of dashboard `id` is fetching the dashboard; changes that arrive meanwhile
    /// are kept for it.
    pub fn begin_join(&mut self, id: Uuid) {
        self.joining.entry(id).or_default().count += 1;
    }

    fn end_join(&mut self, id: Uuid) -> Option<Versioned> {
        let joining = self.joining.get_mut(&id)?;
        joining.count -= 1;
        if joining.count == 0 {
            self.joining.remove(&id).and_then(|j| j.news)
        } else {
            joining.news.clone()
        }
    }

    /// A join whose fetch failed.
    pub fn abandon_join(&mut self, id: Uuid) {
        self.end_join(id);
    }

    /// Completes a join with the fetched dashboard, or the newer one that arrived while
    /// it was fetched.
    pub fn finish_join(&mut self, id: Uuid, fetched: Versioned, outbox: &Rc<Outbox>) -> Joined {
        let news = self.end_join(id);
        if let Some(dashboard) = self.join(id, outbox) {
            return Joined::Room(dashboard);
        }
        let newest = match news {
            Some(news) if news.version > fetched.version => news,
            _ => fetched,
        };
        let Some(dashboard) = newest.dashboard.map(Rc::new) else {
            return Joined::Missing;
        };
        let delta = InterestDelta::whole(&dashboard, self.placement, true);
        self.rooms
            .insert(id, Room::new(Rc::clone(&dashboard), newest.version, outbox));
        Joined::Opened(dashboard, delta)
    }

    /// Removes a connection; the last one out closes the room, and its interest goes.
    pub fn leave(&mut self, id: Uuid, outbox: &Rc<Outbox>) -> Option<InterestDelta> {
        let room = self.rooms.get_mut(&id)?;
        room.outboxes.retain(|o| !Rc::ptr_eq(o, outbox));
        if !room.outboxes.is_empty() {
            return None;
        }
        let room = self.rooms.remove(&id)?;
        Some(InterestDelta::whole(&room.dashboard, self.placement, false))
    }

    /// Dashboard `id` changed (or was deleted) as of `news.version`.
    pub fn changed(&mut self, id: Uuid, news: Versioned) -> Changed {
        let Some(room) = self.rooms.get_mut(&id) else {
            if let Some(joining) = self.joining.get_mut(&id)
                && joining
                    .news
                    .as_ref()
                    .is_none_or(|n| n.version < news.version)
            {
                joining.news = Some(news);
            }
            return Changed::Ignored;
        };
        if news.version <= room.version {
            return Changed::Ignored;
        }
        let Some(new) = news.dashboard else {
            let Some(room) = self.rooms.remove(&id) else {
                return Changed::Ignored;
            };
            let delta = InterestDelta::whole(&room.dashboard, self.placement, false);
            return Changed::Deleted(room.outboxes, delta);
        };
        let owner = |w: &livedash_engine::Widget| self.placement.shard(&w.spec.metric_name);
        let old: HashMap<Uuid, usize> = room
            .dashboard
            .widgets
            .iter()
            .map(|w| (w.widget_id, owner(w)))
            .collect();
        let now: HashMap<Uuid, usize> = new
            .widgets
            .iter()
            .map(|w| (w.widget_id, owner(w)))
            .collect();
        let mut delta = InterestDelta::new(self.placement.shards);
        for (w, o) in &now {
            if old.get(w) != Some(o) {
                delta.add[*o].push(*w);
            }
        }
        for (w, o) in &old {
            if now.get(w) != Some(o) {
                delta.remove[*o].push(*w);
            }
            if !now.contains_key(w) {
                room.latest.remove(w);
                room.remote_history.remove(w);
                room.remote_details.remove(w);
                room.stale_sent.remove(w);
            }
        }
        room.dashboard = Rc::new(new);
        room.version = news.version;
        Changed::Updated {
            frame: Frame::Dashboard {
                dashboard: &room.dashboard,
            }
            .encode(),
            outboxes: room.outboxes.clone(),
            delta,
        }
    }

    /// One update frame per room from pushed values (with their dashboards), and the
    /// connections it goes to. Values of widgets no longer on their dashboard (a value can
    /// cross an edit in flight) are dropped. A frame that cannot be encoded is counted in
    /// the second part of the result.
    /// `computed_at`: when the oldest of the values was computed.
    /// True when `pending` values and `unchanged` (dashboard, widget) pairs cover, in
    /// each of their rooms, every widget that refreshes with the interval of one of them
    /// (so at the same instants): nothing more of this tick can come, and the frames need
    /// not wait.
    pub fn complete(&self, pending: &[(Uuid, WidgetValue)], unchanged: &[(Uuid, Uuid)]) -> bool {
        let mut by_room: HashMap<Uuid, HashSet<Uuid>> = HashMap::new();
        let heard = pending
            .iter()
            .map(|(d, v)| (d, v.widget_id))
            .chain(unchanged.iter().map(|(d, w)| (d, *w)));
        for (dashboard, widget) in heard {
            by_room.entry(*dashboard).or_default().insert(widget);
        }
        by_room.iter().all(|(id, values)| {
            let Some(room) = self.rooms.get(id) else {
                return true;
            };
            let widgets = &room.dashboard.widgets;
            let due: HashSet<i64> = widgets
                .iter()
                .filter(|w| values.contains(&w.widget_id))
                .map(Widget::refresh_interval_ms)
                .collect();
            widgets
                .iter()
                .all(|w| values.contains(&w.widget_id) || !due.contains(&w.refresh_interval_ms()))
        })
    }

    pub fn frame(
        &mut self,
        pending: Vec<(Uuid, WidgetValue)>,
        now: i64,
        computed_at: Option<i64>,
    ) -> (Vec<Delivery>, u64) {
        let mut by_room: HashMap<Uuid, Vec<WidgetValue>> = HashMap::new();
        for (dashboard, value) in pending {
            by_room.entry(dashboard).or_default().push(value);
        }
        let mut deliveries = Vec::with_capacity(by_room.len());
        let mut unencodable = 0;
        for (id, values) in by_room {
            let Some(room) = self.rooms.get_mut(&id) else {
                continue;
            };
            let shown: Vec<WidgetValue> = values
                .into_iter()
                .filter(|v| {
                    room.dashboard
                        .widgets
                        .iter()
                        .any(|w| w.widget_id == v.widget_id)
                })
                .collect();
            // A pushed value was just computed by its owner: it is fresh.
            let updates: Vec<WidgetUpdate> =
                shown.iter().map(|v| WidgetUpdate::of(v, false)).collect();
            // The newest event the frame shows for the first time: a value that changed
            // only because old events left its window brings no new event.
            let newest_event = shown
                .iter()
                .filter(|v| {
                    let before = room.latest.get(&v.widget_id);
                    v.latest_event_time > before.and_then(|b| b.latest_event_time)
                })
                .filter_map(|v| v.latest_event_time)
                .max();
            for v in shown {
                room.stale_sent.remove(&v.widget_id);
                room.latest.insert(v.widget_id, v);
            }
            if updates.is_empty() {
                continue;
            }
            match room.encode(now, &updates) {
                Ok(frame) => deliveries.push(Delivery {
                    frame,
                    stamp: Stamp {
                        framed_at: now,
                        computed_at,
                        newest_event,
                    },
                    outboxes: room.outboxes.clone(),
                }),
                Err(e) => {
                    unencodable += 1;
                    tracing::error!("cannot encode an update of dashboard {id}: {e}");
                }
            }
        }
        (deliveries, unencodable)
    }

    /// The frames that bring a lagging connection up to date: the dashboard, then every
    /// newest value.
    pub fn resync_frames(&self, id: Uuid, now: i64) -> Result<Vec<Bytes>, serde_json::Error> {
        let Some(room) = self.rooms.get(&id) else {
            return Ok(Vec::new());
        };
        let updates: Vec<WidgetUpdate> = room.latest.values().map(|v| room.update_of(v)).collect();
        Ok(vec![
            Frame::Dashboard {
                dashboard: &room.dashboard,
            }
            .encode()?,
            Frame::Update {
                seq: room.seq,
                sent_at: now,
                widgets: &updates,
            }
            .encode()?,
        ])
    }

    /// Every dashboard with a room here, with its widget ids.
    pub fn streamed(&self) -> Vec<(Uuid, Vec<Uuid>)> {
        self.rooms
            .iter()
            .map(|(id, r)| {
                (
                    *id,
                    r.dashboard.widgets.iter().map(|w| w.widget_id).collect(),
                )
            })
            .collect()
    }

    /// True without any room.
    pub fn is_empty(&self) -> bool {
        self.rooms.is_empty()
    }

    /// Number of rooms (dashboards streamed).
    pub fn len(&self) -> usize {
        self.rooms.len()
    }

    /// Every connection on this shard.
    pub fn outboxes(&self) -> impl Iterator<Item = &Rc<Outbox>> {
        self.rooms.values().flat_map(|r| &r.outboxes)
    }
}

mod remote;
#[cfg(test)]
mod tests;
