//! The livedash node: a thread-per-core runtime serving the HTTP API (ingest and
//! dashboards) on top of `livedash-engine`. `node::start` runs it; `main.rs` adds the CLI.

pub mod api;
pub mod catalogue;
pub mod config;
pub mod demo;
pub mod http;
pub mod ingest;
pub mod node;
pub mod stop;
pub mod store;
pub mod stream;
