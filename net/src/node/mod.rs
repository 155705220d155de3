//! The runtime: one pinned glommio executor per shard. Every shard binds the listen
//! address (SO_REUSEPORT), builds its services, and runs them (`shard::run`) until the
//! node stops.

mod admission;
mod cluster;
mod shard;

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use anyhow::{Context, anyhow};
use glommio::net::TcpListener;
use glommio::{LocalExecutorPoolBuilder, PoolPlacement, PoolThreadHandles};
use livedash_engine::shard::ShardConfig;
use livedash_engine::{Dashboard, Placement, Shard, Widget};
use livedash_replication::kafka::SourceHandle;

use crate::catalogue::Catalogue;
use crate::clock::now_ms;
use crate::config::Config;
use crate::service::catalogue::CatalogueHost;
use crate::service::mesh::{Mesh, MeshSeats};
use crate::service::{CATALOGUE_SHARD, Services};
use crate::store::DashboardStore;
use cluster::{ClusterSettings, KafkaParts, StandaloneMirror};
use livedash_replication::redis::catalogue::SharedCatalogue;

/// How long a shard runs ready tasks before it looks for I/O again (glommio's default
/// is 100 ms): under a crowd of busy connections, a request that just arrived (a health
/// check) waits at most about this long to be noticed.
const PREEMPT_TIMER: std::time::Duration = std::time::Duration::from_millis(10);

/// How often the main thread looks for shutdown while it waits: an idle node should
/// hardly wake up.
const IDLE_POLL: Duration = Duration::from_millis(100);
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

