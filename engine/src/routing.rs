//! Which shard owns a metric. Everything routes through `Routing::shard_for`: in standalone
//! mode a metric's Kafka-compatible partition maps to a shard; in cluster mode the map
//! follows partition ownership, so the same metric always lands where its windows live.

/// Kafka's default partition of a record keyed by `metric` (murmur2, positive, modulo).
pub fn partition_for(metric: &str, partitions: u32) -> u32 {
    let hash = murmur2::murmur2(metric.as_bytes(), murmur2::KAFKA_SEED) & 0x7fff_ffff;
    hash % partitions.max(1)
}

/// The owner shard of `metric` among `shards` shards in standalone mode.
pub fn shard_for(metric: &str, shards: usize) -> usize {
    partition_for(metric, shards.max(1) as u32) as usize
}

/// Partition-to-shard ownership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routing {
    /// `owners[p]` is the shard that owns partition `p`.
    owners: Vec<usize>,
}

impl Routing {
    /// One partition per shard, partition `i` on shard `i`.
    pub fn standalone(shards: usize) -> Self {
        Self {
            owners: (0..shards.max(1)).collect(),
        }
    }

    /// Explicit ownership, e.g. from a Kafka consumer-group assignment. An empty list
    /// means one partition, owned by shard 0.
    pub fn with_owners(owners: Vec<usize>) -> Self {
        if owners.is_empty() {
            return Self::standalone(1);
        }
        Self { owners }
    }

    /// Number of partitions.
    pub fn partitions(&self) -> u32 {
        self.owners.len() as u32
    }

    /// Moves partition `partition` to `shard`.
    pub fn set_owner(&mut self, partition: u32, shard: usize) {
        if let Some(o) = self.owners.get_mut(partition as usize) {
            *o = shard;
        }
    }

    /// The partition of `metric`.
    pub fn partition_for(&self, metric: &str) -> u32 {
        partition_for(metric, self.partitions())
    }

    /// The shard that owns `metric`'s windows.
    pub fn shard_for(&self, metric: &str) -> usize {
        self.owners[self.partition_for(metric) as usize]
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
        let r = Routing::standalone(4);
        let mut per_shard = [0usize; 4];
        for i in 0..4000 {
            let m = format!("svc{i}.latency");
            let s = r.shard_for(&m);
            assert_eq!(s, shard_for(&m, 4));
            per_shard[s] += 1;
        }
        assert!(per_shard.iter().all(|&n| n > 800), "{per_shard:?}");
        let mut r = Routing::with_owners(vec![0; 8]);
        let p = r.partition_for("m");
        r.set_owner(p, 1);
        assert_eq!(r.shard_for("m"), 1);
    }
}
