//! Which shard owns a metric. Everything routes through `Placement`: a metric's
//! Kafka-compatible partition (murmur2 of its name), and partition p on shard p mod shards,
//! so the same metric always lands where its windows live, over HTTP or Kafka.

/// Kafka's default partition of a record keyed by `metric` (murmur2, positive, modulo).
pub fn partition_for(metric: &str, partitions: u32) -> u32 {
    let hash = murmur2::murmur2(metric.as_bytes(), murmur2::KAFKA_SEED) & 0x7fff_ffff;
    hash % partitions.max(1)
}

/// The owner shard of `metric` among `shards` shards in standalone mode.
pub fn shard_for(metric: &str, shards: usize) -> usize {
    partition_for(metric, shards.max(1) as u32) as usize
}

/// Where a metric's windows live: its Kafka-compatible partition among `partitions`, and
/// partition p on shard p mod `shards`. Standalone, there are as many partitions as shards
/// (so partition p is shard p); in cluster mode the partitions are the topic's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    pub partitions: u32,
    pub shards: usize,
}

impl Placement {
    /// One partition per shard.
    pub fn standalone(shards: usize) -> Self {
        Self {
            partitions: shards.max(1) as u32,
            shards: shards.max(1),
        }
    }

    /// The topic's partitions spread over `shards` shards.
    pub fn cluster(partitions: u32, shards: usize) -> Self {
        Self {
            partitions: partitions.max(1),
            shards: shards.max(1),
        }
    }

    /// The partition of `metric`.
    pub fn partition(&self, metric: &str) -> u32 {
        partition_for(metric, self.partitions)
    }

    /// The shard of partition `partition`.
    pub fn shard_of(&self, partition: u32) -> usize {
        partition as usize % self.shards
    }

    /// The shard that owns `metric`'s windows.
    pub fn shard(&self, metric: &str) -> usize {
        self.shard_of(self.partition(metric))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_kafka_murmur2() {
        // Kafka's own reference values for Utils.murmur2.
        let cases: [(&[u8], i32); 6] = [
            (b"21", -973_932_308),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            (b"abc", 479_470_107),
        ];
        for (input, expect) in cases {
            assert_eq!(murmur2::murmur2(input, murmur2::KAFKA_SEED) as i32, expect);
        }
    }

    #[test]
    fn routing_is_stable_and_spread() {
        let standalone = Placement::standalone(4);
        let cluster = Placement::cluster(12, 4);
        let mut per_shard = [0usize; 4];
        for i in 0..4000 {
            let m = format!("svc{i}.latency");
            let s = standalone.shard(&m);
            assert_eq!(s, shard_for(&m, 4));
            per_shard[s] += 1;
            let p = cluster.partition(&m);
            assert_eq!(p, partition_for(&m, 12));
            assert_eq!(cluster.shard(&m), p as usize % 4);
        }
        assert!(per_shard.iter().all(|&n| n > 800), "{per_shard:?}");
    }
}
