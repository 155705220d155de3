//! The catalogue service: reads and edits of dashboards for any front end. The catalogue
//! lives on one shard; an edit there is validated, stored durably, committed, installed on
//! the shards that own the widgets' metrics, and announced to every shard's streams before
//! it returns, so the next read anywhere sees it.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use glommio::sync::Semaphore;
use hashbrown::HashMap;
use livedash_engine::{Dashboard, WidgetReading};
use livedash_replication::redis::catalogue::{SharedCatalogue, Written};
use uuid::Uuid;

pub use super::calls::CatalogueError;
use super::calls::{
    DashboardChanged, EditDashboards, EncodedDashboard, EncodedDashboards, GetDashboard,
    InstallWidgets, ListDashboards, LocateWidget, ReadValue, Reading,
};
use super::mesh::ShardCall;
use super::{CATALOGUE_SHARD, Services};
use crate::catalogue::{Catalogue, Change, Edit, Refusal, Versioned};
use crate::store::DashboardStore;

/// The catalogue and its store, on the catalogue shard only.
pub struct CatalogueHost {
    catalogue: RefCell<Catalogue>,
    /// Shared with the blocking thread that does the store's file I/O.
    pub store: Arc<dyn DashboardStore>,
    /// Serialises changes: one change is prepared, stored and routed at a time.
    writer: Semaphore,
    /// Cluster mode: the catalogue every node shares, in Redis (the file store is not
    /// used for dashboards then).
    pub shared: Option<Arc<SharedCatalogue>>,
    /// The dashboards list as JSON, with the catalogue revision it was encoded at.
    encoded: RefCell<Option<(u64, Bytes)>>,
    /// Dashboards read lately as JSON, with the version each was encoded at.
    encoded_one: RefCell<HashMap<Uuid, (u64, Bytes)>>,
}

impl std::fmt::Debug for CatalogueHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CatalogueHost")
            .field("catalogue", &self.catalogue)
            .finish_non_exhaustive()
    }
}

impl CatalogueHost {
    pub fn new(
        catalogue: Catalogue,
        store: Arc<dyn DashboardStore>,
        shared: Option<Arc<SharedCatalogue>>,
    ) -> Self {
        Self {
            catalogue: RefCell::new(catalogue),
            store,
            writer: Semaphore::new(1),
            shared,
            encoded: RefCell::new(None),
            encoded_one: RefCell::default(),
        }
    }
}

fn host(svc: &Services) -> Result<&CatalogueHost, CatalogueError> {
    svc.catalogue.as_ref().ok_or(CatalogueError::NoCatalogue)
}

impl ShardCall for ListDashboards {
    type Reply = Result<Vec<Dashboard>, CatalogueError>;

    async fn run(self, svc: &Rc<Services>) -> Self::Reply {
        let catalogue = host(svc)?.catalogue.borrow();
        Ok(catalogue.list().into_iter().cloned().collect())
    }
}

impl ShardCall for EncodedDashboards {
    type Reply = Result<Bytes, CatalogueError>;

    async fn run(self, svc: &Rc<Services>) -> Self::Reply {
        let host = host(svc)?;
        let catalogue = host.catalogue.borrow();
        let version = catalogue.revision();
        let mut encoded = host.encoded.borrow_mut();
        if let Some((at, bytes)) = encoded.as_ref()
            && *at == version
        {
            return Ok(bytes.clone());
        }
        let bytes =
            Bytes::from(serde_json::to_vec(&catalogue.list()).map_err(|e| {
                CatalogueError::Store(format!("cannot encode the dashboards: {e}"))
            })?);
        *encoded = Some((version, bytes.clone()));
        Ok(bytes)
    }
}

/// Dashboards kept encoded at most; past it, the cache starts afresh.
const ENCODED_KEPT: usize = 64;

impl ShardCall for EncodedDashboard {
    type Reply = Result<Bytes, CatalogueError>;

