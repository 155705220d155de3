//! The livedash node. Its modules form layers whose imports run one way:
//!
//! - runtime: `node` (executor pool, shard start-up, accept loop, timers, shutdown) and
//!   the binary's `main`;
//! - front ends: `api` (HTTP routes), `stream` (WebSocket), `kafka` (each shard's
//!   consumer loop, cluster mode), `demo` (synthetic source);
//! - services: `service` (ingest, catalogue, fan-out, stats, and the typed calls between
//!   shards);
//! - below: `catalogue` (the dashboard model), `store`, `parse`, `frames`, `http`,
//!   `access`, `config`, `clock`, `stop`, and the `livedash-engine` and
//!   `livedash-replication` (Kafka clients) crates.

pub mod access;
pub mod api;
pub mod catalogue;
pub mod clock;
pub mod config;
pub mod demo;
pub mod frames;
#[doc(hidden)]
pub mod fuzzing;
pub mod http;
pub mod kafka;
pub mod node;
pub mod parse;
pub mod service;
pub mod stop;
pub mod store;
pub mod stream;
pub mod watch;
