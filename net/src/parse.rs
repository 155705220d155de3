//! Turning an ingest body into events: a JSON array of MetricEvent objects, or InfluxDB
//! line protocol. Per-event problems become rejections with the event's index; only a body
//! that cannot be parsed at all is an error (and then nothing is applied).

use influxdb_line_protocol::{FieldValue, parse_lines};
use livedash_engine::limits::MAX_LISTED_REJECTIONS;
use livedash_engine::{MetricEvent, RejectedEvent as Rejected, Tags, ValidationError, validate};
use serde::Serialize;
use serde_json::value::RawValue;

/// Why the parser refused an event, for counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectReason {
    /// A JSON element that is not an event (a missing field, a wrong type).
    NotAnEvent,
    BadName,
    BadTags,
    BadValue,
    BadTime,
    /// An event time that reads as another unit.
    WrongTimeUnit,
    UnparsableLine,
    StringField,
}

impl RejectReason {
    /// Every reason, in the order `/stats` lists them.
    pub const ALL: [RejectReason; 8] = [
        Self::NotAnEvent,
        Self::BadName,
        Self::BadTags,
        Self::BadValue,
        Self::BadTime,
        Self::WrongTimeUnit,
        Self::UnparsableLine,
        Self::StringField,
    ];

    /// The name `/stats` counts it under.
    pub fn name(self) -> &'static str {
        match self {
            Self::NotAnEvent => "not_an_event",
            Self::BadName => "bad_name",
            Self::BadTags => "bad_tags",
            Self::BadValue => "bad_value",
            Self::BadTime => "bad_time",
            Self::WrongTimeUnit => "wrong_time_unit",
            Self::UnparsableLine => "unparsable_line",
            Self::StringField => "string_field",
        }
    }
}

impl From<&ValidationError> for RejectReason {
    fn from(e: &ValidationError) -> Self {
        match e {
            ValidationError::NonFiniteValue(_) | ValidationError::ValueOutOfRange(_) => {
                Self::BadValue
            }
            ValidationError::NegativeEventTime(_) => Self::BadTime,
            ValidationError::Empty { field }
            | ValidationError::TooLong { field, .. }
            | ValidationError::BadNameChar { field, .. }
            | ValidationError::ControlChar { field, .. }
                if *field == "metric_name" =>
            {
                Self::BadName
            }
            _ => Self::BadTags,
        }
    }
}

/// Refused events by reason; shown in `/stats` as an object keyed by reason name.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Refusals([u64; RejectReason::ALL.len()]);

impl Refusals {
    fn count(&mut self, why: RejectReason) {
        self.0[why as usize] += 1;
    }

    /// Events refused for `why`.
    pub fn get(&self, why: RejectReason) -> u64 {
        self.0[why as usize]
    }

    /// Adds `other`'s counts to these.
    pub fn add(&mut self, other: &Refusals) {
        for (mine, theirs) in self.0.iter_mut().zip(other.0) {
            *mine += theirs;
        }
    }
}

impl Serialize for Refusals {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(RejectReason::ALL.iter().map(|r| (r.name(), self.get(*r))))
    }
}

/// Events ready for the shards, each with the index it is reported under.
#[derive(Debug, Default)]
pub struct Parsed {
    pub events: Vec<MetricEvent>,
    /// `origin[i]` is the body index of `events[i]`.
    pub origin: Vec<u32>,
    /// The first `MAX_LISTED_REJECTIONS` refused events, by index.
    pub rejected: Vec<Rejected>,
    /// Every refused event.
    pub rejected_total: usize,
    /// The rejections, counted by reason.
    pub refusals: Refusals,
}

impl Parsed {
    /// Events made in-process (the demo, a test), validated like parsed ones, each
    /// reported under its position.
    pub fn from_events(events: Vec<MetricEvent>) -> Self {
        let mut parsed = Self::default();
        for (i, event) in events.into_iter().enumerate() {
            parsed.push(i, event);
        }
        parsed
    }

    fn push(&mut self, index: usize, event: MetricEvent) {
        match validate::event(&event) {
            Ok(()) => {
                self.events.push(event);
                self.origin.push(index as u32);
            }
            Err(e) => self.reject(index, RejectReason::from(&e), || e.to_string()),
        }
    }

    /// Counts a refused event; the first `MAX_LISTED_REJECTIONS` are listed with their
    /// reason (made only for those), so a body of a million bad events costs a count.
    fn reject(&mut self, index: usize, why: RejectReason, reason: impl FnOnce() -> String) {
        self.refusals.count(why);
        self.rejected_total += 1;
        if self.rejected.len() < MAX_LISTED_REJECTIONS {
            self.rejected.push(Rejected {
                index,
                reason: reason(),
            });
        }
    }
}

