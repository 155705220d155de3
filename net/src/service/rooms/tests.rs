use super::*;
use livedash_engine::{Widget, WidgetSpec};
use livedash_replication::redis::values::StoredValue;

/// Two shards; metrics "a" and "b" land on different ones.
const SHARDS: usize = 2;

fn metric_on(shard: usize) -> String {
    (0..)
        .map(|i| format!("m{i}"))
        .find(|m| livedash_engine::shard_for(m, SHARDS) == shard)
        .unwrap()
}

fn widget(id: u128, metric: &str) -> Widget {
    let spec: WidgetSpec = serde_json::from_value(serde_json::json!({
        "metric_name": metric, "aggregation": "sum", "window_seconds": 60,
        "refresh_interval_seconds": 1.0
    }))
    .unwrap();
    Widget::new(Uuid::from_u128(id), Uuid::from_u128(1), spec)
}

fn dashboard(widgets: Vec<Widget>) -> Dashboard {
    Dashboard {
        dashboard_id: Uuid::from_u128(1),
        name: "d".into(),
        layout: serde_json::Value::Null,
        widgets,
    }
}

fn at(version: u64, d: Option<Dashboard>) -> Versioned {
    Versioned {
        version,
        dashboard: d,
    }
}

fn value(widget: u128) -> WidgetValue {
    WidgetValue {
        widget_id: Uuid::from_u128(widget),
        value: Some(2.0),
        window_end: 1000,
        latest_event_time: Some(999),
        count: 1,
        detail: None,
    }
}

const ID: Uuid = Uuid::from_u128(1);

fn opened(rooms: &mut Rooms, d: Dashboard, outbox: &Rc<Outbox>) -> InterestDelta {
    rooms.begin_join(ID);
    match rooms.finish_join(ID, at(1, Some(d)), outbox) {
        Joined::Opened(_, delta) => delta,
        other => panic!("{other:?}"),
    }
}

#[test]
fn first_join_adds_interest_and_last_leave_drops_it() {
    let (a, b) = (metric_on(0), metric_on(1));
    let d = dashboard(vec![widget(10, &a), widget(11, &b)]);
    let mut rooms = Rooms::new(Placement::standalone(SHARDS));
    let (o1, o2) = (Rc::new(Outbox::default()), Rc::new(Outbox::default()));
    let delta = opened(&mut rooms, d.clone(), &o1);
    assert_eq!(
        delta.add,
        vec![vec![Uuid::from_u128(10)], vec![Uuid::from_u128(11)]]
    );
    // A second connection joins the open room: no new interest.
    assert_eq!(rooms.join(ID, &o2), Some(Rc::new(d)));
    assert_eq!(rooms.leave(ID, &o1), None);
    let gone = rooms.leave(ID, &o2).unwrap();
    assert_eq!(
        gone.remove,
        vec![vec![Uuid::from_u128(10)], vec![Uuid::from_u128(11)]]
    );
    assert_eq!(gone.per_owner().count(), 2);
    assert_eq!(rooms.outboxes().count(), 0);
}

#[test]
fn an_edit_moves_interest_between_owners() {
    let (a, b) = (metric_on(0), metric_on(1));
    let mut rooms = Rooms::new(Placement::standalone(SHARDS));
    let o = Rc::new(Outbox::default());
    opened(
        &mut rooms,
        dashboard(vec![widget(10, &a), widget(11, &a)]),
        &o,
    );
    // Widget 10 moves to a metric on shard 1, 11 is removed, 12 is added.
    let new = dashboard(vec![widget(10, &b), widget(12, &a)]);
    let Changed::Updated {
        frame,
        outboxes,
        delta,
    } = rooms.changed(ID, at(2, Some(new)))
    else {
        panic!("not updated");
    };
    assert!(frame.is_ok());
    assert_eq!(outboxes.len(), 1);
    assert_eq!(
        delta.add,
        vec![vec![Uuid::from_u128(12)], vec![Uuid::from_u128(10)]]
    );
    let mut removed = delta.remove[0].clone();
    removed.sort();
    assert_eq!(removed, vec![Uuid::from_u128(10), Uuid::from_u128(11)]);
    // The same news again, or older news, changes nothing.
    assert!(matches!(rooms.changed(ID, at(2, None)), Changed::Ignored));
    assert!(matches!(rooms.changed(ID, at(1, None)), Changed::Ignored));
}

#[test]
fn a_dashboard_deleted_while_a_stream_joins_it() {
    let d = dashboard(vec![widget(10, &metric_on(0))]);
    let mut rooms = Rooms::new(Placement::standalone(SHARDS));
    let o = Rc::new(Outbox::default());
    rooms.begin_join(ID);
    // The deletion (version 2) arrives before the fetched dashboard (version 1).
    assert!(matches!(rooms.changed(ID, at(2, None)), Changed::Ignored));
    assert!(matches!(
        rooms.finish_join(ID, at(1, Some(d.clone())), &o),
        Joined::Missing
    ));
    assert_eq!(rooms.outboxes().count(), 0);
    // A later join is not affected by the old news.
    rooms.begin_join(ID);
    assert!(matches!(
        rooms.finish_join(ID, at(3, Some(d)), &o),
        Joined::Opened(..)
    ));
}

