//! Snapshots shared by the streams that join a dashboard at the same moment: one is
//! encoded per room state and handed to every joiner as shared bytes, so a crowd of
//! joiners, or slow readers of a large snapshot, hold one copy per state, not one each.
//!
//! A joiner may take a snapshot that was built for the room's current state, or one
//! whose build began after the joiner entered the room: that one read every value after
//! the joiner started to receive the room's frames, exactly as a build of its own would.
//! So joiners queued behind a build take what it made, and share its failure too,
//! instead of each building (and waiting on the owner shards) in turn.

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

/// A snapshot is reused for at most this long after it was built, even when no frame
/// went to its room (staleness marks change with time alone).
const FRESH_FOR: Duration = Duration::from_millis(500);

/// The state of a room a snapshot shows: its dashboard version and update frames sent.
pub type Generation = (u64, u64);

/// One build: the room's state and the time when it began, what it made and when.
#[derive(Debug, Clone)]
struct Built {
    generation: Option<Generation>,
    began: Instant,
    done: Instant,
    made: Result<Bytes, String>,
}

#[derive(Debug, Default)]
pub struct Snapshots {
    built: RefCell<HashMap<Uuid, Built>>,
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

    /// Drops builds too old to be used again (called on every use, and by the sweep).
    pub fn prune(&self) {
        self.built
            .borrow_mut()
            .retain(|_, b| b.done.elapsed() < FRESH_FOR);
    }

    /// What a joiner that entered the room at `joined` may take, the room being at
    /// `generation` now.
    fn usable(&self, id: Uuid, joined: Instant, generation: Option<Generation>) -> Option<Built> {
        self.prune();
        let built = self.built.borrow();
        let b = built.get(&id)?;
        let same_state = b.made.is_ok() && generation.is_some() && b.generation == generation;
        (b.began >= joined || same_state).then(|| b.clone())
    }
}

/// The snapshot frame of `dashboard` for a connection that entered its room at `joined`.
pub async fn snapshot(
    svc: &Rc<Services>,
    dashboard: &Dashboard,
    joined: Instant,
) -> Result<Bytes, StreamError> {
    let id = dashboard.dashboard_id;
    let snapshots = &svc.hub.snapshots;
    let lock = snapshots.lock(id);
    // The semaphore is never closed, so the permit always comes.
    let _permit = lock.acquire_permit(1).await;
    if let Some(b) = snapshots.usable(id, joined, svc.hub.generation(id)) {
        return b.made.map_err(StreamError::Shared);
    }
    let generation = svc.hub.generation(id);
    let began = Instant::now();
    let made = hub::snapshot(svc, dashboard).await;
    // Kept for the same state only if no frame went to the room while it was built;
    // for the joiners waiting behind this build, whatever it made.
    let still = svc.hub.generation(id) == generation;
    snapshots.built.borrow_mut().insert(
        id,
        Built {
            generation: generation.filter(|_| still),
            began,
            done: Instant::now(),
            made: made.as_ref().map(Bytes::clone).map_err(ToString::to_string),
        },
    );
    made
}
