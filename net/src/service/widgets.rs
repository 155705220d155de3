//! The widgets a shard owns: installing and removing them in its engine, and reading
//! their values for snapshots (one value for the API, values with history for streams).

use std::rc::Rc;
use std::sync::Arc;

use livedash_engine::{Detail, HistoryPoint, WidgetValue};
use uuid::Uuid;

use super::Services;
use super::backfill;
use super::calls::{InstallWidgets, ReadStates, ReadValue, Reading};
use super::mesh::ShardCall;
use crate::clock::now_ms;

impl ShardCall for InstallWidgets {
    /// The engine's refusal of a widget, in words.
    type Reply = Result<(), String>;

    async fn run(self, svc: &Rc<Services>) -> Self::Reply {
        let now = now_ms();
        let mut engine = svc.engine.borrow_mut();
        // Cluster mode: queries new here are backfilled from the topic.
        let before = svc.kafka.as_ref().map(|_| engine.query_keys());
        for id in &self.remove {
            engine.remove_widget(id);
            svc.interest.borrow_mut().forget(id);
        }
        let mut result = Ok(());
        for widget in self.upsert {
            if let Err(e) = engine.upsert_widget(widget, now) {
                result = Err(e.to_string());
                break;
            }
        }
        engine.set_min_horizon_ms(self.horizon_ms);
        drop(engine);
        if let Some(before) = before {
            backfill::new_queries(svc, &before);
        }
        result
    }
}

impl ShardCall for ReadValue {
    type Reply = Reading;

    async fn run(self, svc: &Rc<Services>) -> Reading {
        let now = now_ms();
        let mut engine = svc.engine.borrow_mut();
        let Some(metric) = engine.widget(&self.0).map(|w| w.spec.metric_name.clone()) else {
            return Reading::Missing;
        };
        if let Some(partition) = svc.not_owned(&metric) {
            return Reading::NotOwned(partition);
        }
        match engine.value(&self.0, now) {
            Some(value) => {
                let stale = engine.is_behind(&self.0, now).unwrap_or(true);
                Reading::Value(value, stale)
            }
            None => Reading::Missing,
        }
    }
}

/// A widget's value now, whether it is stale, and its recent history.
#[derive(Debug, Clone)]
pub struct WidgetState {
    pub value: WidgetValue,
    pub stale: bool,
    pub history: Vec<HistoryPoint>,
    pub details: Vec<(i64, Arc<Detail>)>,
}

/// The states of widgets an owner shard read, and the widgets whose partition another
/// node owns (cluster mode), with that partition.
#[derive(Debug, Default)]
pub struct States {
    pub states: Vec<WidgetState>,
    pub not_owned: Vec<(Uuid, u32)>,
}

impl ShardCall for ReadStates {
    type Reply = States;

    async fn run(self, svc: &Rc<Services>) -> States {
        let now = now_ms();
        let mut engine = svc.engine.borrow_mut();
        let mut out = States {
            states: Vec::with_capacity(self.0.len()),
            not_owned: Vec::new(),
        };
        for id in self.0 {
            let unowned = engine
                .widget(&id)
                .and_then(|w| svc.not_owned(&w.spec.metric_name));
            if let Some(partition) = unowned {
                out.not_owned.push((id, partition));
                continue;
            }
            let Some(value) = engine.value(&id, now) else {
                continue;
            };
            out.states.push(WidgetState {
                value,
                stale: engine.is_behind(&id, now).unwrap_or(false),
                history: engine
                    .history(&id)
                    .map(|h| h.iter().copied().collect())
                    .unwrap_or_default(),
                details: engine
                    .detail_history(&id)
                    .map(|h| h.iter().cloned().collect())
                    .unwrap_or_default(),
            });
        }
        out
    }
}
