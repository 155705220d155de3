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

/// Two extreme values among ordinary ones: the stores stay within their budget, the
/// largest values keep their buckets, and once the extremes slide out the ordinary values
/// come apart again.
#[test]
fn extreme_values_stay_within_the_bucket_budget() {
    let budget = 512;
    let mut h = Histogram::with_budget(3, budget);
    h.record(0, 5e-324);
    h.record(0, 1.7e308);
    h.record(0, -1.7e308);
    let mut ordinary = vec![];
    for i in 1..=1000 {
        let v = f64::from(i) * 0.37;
        h.record(1 + (i % 2) as usize, v);
        ordinary.push(v);
    }
    let per_store = (budget + budget.div_ceil(GROUP)) * size_of::<u64>();
    let stores = h.positive.heap_bytes() + h.negative.heap_bytes();
    assert!(stores <= 2 * per_store, "{stores}");
    let top = h.quantile(1.0).unwrap();
    assert!((top - 1.7e308).abs() <= 1.7e308 * BUCKET_RELATIVE_ERROR);
    assert_eq!(h.len(), 1003);
    h.evict(0);
    assert_eq!(h.len(), 1000);
    for q in [0.01, 0.5, 0.99] {
        let exact = nearest_rank(&mut ordinary, q);
        let got = h.quantile(q).unwrap();
        assert!(
            (got - exact).abs() <= exact * BUCKET_RELATIVE_ERROR,
            "q{q} {got} vs {exact}"
        );
    }
}

/// Values over a wider span than the budget, evicted pane by pane in random order of
/// magnitude: counts always match, the highest quantile stays exact within the bucket
/// error, and every quantile is exact whenever what is left spans less than the budget.
#[test]
fn merged_buckets_are_taken_out_where_they_went() {
    let budget = 256; // four octaves
    let slots = 8;
    let mut h = Histogram::with_budget(slots, budget);
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut live: Vec<Vec<f64>> = vec![Vec::new(); slots];
    let mut exact_rounds = 0;
    for round in 0..200 {
        let slot = round % slots;
        h.evict(slot);
        live[slot].clear();
        for _ in 0..(next() % 40) {
            // Wide spans first, then narrow ones: the merged buckets must come apart.
            let span = if round < 100 { 24 } else { 3 };
            let exponent = (next() % span) as i32 - span as i32 / 2;
            let sign = if next() % 5 == 0 { -1.0 } else { 1.0 };
            let v = sign * 2f64.powi(exponent) * (1.0 + (next() % 1000) as f64 / 1000.0);
            h.record(slot, v);
            live[slot].push(v);
        }
        let mut all: Vec<f64> = live.iter().flatten().copied().collect();
        assert_eq!(h.len(), all.len() as u64);
        if all.is_empty() {
            continue;
        }
        let top = nearest_rank(&mut all, 1.0);
        let got = h.quantile(1.0).unwrap();
        assert!(
            (got - top).abs() <= top.abs() * BUCKET_RELATIVE_ERROR,
            "max {got} vs {top}"
        );
        let magnitudes = |sign: f64| {
            let m: Vec<f64> = all
                .iter()
                .filter(|v| **v * sign > 0.0)
                .map(|v| v.abs())
                .collect();
            m.iter().copied().fold(0.0, f64::max) / m.iter().copied().fold(f64::MAX, f64::min)
        };
        // Exact when each sign spans less than the budget (with a bucket to spare).
        let octaves = (budget / 64 - 1) as i32;
        if magnitudes(1.0) < 2f64.powi(octaves) && magnitudes(-1.0) < 2f64.powi(octaves) {
            exact_rounds += 1;
            for q in [0.1, 0.5, 0.9] {
                let exact = nearest_rank(&mut all, q);
                let got = h.quantile(q).unwrap();
                assert!(
                    (got - exact).abs() <= exact.abs() * BUCKET_RELATIVE_ERROR,
                    "round {round} q{q} {got} vs {exact}"
                );
            }
        }
    }
    assert!(exact_rounds > 50, "{exact_rounds}");
}

/// A store laid out again because its slack would pass the budget, while its keys span
/// less: nothing is merged, and a key below the old lowest keeps its own bucket.
#[test]
fn relayout_within_the_budget_merges_nothing() {
    let budget = 256;
    let mut h = Histogram::with_budget(2, budget);
    let k = magnitude_key(1.0);
    let value = |key: u32| representative(key);
    for key in [k, k + 100, k + 101, k - 106, k - 120] {
        h.record(0, value(key));
    }
    assert_eq!(h.positive.floor, 0, "no span passed the budget");
    let lowest = h.quantile(0.0).unwrap();
    assert_eq!(lowest, value(k - 120));
    // Evicting rebuilds nothing and keeps every bucket apart.
    h.record(1, value(k));
    h.evict(0);
    assert_eq!(h.quantile(1.0).unwrap(), value(k));
}
