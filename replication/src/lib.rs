//! livedash replication: the clients of the systems outside a node, one folder per system.
//! `kafka`: the producer HTTP ingest writes through and the consumer that feeds each shard
//! its partitions. Nothing here runs on a shard's thread except `Inbox` reads.

pub mod inbox;
pub mod kafka;
pub mod redis;

pub use inbox::{Doorbell, Inbox};