/// An event time this far from the node clock (a year) is questioned: was it written in
/// another unit?
const UNIT_SUSPECT_MS: u64 = 365 * 24 * 3_600_000;
/// Read in another unit, it must land this close to the node clock (two days) to be named.
const UNIT_MATCH_MS: u64 = 2 * 24 * 3_600_000;

/// For a timestamp `raw` read in `given` units that lands far from `now`, the unit it was
/// most likely written in.
fn likely_unit(raw: i64, given: Precision, now: i64) -> Option<Precision> {
    let off = |p: Precision| p.to_ms(raw).saturating_sub(now).unsigned_abs();
    if off(given) < UNIT_SUSPECT_MS {
        return None;
    }
    [
        Precision::Nanos,
        Precision::Micros,
        Precision::Millis,
        Precision::Seconds,
    ]
    .into_iter()
    .find(|p| *p != given && off(*p) < UNIT_MATCH_MS)
}

/// Parses a JSON array of events. An element that is not a valid event is rejected alone;
/// so is one whose `event_time` looks like seconds, microseconds or nanoseconds (it must
/// be milliseconds), with a hint saying so.
pub fn json(body: &[u8], now_ms: i64) -> Result<Parsed, String> {
    let mut parsed = Parsed::default();
    let take = |parsed: &mut Parsed, i: usize, ev: MetricEvent| match likely_unit(
        ev.event_time,
        Precision::Millis,
        now_ms,
    ) {
        Some(unit) => parsed.reject(i, RejectReason::WrongTimeUnit, || {
            format!(
                "event_time {} looks like {} since the epoch; it must be milliseconds",
                ev.event_time,
                unit.words()
            )
        }),
        None => parsed.push(i, ev),
    };
    // Fast path: the whole array is well formed.
    if let Ok(events) = serde_json::from_slice::<Vec<MetricEvent>>(body) {
        parsed.events.reserve(events.len());
        for (i, ev) in events.into_iter().enumerate() {
            take(&mut parsed, i, ev);
        }
        return Ok(parsed);
    }
    // Slow path: find the bad elements one by one.
    let items: Vec<&RawValue> = serde_json::from_slice(body)
        .map_err(|e| format!("body is not a JSON array of events: {e}"))?;
    for (i, raw) in items.into_iter().enumerate() {
        match serde_json::from_str::<MetricEvent>(raw.get()) {
            Ok(ev) => take(&mut parsed, i, ev),
            Err(e) => parsed.reject(i, RejectReason::NotAnEvent, || e.to_string()),
        }
    }
    Ok(parsed)
}

/// Timestamp unit of line protocol (`?precision=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    Nanos,
    Micros,
    Millis,
    Seconds,
    Minutes,
    Hours,
}

impl Precision {
    /// Reads `ns|us|ms|s` (and the InfluxDB 1.x spellings `n`, `u`, `m` and `h`);
    /// default ns.
    pub fn parse(text: Option<&str>) -> Result<Self, String> {
        match text.unwrap_or("ns") {
            "ns" | "n" => Ok(Self::Nanos),
            "us" | "u" => Ok(Self::Micros),
            "ms" => Ok(Self::Millis),
            "s" => Ok(Self::Seconds),
            "m" => Ok(Self::Minutes),
            "h" => Ok(Self::Hours),
            other => Err(format!(
                "precision {other:?} is not one of ns, us, ms, s (or n, u, m, h)"
            )),
        }
    }

    /// The unit in words, and its `precision=` spelling.
    fn words(self) -> &'static str {
        match self {
            Self::Nanos => "nanoseconds",
            Self::Micros => "microseconds",
            Self::Millis => "milliseconds",
            Self::Seconds => "seconds",
            Self::Minutes => "minutes",
            Self::Hours => "hours",
        }
    }

    fn spelling(self) -> &'static str {
        match self {
            Self::Nanos => "ns",
            Self::Micros => "us",
            Self::Millis => "ms",
            Self::Seconds => "s",
            Self::Minutes => "m",
            Self::Hours => "h",
        }
    }

    fn to_ms(self, t: i64) -> i64 {
        match self {
            Self::Nanos => t.div_euclid(1_000_000),
            Self::Micros => t.div_euclid(1_000),
            Self::Millis => t,
            Self::Seconds => t.saturating_mul(1_000),
            Self::Minutes => t.saturating_mul(60_000),
            Self::Hours => t.saturating_mul(3_600_000),
        }
    }
}

/// The shape of a line, for error messages.
const LINE_SHAPE: &str = "measurement[,tag=value...] field=value[,field=value...] [timestamp]";

