//! The consumer against librdkafka's in-process mock cluster.

use super::*;
use crate::Doorbell;
use crate::kafka::{KafkaSettings, PartitionState};
use rdkafka::ClientConfig;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

/// A shard that takes its records slowly: the consumer pauses its partitions rather
/// than buffering, and every record arrives once, in order, when it resumes.
#[test]
fn a_slow_shard_pauses_its_partitions_and_loses_nothing() {
    const RECORDS: usize = 3000;
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("t", 2, 1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .unwrap();
    for i in 0..RECORDS {
        let value = i.to_string();
        let record = BaseRecord::<(), String>::to("t")
            .partition((i % 2) as i32)
            .payload(&value);
        producer.send(record).map_err(|(e, _)| e).unwrap();
        producer.poll(Duration::ZERO);
    }
    producer.flush(Duration::from_secs(10)).unwrap();

    let partitions: Partitions = (0..2).map(|_| PartitionState::default()).collect();
    let (door, bell) = Doorbell::new();
    let inbox = Arc::new(Inbox::new(2, bell));
    let source = Source {
        settings: KafkaSettings {
            brokers,
            topic: "t".into(),
            group: "g".into(),
            create_partitions: 2,
            create_replication: 1,
            ack_timeout: Duration::from_secs(5),
        },
        partitions: Arc::clone(&partitions),
        inboxes: vec![Arc::clone(&inbox)],
        mirror: None,
        // Replays reach back to the epoch: every record of the test counts (the mock
        // cluster does not look offsets up by time).
        takeovers: Arc::new(Takeovers::new(i64::MAX / 2)),
    }
    .start()
    .unwrap();

    let done = Arc::new(AtomicBool::new(false));
    let shard = {
        let (inbox, partitions, done) = (
            Arc::clone(&inbox),
            Arc::clone(&partitions),
            Arc::clone(&done),
        );
        std::thread::spawn(move || {
            let mut seen: Vec<Vec<i64>> = vec![Vec::new(), Vec::new()];
            while !done.load(Ordering::Acquire) {
                let Some(input) = inbox.pop() else {
                    door.wait(Duration::from_millis(10));
                    continue;
                };
                match input {
                    ShardInput::Records(records) => {
                        for r in records {
                            let state = &partitions[r.partition as usize];
                            if state.generation() == r.generation {
                                seen[r.partition as usize].push(r.offset);
                                state.applied(r.offset + 1, 0);
                            }
                        }
                        // Slower than the consumer.
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    ShardInput::Assigned(_) | ShardInput::Backfilled { .. } => {}
                    ShardInput::Revoked { done, .. } => done.store(true, Ordering::Release),
                }
            }
            seen
        })
    };
    let give_up = Instant::now() + Duration::from_secs(60);
    while partitions
        .iter()
        .map(|p| p.applied_next().max(0))
        .sum::<i64>()
        < RECORDS as i64
    {
        assert!(Instant::now() < give_up, "records did not all arrive");
        std::thread::sleep(Duration::from_millis(20));
    }
    source.stop();
    done.store(true, Ordering::Release);
    let seen = shard.join().unwrap();
    for (p, offsets) in seen.iter().enumerate() {
        let expected: Vec<i64> = (0..(RECORDS / 2) as i64).collect();
        assert_eq!(
            offsets, &expected,
            "partition {p}: each record once, in order"
        );
    }
    assert!(inbox.pauses() > 0, "the consumer never paused");
}
