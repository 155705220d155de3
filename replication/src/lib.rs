//! livedash replication: Kafka sources, the Redis state mirror and Pub/Sub fan-out.
//! Not built yet: standalone mode needs none of it. This crate holds the seams the
//! cluster mode will fill, so the node can already be written against them.

use livedash_engine::Routing;

/// Where a shard's events come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Events arrive over HTTP and are routed between shards in memory.
    Standalone { shards: usize },
}

impl Source {
    /// The partition ownership this source implies.
    pub fn routing(&self) -> Routing {
        match self {
            Self::Standalone { shards } => Routing::standalone(*shards),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standalone_routing_covers_every_shard() {
        let r = Source::Standalone { shards: 3 }.routing();
        assert_eq!(r.partitions(), 3);
    }
}
