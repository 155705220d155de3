//! The load generator's parts, shared by the `loadgen` binary and the benchmarks that
//! drive a node the same way.

pub mod baseline;
pub mod broker;
pub mod client;
pub mod cluster_demo;
pub mod ingest;
pub mod kafka;
pub mod redis;
pub mod report;
mod scratch;
pub mod sockets;
pub mod stats;
pub mod visible;

pub use client::now_ms;
