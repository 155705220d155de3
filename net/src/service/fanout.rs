//! The owner side of the fan-out: which shards stream each widget this shard owns
//! (`Interest`), kept current by the `Watch` calls of the shards whose streams join and
//! leave.

use std::rc::Rc;

use hashbrown::HashMap;
use livedash_engine::WidgetValue;
use uuid::Uuid;

use super::Services;
use super::calls::Watch;
use super::mesh::ShardCall;

/// Widgets this shard owns that some shard streams: widget to (dashboard, shard bits).
#[derive(Debug, Default)]
pub struct Interest {
    watched: HashMap<Uuid, (Uuid, u64)>,
}

impl Interest {
    /// Shard `shard` streams `widgets` of `dashboard` from now on.
    pub fn add(&mut self, shard: usize, dashboard: Uuid, widgets: &[Uuid]) {
        for w in widgets {
            self.watched.entry(*w).or_insert((dashboard, 0)).1 |= 1 << shard;
        }
    }

    /// Shard `shard` no longer streams `widgets`.
    pub fn remove(&mut self, shard: usize, widgets: &[Uuid]) {
        for w in widgets {
            if let Some(entry) = self.watched.get_mut(w) {
                entry.1 &= !(1 << shard);
                if entry.1 == 0 {
                    self.watched.remove(w);
                }
            }
        }
    }

    /// A widget this shard no longer owns: nobody gets its values from here.
    pub fn forget(&mut self, widget: &Uuid) {
        self.watched.remove(widget);
    }

    /// Changed values sorted by destination shard, each with its dashboard; values
    /// nobody streams are dropped.
    pub fn route(&self, changed: Vec<WidgetValue>, shards: usize) -> Vec<Vec<(Uuid, WidgetValue)>> {
        let mut out: Vec<Vec<(Uuid, WidgetValue)>> = vec![Vec::new(); shards];
        for value in changed {
            let Some(&(dashboard, mut bits)) = self.watched.get(&value.widget_id) else {
                continue;
            };
            while bits != 0 {
                let to = bits.trailing_zeros() as usize;
                bits &= bits - 1;
                out[to].push((dashboard, value.clone()));
            }
        }
        out
    }

    /// Widgets refreshed without a change, sorted by destination shard, each as
    /// (dashboard, widget); widgets nobody streams are dropped.
    pub fn route_ids(&self, ids: &[Uuid], shards: usize) -> Vec<Vec<(Uuid, Uuid)>> {
        let mut out: Vec<Vec<(Uuid, Uuid)>> = vec![Vec::new(); shards];
        for id in ids {
            let Some(&(dashboard, mut bits)) = self.watched.get(id) else {
                continue;
            };
            while bits != 0 {
                let to = bits.trailing_zeros() as usize;
                bits &= bits - 1;
                out[to].push((dashboard, *id));
            }
        }
        out
    }
}

impl ShardCall for Watch {
    type Reply = ();

    async fn run(self, svc: &Rc<Services>) {
        let mut interest = svc.interest.borrow_mut();
        interest.add(self.shard, self.dashboard, &self.add);
        interest.remove(self.shard, &self.remove);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(widget: Uuid) -> WidgetValue {
        WidgetValue {
            widget_id: widget,
            value: Some(1.0),
            window_end: 0,
            latest_event_time: None,
            count: 1,
            detail: None,
        }
    }

    /// The shards a change of `widget` goes to.
    fn targets(i: &Interest, widget: Uuid) -> Vec<usize> {
        let routed = i.route(vec![value(widget)], 64);
        (0..64).filter(|&s| !routed[s].is_empty()).collect()
    }

    #[test]
    fn interest_added_and_dropped() {
        let (d, a, b) = (Uuid::from_u128(1), Uuid::from_u128(2), Uuid::from_u128(3));
        let mut i = Interest::default();
        i.add(0, d, &[a, b]);
        i.add(1, d, &[a]);
        assert_eq!(targets(&i, a), [0, 1]);
        assert_eq!(targets(&i, b), [0]);
        let routed = i.route(vec![value(a), value(b)], 2);
        assert_eq!(routed[0].len(), 2);
        assert_eq!(routed[1], [(d, value(a))]);
        let ids = i.route_ids(&[a, b, Uuid::from_u128(7)], 2);
        assert_eq!(ids, [vec![(d, a), (d, b)], vec![(d, a)]]);
        i.remove(0, &[a, b]);
        assert_eq!(targets(&i, a), [1]);
        assert!(targets(&i, b).is_empty());
        i.forget(&a);
        assert!(
            i.route(vec![value(a), value(b)], 2)
                .iter()
                .all(Vec::is_empty)
        );
    }

    #[test]
    fn removing_what_was_never_added_is_harmless() {
        let mut i = Interest::default();
        i.remove(1, &[Uuid::from_u128(9)]);
        i.add(63, Uuid::nil(), &[Uuid::from_u128(9)]);
        assert_eq!(targets(&i, Uuid::from_u128(9)), [63]);
    }
}
