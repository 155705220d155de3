//! The shard's services: what a front end (HTTP, WebSocket, the demo, Kafka) asks of
//! the node, and the typed calls shards make of each other. A service never knows which
//! front end called it. `Services` holds one shard's state, one field per concern.

pub mod backfill;
pub mod calls;
pub mod catalogue;
pub mod cluster;
pub mod fanout;
pub mod health;
pub mod hub;
pub mod ingest;
pub mod mesh;
pub mod metrics;
pub mod mirror;
pub mod outbox;
pub mod refresh;
pub mod rooms;
pub mod snapshots;
pub mod stats;
pub mod topic;
pub mod widgets;

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;

use livedash_engine::{IngestReply, Placement, Shard};

use crate::config::Config;
use crate::parse::Parsed;
use crate::stop::Stop;
use calls::IngestError;
use catalogue::CatalogueHost;
use fanout::Interest;
use hub::Hub;
use ingest::IngestCounters;
use mesh::{CallError, Mesh, Routed};
use topic::KafkaLink;

/// One shard's run-time state. Everything here is used from the shard's own thread.
#[derive(Debug)]
pub struct Services {
    pub id: usize,
    pub shards: usize,
    /// Which shard owns which metric: by partition of the topic in cluster mode.
    pub placement: Placement,
    pub config: Config,
    pub stop: Stop,
    pub mesh: Mesh,
    /// The windows of the metrics this shard owns.
    pub engine: RefCell<Shard>,
    pub ingest: IngestCounters,
    /// Histograms and counters for `/metrics`.
    pub metrics: metrics::Metrics,
    /// The alerts (evaluated on the catalogue shard).
    pub health: health::Health,
    /// The dashboard catalogue, on the catalogue shard (0) only.
    pub catalogue: Option<CatalogueHost>,
    /// Owner side of the fan-out: which shards stream the widgets this shard owns.
    pub interest: RefCell<Interest>,
    /// Subscriber side of the fan-out: the streams this shard serves.
    pub hub: Hub,
    /// Open HTTP connections and streams, for draining at shutdown and the connection
    /// budget.
    pub connections: Cell<usize>,
    /// Open connections by source address, for the per-address budget.
    pub per_address: RefCell<hashbrown::HashMap<std::net::IpAddr, usize>>,
    /// The topic, in cluster mode.
    pub kafka: Option<KafkaLink>,
    /// Backfills of new queries running on this shard (cluster mode).
    pub backfills: backfill::Backfills,
    /// The state mirror, with `--redis`.
    pub mirror: Option<mirror::MirrorLink>,
    /// The other nodes, in cluster mode (Kafka and Redis).
    pub cluster: Option<cluster::ClusterLink>,
}

/// The shard that keeps the dashboard catalogue.
pub const CATALOGUE_SHARD: usize = 0;

impl Services {
    pub fn new(
        config: Config,
        mesh: Mesh,
        engine: Shard,
        catalogue: Option<CatalogueHost>,
        kafka: Option<KafkaLink>,
        mirror: Option<mirror::MirrorLink>,
    ) -> Self {
        let shards = mesh.shards();
        let placement = match &kafka {
            Some(link) => Placement::cluster(link.partition_count(), shards),
            None => Placement::standalone(shards),
        };
        let metrics_on = config.metrics;
        let metric_names = config.budgets.max_metric_names;
        Self {
            id: mesh.id(),
            shards,
            placement,
            config,
            stop: Stop::default(),
            mesh,
            engine: RefCell::new(engine),
            ingest: IngestCounters::new(metric_names),
            metrics: metrics::Metrics::new(metrics_on),
            health: health::Health::default(),
            catalogue,
            interest: RefCell::new(Interest::default()),
            hub: Hub::new(placement),
            connections: Cell::new(0),
            per_address: RefCell::default(),
            kafka,
            backfills: backfill::Backfills::default(),
            mirror,
            cluster: None,
        }
    }

    /// Runs `call` on shard `to`: in place on this shard, else over the mesh with a
    /// deadline.
    ///
    /// The future is boxed: a stream's task awaits calls while it joins and leaves, and
    /// an unboxed call would make every idle stream's task as large as the largest one.
    pub fn call<'a, C: Routed + 'a>(
        self: &'a Rc<Self>,
        to: usize,
        call: C,
    ) -> Pin<Box<dyn Future<Output = Result<C::Reply, CallError>> + 'a>> {
        Box::pin(async move {
            if to == self.id {
                Ok(call.run(self).await)
            } else {
                self.mesh.remote(to, call).await
            }
        })
    }

    /// The shard that owns `metric`'s windows.
    pub fn owner(&self, metric: &str) -> usize {
        self.placement.shard(metric)
    }

    /// In cluster mode, the partition of `metric` when this node does not own it now.
    pub fn not_owned(&self, metric: &str) -> Option<u32> {
        let link = self.kafka.as_ref()?;
        let partition = self.placement.partition(metric);
        let owned = link
            .partitions
            .get(partition as usize)
            .is_some_and(|p| p.owned());
        (!owned).then_some(partition)
    }

    /// Takes a parsed batch: applied on the owner shards standalone, written to the topic
    /// in cluster mode (the consumers apply it).
    pub async fn submit(self: &Rc<Self>, parsed: Parsed) -> Result<IngestReply, IngestError> {
        if self.kafka.is_some() {
            return Ok(topic::produce(self, parsed).await?);
        }
        // With the state mirror, nothing is taken that cannot be stored.
        if let Some(reason) = self.mirror.as_ref().and_then(|m| m.unavailable()) {
            return Err(IngestError::NotDurable(reason));
        }
        ingest::dispatch(self, parsed).await
    }
}
