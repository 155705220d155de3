//! The Kafka front end (cluster mode): each shard's consumer loop. It waits for its
//! doorbell on the executor's blocking pool, applies the records of its partitions in
//! batches, follows assignments and revocations, hands the broker's delivery reports to
//! the writes waiting for them, and watches how far behind its partitions are.

use std::cell::Cell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use livedash_engine::{MetricEvent, Widget, batch};
use livedash_replication::kafka::FORMAT_HEADER;
use livedash_replication::kafka::source::{Record, ShardInput};
use livedash_replication::kafka::takeover::{Resume, Taken};
use livedash_replication::redis::StoredQuery;

use crate::clock::now_ms;
use crate::parse::{self, Parsed, Precision};
use crate::service::calls::ApplyEvents;
use crate::service::mesh::ShardCall;
use crate::service::{Services, backfill, mirror, topic};

/// Longest wait for the doorbell, so shutdown and lag checks are not held up.
const WAIT: Duration = Duration::from_millis(100);
/// How often a shard checks how far behind its partitions are.
const LAG_CHECK_EVERY: Duration = Duration::from_secs(5);
/// At most one warning of each kind per shard per this long.
const WARN_EVERY: Duration = Duration::from_secs(30);

/// Runs the shard's side of the topic for as long as the process lives: deliveries must
/// still come back and revocations be confirmed while the node drains.
pub async fn run(svc: Rc<Services>) {
    let Some(link) = &svc.kafka else {
        return;
    };
    let Some(mut door) = link.doorbell.borrow_mut().take() else {
        return;
    };
    let warnings = Warnings::default();
    let mut lag_checked = Instant::now();
    loop {
        while let Some(delivered) = link.deliveries.pop() {
            link.delivered(delivered);
        }
        if let Some(m) = &svc.mirror {
            while let Some(flushed) = m.flushed.pop() {
                mirror::take_outcome(&svc, flushed);
            }
        }
        crate::service::cluster::drain(&svc);
        let mut busy = false;
        if let Some(input) = link.inputs.pop() {
            busy = true;
            take(&svc, input, &warnings).await;
        }
        // Between two batches, so the windows and the applied offsets agree.
        mirror::maybe_flush(&svc);
        {
            let engine = svc.engine.borrow();
            let replay_ms = engine.horizon_ms() + engine.config().max_skew_ms;
            link.takeovers
                .replay_ms
                .fetch_max(replay_ms, Ordering::AcqRel);
        }
        if lag_checked.elapsed() >= LAG_CHECK_EVERY {
            lag_checked = Instant::now();
            check_lag(&svc, &warnings);
        }
        if busy {
            glommio::yield_if_needed().await;
            continue;
        }
        door = glommio::executor()
            .spawn_blocking(move || {
                door.wait(WAIT);
                door
            })
            .await;
    }
}

/// When each kind of warning was last logged.
#[derive(Debug, Default)]
struct Warnings {
    malformed: Cell<Option<Instant>>,
    behind: Cell<Option<Instant>>,
}

impl Warnings {
    /// True when a warning of this kind may be logged now.
    fn due(slot: &Cell<Option<Instant>>) -> bool {
        let due = slot.get().is_none_or(|at| at.elapsed() >= WARN_EVERY);
        if due {
            slot.set(Some(Instant::now()));
        }
        due
    }
}

async fn take(svc: &Rc<Services>, input: ShardInput, warnings: &Warnings) {
    match input {
        ShardInput::Records(records) => apply(svc, records, warnings).await,
        ShardInput::Assigned(taken) => assigned(svc, taken),
        ShardInput::Backfilled {
            ticket,
            records,
            done,
        } => backfill::take(svc, ticket, records, done, |r, now| {
            decode(r, now).map(|p| p.events)
        }),
        ShardInput::Revoked { partitions, done } => {
            // The consumer thread bumped their generation: no record of theirs applies
            // any more, queued or not. Their windows stay, unread, in case the
            // partitions come back with nobody having moved them.
            if let Some(m) = &svc.mirror {
                partitions.iter().for_each(|&p| m.disown(p));
            }
            partitions.iter().for_each(|&p| svc.backfills.cancel(p));
            done.store(true, Ordering::Release);
            tracing::info!(shard = svc.id, ?partitions, "gave up kafka partitions");
        }
    }
}