/// A running node.
#[derive(Debug)]
pub struct NodeHandle {
    /// The address actually bound (useful with port 0).
    pub addr: SocketAddr,
    shutdown: Arc<AtomicBool>,
    progress: Arc<Progress>,
    /// The consumer group member, in cluster mode.
    kafka: Option<SourceHandle>,
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
        if let Some(source) = self.kafka {
            // Leave the consumer group while the shards still confirm revocations.
            while !self.shutdown.load(Ordering::Acquire) {
                std::thread::sleep(IDLE_POLL);
            }
            source.stop();
        }
        while self.progress.done.load(Ordering::Acquire) < self.progress.shards {
            std::thread::sleep(IDLE_POLL);
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
fn owned_widgets(dashboards: &[Dashboard], shard: usize, placement: Placement) -> Vec<Widget> {
    dashboards
        .iter()
        .flat_map(|d| &d.widgets)
        .filter(|w| placement.shard(&w.spec.metric_name) == shard)
        .cloned()
        .collect()
}

/// How long a listener found on the port may take to go away before the port counts as
/// taken: a node that was just killed leaves its listening socket to the kernel until its
/// io_uring is torn down, which takes a moment after the process is gone.
const PORT_PROBE_PATIENCE: Duration = Duration::from_secs(3);

/// Refuses a port another process listens on. The shards bind with SO_REUSEPORT, which
/// would silently share the port with another node of the same user, so before they bind,
/// connections to the address tell whether anything accepts there. (A bind test would
/// trip over the connections a node that just died left behind.) Port 0 is always free:
/// the kernel picks one.
fn probe_port(addr: SocketAddr) -> anyhow::Result<()> {
    if addr.port() == 0 {
        return Ok(());
    }
    let mut target = addr;
    if target.ip().is_unspecified() {
        target.set_ip(match addr {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    let give_up = std::time::Instant::now() + PORT_PROBE_PATIENCE;
    // Refused (nobody listens), or no answer: the shards' own bind has the last word.
    while std::net::TcpStream::connect_timeout(&target, Duration::from_millis(500)).is_ok() {
        if std::time::Instant::now() >= give_up {
            return Err(anyhow!(
                "{addr} is in use by another process (another livedash node?); stop it or pass another --listen"
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// Starts the node with `config` and `store`; returns once every shard is listening.
pub fn start(config: Config, store: Box<dyn DashboardStore>) -> anyhow::Result<NodeHandle> {
    probe_port(config.listen)?;
    let shards = config.shard_count();
    // Cluster mode: the dashboards every node shares, in Redis; else the file store's.
    let shared = match (config.clustered(), &config.redis) {
        (true, Some(url)) => Some(Arc::new(
            SharedCatalogue::connect(url).map_err(|e| anyhow!("shared catalogue: {e}"))?,
        )),
        _ => None,
    };
    let (dashboards, catalogue) = match &shared {
        Some(shared) => {
            let loading = |e: String| anyhow!("loading the shared catalogue: {e}");
            let (mut stored, kept) = shared.load_all().map_err(loading)?;
            if !kept {
                // Redis lost the catalogue (or never had one): this node's copy in its
                // data directory goes back, unless another node wrote one back first.
                let copy = store.load_all().context("loading dashboards")?;
                if !copy.is_empty() {
                    tracing::warn!(
                        dashboards = copy.len(),
                        "the shared catalogue is empty; writing back this node's copy: nothing to do on a new redis; otherwise redis lost its data: turn on its persistence (appendonly yes) so a restart keeps the catalogue"
                    );
                    let copy: Vec<_> = copy.into_iter().map(|d| (d, 1)).collect();
                    shared.restore(&copy).map_err(loading)?;
                    stored = shared.load_all().map_err(loading)?.0;
                }
            }
            let dashboards = stored.iter().map(|s| s.dashboard.clone()).collect();
            let catalogue = Catalogue::shared(
                stored
                    .into_iter()
                    .map(|s| (s.dashboard, s.version))
                    .collect(),
            );
            (dashboards, catalogue)
        }
        None => {
            let dashboards = store.load_all().context("loading dashboards")?;
            (dashboards.clone(), Catalogue::new(dashboards))
        }
    };
    let budgets = &config.budgets;
    let catalogue = catalogue.with_budgets(crate::catalogue::Budgets {
        dashboards: budgets.max_dashboards,
        widgets: budgets.max_widgets,
        queries: budgets.max_queries,
    });
    // Histograms made from here on keep within it (one node per process).
    livedash_engine::limits::set_histogram_buckets(budgets.max_histogram_buckets);
    let horizon_ms = catalogue.horizon_ms();
    let cluster_settings = config.clustered().then(|| ClusterSettings {
        node: uuid::Uuid::new_v4().to_string(),
        history_len: config.history_len,
    });
    let kafka = match config.kafka() {
        Some(settings) => Some(Arc::new(KafkaParts::connect(
            settings,
            config.redis(),
            cluster_settings,
            shards,
            horizon_ms + config.max_skew_ms,
        )?)),
        None => None,
    };
    let standalone_mirror = match (&kafka, config.redis()) {
        (None, Some(settings)) => Some(Arc::new(StandaloneMirror::connect(settings, shards)?)),
        _ => None,
    };
    let owners = kafka
        .as_ref()
        .map_or(Placement::standalone(shards), |k| k.placement(shards));
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
    let seats = MeshSeats::new(shards, MESH_CAPACITY);
    let config_advertised = config.clone();
    let parts = Arc::new(Mutex::new(Some((catalogue, store, shared))));
    let dashboards = Arc::new(dashboards);
    let threads = {
        let kafka = kafka.clone();
        let rendezvous = Arc::clone(&rendezvous);
        let progress = Arc::clone(&progress);
        let shutdown = Arc::clone(&shutdown);
        // A shard's blocking threads: one parses large ingest bodies (one at a time), one
        // takes the store's writes; with Kafka, one more waits for the consumer's
        // doorbell, and in a cluster another takes the reads of stored values for new
        // streams.
        let blocking = match (kafka.is_some(), config.clustered()) {
            (_, true) => 4,
            (true, false) => 3,
            (false, false) => 2,
        };
        LocalExecutorPoolBuilder::new(placement)
            .name("livedash-shard")
            .io_memory(IO_MEMORY)
            .ring_depth(RING_DEPTH)
            .preempt_timer(PREEMPT_TIMER)
            .blocking_thread_pool_placement(PoolPlacement::Unbound(blocking))
            .on_all_shards(move || {
                let config = config.clone();
                let seat = seats.take();
                let rendezvous = Arc::clone(&rendezvous);
                let shutdown = Arc::clone(&shutdown);
                let progress = Arc::clone(&progress);
                let parts = Arc::clone(&parts);
                let dashboards = Arc::clone(&dashboards);
                let kafka = kafka.clone();
                let standalone_mirror = standalone_mirror.clone();
                async move {
                    let joined = match seat {
                        Some(builder) => builder.join().await.map_err(|e| e.to_string()),
                        None => Err("more shards than mesh seats".to_owned()),
                    };
                    let (senders, receivers) = match joined {
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
                        spread_ticks: config.spread_ticks,
                        max_group_values: config.budgets.max_group_values,
                        max_group_windows: config
                            .budgets
                            .max_group_windows
                            .div_ceil(config.shard_count()),
                        distribution_buckets: config.budgets.histogram_widget_buckets,
                    });
                    let now = now_ms();
                    for widget in owned_widgets(&dashboards, id, owners) {
                        if let Err(e) = engine.upsert_widget(widget, now) {
                            tracing::warn!(shard = id, "stored widget refused: {e}; it shows no value: find the widget with that field in GET /dashboards and fix or remove it with PATCH /dashboards/<id>/widgets");
                        }
                    }
                    let host = if id == CATALOGUE_SHARD {
                        parts
                            .lock()
                            .map_err(|_| tracing::error!("the catalogue was lost at start-up"))
                            .ok()
                            .and_then(|mut p| p.take())
                            .map(|(catalogue, store, shared)| {
                                CatalogueHost::new(catalogue, Arc::from(store), shared)
                            })
                    } else {
                        None
                    };
                    let deadline = Duration::from_millis(config.call_timeout_ms);
                    let mesh = Mesh::new(senders, deadline);
                    let (link, mut mirror, cluster) = match kafka.as_ref().and_then(|k| k.link(id))
                    {
                        Some((link, mirror, cluster)) => (Some(link), mirror, cluster),
                        None => (None, None, None),
                    };
                    let mut claim = None;
                    if let Some((m, c)) = standalone_mirror.as_ref().and_then(|s| s.take(id)) {
                        mirror = Some(m);
                        claim = Some(c);
                    }
                    let mut services = Services::new(config, mesh, engine, host, link, mirror);
                    services.cluster = cluster;
                    let svc = Rc::new(services);
                    if let Some(claim) = claim {
                        crate::service::mirror::restore_standalone(&svc, &claim);
                    }
                    shard::run(svc, listener, receivers, shutdown, &progress).await;
                }
            })
            .map_err(|e| anyhow!("starting shards: {e}"))?
    };
    let addr = rendezvous.wait().map_err(|e| anyhow!(e))?;
    if let Some(advertised) = kafka.as_ref().and_then(|k| k.advertised()) {
        let url = config_advertised.advertised(addr);
        tracing::info!("advertised to browsers as {url}");
        advertised.set(url).ok();
    }
    let kafka = match kafka {
        Some(parts) => Some(parts.start_source()?),
        None => None,
    };
    Ok(NodeHandle {
        addr,
        shutdown,
        progress,
        kafka,
        _threads: threads,
    })
}