    async fn run(self, svc: &Rc<Services>) -> Self::Reply {
        let host = host(svc)?;
        let catalogue = host.catalogue.borrow();
        let dashboard = catalogue
            .get(self.0)
            .ok_or(CatalogueError::Refused(Refusal::NoDashboard(self.0)))?;
        let version = catalogue.version_of(self.0);
        let mut encoded = host.encoded_one.borrow_mut();
        if let Some((at, bytes)) = encoded.get(&self.0)
            && *at == version
        {
            return Ok(bytes.clone());
        }
        let bytes = Bytes::from(serde_json::to_vec(dashboard).map_err(|e| {
            CatalogueError::Store(format!("cannot encode dashboard {}: {e}", self.0))
        })?);
        if encoded.len() >= ENCODED_KEPT {
            encoded.clear();
        }
        encoded.insert(self.0, (version, bytes.clone()));
        Ok(bytes)
    }
}

impl ShardCall for GetDashboard {
    type Reply = Result<Versioned, CatalogueError>;

    async fn run(self, svc: &Rc<Services>) -> Self::Reply {
        Ok(host(svc)?.catalogue.borrow().versioned(self.0))
    }
}

impl ShardCall for LocateWidget {
    type Reply = Result<livedash_engine::Widget, CatalogueError>;

    async fn run(self, svc: &Rc<Services>) -> Self::Reply {
        let catalogue = host(svc)?.catalogue.borrow();
        Ok(catalogue.widget(self.dashboard, self.widget)?.clone())
    }
}

impl ShardCall for EditDashboards {
    type Reply = Result<Option<Dashboard>, CatalogueError>;

    /// An edit stores the dashboard, then installs it on every shard and announces it to
    /// every shard, one call after another, each with the base deadline.
    fn deadline(base: Duration, shards: usize) -> Duration {
        base.saturating_mul(2 * shards as u32 + 2)
    }

    async fn run(self, svc: &Rc<Services>) -> Self::Reply {
        let host = host(svc)?;
        // One change at a time, so two concurrent edits of one dashboard never overwrite
        // each other.
        let _permit = host
            .writer
            .acquire_permit(1)
            .await
            .map_err(|_| CatalogueError::ShuttingDown)?;
        let change = host.catalogue.borrow_mut().prepare(self.0)?;
        let version = match &host.shared {
            None => {
                store(host, &change).await?;
                host.catalogue.borrow_mut().commit(&change)
            }
            Some(shared) => match store_cluster(svc, host, shared, &change).await? {
                Some(version) => {
                    keep_copy(host, &change).await;
                    host.catalogue.borrow_mut().commit_at(&change, version)
                }
                None => {
                    // Another node changed the dashboard first: its change is learnt
                    // here; the caller may read it and try again.
                    let catalogue = host.catalogue.borrow();
                    return Err(match catalogue.get(change.id) {
                        None => CatalogueError::Refused(Refusal::NoDashboard(change.id)),
                        Some(_) => CatalogueError::Conflict(catalogue.version_of(change.id)),
                    });
                }
            },
        };
        install(svc, host, &change).await?;
        announce(svc, &change, version).await;
        Ok(change.dashboard)
    }
}

/// Tells every shard's streams of a committed change. A shard that misses it is counted
/// and logged by the mesh; its streams show the old layout until the next edit or
/// reconnect.
async fn announce(svc: &Rc<Services>, change: &Change, version: u64) {
    for to in 0..svc.shards {
        let news = Versioned {
            version,
            dashboard: change.dashboard.clone(),
        };
        svc.call(
            to,
            DashboardChanged {
                id: change.id,
                news,
            },
        )
        .await
        .ok();
    }
}

/// Cluster mode: keeps the node's copy of the catalogue in its data directory, which it
/// writes back if Redis ever loses the shared one. The copy is not the record: a failed
/// write is logged.
async fn keep_copy(host: &CatalogueHost, change: &Change) {
    if let Err(e) = store(host, change).await {
        tracing::warn!(
            "keeping a copy of dashboard {}: {e}; the shared catalogue has the change but this node's copy is behind: check that the data directory (--data-dir) is writable and has free space",
            change.id
        );
    }
}

