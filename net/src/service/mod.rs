//! The shard's services: what a front end (HTTP, WebSocket, the demo, later Kafka) asks of
//! the node, and the typed calls shards make of each other. A service never knows which
//! front end called it. `Services` holds one shard's state, one field per concern.

pub mod calls;
pub mod catalogue;
pub mod fanout;
pub mod hub;
pub mod ingest;
pub mod mesh;
pub mod outbox;
pub mod refresh;
pub mod rooms;
pub mod stats;
pub mod widgets;

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;

use livedash_engine::Shard;

use crate::config::Config;
use crate::stop::Stop;
use catalogue::CatalogueHost;
use fanout::Interest;
use hub::Hub;
use ingest::IngestCounters;
use mesh::{CallError, Mesh, Routed};

/// One shard's run-time state. Everything here is used from the shard's own thread.
#[derive(Debug)]
pub struct Services {
    pub id: usize,
    pub shards: usize,
    pub config: Config,
    pub stop: Stop,
    pub mesh: Mesh,
    /// The windows of the metrics this shard owns.
    pub engine: RefCell<Shard>,
    pub ingest: IngestCounters,
    /// The dashboard catalogue, on the catalogue shard (0) only.
    pub catalogue: Option<CatalogueHost>,
    /// Owner side of the fan-out: which shards stream the widgets this shard owns.
    pub interest: RefCell<Interest>,
    /// Subscriber side of the fan-out: the streams this shard serves.
    pub hub: Hub,
    /// Open HTTP connections and streams, for draining at shutdown.
    pub connections: Cell<usize>,
}

/// The shard that keeps the dashboard catalogue.
pub const CATALOGUE_SHARD: usize = 0;

impl Services {
    pub fn new(
        config: Config,
        mesh: Mesh,
        engine: Shard,
        catalogue: Option<CatalogueHost>,
    ) -> Self {
        let shards = mesh.shards();
        Self {
            id: mesh.id(),
            shards,
            config,
            stop: Stop::default(),
            mesh,
            engine: RefCell::new(engine),
            ingest: IngestCounters::default(),
            catalogue,
            interest: RefCell::new(Interest::default()),
            hub: Hub::new(shards),
            connections: Cell::new(0),
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
        livedash_engine::shard_for(metric, self.shards)
    }
}
