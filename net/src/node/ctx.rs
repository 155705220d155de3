//! What one shard owns at run time: its engine shard, its side of the mesh, and (on
//! shard 0) the dashboard catalogue and store. Everything here is used from one thread.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use glommio::channels::channel_mesh::Senders;
use glommio::channels::local_channel::{self, LocalSender};
use glommio::sync::Semaphore;
use hashbrown::HashMap;
use livedash_engine::Shard;

use super::mesh::{Call, Msg, Reply, ShardStats};
use crate::catalogue::Catalogue;
use crate::config::Config;
use crate::stop::Stop;
use crate::store::DashboardStore;
use crate::stream::frames::{WidgetSnapshot, WidgetUpdate};
use crate::stream::hub::Hub;
use uuid::Uuid;

/// The catalogue and its store, on shard 0 only.
pub struct CatalogueHost {
    pub catalogue: RefCell<Catalogue>,
    /// Shared with the blocking thread that does the store's file I/O.
    pub store: std::sync::Arc<dyn DashboardStore>,
    /// Serialises changes: one change is prepared, stored and routed at a time.
    pub writer: Semaphore,
}

impl std::fmt::Debug for CatalogueHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CatalogueHost").finish_non_exhaustive()
    }
}

/// One shard's run-time state.
#[derive(Debug)]
pub struct ShardCtx {
    pub id: usize,
    pub shards: usize,
    pub config: Config,
    pub engine: RefCell<Shard>,
    pub mesh: Senders<Msg>,
    pending: RefCell<HashMap<u64, LocalSender<Reply>>>,
    next_call: Cell<u64>,
    pub catalogue: Option<CatalogueHost>,
    pub stop: Stop,
    pub connections: Cell<usize>,
    /// The streams this shard serves.
    pub hub: Hub,
    /// Widgets this shard owns that some shard streams: widget to (dashboard, shard bits).
    pub interest: RefCell<HashMap<Uuid, (Uuid, u64)>>,
    engine_apply_ns: Cell<u64>,
    engine_events: Cell<u64>,
    /// Metric names seen recently (sampled), with when: suggestions for the UI.
    recent_metrics: RefCell<HashMap<String, i64>>,
}

/// Every this-many-th ingested event is sampled for the recent metric names.
const RECENT_SAMPLE: usize = 8;
/// Most recent metric names kept per shard.
const RECENT_MAX: usize = 2000;

