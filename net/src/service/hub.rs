//! The subscriber side of the fan-out: the streams one shard serves. Owner shards push
//! changed values here (`Push`); the hub gathers one tick's pushes, frames them once per
//! dashboard and writes the same bytes to every connection watching it. Dashboard edits
//! arrive as `DashboardChanged`; joins and leaves tell the owners what to send.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use glommio::sync::Semaphore;
use hashbrown::HashMap;
use livedash_engine::{Dashboard, Placement, WidgetValue};
use tungstenite::Bytes;
use uuid::Uuid;

use super::calls::{
    CallError, CatalogueError, DashboardChanged, GetDashboard, Push, ReadStates, Watch,
};
use super::mesh::ShardCall;
use super::metrics::Stamp;
use super::outbox::Offered;
use super::outbox::Outbox;
use super::rooms::{Changed, Delivery, InterestDelta, Joined, Rooms, by_owner};
use super::{CATALOGUE_SHARD, Services, cluster};
use crate::clock::now_ms;
use crate::frames::{Frame, Unavailable, WidgetSnapshot, WidgetUpdate};

/// How long the hub waits at most to gather the pushes of one tick, so a connection gets
/// one frame per tick. It waits only while a widget due at the same instant was not heard
/// of: owner shards report every widget they refresh, changed or not, so in standalone
/// mode the wait ends as soon as the last owner's push arrives, and this bound is for an
/// owner that fell behind. In cluster mode other nodes' values come through Redis a few
/// milliseconds after this node's own, and only when they changed.
const GATHER: Duration = Duration::from_millis(20);

/// A room's resync frames: the room's state and the time they were encoded at.
type Resync = (super::snapshots::Generation, std::time::Instant, Vec<Bytes>);

/// Resync frames are shared for at most this long after they were encoded.
const RESYNC_FRESH_FOR: Duration = Duration::from_millis(500);

