//! The streams one shard serves, grouped by dashboard ("rooms"). Owner shards push changed
//! values here; the hub turns each batch into one frame per dashboard, shared by every
//! connection watching it, and keeps the newest value of each widget for clients that
//! fall behind.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::io::Write;
use std::rc::Rc;
use std::time::Duration;

use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use glommio::net::TcpStream;
use glommio::sync::Semaphore;
use hashbrown::HashMap;
use livedash_engine::shard::WidgetValue;
use livedash_engine::{Dashboard, Widget, shard_for};
use tungstenite::Bytes;
use uuid::Uuid;

use super::frames::{Frame, WidgetUpdate};
use crate::node::mesh::{Call, Reply};
use crate::node::{ShardCtx, now_ms};

/// Frames queued for one connection before it counts as lagging.
const MAX_QUEUED_FRAMES: usize = 16;
/// How long the hub waits to gather the pushes of one tick from every owner shard, so a
/// connection gets one frame per tick.
const GATHER: Duration = Duration::from_millis(2);

/// Why the server ends a stream.
#[derive(Debug, Clone, PartialEq)]
pub struct Closing {
    pub code: u16,
    pub reason: String,
}

/// One connection's socket, while its writer is idle, and what it is waiting to send.
#[derive(Debug)]
pub struct Outbox {
    /// Encoded frames with the time (epoch ms) they were framed.
    queue: RefCell<VecDeque<(Bytes, i64)>>,
    /// The rest of a frame the hub began writing straight to the socket: it goes out
    /// before anything else, and conflation never drops it.
    tail: RefCell<Option<(Bytes, i64)>>,
    /// The queue overflowed: the writer must send the dashboard and every newest value.
    resync: Cell<bool>,
    closing: RefCell<Option<Closing>>,
    /// A keep-alive ping is due.
    ping: Cell<bool>,
    /// When the peer last sent anything.
    pub last_heard: Cell<std::time::Instant>,
    /// The socket while the stream's writer has nothing to do: the hub writes frames
    /// straight to it, without waking the writer. The writer takes it back to write
    /// what the socket did not take at once.
    pub(super) socket: RefCell<Option<TcpStream>>,
    wake_tx: LocalSender<()>,
    pub wake_rx: LocalReceiver<()>,
}

impl Outbox {
    pub fn new() -> Self {
        let (wake_tx, wake_rx) = local_channel::new_bounded(1);
        Self {
            queue: RefCell::new(VecDeque::new()),
            tail: RefCell::new(None),
            resync: Cell::new(false),
            closing: RefCell::new(None),
            ping: Cell::new(false),
            last_heard: Cell::new(std::time::Instant::now()),
            socket: RefCell::new(None),
            wake_tx,
            wake_rx,
        }
    }

    fn wake(&self) {
        let _ = self.wake_tx.try_send(());
    }

    /// Hands a frame to the connection. If its writer is idle with nothing queued, the
    /// frame goes straight to the socket (the common case: a socket with room in its
    /// send buffer takes it whole); otherwise it is queued for the writer. Returns
    /// whether the frame was written whole.
    pub fn offer(&self, frame: &Bytes, framed_at: i64) -> bool {
        let idle = self.queue.borrow().is_empty()
            && self.tail.borrow().is_none()
            && !self.resync.get()
            && self.closing.borrow().is_none();
        if idle
            && let Ok(socket) = self.socket.try_borrow()
            && let Some(socket) = socket.as_ref()
        {
            // The socket does not block (see `session`).
            let sock = socket2::SockRef::from(socket);
            match (&*sock).write(frame) {
                Ok(n) if n == frame.len() => return true,
                Ok(n) => {
                    *self.tail.borrow_mut() = Some((frame.slice(n..), framed_at));
                    self.wake();
                    return false;
                }
                // Full, or broken: the writer waits for room, or finds the error.
                Err(_) => {}
            }
        }
        self.push(frame.clone(), framed_at);
        false
    }

