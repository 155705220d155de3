//! Tests of the sliding window against direct computation.

use super::*;

fn window(secs: u64, now: i64) -> SlidingWindow {
    SlidingWindow::new(WindowSpec::for_window(secs, 5000), now, true)
}

#[test]
fn empty_window_has_no_value_but_zero_count() {
    let mut w = window(60, 1_000_000);
    for agg in Aggregation::ALL {
        let expect = if matches!(agg, Aggregation::Count | Aggregation::Histogram) {
            Some(0.0)
        } else {
            None
        };
        assert_eq!(w.value(agg), expect, "{agg}");
    }
    assert_eq!(w.latest(), None);
}

#[test]
fn slides_and_evicts() {
    let mut w = window(10, 100_000);
    assert_eq!(w.insert(99_000, 1.0), InsertOutcome::Counted);
    assert_eq!(w.insert(100_500, 5.0), InsertOutcome::Counted);
    assert_eq!(w.insert(106_000, 2.0), InsertOutcome::TooFarAhead);
    assert_eq!(w.insert(105_999, 7.0), InsertOutcome::Counted);
    assert_eq!(w.insert(90_999, 1.0), InsertOutcome::TooOld);
    assert_eq!(w.insert(91_000, -3.0), InsertOutcome::Counted);
    assert_eq!(w.value(Aggregation::Sum), Some(10.0));
    assert_eq!(w.value(Aggregation::Min), Some(-3.0));
    assert_eq!(w.value(Aggregation::Max), Some(7.0));
    assert_eq!(w.latest(), Some(105_999));
    assert_eq!(w.window_end(), 101_000);
    w.advance(100_999);
    assert_eq!(w.count(), 4);
    w.advance(101_000);
    assert_eq!(w.count(), 3, "the pane of 91 000 slid out");
    w.advance(109_999);
    assert_eq!(w.count(), 2, "99 000 slid out");
    w.advance(114_999);
    assert_eq!(w.count(), 1, "105 999 is still live");
    w.advance(115_000);
    assert_eq!(w.count(), 0);
    assert_eq!(w.value(Aggregation::Avg), None);
    assert_eq!(w.latest(), None);
    assert!(w.histogram.as_ref().unwrap().is_empty());
    w.advance(10_000_000);
    assert_eq!(w.insert(10_000_001, 4.0), InsertOutcome::Counted);
    assert_eq!(w.value(Aggregation::P99), Some(4.0));
}

#[test]
fn sum_and_extremes_are_kept_from_their_first_read() {
    let mut w = window(10, 0);
    for t in 0..12 {
        w.advance(t * 1000);
        w.insert(t * 1000, t as f64);
    }
    assert!(!w.sum_valid && !w.fold_valid, "nothing read yet");
    // Live: the panes of 2 000 to 11 000.
    assert_eq!(w.value(Aggregation::Sum), Some((2..12).sum::<i64>() as f64));
    assert!(w.sum_valid && !w.fold_valid);
    assert_eq!(w.value(Aggregation::Max), Some(11.0));
    assert!(w.fold_valid);
    for t in 12..30 {
        w.advance(t * 1000);
        w.insert(t * 1000, -(t as f64));
        w.insert(t * 1000 - 3000, 0.5);
    }
    // Live: 20 000 to 29 000, plus the late 0.5s from 20 000 to 26 000.
    let live: f64 = (20..30).map(|t| -(t as f64)).sum::<f64>() + 7.0 * 0.5;
    assert_eq!(w.value(Aggregation::Sum), Some(live));
    assert_eq!(w.value(Aggregation::Max), Some(0.5));
    assert_eq!(w.value(Aggregation::Min), Some(-29.0));
    assert_eq!(w.value(Aggregation::Count), Some(17.0));
}

#[test]
fn extremes_held_by_several_panes_survive_until_the_last_slides_out() {
    let mut w = window(10, 0);
    for t in [0, 1000, 2000] {
        w.insert(t, 5.0);
        w.insert(t, -5.0);
    }
    w.insert(3000, 1.0);
    w.advance(3000);
    assert_eq!(w.value(Aggregation::Max), Some(5.0));
    // A 10 s window of 1 s panes: at 10 000 the pane of 0 has slid out.
    w.advance(10_000);
    assert!(w.fold_valid, "two panes still hold both extremes");
    assert_eq!(w.value(Aggregation::Min), Some(-5.0));
    w.advance(11_000);
    assert_eq!(w.value(Aggregation::Max), Some(5.0));
    w.advance(12_000);
    assert!(!w.fold_valid, "the last holder slid out");
    assert_eq!(w.value(Aggregation::Max), Some(1.0));
    assert_eq!(w.value(Aggregation::Min), Some(1.0));
    assert_eq!(w.latest(), Some(3000));
    w.advance(13_000);
    assert_eq!(w.value(Aggregation::Max), None);
    assert_eq!(w.latest(), None);
}

#[test]
fn refold_keeps_sum_exact_after_huge_values_leave() {
    let mut w = window(10, 0);
    w.insert(0, 1e17);
    w.insert(0, 3.0);
    for t in 1..100 {
        w.advance(t * 1000);
        w.insert(t * 1000, 0.25);
    }
    assert_eq!(w.sum(), Some(0.25 * 10.0));
}
