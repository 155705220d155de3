//! The refresh: runs the widget refreshes that are due and sends each changed value once
//! to every shard whose streams show it (as the owner's `Interest` says).

use std::rc::Rc;

use glommio::spawn_local;
use livedash_engine::WidgetValue;
use uuid::Uuid;

use super::Services;
use super::calls::Push;
use super::hub::Hub;
use crate::clock::now_ms;

/// Runs the refreshes due at `now` and pushes the values that changed; returns when the
/// next refresh is due.
pub fn run(svc: &Rc<Services>, now: i64) -> Option<i64> {
    let started = std::time::Instant::now();
    let mut unchanged = Vec::new();
    let (mut changed, next, ran) = {
        let mut engine = svc.engine.borrow_mut();
        let before = engine.stats().values_computed;
        let changed = engine.tick_noting(now, &mut unchanged);
        let ran = engine.stats().values_computed != before;
        (changed, engine.next_due(), ran)
    };
    let m = &svc.metrics;
    if ran && m.on {
        m.tick.observe(started.elapsed().as_secs_f64());
    }
    if svc.kafka.is_some() {
        // Cluster mode: a widget whose partition another node owns has no value here.
        let engine = svc.engine.borrow();
        let owned = |id: &Uuid| {
            engine
                .widget(id)
                .is_some_and(|w| svc.not_owned(&w.spec.metric_name).is_none())
        };
        changed.retain(|v| owned(&v.widget_id));
        unchanged.retain(owned);
    }
    m.values_changed
        .set(m.values_changed.get() + changed.len() as u64);
    super::cluster::publish(svc, &changed);
    if !changed.is_empty() || !unchanged.is_empty() {
        push(svc, changed, &unchanged, now_ms());
    }
    next
}

/// Sends changed values, and the ids of the widgets refreshed without a change, to the
/// shards with streams that show them, one call each.
fn push(svc: &Rc<Services>, changed: Vec<WidgetValue>, unchanged: &[Uuid], computed_at: i64) {
    let (routed, quiet) = {
        let interest = svc.interest.borrow();
        (
            interest.route(changed, svc.shards),
            interest.route_ids(unchanged, svc.shards),
        )
    };
    for (to, (values, unchanged)) in routed.into_iter().zip(quiet).enumerate() {
        if values.is_empty() && unchanged.is_empty() {
            continue;
        }
        if to == svc.id {
            Hub::pushed(svc, values, unchanged, computed_at);
        } else {
            // A failed push is counted and logged by the mesh; the next tick sends newer
            // values.
            let svc = Rc::clone(svc);
            let push = Push {
                values,
                unchanged,
                computed_at,
            };
            spawn_local(async move { svc.mesh.remote(to, push).await.ok() }).detach();
        }
    }
}
