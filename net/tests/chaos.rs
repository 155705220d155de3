//! A short version of the kill -9 chaos run (`cargo run --release -p livedash-bench --bin
//! chaos -- --runs 20` runs the long one): two nodes with the state mirror, the follower
//! killed under load, the survivor and then both nodes exact.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use livedash_bench::chaos::{Chaos, run};

#[test]
fn a_kill_under_load_leaves_every_value_exact() {
    let cfg = Chaos {
        node: env!("CARGO_BIN_EXE_livedash").into(),
        runs: 1,
        rate: 5_000,
        metrics: 8,
    };
    let results = run(&cfg, |_, _| {}).unwrap();
    for (i, r) in results.iter().enumerate() {
        assert!(r.exact, "run {i}: {:?}", r.wrong);
    }
}
