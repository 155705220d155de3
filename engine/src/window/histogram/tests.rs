//! Tests of the histogram: quantiles against exact ranks, eviction.

use super::*;

fn nearest_rank(values: &mut [f64], q: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
    values[rank - 1]
}

#[test]
fn buckets_are_within_error_bound() {
    for &v in &[
        1e-300, 1e-9, 0.001, 0.5, 1.0, 1.0078125, 3.0, 1234.5678, 9.9e12, 1e300,
    ] {
        let r = representative(magnitude_key(v));
        assert!(((r - v) / v).abs() <= BUCKET_RELATIVE_ERROR, "{v} -> {r}");
    }
    const { assert!(BUCKET_RELATIVE_ERROR <= 0.01) };
}

#[test]
fn quantiles_of_mixed_signs() {
    let mut h = Histogram::new(4);
    let mut values = vec![];
    for i in -50i32..=50 {
        let v = f64::from(i) * 1.7;
        h.record((i.rem_euclid(4)) as usize, v);
        values.push(v);
    }
    for q in [0.01, 0.25, 0.5, 0.9, 0.99, 1.0] {
        let exact = nearest_rank(&mut values, q);
        let got = h.quantile(q).unwrap();
        assert!(
            (got - exact).abs() <= exact.abs() * BUCKET_RELATIVE_ERROR,
            "q{q} {got} vs {exact}"
        );
    }
}

#[test]
fn evict_removes_a_panes_values() {
    let mut h = Histogram::new(2);
    for i in 0..100 {
        h.record(0, f64::from(i));
    }
    h.record(1, 5000.0);
    assert_eq!(h.len(), 101);
    h.evict(0);
    assert_eq!(h.len(), 1);
    let p = h.quantile(0.5).unwrap();
    assert!((p - 5000.0).abs() <= 5000.0 * BUCKET_RELATIVE_ERROR);
    h.evict(1);
    assert_eq!(h.quantile(0.5), None);
    assert!(h.is_empty());
}

#[test]
fn pane_lists_overflow_by_bucket_and_by_count() {
    let mut h = Histogram::new(2);
    // More distinct buckets than fit inline, and one bucket past a u16 count.
    for i in 1..=40 {
        h.record(0, f64::from(i) * 1000.0);
    }
    for _ in 0..70_000 {
        h.record(0, 7.0);
    }
    h.record(1, -2.0);
    h.record(1, 0.0);
    assert_eq!(h.len(), 70_042);
    let p = h.quantile(0.5).unwrap();
    assert!((p - 7.0).abs() <= 7.0 * BUCKET_RELATIVE_ERROR);
    h.evict(0);
    assert_eq!(h.len(), 2);
    let low = h.quantile(0.5).unwrap();
    assert!((low + 2.0).abs() <= 2.0 * BUCKET_RELATIVE_ERROR, "{low}");
    assert_eq!(h.quantile(1.0), Some(0.0));
    h.evict(1);
    assert!(h.is_empty());
    // The slot is reused cleanly.
    h.record(0, 3.0);
    h.evict(0);
    assert!(h.is_empty());
}
