//! Tests of the parsers: JSON and line protocol, refusals, units.

use super::*;

#[test]
fn json_bad_elements_are_rejected_alone() {
    let body = br#"[
        {"metric_name":"a","value":1,"event_time":5},
        {"metric_name":"a","value":"x","event_time":5},
        {"metric_name":"bad name","value":1,"event_time":5},
        {"metric_name":"a","value":2,"event_time":"2026-11-29T00:00:00Z","tags":{"h":1}}
    ]"#;
    let p = json(body, 1_700_000_000_000).unwrap();
    assert_eq!(p.events.len(), 2);
    assert_eq!(p.origin, vec![0, 3]);
    assert_eq!(p.events[1].tags.get("h").map(String::as_str), Some("1"));
    let idx: Vec<usize> = p.rejected.iter().map(|r| r.index).collect();
    assert_eq!(idx, vec![1, 2]);
    assert_eq!(
        (
            p.refusals.get(RejectReason::NotAnEvent),
            p.refusals.get(RejectReason::BadName)
        ),
        (1, 1)
    );
}

#[test]
fn json_that_is_not_an_array_is_an_error() {
    assert!(json(b"{\"metric_name\":\"a\"}", 0).is_err());
    assert!(json(b"[{\"metric_name\":", 0).is_err());
    assert!(json(b"[]", 0).unwrap().events.is_empty());
}

#[test]
fn line_protocol_fields_become_metrics() {
    let body = b"cpu,host=a,region=eu usage=0.5,idle=99i 1700000000000000000\n\
                 \n\
                 mem,host=a used=1u,ok=true,note=\"x\"\n\
                 garbage\n";
    let p = line_protocol(body, Precision::Nanos, 42).unwrap();
    let names: Vec<&str> = p.events.iter().map(|e| e.metric_name.as_str()).collect();
    assert_eq!(names, ["cpu.usage", "cpu.idle", "mem.used", "mem.ok"]);
    assert_eq!(p.events[0].event_time, 1_700_000_000_000);
    assert_eq!(p.events[1].value, 99.0);
    assert_eq!(p.events[2].event_time, 42);
    assert_eq!(p.events[3].value, 1.0);
    assert_eq!(p.events[0].tags.len(), 2);
    assert_eq!(p.origin, vec![0, 0, 1, 1]);
    let idx: Vec<usize> = p.rejected.iter().map(|r| r.index).collect();
    assert_eq!(idx, vec![1, 2]);
    assert_eq!(
        (
            p.refusals.get(RejectReason::StringField),
            p.refusals.get(RejectReason::UnparsableLine)
        ),
        (1, 1)
    );
}

#[test]
fn a_line_with_too_many_tags_is_refused_once_whatever_its_fields() {
    let tags: String = (0..5_000).map(|i| format!(",t{i}=v")).collect();
    let fields: Vec<String> = (0..5_000).map(|i| format!("f{i}=1")).collect();
    let line = format!("m{tags} {} 1700000000000", fields.join(","));
    let parsed = line_protocol(
        format!("{line}\nok,host=a v=2 1700000000000").as_bytes(),
        Precision::Millis,
        1_700_000_000_000,
    )
    .unwrap();
    assert_eq!(parsed.events.len(), 1, "the good line still counts");
    assert_eq!(parsed.rejected.len(), 1, "one rejection for the whole line");
    assert_eq!(parsed.rejected[0].index, 0);
    assert!(
        parsed.rejected[0].reason.contains("32"),
        "{:?}",
        parsed.rejected
    );
}

#[test]
fn line_protocol_errors_are_in_words_with_their_place() {
    let body = b"# a comment\n\ncpu v=1\ngarbage\ncpu,host v=1\ncpu v=1 not-a-time\n";
    let p = line_protocol(body, Precision::Nanos, 0).unwrap();
    let reasons: Vec<&str> = p.rejected.iter().map(|r| r.reason.as_str()).collect();
    assert_eq!(reasons.len(), 3, "{reasons:?}");
    for (reason, line) in reasons.iter().zip(["line 4", "line 5", "line 6"]) {
        assert!(reason.starts_with(line), "{reason}");
        assert!(
            !reason.contains("TakeWhile") && !reason.contains("generic"),
            "{reason}"
        );
    }
    assert!(
        reasons[2].starts_with("line 6, column 9: unexpected"),
        "{}",
        reasons[2]
    );
}

/// A node clock for the tests: 2023-11-14.
const NOW: i64 = 1_700_000_000_000;

#[test]
fn refusals_count_and_show_by_reason_name() {
    // `ALL` lists the reasons in declaration order: a reason's counter is its position.
    for (i, r) in RejectReason::ALL.iter().enumerate() {
        assert_eq!(*r as usize, i, "{r:?}");
    }
    let mut a = Refusals::default();
    a.count(RejectReason::BadTime);
    let mut b = Refusals::default();
    b.count(RejectReason::BadTime);
    b.count(RejectReason::StringField);
    a.add(&b);
    let shown = serde_json::to_value(a).unwrap();
    assert_eq!(shown["bad_time"], 2);
    assert_eq!(shown["string_field"], 1);
    assert_eq!(shown.as_object().unwrap().len(), RejectReason::ALL.len());
}

#[test]
fn timestamps_in_the_wrong_unit_get_a_hint() {
    // Line protocol in seconds while the precision says nanoseconds (the default).
    let p = line_protocol(
        b"m v=1 1700000000\nm v=2 1700000000000000000\n",
        Precision::Nanos,
        NOW,
    )
    .unwrap();
    assert_eq!(p.events.len(), 1);
    assert_eq!(
        p.rejected[0].reason,
        "the timestamp 1700000000 looks like seconds, but the precision is nanoseconds: \
         pass ?precision=s"
    );
    // JSON event times in seconds and in microseconds.
    let body = format!(
        r#"[{{"metric_name":"a","value":1,"event_time":1700000000}},
            {{"metric_name":"a","value":1,"event_time":1700000000000000}},
            {{"metric_name":"a","value":1,"event_time":{NOW}}}]"#
    );
    let p = json(body.as_bytes(), NOW).unwrap();
    assert_eq!(p.origin, [2]);
    assert!(
        p.rejected[0].reason.contains("looks like seconds"),
        "{:?}",
        p.rejected
    );
    assert!(
        p.rejected[1].reason.contains("looks like microseconds"),
        "{:?}",
        p.rejected
    );
    assert_eq!(p.refusals.get(RejectReason::WrongTimeUnit), 2);
    // A time merely old (a week) is left to the windows to judge.
    let week_ago = NOW - 7 * 24 * 3_600_000;
    assert!(likely_unit(week_ago, Precision::Millis, NOW).is_none());
}

#[test]
fn line_protocol_precision() {
    for (p, t, ms) in [
        ("s", 1_700_000_000_i64, 1_700_000_000_000_i64),
        ("ms", 1_700_000_000_123, 1_700_000_000_123),
        ("us", 1_700_000_000_123_456, 1_700_000_000_123),
    ] {
        let body = format!("m v=1 {t}");
        let precision = Precision::parse(Some(p)).unwrap();
        let parsed = line_protocol(body.as_bytes(), precision, NOW).unwrap();
        assert_eq!(parsed.events[0].event_time, ms, "{p}");
    }
    assert!(Precision::parse(Some("d")).is_err());
    assert_eq!(Precision::parse(Some("h")), Ok(Precision::Hours));
    assert!(line_protocol(b"just garbage\n", Precision::Nanos, 0).is_err());
    assert!(line_protocol(b"\xff", Precision::Nanos, 0).is_err());
}