/// Cluster mode: writes a prepared change to the shared catalogue, compared with the
/// version this node holds; returns the new version, or `None` when another node's change
/// came first (learnt here meanwhile). Where Redis lost the catalogue, or holds an older
/// version of the dashboard than this node (it lost writes), this node's copy goes back
/// first and the write is tried once more.
async fn store_cluster(
    svc: &Rc<Services>,
    host: &CatalogueHost,
    shared: &Arc<SharedCatalogue>,
    change: &Change,
) -> Result<Option<u64>, CatalogueError> {
    let expected = host.catalogue.borrow().version_of(change.id);
    for attempt in 0..2 {
        match store_shared(shared, change, expected).await? {
            Written::Stored(version) => return Ok(Some(version)),
            Written::Lost if attempt == 0 => write_back(host, shared, None).await?,
            Written::Conflict(stored) if attempt == 0 && stored > 0 && stored < expected => {
                write_back(host, shared, Some(change.id)).await?;
            }
            Written::Lost | Written::Conflict(_) => break,
        }
    }
    refresh_held(svc, host, change.id, None).await;
    Ok(None)
}

/// Writes back what this node holds (dashboard `only`, or all) where Redis lost it or
/// holds an older version.
async fn write_back(
    host: &CatalogueHost,
    shared: &Arc<SharedCatalogue>,
    only: Option<Uuid>,
) -> Result<(), CatalogueError> {
    let held: Vec<(Dashboard, u64)> = {
        let catalogue = host.catalogue.borrow();
        catalogue
            .ids()
            .into_iter()
            .filter(|id| only.is_none_or(|o| o == *id))
            .filter_map(|id| Some((catalogue.get(id)?.clone(), catalogue.version_of(id))))
            .collect()
    };
    if only.is_none() {
        tracing::warn!(
            dashboards = held.len(),
            "the shared catalogue is gone from redis; writing back this node's copy: nothing to do now; to keep it across redis restarts, turn on redis persistence (appendonly yes)"
        );
    }
    let shared = Arc::clone(shared);
    glommio::executor()
        .spawn_blocking(move || shared.restore(&held))
        .await
        .map_err(CatalogueError::Store)
}

/// Cluster mode: writes a prepared change to the shared catalogue if the dashboard is
/// still at `expected` there.
async fn store_shared(
    shared: &Arc<SharedCatalogue>,
    change: &Change,
    expected: u64,
) -> Result<Written, CatalogueError> {
    let shared = Arc::clone(shared);
    let (id, dashboard) = (change.id, change.dashboard.clone());
    let widgets: Vec<Uuid> = change.removals.iter().map(|w| w.widget_id).collect();
    glommio::executor()
        .spawn_blocking(move || match dashboard {
            Some(d) => shared.put(&d, expected),
            None => shared.delete(id, &widgets, expected),
        })
        .await
        .map_err(CatalogueError::Store)
}

/// Cluster mode: dashboard `id` changed on another node (as of `notice`, when a notice
/// said so): reads it and makes the change here.
pub async fn refresh(svc: &Rc<Services>, id: Uuid, notice: Option<u64>) {
    let Some(host) = svc.catalogue.as_ref() else {
        return;
    };
    let Ok(_permit) = host.writer.acquire_permit(1).await else {
        return;
    };
    refresh_held(svc, host, id, notice).await;
}

