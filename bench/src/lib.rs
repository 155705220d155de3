//! Shared workloads for the livedash benchmarks, and the baseline they are measured
//! against: the original design's sorted-set algorithm, done in memory.

pub mod chaos;
pub mod flat;
pub mod floor;
pub mod helper;
pub mod hostile;
pub mod node;
pub mod peer;
pub mod sorted_set;
pub mod workload;
