//! The catalogue's budgets: most dashboards, widgets and distinct queries a node keeps.
//! A change is refused only when it would pass a budget and grow what it counts, so a node
//! started with lower budgets than it holds can still shrink.

use hashbrown::HashSet;
use livedash_engine::QueryKey;

use super::{Catalogue, Change, Refusal};

/// Most dashboards, widgets (over all dashboards) and distinct queries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budgets {
    pub dashboards: usize,
    pub widgets: usize,
    pub queries: usize,
}

impl Default for Budgets {
    /// No limits.
    fn default() -> Self {
        Self {
            dashboards: usize::MAX,
            widgets: usize::MAX,
            queries: usize::MAX,
        }
    }
}

/// Counts of what the budgets bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Held {
    dashboards: usize,
    widgets: usize,
    queries: usize,
}

impl Catalogue {
    /// What the catalogue holds, with dashboard `id` as `with` (`None`: without it).
    fn held(&self, id: uuid::Uuid, with: Option<&livedash_engine::Dashboard>) -> Held {
        let others = self.dashboards.values().filter(|d| d.dashboard_id != id);
        let all = || others.clone().chain(with);
        let queries: HashSet<QueryKey> = all()
            .flat_map(|d| &d.widgets)
            .map(|w| QueryKey::of(&w.spec))
            .collect();
        Held {
            dashboards: all().count(),
            widgets: all().map(|d| d.widgets.len()).sum(),
            queries: queries.len(),
        }
    }

    /// Refuses `change` if it would pass a budget that it grows.
    pub(super) fn within_budgets(&self, change: &Change) -> Result<(), Refusal> {
        let b = self.budgets;
        if change.dashboard.is_none() || b == Budgets::default() {
            return Ok(());
        }
        let before = self.held(change.id, self.dashboards.get(&change.id));
        let after = self.held(change.id, change.dashboard.as_ref());
        let over = |what: &str, key: &str, before: usize, after: usize, max: usize| {
            if after > max && after > before {
                Err(Refusal::OverBudget(format!(
                    "the node holds {before} {what} and its budget is {max} ({key}); \
                     delete some, or raise {key}"
                )))
            } else {
                Ok(())
            }
        };
        over(
            "dashboards",
            "max_dashboards",
            before.dashboards,
            after.dashboards,
            b.dashboards,
        )?;
        over(
            "widgets",
            "max_widgets",
            before.widgets,
            after.widgets,
            b.widgets,
        )?;
        over(
            "distinct queries (metric, window, tag filter)",
            "max_queries",
            before.queries,
            after.queries,
            b.queries,
        )
    }
}
