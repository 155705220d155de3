//! The node: one pinned glommio executor per shard. Every shard binds the listen address
//! (SO_REUSEPORT), serves the connections the kernel gives it, runs its refresh timer, and
//! answers calls from the other shards over the channel mesh.

mod ctx;
pub mod mesh;

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use anyhow::{Context, anyhow};
use futures_lite::FutureExt;
use glommio::channels::channel_mesh::{MeshBuilder, Receivers};
use glommio::net::TcpListener;
use glommio::timer::sleep;
use glommio::{LocalExecutorPoolBuilder, PoolPlacement, PoolThreadHandles, spawn_local};
use livedash_engine::shard::ShardConfig;
use livedash_engine::{Dashboard, Shard, Widget, shard_for};

pub use ctx::{CatalogueHost, ShardCtx, now_ms};
use livedash_engine::shard::WidgetValue;
use mesh::{Call, Msg};

use crate::stream::hub::Hub;

use crate::catalogue::Catalogue;
use crate::config::Config;
use crate::http::{self, ConnLimits};
use crate::store::DashboardStore;

/// Messages in flight per direction between two shards before a sender waits.
const MESH_CAPACITY: usize = 1024;
/// Memory each executor registers for I/O. Small: the locked-memory limit is tight and
/// the node does little file I/O.
const IO_MEMORY: usize = 128 * 1024;
/// Submission depth of each executor's rings. The kernel sizes a ring's table of armed
/// polls from it (up to 256 buckets at this depth), and the executor cancels a timer on
/// every turn of its loop, which walks one bucket: with thousands of idle sockets, each
/// holding an armed read poll, the default depth (128, so 8 buckets) made that walk a
/// tenth of the node's CPU under a large fan-out.
const RING_DEPTH: usize = 4096;
/// Longest sleep of the refresh timer, so shutdown and new widgets are noticed.
const MAX_TICK_SLEEP: Duration = Duration::from_millis(100);

/// A running node.
#[derive(Debug)]
pub struct NodeHandle {
    /// The address actually bound (useful with port 0).
    pub addr: SocketAddr,
    shutdown: Arc<AtomicBool>,
    progress: Arc<Progress>,
    /// Kept so the shard threads are not detached by accident; never joined (see `join`).
    _threads: PoolThreadHandles<()>,
}

/// How far the shards are in shutting down.
#[derive(Debug, Default)]
struct Progress {
    shards: usize,
    /// Shards whose connections have drained.
    drained: AtomicUsize,
    /// Shards that are finished: drained and store flushed, or failed to start.
    done: AtomicUsize,
    failed: AtomicBool,
}

impl NodeHandle {
    /// A flag that, once set, shuts the node down gracefully.
    pub fn shutdown_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.shutdown)
    }

    /// Waits until every shard has drained its connections and the store is flushed.
    ///
    /// The shard threads are not torn down: once this returns the caller ends the
    /// process. Tearing executors down while sockets and io_uring operations are still
    /// registered gains nothing at exit and has been seen to trip the allocator's checks.
    pub fn join(self) -> anyhow::Result<()> {
        while self.progress.done.load(Ordering::Acquire) < self.progress.shards {
            std::thread::sleep(Duration::from_millis(10));
        }
        if self.progress.failed.load(Ordering::Acquire) {
            return Err(anyhow!("a shard failed; see the log"));
        }
        Ok(())
    }
}

impl Progress {
    fn fail(&self) {
        self.failed.store(true, Ordering::Release);
        self.done.fetch_add(1, Ordering::AcqRel);
    }
}

/// The bound address, handed from shard 0 (which binds first, so port 0 works) to the
/// others and to the caller.
#[derive(Default)]
struct Rendezvous {
    addr: Mutex<Option<Result<SocketAddr, String>>>,
    ready: Condvar,
}

impl Rendezvous {
    fn publish(&self, value: Result<SocketAddr, String>) {
        if let Ok(mut slot) = self.addr.lock() {
            *slot = Some(value);
            self.ready.notify_all();
        }
    }

    fn wait(&self) -> Result<SocketAddr, String> {
        let mut slot = self.addr.lock().map_err(|e| e.to_string())?;
        loop {
            if let Some(v) = slot.as_ref() {
                return v.clone();
            }
            slot = self.ready.wait(slot).map_err(|e| e.to_string())?;
        }
    }
}

/// Widgets of `dashboards` whose metric `shard` owns.
fn owned_widgets(dashboards: &[Dashboard], shard: usize, shards: usize) -> Vec<Widget> {
    dashboards
        .iter()
        .flat_map(|d| &d.widgets)
        .filter(|w| shard_for(&w.spec.metric_name, shards) == shard)
        .cloned()
        .collect()
}

