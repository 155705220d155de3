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
    // Slow path: find the bad elements one by one, as they are read (a list of them
    // all would cost 16 bytes per element: 8 times a body of `0,0,0,...`).
    let mut de = serde_json::Deserializer::from_slice(body);
    let each =
        EachElement(
            |i, raw: &RawValue| match serde_json::from_str::<MetricEvent>(raw.get()) {
                Ok(ev) => take(&mut parsed, i, ev),
                Err(e) => parsed.reject(i, RejectReason::NotAnEvent, || e.to_string()),
            },
        );
    serde::Deserializer::deserialize_seq(&mut de, each)
        .and_then(|()| de.end())
        .map_err(|e| format!("body is not a JSON array of events: {e}"))?;
    Ok(parsed)
}

/// Hands each element of a JSON array, unparsed, to a function with its index.
struct EachElement<F>(F);

impl<'de, F: FnMut(usize, &'de RawValue)> serde::de::Visitor<'de> for EachElement<F> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON array")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
        let mut index = 0;
        while let Some(raw) = seq.next_element::<&RawValue>()? {
            (self.0)(index, raw);
            index += 1;
        }
        Ok(())
    }
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
mod tests;
