//! Cluster mode against a real Kafka-compatible broker (tansu, started per test): HTTP
//! ingest through the topic into the windows, records written by a plain producer in each
//! format, two nodes splitting the partitions, and the broker going away and coming back.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::cluster::{
    PARTITIONS, TOPIC, add, batch, counter, eventually, node, owned, stats, sum_widget, value,
};
use common::{ReplyExt, create_dashboard, now_ms};
use livedash_engine::partition_for;
use livedash_loadgen::broker::Broker;
use rdkafka::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use serde_json::{Value, json};

fn producer(broker: &Broker) -> ThreadedProducer<DefaultProducerContext> {
    ClientConfig::new()
        .set("bootstrap.servers", broker.addr())
        .set("acks", "all")
        .create()
        .expect("producer")
}

fn write(
    p: &ThreadedProducer<DefaultProducerContext>,
    partition: u32,
    key: &str,
    value: &[u8],
    format: Option<&str>,
) {
    let mut record = BaseRecord::<str, [u8]>::to(TOPIC)
        .partition(partition as i32)
        .key(key)
        .payload(value);
    if let Some(f) = format {
        record = record.headers(OwnedHeaders::new().insert(Header {
            key: "livedash-format",
            value: Some(f),
        }));
    }
    p.send(record).map_err(|(e, _)| e).expect("send");
    p.flush(Duration::from_secs(10)).expect("flush");
}

#[test]
fn ingest_goes_through_the_topic_and_plain_records_count() {
    let broker = Broker::start();
    broker.create_topic(TOPIC, PARTITIONS);
    let server = node(&broker, &[]);
    let mut c = server.client();
    eventually(30, "the node to own every partition", || {
        (owned(&mut c) == (0..PARTITIONS).collect::<Vec<_>>()).then_some(())
    });

    let metrics: Vec<String> = (0..6).map(|i| format!("kafka.test.{i}")).collect();
    let mut specs: Vec<Value> = metrics.iter().map(|m| sum_widget(m)).collect();
    specs.push(sum_widget("plain.json"));
    specs.push(sum_widget("plain.cpu.usage"));
    let dashboard = create_dashboard(&mut c, "kafka", Value::Array(specs));

    // HTTP ingest: acknowledged once written; same shape, no `unmatched` (unknown here).
    let (events, mut truth) = batch(&metrics, 600, 1);
    let r = c.json("POST", "/ingest", &events);
    assert_eq!(r.status, 200, "{}", r.error());
    assert_eq!(
        r.json(),
        json!({"accepted": 600, "rejected": [], "rejected_total": 0})
    );
    // A bad event is refused before anything is written, as standalone.
    let r = c.json(
        "POST",
        "/ingest",
        &json!([{"metric_name": "kafka.test.0", "value": "x", "event_time": now_ms()}]),
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["accepted"], json!(0));

    // Records from a plain producer: one JSON event, a line-protocol record with two
    // lines, a malformed record and then a good one on the same partition, and an event
    // on a partition its metric does not hash to.
    let p = producer(&broker);
    let json_partition = partition_for("plain.json", PARTITIONS);
    let now = now_ms();
    let event =
        |v: f64| json!({"metric_name": "plain.json", "value": v, "event_time": now}).to_string();
    write(
        &p,
        json_partition,
        "plain.json",
        event(5.0).as_bytes(),
        None,
    );
    write(&p, json_partition, "plain.json", b"{not json", None);
    write(
        &p,
        json_partition,
        "plain.json",
        event(7.0).as_bytes(),
        Some("json"),
    );
    truth.insert("plain.json".into(), 12.0);
    let lp_partition = partition_for("plain.cpu.usage", PARTITIONS);
    let ns = now * 1_000_000;
    let lines = format!("plain.cpu,host=a usage=2.5 {ns}\nplain.cpu,host=b usage=4 {ns}\n");
    write(&p, lp_partition, "plain.cpu.usage", lines.as_bytes(), None);
    truth.insert("plain.cpu.usage".into(), 6.5);
    let wrong = (json_partition + 1) % PARTITIONS;
    write(&p, wrong, "plain.json", event(1000.0).as_bytes(), None);

    let names: Vec<String> = metrics
        .iter()
        .cloned()
        .chain(["plain.json".into(), "plain.cpu.usage".into()])
        .collect();
    for (i, name) in names.iter().enumerate() {
        let want = truth[name];
        eventually(20, &format!("{name} = {want}"), || {
            (value(&mut c, &dashboard, i).ok().flatten() == Some(want)).then_some(())
        });
    }
    eventually(
        10,
        "the malformed and the misplaced record to be counted",
        || {
            (counter(&mut c, "malformed_records") == 1 && counter(&mut c, "wrong_partition") == 1)
                .then_some(())
        },
    );
    assert_eq!(counter(&mut c, "produced_events"), 600);
    assert!(counter(&mut c, "consumed_events") >= 604);
    // Lag is reported per partition, and is zero once everything is applied.
    eventually(10, "zero lag", || {
        let st = stats(&mut c);
        let lags: Vec<Value> = st["shards"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|s| s["kafka"]["partitions"].as_array().cloned().unwrap())
            .collect();
        lags.iter()
            .all(|l| l["lag_records"] == json!(0) && l["behind_ms"] == json!(0))
            .then_some(())
    });
}