#[test]
fn a_deletion_closes_the_room_and_drops_its_interest() {
    let d = dashboard(vec![widget(10, &metric_on(1))]);
    let mut rooms = Rooms::new(Placement::standalone(SHARDS));
    let o = Rc::new(Outbox::default());
    opened(&mut rooms, d, &o);
    let Changed::Deleted(outboxes, delta) = rooms.changed(ID, at(2, None)) else {
        panic!("not deleted");
    };
    assert!(Rc::ptr_eq(&outboxes[0], &o));
    assert_eq!(delta.remove[1], vec![Uuid::from_u128(10)]);
    // The stream leaving afterwards finds no room and owes nothing.
    assert_eq!(rooms.leave(ID, &o), None);
}

#[test]
fn a_change_during_a_join_is_not_lost() {
    let a = metric_on(0);
    let mut rooms = Rooms::new(Placement::standalone(SHARDS));
    let o = Rc::new(Outbox::default());
    rooms.begin_join(ID);
    let newer = dashboard(vec![widget(10, &a), widget(11, &a)]);
    rooms.changed(ID, at(5, Some(newer.clone())));
    match rooms.finish_join(ID, at(4, Some(dashboard(vec![widget(10, &a)]))), &o) {
        Joined::Opened(d, delta) => {
            assert_eq!(*d, newer);
            assert_eq!(delta.add[0].len(), 2);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn one_frame_per_room_and_only_widgets_still_shown() {
    let a = metric_on(0);
    let mut rooms = Rooms::new(Placement::standalone(SHARDS));
    let (o1, o2) = (Rc::new(Outbox::default()), Rc::new(Outbox::default()));
    opened(
        &mut rooms,
        dashboard(vec![widget(10, &a), widget(11, &a)]),
        &o1,
    );
    rooms.join(ID, &o2);
    let pending = vec![(ID, value(10)), (ID, value(11)), (ID, value(77))];
    let (deliveries, unencodable) = rooms.frame(pending, 5, Some(4));
    assert_eq!((deliveries.len(), unencodable), (1, 0));
    assert_eq!(deliveries[0].outboxes.len(), 2);
    let text = String::from_utf8_lossy(&deliveries[0].frame).to_string();
    assert!(text.contains(r#""seq":1"#), "{text}");
    assert_eq!(text.matches("widget_id").count(), 2, "{text}");
    // A resync carries the dashboard and both newest values.
    let resync = rooms.resync_frames(ID, 6).unwrap();
    assert_eq!(resync.len(), 2);
    assert_eq!(
        String::from_utf8_lossy(&resync[1])
            .matches("widget_id")
            .count(),
        2
    );
    // Values for a dashboard with no room here go nowhere.
    let (none, _) = rooms.frame(vec![(Uuid::from_u128(2), value(10))], 7, Some(6));
    assert!(none.is_empty());
}

#[test]
fn a_tick_is_complete_once_every_widget_due_with_it_was_heard_of() {
    let mut rooms = Rooms::new(Placement::standalone(SHARDS));
    let o = Rc::new(Outbox::default());
    let mut slow = widget(4, &metric_on(0));
    slow.spec.refresh_interval_seconds = 5.0;
    let d = dashboard(vec![
        widget(2, &metric_on(0)),
        widget(3, &metric_on(1)),
        slow,
    ]);
    opened(&mut rooms, d, &o);
    let w = |id: u128| Uuid::from_u128(id);
    assert!(
        !rooms.complete(&[(ID, value(2))], &[]),
        "widget 3 may still come"
    );
    assert!(rooms.complete(&[(ID, value(2)), (ID, value(3))], &[]));
    assert!(
        rooms.complete(&[(ID, value(2))], &[(ID, w(3))]),
        "widget 3 refreshed without a change"
    );
    assert!(!rooms.complete(&[], &[(ID, w(3))]));
    // The 5 s widget ticks at other instants: alone, it is complete.
    assert!(rooms.complete(&[(ID, value(4))], &[]));
    // A room this shard does not serve has nobody to wait for.
    assert!(rooms.complete(&[(Uuid::from_u128(9), value(2))], &[]));
}

/// A stored value read after Pub/Sub values were lost replaces what the room holds
/// even within the same pane (same window end), unless a value was heard since the
/// read began.
#[test]
fn a_stored_value_of_the_same_pane_wins_unless_one_was_heard_since() {
    let mut rooms = Rooms::new(Placement::standalone(SHARDS));
    let o = Rc::new(Outbox::default());
    opened(&mut rooms, dashboard(vec![widget(2, "m")]), &o);
    let nobody_here = |_: &str| false;
    let with = |v: f64| WidgetValue {
        value: Some(v),
        ..value(2)
    };
    let stored = |v: f64| StoredValue {
        value: with(v),
        history: Vec::new(),
        details: Vec::new(),
    };
    assert_eq!(
        rooms
            .remote(ID, vec![with(1.0)], nobody_here, 8, 1000)
            .len(),
        1
    );
    rooms.begin_read(ID);
    let taken = rooms.stored(ID, vec![stored(3.0)], nobody_here, 8);
    assert_eq!(taken, vec![with(3.0)], "newer, in the same pane");
    assert!(
        rooms
            .stored(ID, vec![stored(3.0)], nobody_here, 8)
            .is_empty()
    );
    rooms.begin_read(ID);
    rooms.remote(ID, vec![with(4.0)], nobody_here, 8, 1000);
    let taken = rooms.stored(ID, vec![stored(3.0)], nobody_here, 8);
    assert!(taken.is_empty(), "4.0 came after the read began: {taken:?}");
    assert_eq!(
        rooms.remote_state(ID, &Uuid::from_u128(2)).unwrap().value,
        with(4.0)
    );
}