/// `refresh`, with the writer's permit held.
async fn refresh_held(svc: &Rc<Services>, host: &CatalogueHost, id: Uuid, notice: Option<u64>) {
    let Some(shared) = host.shared.clone() else {
        return;
    };
    let read = Arc::clone(&shared);
    let fetched = glommio::executor()
        .spawn_blocking(move || read.get(id))
        .await;
    let (dashboard, version) = match fetched {
        // Redis lost the catalogue: a missing dashboard is not a deleted one.
        Ok((_, false)) => {
            if let Err(e) = write_back(host, &shared, None).await {
                tracing::warn!(
                    "writing back the catalogue: {e}; edits are refused until it succeeds, and the node tries again with the next edit or redis reconnect: check that redis (--redis) is reachable and accepts writes"
                );
            }
            return;
        }
        Ok((Some(stored), true)) if stored.version < host.catalogue.borrow().version_of(id) => {
            // Redis lost this dashboard's latest writes: the newer copy goes back.
            if let Err(e) = write_back(host, &shared, Some(id)).await {
                tracing::warn!(
                    "writing back dashboard {id}: {e}; the node tries again at the dashboard's next edit or notice: nothing to do unless it repeats: then check that redis (--redis) is reachable and accepts writes"
                );
            }
            return;
        }
        Ok((Some(stored), true)) => (Some(stored.dashboard), stored.version),
        // Deleted: as of the notice, or just after what this node knows.
        Ok((None, true)) => (
            None,
            notice.unwrap_or_else(|| host.catalogue.borrow().version_of(id) + 1),
        ),
        Err(e) => {
            // The reload after Redis comes back catches it up.
            tracing::warn!(
                "reading dashboard {id} from the shared catalogue: {e}; this node shows its older copy until the dashboard's next change or a redis reconnect: nothing to do unless it repeats: then check that redis (--redis) is reachable"
            );
            return;
        }
    };
    apply_remote(svc, host, id, dashboard, version).await;
}

/// Cluster mode: reloads every dashboard (after the notices may have been missed).
pub async fn reload(svc: &Rc<Services>) {
    let Some(host) = svc.catalogue.as_ref() else {
        return;
    };
    let Some(shared) = host.shared.clone() else {
        return;
    };
    let Ok(_permit) = host.writer.acquire_permit(1).await else {
        return;
    };
    let load = Arc::clone(&shared);
    let (all, kept) = match glommio::executor()
        .spawn_blocking(move || load.load_all())
        .await
    {
        Ok(loaded) => loaded,
        Err(e) => {
            tracing::warn!(
                "reloading the shared catalogue: {e}; changes made while this node was not listening are missing until the next redis reconnect: check that redis (--redis) is reachable"
            );
            return;
        }
    };
    // Redis lost the catalogue, or older versions than this node holds: this node's
    // copies go back (the highest version wins), and their notices bring them here.
    let behind = all
        .iter()
        .any(|s| s.version < host.catalogue.borrow().version_of(s.dashboard.dashboard_id));
    if (!kept || behind)
        && let Err(e) = write_back(host, &shared, None).await
    {
        tracing::warn!(
            "writing back the catalogue: {e}; edits are refused until it succeeds, and the node tries again with the next edit or redis reconnect: check that redis (--redis) is reachable and accepts writes"
        );
    }
    let mut gone = host.catalogue.borrow().ids();
    for stored in all {
        let id = stored.dashboard.dashboard_id;
        gone.retain(|g| *g != id);
        apply_remote(svc, host, id, Some(stored.dashboard), stored.version).await;
    }
    // Deleted while this node was not listening (only where Redis kept the catalogue:
    // otherwise missing is not deleted).
    for id in gone.into_iter().filter(|_| kept) {
        let version = host.catalogue.borrow().version_of(id) + 1;
        apply_remote(svc, host, id, None, version).await;
    }
}

/// Makes another node's change here: committed, installed, announced to the streams.
async fn apply_remote(
    svc: &Rc<Services>,
    host: &CatalogueHost,
    id: Uuid,
    dashboard: Option<Dashboard>,
    version: u64,
) {
    let Some(change) = host.catalogue.borrow().remote(id, dashboard, version) else {
        return;
    };
    keep_copy(host, &change).await;
    host.catalogue.borrow_mut().commit_at(&change, version);
    if let Err(e) = install(svc, host, &change).await {
        tracing::warn!(
            "installing the widgets of dashboard {id}: {e}; this node installs them again with the dashboard's next change: make one, or restart the node; if it repeats, look for a slow shard in livedash_tick_duration_seconds or raise --call-timeout-ms"
        );
    }
    announce(svc, &change, version).await;
}

