//! Snapshots shared by the streams that join a dashboard at the same moment: one is
//! encoded per room state and handed to every joiner as shared bytes, so a crowd of
//! joiners, or slow readers of a large snapshot, hold one copy per state, not one each.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use glommio::sync::Semaphore;
use hashbrown::HashMap;
use livedash_engine::Dashboard;
use uuid::Uuid;

use super::Services;
use super::hub::{self, StreamError};

/// A snapshot is reused for at most this long, even when no frame went to its room
/// (staleness marks change with time alone).
const FRESH_FOR: Duration = Duration::from_millis(500);

/// The state of a room a snapshot shows: its dashboard version and update frames sent.
pub type Generation = (u64, u64);

#[derive(Debug, Default)]
pub struct Snapshots {
    cached: RefCell<HashMap<Uuid, (Generation, Instant, Bytes)>>,
    /// One build at a time per dashboard: joiners behind it take what it built.
    building: RefCell<HashMap<Uuid, Rc<Semaphore>>>,
}

impl Snapshots {
    fn lock(&self, id: Uuid) -> Rc<Semaphore> {
        let mut building = self.building.borrow_mut();
        // Locks nobody holds or waits for go.
        building.retain(|_, lock| Rc::strong_count(lock) > 1);
        Rc::clone(
            building
                .entry(id)
                .or_insert_with(|| Rc::new(Semaphore::new(1))),
        )
    }

    fn get(&self, id: Uuid, generation: Generation) -> Option<Bytes> {
        let cached = self.cached.borrow();
        let (at, made, bytes) = cached.get(&id)?;
        (*at == generation && made.elapsed() < FRESH_FOR).then(|| bytes.clone())
    }

    fn put(&self, id: Uuid, generation: Generation, bytes: Bytes) {
        let mut cached = self.cached.borrow_mut();
        cached.retain(|_, (_, made, _)| made.elapsed() < FRESH_FOR);
        cached.insert(id, (generation, Instant::now(), bytes));
    }
}

/// The snapshot frame of `dashboard` for a connection that joined its room: the one
/// built for the room's current state if there is one, else a new one.
pub async fn snapshot(svc: &Rc<Services>, dashboard: &Dashboard) -> Result<Bytes, StreamError> {
    let id = dashboard.dashboard_id;
    let snapshots = &svc.hub.snapshots;
    let lock = snapshots.lock(id);
    // The semaphore is never closed, so the permit always comes.
    let _permit = lock.acquire_permit(1).await;
    let generation = svc.hub.generation(id);
    if let Some(g) = generation
        && let Some(bytes) = snapshots.get(id, g)
    {
        return Ok(bytes);
    }
    let bytes = hub::snapshot(svc, dashboard).await?;
    // Kept only if no frame went to the room while it was built.
    if let Some(g) = generation
        && svc.hub.generation(id) == Some(g)
    {
        snapshots.put(id, g, bytes.clone());
    }
    Ok(bytes)
}