/// Why a stream cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error(transparent)]
    Shard(#[from] CallError),
    #[error(transparent)]
    Catalogue(#[from] CatalogueError),
    #[error("cannot encode a frame: {0}")]
    Encode(#[from] serde_json::Error),
    /// A snapshot another joiner's build could not make.
    #[error("{0}")]
    Shared(String),
}

/// Every room of the shard, pushes waiting to be framed, and what was sent.
#[derive(Debug)]
pub struct Hub {
    /// Frames handed to connections, and frames written to sockets (at once by the hub,
    /// or later by the connection's writer).
    pub frames_queued: Cell<u64>,
    pub frames_written: Cell<u64>,
    /// Frames that could not be encoded (and were not sent).
    pub frames_unencodable: Cell<u64>,
    /// Sum and maximum of the time from framing to the socket write, in ms.
    pub write_lag_ms_sum: Cell<u64>,
    pub write_lag_ms_max: Cell<u64>,
    rooms: RefCell<Rooms>,
    pending: RefCell<Vec<(Uuid, WidgetValue)>>,
    /// (dashboard, widget) refreshed without a change since the last frames.
    unchanged: RefCell<Vec<(Uuid, Uuid)>>,
    /// When the oldest pending value was computed.
    pending_since: Cell<Option<i64>>,
    gathering: Cell<bool>,
    /// Rounds of gathering begun; a round framed early leaves its timer nothing to do.
    gather_round: Cell<u64>,
    /// Lets one delivery run at a time, in the order they were framed.
    delivering: Semaphore,
    /// Snapshots shared by the connections that join a room in the same state.
    pub snapshots: super::snapshots::Snapshots,
    /// Resync frames by room, with the state and time they were encoded at.
    resyncs: RefCell<HashMap<Uuid, Resync>>,
}

impl Hub {
    pub fn new(placement: Placement) -> Self {
        Self {
            frames_queued: Cell::new(0),
            frames_written: Cell::new(0),
            frames_unencodable: Cell::new(0),
            write_lag_ms_sum: Cell::new(0),
            write_lag_ms_max: Cell::new(0),
            rooms: RefCell::new(Rooms::new(placement)),
            pending: RefCell::new(Vec::new()),
            unchanged: RefCell::new(Vec::new()),
            pending_since: Cell::new(None),
            gathering: Cell::new(false),
            gather_round: Cell::new(0),
            delivering: Semaphore::new(1),
            snapshots: Default::default(),
            resyncs: RefCell::default(),
        }
    }

    /// Drops the shared snapshots and resync frames too old to be used again.
    pub fn prune_shared(&self) {
        self.snapshots.prune();
        self.resyncs
            .borrow_mut()
            .retain(|_, (_, made, _)| made.elapsed() < RESYNC_FRESH_FOR);
    }

    /// The state of dashboard `id`'s room (see `Rooms::generation`).
    pub fn generation(&self, id: Uuid) -> Option<(u64, u64)> {
        self.rooms.borrow().generation(id)
    }

    /// Adds a connection to dashboard `id`'s room; returns the dashboard, or `None` if it
    /// does not exist. The first connection of a room tells the owner shards to send its
    /// widgets here.
    pub async fn join(
        svc: &Rc<Services>,
        id: Uuid,
        outbox: &Rc<Outbox>,
    ) -> Result<Option<Rc<Dashboard>>, StreamError> {
        let hub = &svc.hub;
        let joined = hub.rooms.borrow_mut().join(id, outbox);
        if let Some(dashboard) = joined {
            if svc.cluster.is_some() {
                // The connection that opened the room may still be reading the stored
                // values of other nodes' widgets: the snapshot waits for them.
                let give_up = std::time::Instant::now() + Duration::from_secs(3);
                while hub.rooms.borrow().loaded(id) == Some(false)
                    && std::time::Instant::now() < give_up
                {
                    glommio::timer::sleep(Duration::from_millis(5)).await;
                }
            }
            return Ok(Some(dashboard));
        }
        hub.rooms.borrow_mut().begin_join(id);
        let fetched = match svc.call(CATALOGUE_SHARD, GetDashboard(id)).await {
            Ok(Ok(fetched)) => fetched,
            Ok(Err(e)) => {
                hub.rooms.borrow_mut().abandon_join(id);
                return Err(e.into());
            }
            Err(e) => {
                hub.rooms.borrow_mut().abandon_join(id);
                return Err(e.into());
            }
        };
        let joined = hub.rooms.borrow_mut().finish_join(id, fetched, outbox);
        match joined {
            Joined::Room(dashboard) => Ok(Some(dashboard)),
            Joined::Missing => Ok(None),
            Joined::Opened(dashboard, delta) => {
                let interest = change_interest(svc, id, delta).await;
                if svc.cluster.is_some() {
                    // Subscribed whatever the owner shards answered: the connections
                    // that join this room meanwhile need other nodes' values.
                    let widgets = dashboard.widgets.iter().map(|w| w.widget_id).collect();
                    let stored = cluster::open(svc, id, widgets).await;
                    // The snapshot that follows sends what was read.
                    hub.rooms.borrow_mut().stored(
                        id,
                        stored,
                        |m| svc.not_owned(m).is_none(),
                        svc.config.history_len,
                    );
                    if hub.rooms.borrow().loaded(id).is_none() {
                        // The room went while it opened (dashboard deleted, or every
                        // connection left): its subscription goes too.
                        cluster::close(svc, id);
                    }
                }
                interest?;
                Ok(Some(dashboard))
            }
        }
    }

    /// Removes a connection; the last one out closes the room and drops the interest.
    pub async fn leave(svc: &Rc<Services>, id: Uuid, outbox: &Rc<Outbox>) {
        let emptied = svc.hub.rooms.borrow_mut().leave(id, outbox);
        if let Some(delta) = emptied {
            cluster::close(svc, id);
            // Owners that miss this keep pushing values this shard drops; counted and
            // logged by the mesh.
            change_interest(svc, id, delta).await.ok();
        }
    }

    /// Keep-alive sweep, once per ping interval: wakes every stream to read what its peer
    /// sent and ping it (the stream closes itself if the peer stayed silent for two
    /// intervals). One timer per shard, not per socket.
    pub fn sweep(&self) {
        for o in self.rooms.borrow().outboxes() {
            o.ping();
        }
    }

    /// Closes every stream (node shutdown).
    pub fn close_all(&self, code: u16, reason: &str) {
        for o in self.rooms.borrow().outboxes() {
            o.close(code, reason);
        }
    }

    /// Counts a frame of `bytes` written now, with its stamp.
    pub fn written(svc: &Services, bytes: usize, stamp: &Stamp) {
        let now = now_ms();
        svc.metrics.frame_written(bytes, stamp, now);
        let hub = &svc.hub;
        hub.frames_written.set(hub.frames_written.get() + 1);
        hub.note_lag(now - stamp.framed_at);
    }

    fn note_lag(&self, lag_ms: i64) {
        let lag = u64::try_from(lag_ms).unwrap_or(0);
        self.write_lag_ms_sum.set(self.write_lag_ms_sum.get() + lag);
        self.write_lag_ms_max
            .set(self.write_lag_ms_max.get().max(lag));
    }

    /// True when this shard serves any stream.
    pub fn streaming(&self) -> bool {
        !self.rooms.borrow().is_empty()
    }

    /// Dashboards streamed on this shard.
    pub fn rooms(&self) -> usize {
        self.rooms.borrow().len()
    }

    /// Number of connections on this shard.
    pub fn connections(&self) -> usize {
        self.rooms.borrow().outboxes().count()
    }

    /// The frames that bring a lagging connection of dashboard `id` up to date: encoded
    /// once per room state (for half a second at most) and shared by every connection
    /// that lags behind at that state.
    pub fn resync_frames(&self, id: Uuid) -> Result<Vec<Bytes>, serde_json::Error> {
        let generation = self.generation(id);
        let mut cached = self.resyncs.borrow_mut();
        cached.retain(|_, (_, made, _)| made.elapsed() < RESYNC_FRESH_FOR);
        if let Some((at, _, frames)) = cached.get(&id)
            && Some(*at) == generation
        {
            return Ok(frames.clone());
        }
        let frames = self.rooms.borrow().resync_frames(id, now_ms())?;
        if let Some(g) = generation {
            cached.insert(id, (g, std::time::Instant::now(), frames.clone()));
        }
        Ok(frames)
    }

    /// Values pushed by an owner shard, and widgets it refreshed without a change. They
    /// are framed as soon as every widget of their rooms that refreshes at the same
    /// instants was heard of, or else a moment later, together with what the other owners
    /// pushed for the same tick meanwhile. `computed_at` is when the values were computed
    /// (epoch ms).
    pub fn pushed(
        svc: &Rc<Services>,
        values: Vec<(Uuid, WidgetValue)>,
        unchanged: Vec<(Uuid, Uuid)>,
        computed_at: i64,
    ) {
        let hub = &svc.hub;
        hub.pending.borrow_mut().extend(values);
        hub.unchanged.borrow_mut().extend(unchanged);
        let oldest = hub
            .pending_since
            .get()
            .map_or(computed_at, |t| t.min(computed_at));
        hub.pending_since.set(Some(oldest));
        let complete = hub
            .rooms
            .borrow()
            .complete(&hub.pending.borrow(), &hub.unchanged.borrow());
        if !complete && hub.gathering.replace(true) {
            return;
        }
        hub.gathering.set(!complete);
        let round = hub.gather_round.get() + 1;
        hub.gather_round.set(round);
        let svc = Rc::clone(svc);
        glommio::spawn_local(async move {
            if !complete {
                glommio::timer::sleep(GATHER).await;
                if svc.hub.gather_round.get() != round {
                    // Framed early by a later push.
                    return;
                }
            }
            let hub = &svc.hub;
            hub.gathering.set(false);
            let pending = std::mem::take(&mut *hub.pending.borrow_mut());
            hub.unchanged.borrow_mut().clear();
            let computed_at = hub.pending_since.take();
            let (deliveries, unencodable) =
                hub.rooms.borrow_mut().frame(pending, now_ms(), computed_at);
            hub.frames_unencodable
                .set(hub.frames_unencodable.get() + unencodable);
            // A fan-out that takes longer than a refresh interval must not let the next
            // tick's frames overtake its own on the connections it has not reached yet.
            // The semaphore is never closed, so the permit always comes.
            if let Ok(_turn) = hub.delivering.acquire_permit(1).await {
                Self::deliver(&svc, deliveries).await;
            }
        })
        .detach();
    }

    /// Cluster mode: values another node published for dashboard `dashboard`; those of
    /// widgets this node does not own are framed like local pushes.
    pub fn remote(svc: &Rc<Services>, dashboard: Uuid, values: Vec<WidgetValue>) {
        let history_len = svc.config.history_len;
        let taken = svc.hub.rooms.borrow_mut().remote(
            dashboard,
            values,
            |m| svc.not_owned(m).is_none(),
            history_len,
            now_ms(),
        );
        if !taken.is_empty() {
            let values = taken.into_iter().map(|v| (dashboard, v)).collect();
            Self::pushed(svc, values, Vec::new(), now_ms());
        }
    }

    /// Cluster mode: reads the stored values of every streamed dashboard again (values
    /// published while the subscription was down were lost) and sends them.
    pub async fn reread_remote(svc: &Rc<Services>) {
        let streamed = svc.hub.rooms.borrow().streamed();
        for (id, widgets) in streamed {
            svc.hub.rooms.borrow_mut().begin_read(id);
            let stored = cluster::reread(svc, id, widgets).await;
            let newer = svc.hub.rooms.borrow_mut().stored(
                id,
                stored,
                |m| svc.not_owned(m).is_none(),
                svc.config.history_len,
            );
            if !newer.is_empty() {
                let newer = newer.into_iter().map(|v| (id, v)).collect();
                Self::pushed(svc, newer, Vec::new(), now_ms());
            }
        }
    }

    /// Cluster mode: tells streams which widgets of other nodes turned stale (their
    /// owner was not heard refreshing for two refresh intervals) or fresh again.
    pub async fn check_stale(svc: &Rc<Services>) {
        let Some(link) = &svc.cluster else { return };
        let now = now_ms();
        let deliveries = svc.hub.rooms.borrow_mut().stale_frames(now, |w| {
            // A widget this node owns (a partition that moved here) is fresh: its owner
            // shard pushes what it computes.
            svc.not_owned(&w.spec.metric_name).is_some_and(|partition| {
                let interval = (w.spec.refresh_interval_seconds * 1000.0) as i64;
                link.stale(partition, interval, now)
            })
        });
        if let Ok(_turn) = svc.hub.delivering.acquire_permit(1).await {
            Self::deliver(svc, deliveries).await;
        }
    }

    /// Hands `frame` to one connection, counting it as written if the socket took it.
    fn offer(svc: &Services, outbox: &Outbox, frame: &Bytes, stamp: Stamp) {
        let hub = &svc.hub;
        hub.frames_queued.set(hub.frames_queued.get() + 1);
        match outbox.offer(frame, stamp) {
            Offered::Written => Self::written(svc, frame.len(), &stamp),
            Offered::Queued => {}
            // The frame counts as written once its rest is.
            Offered::Started(n) => svc.metrics.bytes_sent_partly(n),
            Offered::Conflated => {
                let c = &svc.metrics.conflations;
                c.set(c.get() + 1);
            }
        }
    }

    /// Writes each frame to its connections, yielding now and then so the shard's other
    /// work (ingest, its own ticks) is not held up by a large fan-out.
    async fn deliver(svc: &Services, deliveries: Vec<Delivery>) {
        let mut handed = 0usize;
        for d in deliveries {
            for o in &d.outboxes {
                Self::offer(svc, o, &d.frame, d.stamp);
                handed += 1;
                if handed.is_multiple_of(64) {
                    glommio::executor().yield_now().await;
                }
            }
        }
    }
}

/// Tells every owner shard which widgets this shard now streams or no longer streams.
async fn change_interest(
    svc: &Rc<Services>,
    dashboard: Uuid,
    delta: InterestDelta,
) -> Result<(), CallError> {
    let mut outcome = Ok(());
    for (owner, add, remove) in delta.per_owner() {
        let watch = Watch {
            shard: svc.id,
            dashboard,
            add,
            remove,
        };
        if let Err(e) = svc.call(owner, watch).await {
            outcome = Err(e);
        }
    }
    outcome
}

/// The `snapshot` frame of a stream: every widget's value now and its history, from the
/// owners, in the dashboard's order.
pub async fn snapshot(svc: &Rc<Services>, dashboard: &Dashboard) -> Result<Bytes, StreamError> {
    let per_owner = by_owner(dashboard, svc.placement);
    let mut widgets: Vec<WidgetSnapshot> = Vec::with_capacity(dashboard.widgets.len());
    let mut unavailable = Vec::new();
    for (owner, ids) in per_owner.into_iter().enumerate() {
        if ids.is_empty() {
            continue;
        }
        let read = svc.call(owner, ReadStates(ids)).await?;
        for state in read.states {
            widgets.push(WidgetSnapshot {
                current: WidgetUpdate::of(&state.value, state.stale),
                history: state.history,
                details: state.details,
            });
        }
        for (widget_id, partition) in read.not_owned {
            match remote_snapshot(svc, dashboard, widget_id, partition) {
                Some(w) => widgets.push(w),
                None => unavailable.push(Unavailable {
                    widget_id,
                    reason: format!(
                        "no value yet from the node that owns Kafka partition {partition}, \
                         where the widget's metric is"
                    ),
                }),
            }
        }
    }
    let order = |id: &Uuid| dashboard.widgets.iter().position(|w| &w.widget_id == id);
    widgets.sort_by_key(|w| order(&w.current.widget_id));
    let nodes = svc
        .cluster
        .as_ref()
        .map(cluster::ClusterLink::node_urls)
        .unwrap_or_default();
    Ok(Frame::Snapshot {
        dashboard,
        widgets: &widgets,
        unavailable: &unavailable,
        nodes: &nodes,
    }
    .encode()?)
}

/// Cluster mode: a widget another node owns, as this shard's room heard of it.
fn remote_snapshot(
    svc: &Services,
    dashboard: &Dashboard,
    widget: Uuid,
    partition: u32,
) -> Option<WidgetSnapshot> {
    let link = svc.cluster.as_ref()?;
    let spec = &dashboard
        .widgets
        .iter()
        .find(|w| w.widget_id == widget)?
        .spec;
    let heard = svc
        .hub
        .rooms
        .borrow()
        .remote_state(dashboard.dashboard_id, &widget)?;
    let interval = (spec.refresh_interval_seconds * 1000.0) as i64;
    Some(WidgetSnapshot {
        current: WidgetUpdate::of(&heard.value, link.stale(partition, interval, now_ms())),
        history: heard.history,
        details: heard.details,
    })
}

impl ShardCall for Push {
    type Reply = ();

    async fn run(self, svc: &Rc<Services>) {
        Hub::pushed(svc, self.values, self.unchanged, self.computed_at);
    }
}

impl ShardCall for DashboardChanged {
    type Reply = ();

    async fn run(self, svc: &Rc<Services>) {
        let changed = svc.hub.rooms.borrow_mut().changed(self.id, self.news);
        let delta = match changed {
            Changed::Ignored => return,
            Changed::Deleted(outboxes, delta) => {
                cluster::close(svc, self.id);
                for o in outboxes {
                    o.close(4410, "dashboard deleted");
                }
                delta
            }
            Changed::Updated {
                frame,
                outboxes,
                delta,
            } => {
                match frame {
                    Ok(frame) => {
                        let stamp = Stamp::framed(now_ms());
                        for o in &outboxes {
                            Hub::offer(svc, o, &frame, stamp);
                        }
                    }
                    Err(e) => {
                        let hub = &svc.hub;
                        hub.frames_unencodable.set(hub.frames_unencodable.get() + 1);
                        tracing::error!("cannot encode dashboard {}: {e}", self.id);
                        for o in outboxes {
                            o.close(1011, "cannot encode the dashboard");
                        }
                    }
                }
                delta
            }
        };
        // Failures are counted and logged by the mesh.
        change_interest(svc, self.id, delta).await.ok();
    }
}