/// Wall-clock time in epoch milliseconds.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl ShardCtx {
    pub fn new(
        id: usize,
        config: Config,
        engine: Shard,
        mesh: Senders<Msg>,
        catalogue: Option<CatalogueHost>,
    ) -> Self {
        Self {
            id,
            shards: mesh.nr_consumers(),
            config,
            engine: RefCell::new(engine),
            mesh,
            pending: RefCell::new(HashMap::new()),
            next_call: Cell::new(0),
            catalogue,
            stop: Stop::default(),
            connections: Cell::new(0),
            hub: Hub::default(),
            interest: RefCell::new(HashMap::new()),
            engine_apply_ns: Cell::new(0),
            engine_events: Cell::new(0),
            recent_metrics: RefCell::new(HashMap::new()),
        }
    }

    /// Runs `call` on shard `to` and returns its reply.
    pub fn call(self: &Rc<Self>, to: usize, call: Call) -> Pin<Box<dyn Future<Output = Reply>>> {
        let this = Rc::clone(self);
        Box::pin(async move {
            if to == this.id {
                return this.handle(call).await;
            }
            let id = this.next_call.get();
            this.next_call.set(id + 1);
            let (tx, rx) = local_channel::new_bounded(1);
            this.pending.borrow_mut().insert(id, tx);
            let msg = Msg::Call {
                from: this.id,
                id,
                call,
            };
            if this.mesh.send_to(to, msg).await.is_err() {
                this.pending.borrow_mut().remove(&id);
                return Reply::Failed(format!("shard {to} is not reachable"));
            }
            rx.recv()
                .await
                .unwrap_or_else(|| Reply::Failed(format!("shard {to} dropped the call")))
        })
    }

    /// Samples metric names of an ingested batch into the bounded recent set.
    fn remember_metrics(&self, events: &[livedash_engine::MetricEvent]) {
        let now = now_ms();
        let mut recent = self.recent_metrics.borrow_mut();
        for ev in events.iter().step_by(RECENT_SAMPLE) {
            match recent.get_mut(ev.metric_name.as_str()) {
                Some(seen) => *seen = now,
                None => {
                    recent.insert(ev.metric_name.clone(), now);
                }
            }
        }
        if recent.len() > RECENT_MAX {
            // Keep the newer half.
            let mut times: Vec<i64> = recent.values().copied().collect();
            let (_, cut, _) = times.select_nth_unstable(RECENT_MAX / 2);
            let cut = *cut;
            recent.retain(|_, seen| *seen >= cut);
        }
    }

    /// Delivers a reply that came back over the mesh.
    pub fn deliver(&self, id: u64, reply: Reply) {
        if let Some(tx) = self.pending.borrow_mut().remove(&id) {
            let _ = tx.try_send(reply);
        }
    }

    /// Executes a call addressed to this shard.
    pub async fn handle(self: &Rc<Self>, call: Call) -> Reply {
        match call {
            Call::Ingest(events) => {
                let started = Instant::now();
                let out = self.engine.borrow_mut().apply(&events, now_ms());
                self.engine_apply_ns
                    .set(self.engine_apply_ns.get() + started.elapsed().as_nanos() as u64);
                self.engine_events
                    .set(self.engine_events.get() + events.len() as u64);
                self.remember_metrics(&events);
                Reply::Ingested {
                    accepted: out.accepted,
                    rejected: out.rejected,
                }
            }
            Call::Widgets {
                upsert,
                remove,
                horizon_ms,
            } => {
                let now = now_ms();
                let mut engine = self.engine.borrow_mut();
                let mut interest = self.interest.borrow_mut();
                for id in &remove {
                    engine.remove_widget(id);
                    interest.remove(id);
                }
                for widget in upsert {
                    if let Err(e) = engine.upsert_widget(widget, now) {
                        return Reply::Failed(e.to_string());
                    }
                }
                engine.set_min_horizon_ms(horizon_ms);
                Reply::Done
            }
            Call::Value(widget_id) => {
                let now = now_ms();
                let mut engine = self.engine.borrow_mut();
                let value = engine.value(&widget_id, now);
                let stale = engine.is_behind(&widget_id, now).unwrap_or(true);
                Reply::Value { value, stale }
            }
            Call::Http(request) => Reply::Http(crate::api::dashboards::handle(self, request).await),
            Call::Stats => {
                let engine = self.engine.borrow();
                let st = engine.stats();
                Reply::Stats(ShardStats {
                    shard: self.id,
                    accepted: st.accepted,
                    unmatched: st.unmatched,
                    rejected_too_old: st.rejected_too_old,
                    rejected_too_far_ahead: st.rejected_too_far_ahead,
                    widgets: engine.widget_count(),
                    queries: engine.query_count(),
                    window_bytes: engine.window_heap_bytes(),
                    engine_apply_ns: self.engine_apply_ns.get(),
                    engine_events: self.engine_events.get(),
                    connections: self.connections.get(),
                    streams: self.hub.connections(),
                    frames_queued: self.hub.frames_queued.get(),
                    frames_written: self.hub.frames_written.get(),
                    write_lag_ms_sum: self.hub.write_lag_ms_sum.get(),
                    write_lag_ms_max: self.hub.write_lag_ms_max.replace(0),
                })
            }
            Call::Interest {
                shard,
                dashboard,
                add,
                remove,
            } => {
                let bit = 1u64 << shard;
                let mut interest = self.interest.borrow_mut();
                for w in add {
                    interest.entry(w).or_insert((dashboard, 0)).1 |= bit;
                }
                for w in remove {
                    if let Some(entry) = interest.get_mut(&w) {
                        entry.1 &= !bit;
                        if entry.1 == 0 {
                            interest.remove(&w);
                        }
                    }
                }
                Reply::Done
            }
            Call::Snapshot(ids) => {
                let now = now_ms();
                let mut engine = self.engine.borrow_mut();
                let mut out = Vec::with_capacity(ids.len());
                for id in ids {
                    let Some(value) = engine.value(&id, now) else {
                        continue;
                    };
                    let stale = engine.is_behind(&id, now).unwrap_or(false);
                    let history = engine
                        .history(&id)
                        .map(|h| h.iter().copied().collect())
                        .unwrap_or_default();
                    out.push(WidgetSnapshot {
                        current: WidgetUpdate::of(&value, stale),
                        history,
                    });
                }
                Reply::Snapshot(out)
            }
            Call::Push(values) => {
                Hub::pushed(self, values);
                Reply::Done
            }
            Call::DashboardChanged(id, dashboard) => {
                Hub::dashboard_changed(self, id, dashboard).await;
                Reply::Done
            }
            Call::RecentMetrics => {
                Reply::Metrics(self.recent_metrics.borrow().keys().cloned().collect())
            }
            Call::GetDashboard(id) => Reply::Dashboard(
                self.catalogue
                    .as_ref()
                    .and_then(|host| host.catalogue.borrow().get(id).cloned()),
            ),
        }
    }
}