    /// Queues a frame; past the bound the queue is dropped and replaced by a resync of the
    /// newest values (conflation).
    fn push(&self, frame: Bytes, framed_at: i64) {
        let mut queue = self.queue.borrow_mut();
        if queue.len() >= MAX_QUEUED_FRAMES {
            queue.clear();
            self.resync.set(true);
        } else if !self.resync.get() {
            queue.push_back((frame, framed_at));
        }
        drop(queue);
        self.wake();
    }

    pub fn pop(&self) -> Option<(Bytes, i64)> {
        self.queue.borrow_mut().pop_front()
    }

    pub fn take_tail(&self) -> Option<(Bytes, i64)> {
        self.tail.borrow_mut().take()
    }

    pub fn take_resync(&self) -> bool {
        self.resync.replace(false)
    }

    pub fn close(&self, code: u16, reason: &str) {
        let mut closing = self.closing.borrow_mut();
        if closing.is_none() {
            *closing = Some(Closing {
                code,
                reason: reason.to_string(),
            });
        }
        drop(closing);
        self.wake();
    }

    pub fn closing(&self) -> Option<Closing> {
        self.closing.borrow().clone()
    }

    pub fn take_ping(&self) -> bool {
        self.ping.replace(false)
    }
}

impl Default for Outbox {
    fn default() -> Self {
        Self::new()
    }
}

/// The connections of one dashboard on this shard.
#[derive(Debug)]
struct Room {
    dashboard: Dashboard,
    outboxes: Vec<Rc<Outbox>>,
    seq: u64,
    latest: HashMap<Uuid, WidgetValue>,
}

/// One encoded frame and the connections of its room.
struct Delivery {
    frame: Bytes,
    framed_at: i64,
    outboxes: Vec<Rc<Outbox>>,
}

/// Lets one delivery run at a time, in the order they were framed.
#[derive(Debug)]
struct InOrder(Semaphore);

impl Default for InOrder {
    fn default() -> Self {
        Self(Semaphore::new(1))
    }
}

/// Every room of the shard, plus pushes waiting to be framed.
#[derive(Debug, Default)]
pub struct Hub {
    /// Frames handed to connections, and frames written to sockets (at once by the hub,
    /// or later by the connection's writer).
    pub frames_queued: Cell<u64>,
    pub frames_written: Cell<u64>,
    /// Sum and maximum of the time from framing to the socket write, in ms.
    pub write_lag_ms_sum: Cell<u64>,
    pub write_lag_ms_max: Cell<u64>,
    rooms: RefCell<HashMap<Uuid, Room>>,
    pending: RefCell<Vec<(Uuid, WidgetValue)>>,
    gathering: Cell<bool>,
    delivering: InOrder,
}

/// Widget ids of `widgets` grouped by owner shard.
pub(crate) fn by_owner<'a>(
    widgets: impl Iterator<Item = &'a Widget>,
    shards: usize,
) -> Vec<Vec<Uuid>> {
    let mut out = vec![Vec::new(); shards];
    for w in widgets {
        out[shard_for(&w.spec.metric_name, shards)].push(w.widget_id);
    }
    out
}

/// Tells every owner shard which widgets this shard now wants (`add`) or no longer wants.
async fn change_interest(
    ctx: &Rc<ShardCtx>,
    dashboard: Uuid,
    add: Vec<Vec<Uuid>>,
    remove: Vec<Vec<Uuid>>,
) {
    for (owner, (add, remove)) in add.into_iter().zip(remove).enumerate() {
        if add.is_empty() && remove.is_empty() {
            continue;
        }
        let call = Call::Interest {
            shard: ctx.id,
            dashboard,
            add,
            remove,
        };
        if let Reply::Failed(reason) = ctx.call(owner, call).await {
            tracing::warn!(shard = ctx.id, "interest on shard {owner}: {reason}");
        }
    }
}

