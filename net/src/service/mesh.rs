//! Typed calls between shards over glommio's channel mesh. Each call is a struct with a
//! reply type of its own (`ShardCall`); a call to another shard is one message each way and
//! has a deadline, so a lost or failed reply is an error for the caller, never a hang.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_lite::FutureExt;
use glommio::channels::channel_mesh::{Full, MeshBuilder, Senders};
use glommio::channels::local_channel::{self, LocalSender};
use glommio::timer::sleep;
use hashbrown::HashMap;

use super::Services;
use super::calls::{
    Alerts, ApplyEvents, DashboardChanged, EditDashboards, EncodedDashboard, EncodedDashboards,
    GetDashboard, InstallWidgets, ListDashboards, LocateWidget, Push, ReadStates, ReadValue,
    RecentMetrics, Stats, Watch,
};
pub use super::calls::{CallError, Failure};

/// One mesh builder per shard, every one cloned here before any shard starts.
///
/// glommio's `MeshBuilder` is `Send` but counts its clones with a non-atomic `Rc`, and
/// `join` drops the clone it is given. Clones made or dropped on several executor threads
/// at once corrupt that count, and a shard then frees the builder while another still
/// reads it (heap corruption at start-up, about one node in a hundred). So all clones are
/// made on the starting thread, each shard takes its own out by move, and one clone is
/// never dropped: the shards' concurrent drops can then at worst lose a decrement (a few
/// bytes kept), never free the builder under another shard.
#[derive(Debug)]
pub struct MeshSeats(Mutex<Vec<MeshBuilder<Msg, Full>>>);

impl MeshSeats {
    pub fn new(shards: usize, capacity: usize) -> Arc<Self> {
        let builder = MeshBuilder::full(shards, capacity);
        let seats = (0..shards).map(|_| builder.clone()).collect();
        std::mem::forget(builder);
        Arc::new(Self(Mutex::new(seats)))
    }

    /// This shard's builder, to `join`. Each shard takes one.
    pub fn take(&self) -> Option<MeshBuilder<Msg, Full>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).pop()
    }
}

/// A request one shard makes of another, answered with `Reply`.
///
/// `run` executes it on the shard it is addressed to. Executors are single-threaded, so
/// the future need not be `Send`.
#[allow(async_fn_in_trait)]
pub trait ShardCall: Send + 'static {
    type Reply: Send + std::fmt::Debug + 'static;
    async fn run(self, svc: &Rc<Services>) -> Self::Reply;

    /// How long a caller on another shard waits for the reply, given the node's base
    /// deadline: the base, unless the call makes calls of its own in turn.
    fn deadline(base: Duration, _shards: usize) -> Duration {
        base
    }
}

/// A call's place in the mesh's `Call` and `Reply` enums (written by `calls!`).
pub trait Routed: ShardCall + Sized {
    const NAME: &'static str;
    fn wrap(self) -> Call;
    /// The reply of this call; `None` only if the mesh paired replies wrongly.
    fn unwrap(reply: Reply) -> Option<Self::Reply>;
}

/// Declares the calls shards make of each other: one line each. Each name is a struct
/// implementing `ShardCall`, in the service file of its concern.
macro_rules! calls {
    ($($name:ident),+ $(,)?) => {
        /// Every call a shard answers.
        #[derive(Debug)]
        pub enum Call { $($name($name)),+ }

        /// The reply to each call, in the variant of the same name.
        #[derive(Debug)]
        pub enum Reply { $($name(<$name as ShardCall>::Reply)),+ }

        $(impl Routed for $name {
            const NAME: &'static str = stringify!($name);
            fn wrap(self) -> Call {
                Call::$name(self)
            }
            fn unwrap(reply: Reply) -> Option<Self::Reply> {
                match reply {
                    Reply::$name(r) => Some(r),
                    _ => None,
                }
            }
        })+

        impl Call {
            /// Executes the call on this shard.
            pub async fn run(self, svc: &Rc<Services>) -> Reply {
                match self {
                    $(Call::$name(call) => Reply::$name(call.run(svc).await),)+
                }
            }
        }
    };
}

calls!(
    ApplyEvents,
    InstallWidgets,
    ReadValue,
    ReadStates,
    Watch,
    Push,
    DashboardChanged,
    ListDashboards,
    EncodedDashboards,
    EncodedDashboard,
    GetDashboard,
    LocateWidget,
    EditDashboards,
    Stats,
    RecentMetrics,
    Alerts,
);

/// One message on the mesh.
#[derive(Debug)]
pub enum Msg {
    Call { from: usize, id: u64, call: Call },
    Reply { id: u64, reply: Reply },
}

/// This shard's side of the mesh: the senders, the calls waiting for replies, and counts
/// of what went wrong.
pub struct Mesh {
    senders: Senders<Msg>,
    pending: RefCell<HashMap<u64, LocalSender<Reply>>>,
    next_id: Cell<u64>,
    deadline: Duration,
    /// Calls this shard made that ended in a `CallError`.
    pub failed_calls: Cell<u64>,
    /// Replies that arrived after their caller gave up.
    pub late_replies: Cell<u64>,
    /// Replies this shard could not send back.
    pub unsent_replies: Cell<u64>,
}