/// Writes a prepared change to the store, on the executor's blocking thread (file I/O
/// with fsync), so the shard keeps serving ingest and streams meanwhile.
async fn store(host: &CatalogueHost, change: &Change) -> Result<(), CatalogueError> {
    let store = Arc::clone(&host.store);
    let (id, dashboard) = (change.id, change.dashboard.clone());
    glommio::executor()
        .spawn_blocking(move || match dashboard {
            Some(d) => store.put(&d),
            None => store.delete(id),
        })
        .await
        .map_err(|e| CatalogueError::Store(e.to_string()))
}

/// Installs a committed change on every shard: each widget on the shard that owns its
/// metric, and removed from the others (a widget moved to another metric may change
/// owner).
async fn install(
    svc: &Rc<Services>,
    host: &CatalogueHost,
    change: &Change,
) -> Result<(), CatalogueError> {
    let horizon_ms = host.catalogue.borrow().horizon_ms();
    let mut per_shard: Vec<InstallWidgets> = (0..svc.shards)
        .map(|_| InstallWidgets {
            upsert: Vec::new(),
            remove: Vec::new(),
            horizon_ms,
        })
        .collect();
    for w in &change.removals {
        per_shard[svc.owner(&w.spec.metric_name)]
            .remove
            .push(w.widget_id);
    }
    for w in &change.upserts {
        let owner = svc.owner(&w.spec.metric_name);
        for (shard, install) in per_shard.iter_mut().enumerate() {
            if shard != owner {
                install.remove.push(w.widget_id);
            }
        }
        per_shard[owner].upsert.push(w.clone());
    }
    for (to, install) in per_shard.into_iter().enumerate() {
        svc.call(to, install)
            .await?
            .map_err(CatalogueError::Install)?;
    }
    Ok(())
}

/// Every dashboard, by name then id.
pub async fn list(svc: &Rc<Services>) -> Result<Vec<Dashboard>, CatalogueError> {
    svc.call(CATALOGUE_SHARD, ListDashboards).await?
}

/// Every dashboard as `GET /dashboards` answers it (shared bytes).
pub async fn encoded_list(svc: &Rc<Services>) -> Result<Bytes, CatalogueError> {
    svc.call(CATALOGUE_SHARD, EncodedDashboards).await?
}

/// Dashboard `id` as `GET /dashboards/{id}` answers it (shared bytes).
pub async fn encoded(svc: &Rc<Services>, id: Uuid) -> Result<Bytes, CatalogueError> {
    svc.call(CATALOGUE_SHARD, EncodedDashboard(id)).await?
}

/// Makes an edit; returns the dashboard after it (`None` once deleted).
pub async fn edit(svc: &Rc<Services>, edit: Edit) -> Result<Option<Dashboard>, CatalogueError> {
    svc.call(CATALOGUE_SHARD, EditDashboards(edit)).await?
}

/// A widget's value now, from the shard that owns its metric.
pub async fn reading(
    svc: &Rc<Services>,
    dashboard: Uuid,
    widget: Uuid,
) -> Result<WidgetReading, CatalogueError> {
    let located = svc
        .call(CATALOGUE_SHARD, LocateWidget { dashboard, widget })
        .await??;
    let metric = &located.spec.metric_name;
    match svc.call(svc.owner(metric), ReadValue(widget)).await? {
        Reading::Value(value, stale) => Ok(WidgetReading {
            current: value,
            stale,
        }),
        Reading::Missing => Err(CatalogueError::NotReady),
        Reading::NotOwned(partition) => match &svc.cluster {
            // Cluster mode: the value its owner stored, stale if the owner went quiet.
            Some(link) => {
                let stored = super::cluster::reread(svc, dashboard, vec![widget]).await;
                let value = stored
                    .into_iter()
                    .next()
                    .ok_or(CatalogueError::NotReady)?
                    .value;
                let interval = (located.spec.refresh_interval_seconds * 1000.0) as i64;
                Ok(WidgetReading {
                    current: value,
                    stale: link.stale(partition, interval, crate::clock::now_ms()),
                })
            }
            None => Err(CatalogueError::NotOwned(partition)),
        },
    }
}