impl Hub {
    /// Adds a connection to dashboard `id`'s room; returns the dashboard, or `None` if it
    /// does not exist.
    pub async fn join(ctx: &Rc<ShardCtx>, id: Uuid, outbox: &Rc<Outbox>) -> Option<Dashboard> {
        if let Some(room) = ctx.hub.rooms.borrow_mut().get_mut(&id) {
            room.outboxes.push(Rc::clone(outbox));
            return Some(room.dashboard.clone());
        }
        let dashboard = match ctx.call(0, Call::GetDashboard(id)).await {
            Reply::Dashboard(d) => d?,
            _ => return None,
        };
        // Another connection may have opened the room while we waited.
        if let Some(room) = ctx.hub.rooms.borrow_mut().get_mut(&id) {
            room.outboxes.push(Rc::clone(outbox));
            return Some(room.dashboard.clone());
        }
        ctx.hub.rooms.borrow_mut().insert(
            id,
            Room {
                dashboard: dashboard.clone(),
                outboxes: vec![Rc::clone(outbox)],
                seq: 0,
                latest: HashMap::new(),
            },
        );
        let add = by_owner(dashboard.widgets.iter(), ctx.shards);
        change_interest(ctx, id, add, vec![Vec::new(); ctx.shards]).await;
        Some(dashboard)
    }

    /// Removes a connection; the last one out closes the room and drops the interest.
    pub async fn leave(ctx: &Rc<ShardCtx>, id: Uuid, outbox: &Rc<Outbox>) {
        let emptied = {
            let mut rooms = ctx.hub.rooms.borrow_mut();
            let Some(room) = rooms.get_mut(&id) else {
                return;
            };
            room.outboxes.retain(|o| !Rc::ptr_eq(o, outbox));
            if room.outboxes.is_empty() {
                rooms.remove(&id)
            } else {
                None
            }
        };
        if let Some(room) = emptied {
            let remove = by_owner(room.dashboard.widgets.iter(), ctx.shards);
            change_interest(ctx, id, vec![Vec::new(); ctx.shards], remove).await;
        }
    }

    /// Keep-alive sweep, once per ping interval: wakes every stream to read what its peer
    /// sent and ping it (the stream closes itself if the peer stayed silent for two
    /// intervals). One timer per shard, not per socket.
    pub fn sweep(&self) {
        for room in self.rooms.borrow().values() {
            for o in &room.outboxes {
                o.ping.set(true);
                o.wake();
            }
        }
    }

    /// Closes every stream (node shutdown).
    pub fn close_all(&self, code: u16, reason: &str) {
        for room in self.rooms.borrow().values() {
            for o in &room.outboxes {
                o.close(code, reason);
            }
        }
    }

    /// Counts a frame written `lag_ms` after it was framed.
    pub fn written(&self, lag_ms: i64) {
        let lag = u64::try_from(lag_ms).unwrap_or(0);
        self.frames_written.set(self.frames_written.get() + 1);
        self.write_lag_ms_sum.set(self.write_lag_ms_sum.get() + lag);
        self.write_lag_ms_max
            .set(self.write_lag_ms_max.get().max(lag));
    }

    /// Number of connections on this shard.
    pub fn connections(&self) -> usize {
        self.rooms.borrow().values().map(|r| r.outboxes.len()).sum()
    }

    /// A dashboard changed (or was deleted, `None`): tell its connections and follow its
    /// widgets.
    pub async fn dashboard_changed(ctx: &Rc<ShardCtx>, id: Uuid, dashboard: Option<Dashboard>) {
        let Some(new) = dashboard else {
            if let Some(room) = ctx.hub.rooms.borrow_mut().remove(&id) {
                for o in &room.outboxes {
                    o.close(4410, "dashboard deleted");
                }
            }
            return;
        };
        let (add, remove) = {
            let mut rooms = ctx.hub.rooms.borrow_mut();
            let Some(room) = rooms.get_mut(&id) else {
                return;
            };
            let owner = |w: &Widget| shard_for(&w.spec.metric_name, ctx.shards);
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
            let mut add = vec![Vec::new(); ctx.shards];
            let mut remove = vec![Vec::new(); ctx.shards];
            for (w, o) in &now {
                if old.get(w) != Some(o) {
                    add[*o].push(*w);
                }
            }
            for (w, o) in &old {
                if now.get(w) != Some(o) {
                    remove[*o].push(*w);
                }
                if !now.contains_key(w) {
                    room.latest.remove(w);
                }
            }
            room.dashboard = new;
            let frame = Frame::Dashboard {
                dashboard: &room.dashboard,
            }
            .encode();
            let now = now_ms();
            for o in &room.outboxes {
                ctx.hub.offer(o, &frame, now);
            }
            (add, remove)
        };
        change_interest(ctx, id, add, remove).await;
    }