impl std::fmt::Debug for Mesh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mesh")
            .field("shard", &self.id())
            .field("pending", &self.pending.borrow().len())
            .finish_non_exhaustive()
    }
}

impl Mesh {
    pub fn new(senders: Senders<Msg>, deadline: Duration) -> Self {
        Self {
            senders,
            pending: RefCell::new(HashMap::new()),
            next_id: Cell::new(0),
            deadline,
            failed_calls: Cell::new(0),
            late_replies: Cell::new(0),
            unsent_replies: Cell::new(0),
        }
    }

    /// This shard's index.
    pub fn id(&self) -> usize {
        self.senders.peer_id()
    }

    /// Number of shards on the mesh.
    pub fn shards(&self) -> usize {
        self.senders.nr_consumers()
    }

    /// Sends `call` to shard `to` and waits for its reply, at most the deadline. A failure
    /// is counted and logged here, and returned.
    pub async fn remote<C: Routed>(&self, to: usize, call: C) -> Result<C::Reply, CallError> {
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        let (tx, rx) = local_channel::new_bounded(1);
        self.pending.borrow_mut().insert(id, tx);
        let msg = Msg::Call {
            from: self.id(),
            id,
            call: call.wrap(),
        };
        let exchange = async {
            self.senders
                .send_to(to, msg)
                .await
                .map_err(|_| Failure::Unreachable)?;
            rx.recv().await.ok_or(Failure::Dropped)
        };
        let limit = C::deadline(self.deadline, self.shards());
        let deadline = async {
            sleep(limit).await;
            Err(Failure::TimedOut(limit))
        };
        let outcome = exchange.or(deadline).await;
        self.pending.borrow_mut().remove(&id);
        let failure = match outcome.map(C::unwrap) {
            Ok(Some(reply)) => return Ok(reply),
            Ok(None) => Failure::Mismatched,
            Err(failure) => failure,
        };
        let error = CallError {
            shard: to,
            call: C::NAME,
            failure,
        };
        self.failed_calls.set(self.failed_calls.get() + 1);
        tracing::warn!(
            shard = self.id(),
            "{error}; the request that made the call failed: nothing to do unless it repeats: then look for a slow shard in livedash_tick_duration_seconds, or raise --call-timeout-ms"
        );
        Err(error)
    }

    /// Hands a reply that came back to the call waiting for it.
    pub fn deliver(&self, id: u64, reply: Reply) {
        let waiting = self.pending.borrow_mut().remove(&id);
        if waiting.is_none_or(|tx| tx.try_send(reply).is_err()) {
            self.late_replies.set(self.late_replies.get() + 1);
            tracing::debug!(shard = self.id(), "reply {id} came after its deadline");
        }
    }

    /// Sends the reply of call `id` back to shard `to`.
    pub async fn answer(&self, to: usize, id: u64, reply: Reply) {
        if let Err(e) = self.senders.send_to(to, Msg::Reply { id, reply }).await {
            self.unsent_replies.set(self.unsent_replies.get() + 1);
            tracing::warn!(
                shard = self.id(),
                "cannot answer shard {to}: {e}; nothing to do if the node is shutting down: otherwise shard {to} has stopped: restart the node"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use glommio::{LocalExecutorPoolBuilder, PoolPlacement};

    use super::*;
    use crate::service::calls::Stats;

    /// Shard 1 takes the call off the mesh and never answers: shard 0's call fails at
    /// its deadline, is counted, and the reply that comes too late is counted too.
    #[test]
    fn a_call_nobody_answers_fails_at_its_deadline() {
        let seats = MeshSeats::new(2, 8);
        let (tx, rx) = std::sync::mpsc::channel();
        let pool = LocalExecutorPoolBuilder::new(PoolPlacement::Unbound(2))
            .io_memory(128 * 1024)
            .on_all_shards(move || {
                let (builder, tx) = (seats.take().unwrap(), tx.clone());
                async move {
                    let (senders, mut receivers) = builder.join().await.unwrap();
                    let mesh = Mesh::new(senders, Duration::from_millis(50));
                    if mesh.id() == 1 {
                        let (_, rx) = receivers.streams().pop().unwrap();
                        let msg = rx.recv().await;
                        assert!(matches!(msg, Some(Msg::Call { from: 0, .. })), "{msg:?}");
                    } else {
                        let error = mesh
                            .remote(1, Stats { restart_max: false })
                            .await
                            .unwrap_err();
                        assert_eq!(mesh.failed_calls.get(), 1);
                        mesh.deliver(0, Reply::Stats(Box::default()));
                        assert_eq!(mesh.late_replies.get(), 1);
                        tx.send(error).unwrap();
                    }
                    // Executors are not torn down while their rings are live (as in the
                    // node); the threads end with the test process.
                    std::future::pending::<()>().await;
                }
            })
            .unwrap();
        let error = rx.recv_timeout(Duration::from_secs(20)).unwrap();
        std::mem::forget(pool);
        assert_eq!(
            error,
            CallError {
                shard: 1,
                call: "Stats",
                failure: Failure::TimedOut(Duration::from_millis(50)),
            }
        );
        assert_eq!(
            error.to_string(),
            "shard 1 did not answer Stats within 50 ms"
        );
    }
}
