//! The catalogue service: reads and edits of dashboards for any front end. The catalogue
//! lives on one shard; an edit there is validated, stored durably, committed, installed on
//! the shards that own the widgets' metrics, and announced to every shard's streams before
//! it returns, so the next read anywhere sees it.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use glommio::sync::Semaphore;
use livedash_engine::{Dashboard, WidgetReading};
use uuid::Uuid;

pub use super::calls::CatalogueError;
use super::calls::{
    DashboardChanged, EditDashboards, GetDashboard, InstallWidgets, ListDashboards, LocateWidget,
    ReadValue, Reading,
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
}

impl std::fmt::Debug for CatalogueHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CatalogueHost")
            .field("catalogue", &self.catalogue)
            .finish_non_exhaustive()
    }
}

impl CatalogueHost {
    pub fn new(catalogue: Catalogue, store: Arc<dyn DashboardStore>) -> Self {
        Self {
            catalogue: RefCell::new(catalogue),
            store,
            writer: Semaphore::new(1),
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

impl ShardCall for GetDashboard {
    type Reply = Result<Versioned, CatalogueError>;

    async fn run(self, svc: &Rc<Services>) -> Self::Reply {
        Ok(host(svc)?.catalogue.borrow().versioned(self.0))
    }
}

impl ShardCall for LocateWidget {
    type Reply = Result<String, CatalogueError>;

    async fn run(self, svc: &Rc<Services>) -> Self::Reply {
        let catalogue = host(svc)?.catalogue.borrow();
        let widget = catalogue.widget(self.dashboard, self.widget)?;
        Ok(widget.spec.metric_name.clone())
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
        store(host, &change).await?;
        let version = host.catalogue.borrow_mut().commit(&change);
        install(svc, host, &change).await?;
        // Streams follow the edit: added widgets start, removed ones stop. A shard that
        // misses it is counted and logged by the mesh; its streams show the old layout
        // until the next edit or reconnect.
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
        Ok(change.dashboard)
    }
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

/// Dashboard `id`.
pub async fn get(svc: &Rc<Services>, id: Uuid) -> Result<Dashboard, CatalogueError> {
    let versioned = svc.call(CATALOGUE_SHARD, GetDashboard(id)).await??;
    versioned
        .dashboard
        .ok_or(CatalogueError::Refused(Refusal::NoDashboard(id)))
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
    let metric = svc
        .call(CATALOGUE_SHARD, LocateWidget { dashboard, widget })
        .await??;
    match svc.call(svc.owner(&metric), ReadValue(widget)).await? {
        Reading::Value(value, stale) => Ok(WidgetReading {
            current: value,
            stale,
        }),
        Reading::Missing => Err(CatalogueError::NotReady),
        Reading::NotOwned(partition) => Err(CatalogueError::NotOwned(partition)),
    }
}
