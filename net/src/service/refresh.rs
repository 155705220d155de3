//! The refresh: runs the widget refreshes that are due and sends each changed value once
//! to every shard whose streams show it (as the owner's `Interest` says).

use std::rc::Rc;

use glommio::spawn_local;
use livedash_engine::WidgetValue;

use super::Services;
use super::calls::Push;
use super::hub::Hub;

/// Runs the refreshes due at `now` and pushes the values that changed; returns when the
/// next refresh is due.
pub fn run(svc: &Rc<Services>, now: i64) -> Option<i64> {
    let (mut changed, next) = {
        let mut engine = svc.engine.borrow_mut();
        (engine.tick(now), engine.next_due())
    };
    if svc.kafka.is_some() {
        // Cluster mode: a widget whose partition another node owns has no value here.
        let engine = svc.engine.borrow();
        changed.retain(|v| {
            engine
                .widget(&v.widget_id)
                .is_some_and(|w| svc.not_owned(&w.spec.metric_name).is_none())
        });
    }
    super::cluster::publish(svc, &changed);
    if !changed.is_empty() {
        push(svc, changed);
    }
    next
}

/// Sends changed values to the shards with streams that show them, one call each.
fn push(svc: &Rc<Services>, changed: Vec<WidgetValue>) {
    let routed = svc.interest.borrow().route(changed, svc.shards);
    for (to, values) in routed.into_iter().enumerate() {
        if values.is_empty() {
            continue;
        }
        if to == svc.id {
            Hub::pushed(svc, values);
        } else {
            // A failed push is counted and logged by the mesh; the next tick sends newer
            // values.
            let svc = Rc::clone(svc);
            spawn_local(async move { svc.mesh.remote(to, Push(values)).await.ok() }).detach();
        }
    }
}