/// Takes partitions over: kept ones as they are, the others emptied, then loaded from
/// the mirror's state where there is one (replayed ones are rebuilt by their records).
fn assigned(svc: &Rc<Services>, taken: Vec<Taken>) {
    let Some(link) = &svc.kafka else {
        return;
    };
    let fresh: Vec<u32> = taken
        .iter()
        .filter(|t| !matches!(t.resume, Resume::Kept))
        .map(|t| t.partition)
        .collect();
    // Backfills of an earlier ownership would add to windows that start over now.
    fresh.iter().for_each(|&p| svc.backfills.cancel(p));
    reset(svc, &fresh);
    for t in taken {
        let how = match &t.resume {
            Resume::Kept => "kept",
            Resume::Restore(_) => "restored",
            Resume::Replay => "replayed",
        };
        if let Resume::Restore(stored) = &t.resume {
            let queries = restore(svc, t.partition, t.start, stored);
            if let Some(m) = &svc.mirror {
                m.restored(queries);
            }
        }
        if let Resume::Kept = t.resume {
            // Queries made while another node owned it have nothing yet.
            let pending = svc.backfills.take_pending(t.partition);
            backfill::start(svc, pending, t.partition, t.start);
        }
        if let Some(m) = &svc.mirror {
            m.own(t.partition, t.epoch);
        }
        link.takeovers.done();
        tracing::info!(
            shard = svc.id,
            partition = t.partition,
            start = t.start,
            epoch = t.epoch,
            "took a kafka partition ({how})"
        );
    }
}

/// Loads the stored windows of partition `p`'s queries, as of offset `start`; a query
/// with nothing stored is backfilled up to `start`. Returns how many were loaded.
fn restore(
    svc: &Rc<Services>,
    partition: u32,
    start: i64,
    stored: &HashMap<String, StoredQuery>,
) -> usize {
    let now = now_ms();
    let mut missing = Vec::new();
    let mut loaded = 0;
    {
        let mut engine = svc.engine.borrow_mut();
        for key in engine.query_keys() {
            if svc.placement.partition(&key.metric) != partition {
                continue;
            }
            match stored.get(&key.stable_id()) {
                Some(q) => {
                    if engine
                        .restore_query(&key, q.latest, &q.panes, now)
                        .is_some()
                    {
                        loaded += 1;
                    }
                }
                None => missing.push(key),
            }
        }
        // The tag values' windows of grouped widgets whose query was stored.
        for key in engine.stored_parts(stored.keys().map(String::as_str)) {
            if let Some(q) = stored.get(&key.stable_id())
                && engine
                    .restore_query(&key, q.latest, &q.panes, now)
                    .is_some()
            {
                loaded += 1;
            }
        }
    }
    backfill::start(svc, missing, partition, start);
    loaded
}

/// Empties the windows of the widgets whose metric is in one of `partitions`.
fn reset(svc: &Rc<Services>, partitions: &[u32]) {
    let now = now_ms();
    let mut engine = svc.engine.borrow_mut();
    let affected: Vec<Widget> = engine
        .widget_ids()
        .filter_map(|id| engine.widget(id))
        .filter(|w| partitions.contains(&svc.placement.partition(&w.spec.metric_name)))
        .cloned()
        .collect();
    for widget in affected {
        engine.remove_widget(&widget.widget_id);
        if let Err(e) = engine.upsert_widget(widget, now) {
            tracing::warn!(
                shard = svc.id,
                "widget refused on reset: {e}; it shows no value until its dashboard changes: fix or remove the widget with that field (PATCH /dashboards/<id>/widgets), or restart the node"
            );
        }
    }
}

