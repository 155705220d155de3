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

    /// The shards streaming `widget`, lowest first.
    pub fn shards_of(&self, widget: &Uuid) -> Vec<usize> {
        let mut bits = self.watched.get(widget).map_or(0, |e| e.1);
        let mut out = Vec::new();
        while bits != 0 {
            out.push(bits.trailing_zeros() as usize);
            bits &= bits - 1;
        }
        out
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
        }
    }

    #[test]
    fn interest_added_and_dropped() {
        let (d, a, b) = (Uuid::from_u128(1), Uuid::from_u128(2), Uuid::from_u128(3));
        let mut i = Interest::default();
        i.add(0, d, &[a, b]);
        i.add(1, d, &[a]);
        assert_eq!(i.shards_of(&a), [0, 1]);
        assert_eq!(i.shards_of(&b), [0]);
        let routed = i.route(vec![value(a), value(b)], 2);
        assert_eq!(routed[0].len(), 2);
        assert_eq!(routed[1].len(), 1);
        assert_eq!(routed[1][0], (d, value(a)));
        i.remove(0, &[a, b]);
        assert_eq!(i.shards_of(&a), [1]);
        assert!(i.shards_of(&b).is_empty());
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
        assert_eq!(i.shards_of(&Uuid::from_u128(9)), [63]);
    }
}