#[test]
fn two_nodes_split_the_partitions_and_agree_with_the_truth() {
    let broker = Broker::start();
    broker.create_topic(TOPIC, PARTITIONS);
    let a = node(&broker, &["--kafka-group", "pair"]);
    let b = node(&broker, &["--kafka-group", "pair"]);
    let (mut ca, mut cb) = (a.client(), b.client());
    let (pa, pb) = eventually(60, "both nodes to share the partitions", || {
        let (pa, pb) = (owned(&mut ca), owned(&mut cb));
        let mut all: Vec<u32> = pa.iter().chain(&pb).copied().collect();
        all.sort_unstable();
        (!pa.is_empty() && !pb.is_empty() && all == (0..PARTITIONS).collect::<Vec<_>>())
            .then_some((pa, pb))
    });

    let metrics: Vec<String> = (0..16).map(|i| format!("pair.{i}")).collect();
    let specs = Value::Array(metrics.iter().map(|m| sum_widget(m)).collect());
    let da = create_dashboard(&mut ca, "pair", specs.clone());
    let db = create_dashboard(&mut cb, "pair", specs);

    let mut truth = BTreeMap::new();
    for round in 0..4 {
        let (events, sums) = batch(&metrics, 400, round);
        let c = if round % 2 == 0 { &mut ca } else { &mut cb };
        let r = c.json("POST", "/ingest", &events);
        assert_eq!(r.status, 200, "{}", r.error());
        add(&mut truth, &sums);
    }
    for (i, m) in metrics.iter().enumerate() {
        let p = partition_for(m, PARTITIONS);
        let (owner, owner_dash, other, other_dash) = if pa.contains(&p) {
            (&mut ca, &da, &mut cb, &db)
        } else {
            assert!(pb.contains(&p));
            (&mut cb, &db, &mut ca, &da)
        };
        let want = truth[m];
        eventually(20, &format!("{m} = {want} on its owner"), || {
            (value(owner, owner_dash, i).ok().flatten() == Some(want)).then_some(())
        });
        let (status, reason) = value(other, other_dash, i).unwrap_err();
        assert_eq!(status, 421, "{reason}");
        assert!(reason.contains(&format!("partition {p}")), "{reason}");
    }
}

#[test]
fn broker_down_is_503_and_ingest_resumes_with_nothing_lost_or_doubled() {
    let mut broker = Broker::start();
    broker.create_topic(TOPIC, PARTITIONS);
    let server = node(&broker, &["--kafka-ack-timeout-ms", "1500"]);
    let mut c = server.client();
    eventually(30, "the node to own every partition", || {
        (owned(&mut c).len() == PARTITIONS as usize).then_some(())
    });
    let metrics: Vec<String> = (0..5).map(|i| format!("outage.{i}")).collect();
    let dashboard = create_dashboard(
        &mut c,
        "outage",
        Value::Array(metrics.iter().map(|m| sum_widget(m)).collect()),
    );
    let (first, mut truth) = batch(&metrics, 300, 1);
    assert_eq!(c.json("POST", "/ingest", &first).status, 200);

    broker.stop();
    let (second, second_sums) = batch(&metrics, 300, 2);
    let r = c.json("POST", "/ingest", &second);
    assert_eq!(r.status, 503, "{}", String::from_utf8_lossy(&r.body));
    assert!(r.error().contains("did not acknowledge"), "{}", r.error());

    broker.restart();
    // Resend the refused batch until the brokers take it: exactly once in the end.
    let give_up = Instant::now() + Duration::from_secs(60);
    loop {
        let r = c.json("POST", "/ingest", &second);
        if r.status == 200 {
            break;
        }
        assert!(
            Instant::now() < give_up,
            "ingest did not resume: {}",
            r.error()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    add(&mut truth, &second_sums);
    let (third, third_sums) = batch(&metrics, 300, 3);
    assert_eq!(c.json("POST", "/ingest", &third).status, 200);
    add(&mut truth, &third_sums);
    for (i, m) in metrics.iter().enumerate() {
        let want = truth[m];
        eventually(30, &format!("{m} = {want}"), || {
            (value(&mut c, &dashboard, i).ok().flatten() == Some(want)).then_some(())
        });
    }
    // Nothing arrives late to double a value.
    std::thread::sleep(Duration::from_secs(2));
    for (i, m) in metrics.iter().enumerate() {
        assert_eq!(value(&mut c, &dashboard, i).unwrap(), Some(truth[m]), "{m}");
    }
}