    /// Values pushed by an owner shard. They are framed a moment later, together with the
    /// pushes of the other owners for the same tick.
    pub fn pushed(ctx: &Rc<ShardCtx>, values: Vec<(Uuid, WidgetValue)>) {
        ctx.hub.pending.borrow_mut().extend(values);
        if ctx.hub.gathering.replace(true) {
            return;
        }
        let ctx = Rc::clone(ctx);
        glommio::spawn_local(async move {
            glommio::timer::sleep(GATHER).await;
            ctx.hub.gathering.set(false);
            let pending = std::mem::take(&mut *ctx.hub.pending.borrow_mut());
            let deliveries = ctx.hub.frame(pending);
            // A fan-out that takes longer than a refresh interval must not let the next
            // tick's frames overtake its own on the connections it has not reached yet.
            let Ok(_turn) = ctx.hub.delivering.0.acquire_permit(1).await else {
                return;
            };
            ctx.hub.deliver(deliveries).await;
        })
        .detach();
    }

    /// Hands `frame` to one connection, counting it as written if the socket took it.
    fn offer(&self, outbox: &Outbox, frame: &Bytes, framed_at: i64) {
        self.frames_queued.set(self.frames_queued.get() + 1);
        if outbox.offer(frame, framed_at) {
            self.written(now_ms() - framed_at);
        }
    }

    /// Writes each frame to its connections, yielding now and then so the shard's other
    /// work (ingest, its own ticks) is not held up by a large fan-out.
    async fn deliver(&self, deliveries: Vec<Delivery>) {
        let mut handed = 0usize;
        for d in deliveries {
            for o in &d.outboxes {
                self.offer(o, &d.frame, d.framed_at);
                handed += 1;
                if handed.is_multiple_of(64) {
                    glommio::yield_if_needed().await;
                }
            }
        }
    }

    /// One frame per room from the pushed values, with the connections it goes to.
    fn frame(&self, pending: Vec<(Uuid, WidgetValue)>) -> Vec<Delivery> {
        let mut by_room: HashMap<Uuid, Vec<WidgetValue>> = HashMap::new();
        for (dashboard, value) in pending {
            by_room.entry(dashboard).or_default().push(value);
        }
        let sent_at = now_ms();
        let mut rooms = self.rooms.borrow_mut();
        let mut deliveries = Vec::with_capacity(by_room.len());
        for (id, values) in by_room {
            let Some(room) = rooms.get_mut(&id) else {
                continue;
            };
            // Only widgets still on the dashboard: a value can cross an edit in flight.
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
                sent_at,
                widgets: &updates,
            }
            .encode();
            deliveries.push(Delivery {
                frame,
                framed_at: sent_at,
                outboxes: room.outboxes.clone(),
            });
        }
        deliveries
    }

    /// The frames that bring a lagging connection up to date: the dashboard, then every
    /// newest value.
    pub fn resync_frames(&self, id: Uuid) -> Vec<Bytes> {
        let rooms = self.rooms.borrow();
        let Some(room) = rooms.get(&id) else {
            return Vec::new();
        };
        let updates: Vec<WidgetUpdate> = room
            .latest
            .values()
            .map(|v| WidgetUpdate::of(v, false))
            .collect();
        vec![
            Frame::Dashboard {
                dashboard: &room.dashboard,
            }
            .encode(),
            Frame::Update {
                seq: room.seq,
                sent_at: now_ms(),
                widgets: &updates,
            }
            .encode(),
        ]
    }
}