/// Applies a batch of records: every event on the partition its metric hashes to, in
/// one engine call; then records how far each partition got.
async fn apply(svc: &Rc<Services>, records: Vec<Record>, warnings: &Warnings) {
    let Some(link) = &svc.kafka else {
        return;
    };
    let now = now_ms();
    let mut events: Vec<MetricEvent> = Vec::new();
    let mut progress: Vec<(u32, i64, i64)> = Vec::new();
    let (mut consumed, mut malformed, mut wrong, mut revoked) = (0u64, 0u64, 0u64, 0u64);
    for record in records {
        let Some(state) = link.partitions.get(record.partition as usize) else {
            continue;
        };
        if state.generation() != record.generation || !state.owned() {
            revoked += 1;
            continue;
        }
        let mut newest = 0;
        match decode(&record, now) {
            Ok(parsed) => {
                consumed += 1;
                svc.ingest.count_refusals(&parsed.refusals);
                for ev in parsed.events {
                    if svc.placement.partition(&ev.metric_name) != record.partition {
                        wrong += 1;
                        continue;
                    }
                    newest = newest.max(ev.event_time);
                    events.push(ev);
                }
            }
            Err(reason) => {
                malformed += 1;
                if Warnings::due(&warnings.malformed) {
                    tracing::warn!(
                        partition = record.partition,
                        offset = record.offset,
                        "malformed kafka record skipped (further ones are counted, not logged, for {} s): {reason}; fix the producer that wrote it: records are JSON events, line protocol or livedash's batch form",
                        WARN_EVERY.as_secs()
                    );
                }
            }
        }
        match progress.iter_mut().find(|(p, _, _)| *p == record.partition) {
            Some(entry) => {
                entry.1 = record.offset + 1;
                entry.2 = entry.2.max(newest);
            }
            None => progress.push((record.partition, record.offset + 1, newest)),
        }
    }
    let applied = events.len();
    if !events.is_empty() {
        ApplyEvents(events).run(svc).await;
    }
    for (partition, next, newest) in progress {
        link.partitions[partition as usize].applied(next, newest);
    }
    link.count(|c| {
        c.consumed_records += consumed;
        c.consumed_events += applied as u64;
        c.malformed_records += malformed;
        c.wrong_partition += wrong;
        c.revoked_records += revoked;
    });
}

/// A record's events: a value that starts with `batch::MAGIC` is in livedash's compact
/// form; the `livedash-format` header, when present, names the format (`json`, `influx`,
/// `batch-v1`); otherwise a value starting with `[` is a JSON array of events, one
/// starting with `{` one JSON event, anything else InfluxDB line protocol with nanosecond
/// timestamps. Events are checked as HTTP ingest checks them.
fn decode(record: &Record, now: i64) -> Result<Parsed, String> {
    let value = &record.value;
    if batch::is_batch(value) || record.format.as_deref() == Some(batch::FORMAT) {
        return batch::decode(value).map(Parsed::from_events);
    }
    let first = value.iter().find(|b| !b.is_ascii_whitespace()).copied();
    match (record.format.as_deref(), first) {
        (Some("json") | None, Some(b'[')) => parse::json(value, now),
        (Some("json") | None, Some(b'{')) => {
            let mut array = Vec::with_capacity(value.len() + 2);
            array.push(b'[');
            array.extend_from_slice(value);
            array.push(b']');
            parse::json(&array, now)
        }
        (Some("json"), _) => Err("the value is not a JSON event or array of events".into()),
        (Some("influx") | None, Some(_)) => parse::line_protocol(value, Precision::Nanos, now),
        (_, None) => Err("the value is empty".into()),
        (Some(other), _) => Err(format!(
            "{FORMAT_HEADER} {other:?} is not a known format ({}, json, influx)",
            batch::FORMAT
        )),
    }
}

/// Warns when a partition is further behind than the shortest window of any widget of
/// this shard (the original design's alert rule).
fn check_lag(svc: &Services, warnings: &Warnings) {
    let shortest_ms = crate::service::stats::shortest_window_ms(&svc.engine.borrow());
    let Some(shortest_ms) = shortest_ms else {
        return;
    };
    let worst = topic::lag(svc)
        .into_iter()
        .filter(|l| l.behind_ms.is_some_and(|b| b > shortest_ms))
        .max_by_key(|l| l.behind_ms);
    if let Some(l) = worst
        && Warnings::due(&warnings.behind)
    {
        tracing::warn!(
            shard = svc.id,
            partition = l.partition,
            behind_ms = l.behind_ms,
            lag_records = l.lag_records,
            "kafka consumption is further behind than the shortest widget window ({shortest_ms} ms); nothing to do while a partition replays after a takeover: otherwise add nodes (partitions move to them), or look for a slow shard in livedash_tick_duration_seconds"
        );
    }
}