/// Starts the node with `config` and `store`; returns once every shard is listening.
pub fn start(config: Config, store: Box<dyn DashboardStore>) -> anyhow::Result<NodeHandle> {
    let shards = config.shard_count();
    let dashboards = store.load_all().context("loading dashboards")?;
    let catalogue = Catalogue::new(dashboards.clone());
    let horizon_ms = catalogue.horizon_ms();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let placement = if shards <= cores {
        PoolPlacement::MaxSpread(shards, None)
    } else {
        PoolPlacement::Unbound(shards)
    };
    let rendezvous = Arc::new(Rendezvous::default());
    let shutdown = Arc::new(AtomicBool::new(false));
    let progress = Arc::new(Progress {
        shards,
        ..Progress::default()
    });
    let mesh = MeshBuilder::full(shards, MESH_CAPACITY);
    let parts = Arc::new(Mutex::new(Some((catalogue, store))));
    let dashboards = Arc::new(dashboards);
    let threads = {
        let rendezvous = Arc::clone(&rendezvous);
        let progress = Arc::clone(&progress);
        let shutdown = Arc::clone(&shutdown);
        LocalExecutorPoolBuilder::new(placement)
            .name("livedash-shard")
            .io_memory(IO_MEMORY)
            .ring_depth(RING_DEPTH)
            .on_all_shards(move || {
                let config = config.clone();
                let mesh = mesh.clone();
                let rendezvous = Arc::clone(&rendezvous);
                let shutdown = Arc::clone(&shutdown);
                let progress = Arc::clone(&progress);
                let parts = Arc::clone(&parts);
                let dashboards = Arc::clone(&dashboards);
                async move {
                    let (senders, receivers) = match mesh.join().await {
                        Ok(pair) => pair,
                        Err(e) => {
                            rendezvous.publish(Err(format!("joining the shard mesh: {e}")));
                            progress.fail();
                            return;
                        }
                    };
                    let id = senders.peer_id();
                    let listener = if id == 0 {
                        match TcpListener::bind(config.listen).and_then(|l| {
                            let addr = l.local_addr()?;
                            Ok((l, addr))
                        }) {
                            Ok((l, addr)) => {
                                rendezvous.publish(Ok(addr));
                                l
                            }
                            Err(e) => {
                                rendezvous.publish(Err(format!("binding {}: {e}", config.listen)));
                                progress.fail();
                                return;
                            }
                        }
                    } else {
                        let Ok(addr) = rendezvous.wait() else {
                            progress.fail();
                            return;
                        };
                        match TcpListener::bind(addr) {
                            Ok(l) => l,
                            Err(e) => {
                                tracing::error!(shard = id, "binding {addr}: {e}");
                                progress.fail();
                                return;
                            }
                        }
                    };
                    let mut engine = Shard::new(ShardConfig {
                        max_skew_ms: config.max_skew_ms,
                        history_len: config.history_len,
                        min_horizon_ms: horizon_ms,
                    });
                    let now = now_ms();
                    for widget in owned_widgets(&dashboards, id, senders.nr_consumers()) {
                        if let Err(e) = engine.upsert_widget(widget, now) {
                            tracing::warn!(shard = id, "stored widget refused: {e}");
                        }
                    }
                    let host =
                        if id == 0 {
                            parts.lock().ok().and_then(|mut p| p.take()).map(
                                |(catalogue, store)| CatalogueHost {
                                    catalogue: std::cell::RefCell::new(catalogue),
                                    store: Arc::from(store),
                                    writer: glommio::sync::Semaphore::new(1),
                                },
                            )
                        } else {
                            None
                        };
                    let ctx = Rc::new(ShardCtx::new(id, config, engine, senders, host));
                    run_shard(ctx, listener, receivers, shutdown, &progress).await;
                }
            })
            .map_err(|e| anyhow!("starting shards: {e}"))?
    };
    let addr = rendezvous.wait().map_err(|e| anyhow!(e))?;
    Ok(NodeHandle {
        addr,
        shutdown,
        progress,
        _threads: threads,
    })
}

