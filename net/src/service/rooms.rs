//! The bookkeeping of the streams one shard serves, without I/O: rooms (the connections
//! of one dashboard), joins in flight, dashboard versions, the interest each room needs
//! from the owner shards, and one encoded frame per room and tick.

use std::rc::Rc;

use hashbrown::HashMap;
use livedash_engine::{Dashboard, Placement, WidgetValue};
use tungstenite::Bytes;
use uuid::Uuid;

use super::outbox::Outbox;
use crate::catalogue::Versioned;
use crate::frames::{Frame, WidgetUpdate};

/// The connections of one dashboard on this shard.
#[derive(Debug)]
struct Room {
    dashboard: Dashboard,
    /// Catalogue version of `dashboard`; older news is ignored.
    version: u64,
    outboxes: Vec<Rc<Outbox>>,
    /// Update frames sent to this room.
    seq: u64,
    /// The newest value of each widget, for connections that fall behind.
    latest: HashMap<Uuid, WidgetValue>,
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
    Room(Dashboard),
    /// The connection opened the room; the owners must be told of `delta`.
    Opened(Dashboard, InterestDelta),
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
    pub framed_at: i64,
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

    /// Adds a connection to dashboard `id`'s room if it is open.
    pub fn join(&mut self, id: Uuid, outbox: &Rc<Outbox>) -> Option<Dashboard> {
        let room = self.rooms.get_mut(&id)?;
        room.outboxes.push(Rc::clone(outbox));
        Some(room.dashboard.clone())
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
        let Some(dashboard) = newest.dashboard else {
            return Joined::Missing;
        };
        let delta = InterestDelta::whole(&dashboard, self.placement, true);
        self.rooms.insert(
            id,
            Room {
                dashboard: dashboard.clone(),
                version: newest.version,
                outboxes: vec![Rc::clone(outbox)],
                seq: 0,
                latest: HashMap::new(),
            },
        );
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
            }
        }
        room.dashboard = new;
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
    pub fn frame(&mut self, pending: Vec<(Uuid, WidgetValue)>, now: i64) -> (Vec<Delivery>, u64) {
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
            let updates: Vec<WidgetUpdate> =
                shown.iter().map(|v| WidgetUpdate::of(v, false)).collect();
            for v in shown {
                room.latest.insert(v.widget_id, v);
            }
            if updates.is_empty() {
                continue;
            }
            room.seq += 1;
            let frame = Frame::Update {
                seq: room.seq,
                sent_at: now,
                widgets: &updates,
            }
            .encode();
            match frame {
                Ok(frame) => deliveries.push(Delivery {
                    frame,
                    framed_at: now,
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
        let updates: Vec<WidgetUpdate> = room
            .latest
            .values()
            .map(|v| WidgetUpdate::of(v, false))
            .collect();
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

    /// Every connection on this shard.
    pub fn outboxes(&self) -> impl Iterator<Item = &Rc<Outbox>> {
        self.rooms.values().flat_map(|r| &r.outboxes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use livedash_engine::{Widget, WidgetSpec};

    /// Two shards; metrics "a" and "b" land on different ones.
    const SHARDS: usize = 2;

    fn metric_on(shard: usize) -> String {
        (0..)
            .map(|i| format!("m{i}"))
            .find(|m| livedash_engine::shard_for(m, SHARDS) == shard)
            .unwrap()
    }

    fn widget(id: u128, metric: &str) -> Widget {
        let spec: WidgetSpec = serde_json::from_value(serde_json::json!({
            "metric_name": metric, "aggregation": "sum", "window_seconds": 60,
            "refresh_interval_seconds": 1.0
        }))
        .unwrap();
        Widget::new(Uuid::from_u128(id), Uuid::from_u128(1), spec)
    }

    fn dashboard(widgets: Vec<Widget>) -> Dashboard {
        Dashboard {
            dashboard_id: Uuid::from_u128(1),
            name: "d".into(),
            layout: serde_json::Value::Null,
            widgets,
        }
    }

    fn at(version: u64, d: Option<Dashboard>) -> Versioned {
        Versioned {
            version,
            dashboard: d,
        }
    }

    fn value(widget: u128) -> WidgetValue {
        WidgetValue {
            widget_id: Uuid::from_u128(widget),
            value: Some(2.0),
            window_end: 1000,
            latest_event_time: Some(999),
            count: 1,
        }
    }

    const ID: Uuid = Uuid::from_u128(1);

    fn opened(rooms: &mut Rooms, d: Dashboard, outbox: &Rc<Outbox>) -> InterestDelta {
        rooms.begin_join(ID);
        match rooms.finish_join(ID, at(1, Some(d)), outbox) {
            Joined::Opened(_, delta) => delta,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn first_join_adds_interest_and_last_leave_drops_it() {
        let (a, b) = (metric_on(0), metric_on(1));
        let d = dashboard(vec![widget(10, &a), widget(11, &b)]);
        let mut rooms = Rooms::new(Placement::standalone(SHARDS));
        let (o1, o2) = (Rc::new(Outbox::default()), Rc::new(Outbox::default()));
        let delta = opened(&mut rooms, d.clone(), &o1);
        assert_eq!(
            delta.add,
            vec![vec![Uuid::from_u128(10)], vec![Uuid::from_u128(11)]]
        );
        // A second connection joins the open room: no new interest.
        assert_eq!(rooms.join(ID, &o2), Some(d));
        assert_eq!(rooms.leave(ID, &o1), None);
        let gone = rooms.leave(ID, &o2).unwrap();
        assert_eq!(
            gone.remove,
            vec![vec![Uuid::from_u128(10)], vec![Uuid::from_u128(11)]]
        );
        assert_eq!(gone.per_owner().count(), 2);
        assert_eq!(rooms.outboxes().count(), 0);
    }

    #[test]
    fn an_edit_moves_interest_between_owners() {
        let (a, b) = (metric_on(0), metric_on(1));
        let mut rooms = Rooms::new(Placement::standalone(SHARDS));
        let o = Rc::new(Outbox::default());
        opened(
            &mut rooms,
            dashboard(vec![widget(10, &a), widget(11, &a)]),
            &o,
        );
        // Widget 10 moves to a metric on shard 1, 11 is removed, 12 is added.
        let new = dashboard(vec![widget(10, &b), widget(12, &a)]);
        let Changed::Updated {
            frame,
            outboxes,
            delta,
        } = rooms.changed(ID, at(2, Some(new)))
        else {
            panic!("not updated");
        };
        assert!(frame.is_ok());
        assert_eq!(outboxes.len(), 1);
        assert_eq!(
            delta.add,
            vec![vec![Uuid::from_u128(12)], vec![Uuid::from_u128(10)]]
        );
        let mut removed = delta.remove[0].clone();
        removed.sort();
        assert_eq!(removed, vec![Uuid::from_u128(10), Uuid::from_u128(11)]);
        // The same news again, or older news, changes nothing.
        assert!(matches!(rooms.changed(ID, at(2, None)), Changed::Ignored));
        assert!(matches!(rooms.changed(ID, at(1, None)), Changed::Ignored));
    }

    #[test]
    fn a_dashboard_deleted_while_a_stream_joins_it() {
        let d = dashboard(vec![widget(10, &metric_on(0))]);
        let mut rooms = Rooms::new(Placement::standalone(SHARDS));
        let o = Rc::new(Outbox::default());
        rooms.begin_join(ID);
        // The deletion (version 2) arrives before the fetched dashboard (version 1).
        assert!(matches!(rooms.changed(ID, at(2, None)), Changed::Ignored));
        assert!(matches!(
            rooms.finish_join(ID, at(1, Some(d.clone())), &o),
            Joined::Missing
        ));
        assert_eq!(rooms.outboxes().count(), 0);
        // A later join is not affected by the old news.
        rooms.begin_join(ID);
        assert!(matches!(
            rooms.finish_join(ID, at(3, Some(d)), &o),
            Joined::Opened(..)
        ));
    }

    #[test]
    fn a_deletion_closes_the_room_and_drops_its_interest() {
        let d = dashboard(vec![widget(10, &metric_on(1))]);
        let mut rooms = Rooms::new(Placement::standalone(SHARDS));
        let o = Rc::new(Outbox::default());
        opened(&mut rooms, d, &o);
        let Changed::Deleted(outboxes, delta) = rooms.changed(ID, at(2, None)) else {
            panic!("not deleted");
        };
        assert!(Rc::ptr_eq(&outboxes[0], &o));
        assert_eq!(delta.remove[1], vec![Uuid::from_u128(10)]);
        // The stream leaving afterwards finds no room and owes nothing.
        assert_eq!(rooms.leave(ID, &o), None);
    }

    #[test]
    fn a_change_during_a_join_is_not_lost() {
        let a = metric_on(0);
        let mut rooms = Rooms::new(Placement::standalone(SHARDS));
        let o = Rc::new(Outbox::default());
        rooms.begin_join(ID);
        let newer = dashboard(vec![widget(10, &a), widget(11, &a)]);
        rooms.changed(ID, at(5, Some(newer.clone())));
        match rooms.finish_join(ID, at(4, Some(dashboard(vec![widget(10, &a)]))), &o) {
            Joined::Opened(d, delta) => {
                assert_eq!(d, newer);
                assert_eq!(delta.add[0].len(), 2);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn one_frame_per_room_and_only_widgets_still_shown() {
        let a = metric_on(0);
        let mut rooms = Rooms::new(Placement::standalone(SHARDS));
        let (o1, o2) = (Rc::new(Outbox::default()), Rc::new(Outbox::default()));
        opened(
            &mut rooms,
            dashboard(vec![widget(10, &a), widget(11, &a)]),
            &o1,
        );
        rooms.join(ID, &o2);
        let pending = vec![(ID, value(10)), (ID, value(11)), (ID, value(77))];
        let (deliveries, unencodable) = rooms.frame(pending, 5);
        assert_eq!((deliveries.len(), unencodable), (1, 0));
        assert_eq!(deliveries[0].outboxes.len(), 2);
        let text = String::from_utf8_lossy(&deliveries[0].frame).to_string();
        assert!(text.contains(r#""seq":1"#), "{text}");
        assert_eq!(text.matches("widget_id").count(), 2, "{text}");
        // A resync carries the dashboard and both newest values.
        let resync = rooms.resync_frames(ID, 6).unwrap();
        assert_eq!(resync.len(), 2);
        assert_eq!(
            String::from_utf8_lossy(&resync[1])
                .matches("widget_id")
                .count(),
            2
        );
        // Values for a dashboard with no room here go nowhere.
        let (none, _) = rooms.frame(vec![(Uuid::from_u128(2), value(10))], 7);
        assert!(none.is_empty());
    }
}
