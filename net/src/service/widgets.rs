//! The widgets a shard owns: installing and removing them in its engine, and reading
//! their values for snapshots (one value for the API, values with history for streams).

use std::rc::Rc;

use livedash_engine::{HistoryPoint, Widget, WidgetValue};
use uuid::Uuid;

use super::Services;
use super::mesh::ShardCall;
use crate::clock::now_ms;

/// Install and remove widgets whose metrics the receiver owns, and set the too-old
/// horizon.
#[derive(Debug)]
pub struct InstallWidgets {
    pub upsert: Vec<Widget>,
    pub remove: Vec<Uuid>,
    pub horizon_ms: i64,
}

impl ShardCall for InstallWidgets {
    /// The engine's refusal of a widget, in words.
    type Reply = Result<(), String>;

    async fn run(self, svc: &Rc<Services>) -> Self::Reply {
        let now = now_ms();
        let mut engine = svc.engine.borrow_mut();
        for id in &self.remove {
            engine.remove_widget(id);
            svc.interest.borrow_mut().forget(id);
        }
        for widget in self.upsert {
            engine
                .upsert_widget(widget, now)
                .map_err(|e| e.to_string())?;
        }
        engine.set_min_horizon_ms(self.horizon_ms);
        Ok(())
    }
}

/// The current value of a widget the receiver owns, and whether its refreshes run late.
#[derive(Debug)]
pub struct ReadValue(pub Uuid);

impl ShardCall for ReadValue {
    /// `None` while the widget is not installed.
    type Reply = Option<(WidgetValue, bool)>;

    async fn run(self, svc: &Rc<Services>) -> Self::Reply {
        let now = now_ms();
        let mut engine = svc.engine.borrow_mut();
        let value = engine.value(&self.0, now)?;
        let stale = engine.is_behind(&self.0, now).unwrap_or(true);
        Some((value, stale))
    }
}

/// A widget's value now, whether it is stale, and its recent history.
#[derive(Debug, Clone)]
pub struct WidgetState {
    pub value: WidgetValue,
    pub stale: bool,
    pub history: Vec<HistoryPoint>,
}

/// The states of widgets the receiver owns (those installed; others are left out).
#[derive(Debug)]
pub struct ReadStates(pub Vec<Uuid>);

impl ShardCall for ReadStates {
    type Reply = Vec<WidgetState>;

    async fn run(self, svc: &Rc<Services>) -> Self::Reply {
        let now = now_ms();
        let mut engine = svc.engine.borrow_mut();
        let mut out = Vec::with_capacity(self.0.len());
        for id in self.0 {
            let Some(value) = engine.value(&id, now) else {
                continue;
            };
            out.push(WidgetState {
                value,
                stale: engine.is_behind(&id, now).unwrap_or(false),
                history: engine
                    .history(&id)
                    .map(|h| h.iter().copied().collect())
                    .unwrap_or_default(),
            });
        }
        out
    }
}