async fn run_shard(
    ctx: Rc<ShardCtx>,
    listener: TcpListener,
    mut receivers: Receivers<Msg>,
    shutdown: Arc<AtomicBool>,
    progress: &Progress,
) {
    for (_, rx) in receivers.streams() {
        let ctx = Rc::clone(&ctx);
        spawn_local(async move {
            while let Some(msg) = rx.recv().await {
                match msg {
                    Msg::Call { from, id, call } => {
                        let ctx = Rc::clone(&ctx);
                        spawn_local(async move {
                            let reply = ctx.handle(call).await;
                            let _ = ctx.mesh.send_to(from, Msg::Reply { id, reply }).await;
                        })
                        .detach();
                    }
                    Msg::Reply { id, reply } => ctx.deliver(id, reply),
                }
            }
        })
        .detach();
    }
    spawn_local(refresh_loop(Rc::clone(&ctx))).detach();
    {
        let ctx = Rc::clone(&ctx);
        let every = Duration::from_millis(ctx.config.ws_ping_interval_ms);
        spawn_local(async move {
            loop {
                let stopped = async {
                    sleep(every).await;
                    false
                }
                .or(async {
                    ctx.stop.wait().await;
                    true
                })
                .await;
                if stopped {
                    break;
                }
                ctx.hub.sweep();
            }
        })
        .detach();
    }
    if ctx.id == 0 && ctx.config.demo {
        spawn_local(crate::demo::run(Rc::clone(&ctx))).detach();
    }
    {
        let ctx = Rc::clone(&ctx);
        let shutdown = Arc::clone(&shutdown);
        spawn_local(async move {
            while !shutdown.load(Ordering::Relaxed) {
                sleep(Duration::from_millis(50)).await;
            }
            ctx.stop.trigger();
            ctx.hub.close_all(1001, "node shutting down");
        })
        .detach();
    }
    accept_loop(&ctx, &listener).await;
    drop(listener);
    // Drain: let open requests finish, up to the drain timeout.
    let deadline = std::time::Instant::now() + Duration::from_millis(ctx.config.drain_timeout_ms);
    while ctx.connections.get() > 0 && std::time::Instant::now() < deadline {
        sleep(Duration::from_millis(10)).await;
    }
    // Keep answering the other shards until every shard has drained.
    progress.drained.fetch_add(1, Ordering::AcqRel);
    while progress.drained.load(Ordering::Acquire) < ctx.shards {
        sleep(Duration::from_millis(10)).await;
    }
    if let Some(host) = &ctx.catalogue
        && let Err(e) = host.store.flush()
    {
        tracing::error!("flushing the dashboard store: {e}");
        progress.failed.store(true, Ordering::Release);
    }
    progress.done.fetch_add(1, Ordering::AcqRel);
    // The process ends from the main thread; this executor stays as it is until then.
    std::future::pending::<()>().await;
}

/// Sends changed values to the shards with streams that show them, one message each.
fn push(ctx: &Rc<ShardCtx>, changed: Vec<WidgetValue>) {
    let mut out: Vec<Vec<(uuid::Uuid, WidgetValue)>> = vec![Vec::new(); ctx.shards];
    {
        let interest = ctx.interest.borrow();
        for value in changed {
            let Some(&(dashboard, mut shards)) = interest.get(&value.widget_id) else {
                continue;
            };
            while shards != 0 {
                let to = shards.trailing_zeros() as usize;
                shards &= shards - 1;
                out[to].push((dashboard, value.clone()));
            }
        }
    }
    for (to, values) in out.into_iter().enumerate() {
        if values.is_empty() {
            continue;
        }
        if to == ctx.id {
            Hub::pushed(ctx, values);
        } else {
            let ctx = Rc::clone(ctx);
            spawn_local(async move {
                ctx.call(to, Call::Push(values)).await;
            })
            .detach();
        }
    }
}

async fn accept_loop(ctx: &Rc<ShardCtx>, listener: &TcpListener) {
    let limits = ConnLimits {
        max_body: ctx.config.max_body_bytes,
        header_timeout: Duration::from_millis(ctx.config.header_timeout_ms),
        body_timeout: Duration::from_millis(ctx.config.body_timeout_ms),
        idle_timeout: Duration::from_millis(ctx.config.idle_timeout_ms),
    };
    loop {
        let accepted = async { Some(listener.accept().await) }
            .or(async {
                ctx.stop.wait().await;
                None
            })
            .await;
        let stream = match accepted {
            None => return,
            Some(Ok(stream)) => stream,
            Some(Err(e)) => {
                // Out of file descriptors or a reset before accept: back off briefly.
                tracing::warn!(shard = ctx.id, "accept: {e}");
                sleep(Duration::from_millis(5)).await;
                continue;
            }
        };
        let ctx = Rc::clone(ctx);
        spawn_local(async move {
            ctx.connections.set(ctx.connections.get() + 1);
            let api = crate::api::Api {
                ctx: Rc::clone(&ctx),
            };
            http::serve(stream, limits, &ctx.stop, &api).await;
            ctx.connections.set(ctx.connections.get() - 1);
        })
        .detach();
    }
}

/// Runs due refreshes on time and pushes the values that changed to every shard that
/// streams them.
async fn refresh_loop(ctx: Rc<ShardCtx>) {
    while !ctx.stop.is_set() {
        let now = now_ms();
        let (changed, next) = {
            let mut engine = ctx.engine.borrow_mut();
            (engine.tick(now), engine.next_due())
        };
        if !changed.is_empty() {
            push(&ctx, changed);
        }
        let wait = next.map_or(MAX_TICK_SLEEP, |due| {
            Duration::from_millis(u64::try_from(due - now).unwrap_or(0).max(1))
        });
        sleep(wait.min(MAX_TICK_SLEEP)).await;
    }
}