/// The `index`-th line that is neither blank nor a comment, with its line number from 1.
fn nth_line(text: &str, index: usize) -> Option<(usize, &str)> {
    text.split('\n')
        .enumerate()
        .filter(|(_, l)| {
            let l = l.trim();
            !l.is_empty() && !l.starts_with('#')
        })
        .nth(index)
        .map(|(n, l)| (n + 1, l.trim_end_matches('\r')))
}

/// A line-protocol error in words: where (line, and column where it can be told) and what
/// is wrong, never the parser's internals.
fn describe(e: &influxdb_line_protocol::Error, text: &str, index: usize) -> String {
    use influxdb_line_protocol::Error as E;
    let (number, line) = nth_line(text, index).unwrap_or((index + 1, ""));
    let at = match e {
        E::CannotParseEntireLine { trailing_content }
            if line.ends_with(trailing_content.as_str()) =>
        {
            let rest = trailing_content.trim_start();
            format!("line {number}, column {}", line.len() - rest.len() + 1)
        }
        _ => format!("line {number}"),
    };
    let what = match e {
        E::CannotParseEntireLine { trailing_content } => format!(
            "unexpected {:?} (a space, comma or equals sign inside a name or \
             value must be escaped with a backslash; the timestamp must be an integer)",
            trailing_content.trim_start()
        ),
        E::MeasurementValueInvalid => {
            format!("the measurement is missing or invalid; expected {LINE_SHAPE}")
        }
        E::FieldSetMissing => {
            format!("no fields (name=value) after the measurement and tags; expected {LINE_SHAPE}")
        }
        E::TagSetMalformed => format!("a tag is not name=value; expected {LINE_SHAPE}"),
        E::GenericParsingError { .. } => format!("not line protocol; expected {LINE_SHAPE}"),
        other => other.to_string(),
    };
    format!("{at}: {what}")
}

/// Parses InfluxDB line protocol. Each field of a line becomes one event named
/// `measurement.field`; tags become tags; a line without a timestamp takes `now_ms`.
/// `index` counts the non-blank lines from 0. Integer, unsigned, float and boolean
/// (1 or 0) fields are numbers; string fields are rejected.
pub fn line_protocol(body: &[u8], precision: Precision, now_ms: i64) -> Result<Parsed, String> {
    let text = std::str::from_utf8(body).map_err(|e| format!("body is not UTF-8: {e}"))?;
    let mut parsed = Parsed::default();
    let mut lines = 0;
    for (index, line) in parse_lines(text).enumerate() {
        lines += 1;
        let line = match line {
            Ok(line) => line,
            Err(e) => {
                parsed.reject(index, RejectReason::UnparsableLine, || {
                    describe(&e, text, index)
                });
                continue;
            }
        };
        let tags: Tags = line
            .series
            .tag_set
            .iter()
            .flatten()
            .map(|(k, v)| (k.as_str().to_string(), v.as_str().to_string()))
            .collect();
        // Checked once per line, before any field copies them: a line of thousands of
        // tags and fields costs one rejection, not one per field.
        if let Err(e) = validate::tags("tags", &tags) {
            parsed.reject(index, RejectReason::from(&e), || e.to_string());
            continue;
        }
        if let Some(t) = line.timestamp
            && let Some(unit) = likely_unit(t, precision, now_ms)
        {
            parsed.reject(index, RejectReason::WrongTimeUnit, || {
                format!(
                    "the timestamp {t} looks like {}, but the precision is {}: pass \
                     ?precision={}",
                    unit.words(),
                    precision.words(),
                    unit.spelling()
                )
            });
            continue;
        }
        let event_time = line.timestamp.map_or(now_ms, |t| precision.to_ms(t));
        let measurement = line.series.measurement.as_str();
        for (field, value) in &line.field_set {
            let value = match value {
                FieldValue::F64(v) => *v,
                FieldValue::I64(v) => *v as f64,
                FieldValue::U64(v) => *v as f64,
                FieldValue::Boolean(b) => f64::from(u8::from(*b)),
                FieldValue::String(_) => {
                    parsed.reject(index, RejectReason::StringField, || {
                        format!(
                            "field {}: string values cannot be aggregated",
                            field.as_str()
                        )
                    });
                    continue;
                }
            };
            let event = MetricEvent {
                metric_name: format!("{measurement}.{}", field.as_str()),
                value,
                tags: tags.clone(),
                event_time,
            };
            parsed.push(index, event);
        }
    }
    if lines > 0 && parsed.events.is_empty() && parsed.rejected_total >= lines {
        let first = parsed.rejected.first().map_or("", |r| r.reason.as_str());
        return Err(format!("no line could be parsed; first error: {first}"));
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
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
}
