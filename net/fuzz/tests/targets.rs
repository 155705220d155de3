//! Every fuzz target over its seeds, its kept crash inputs, and a short run of random
//! mutations of the seeds (the long coverage-guided runs are `net/fuzz/run`'s).

#![allow(clippy::unwrap_used)]

use livedash_fuzz::{TARGETS, inputs, regressions, seeds};
use proptest::prelude::*;

#[test]
fn every_target_has_seeds_and_takes_them() {
    for (name, target) in TARGETS {
        let seeds = inputs(&seeds(name)).unwrap();
        assert!(!seeds.is_empty(), "{name} has no seeds");
        for (file, bytes) in seeds {
            eprintln!("{name}: seed {file}");
            target(&bytes);
        }
    }
}

#[test]
fn kept_crash_inputs_pass() {
    for (name, target) in TARGETS {
        for (file, bytes) in inputs(&regressions(name)).unwrap() {
            eprintln!("{name}: regression {file}");
            target(&bytes);
        }
    }
}

/// A mutation of a seed: bytes overwritten, inserted and cut at places the strategy picks.
#[derive(Debug, Clone)]
enum Edit {
    Set(usize, u8),
    Insert(usize, Vec<u8>),
    Cut(usize, usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(at, b)| Edit::Set(at, b)),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..64))
            .prop_map(|(at, bytes)| Edit::Insert(at, bytes)),
        (any::<usize>(), 1usize..64).prop_map(|(at, n)| Edit::Cut(at, n)),
    ]
}

fn mutate(mut bytes: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for e in edits {
        let len = bytes.len().max(1);
        match e {
            Edit::Set(at, b) if !bytes.is_empty() => bytes[at % len] = *b,
            Edit::Set(..) => bytes.push(0),
            Edit::Insert(at, more) => {
                let at = at % (bytes.len() + 1);
                bytes.splice(at..at, more.iter().copied());
            }
            Edit::Cut(at, n) => {
                let at = at % (bytes.len() + 1);
                let end = (at + n).min(bytes.len());
                bytes.drain(at..end);
            }
        }
    }
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn mutated_seeds_never_break_a_target(
        target in 0..TARGETS.len(),
        seed in any::<prop::sample::Index>(),
        edits in prop::collection::vec(edit(), 0..8),
        raw in prop::collection::vec(any::<u8>(), 0..256),
    ) {
        let (name, run) = TARGETS[target];
        let seeds = inputs(&seeds(name)).unwrap();
        let (_, bytes) = &seeds[seed.index(seeds.len())];
        run(&mutate(bytes.clone(), &edits));
        run(&raw);
    }
}
