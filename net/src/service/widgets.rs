//! The widgets a shard owns: installing and removing them in its engine, and reading
//! their values for snapshots (one value for the API, values with history for streams).

use std::rc::Rc;

use livedash_engine::{HistoryPoint, WidgetValue};

use super::Services;
use super::calls::{InstallWidgets, ReadStates, ReadValue};
use super::mesh::ShardCall;
use crate::clock::now_ms;

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
