//! Lenient-but-strict deserialisers for the wire model: event times and tag maps.
//! Lenient in accepted spellings, strict in what they mean; errors name the problem.

use std::fmt;

use serde::Deserializer;
use serde::de::{self, MapAccess, Visitor};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::model::Tags;

/// Parses an RFC 3339 timestamp into epoch milliseconds.
pub fn parse_rfc3339_ms(text: &str) -> Option<i64> {
    let t = OffsetDateTime::parse(text, &Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos().div_euclid(1_000_000)).ok()
}

struct EventTimeVisitor;

impl Visitor<'_> for EventTimeVisitor {
    type Value = i64;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("epoch milliseconds (an integer) or an RFC 3339 timestamp string")
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<i64, E> {
        Ok(v)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<i64, E> {
        i64::try_from(v).map_err(|_| E::custom("event_time is out of range"))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<i64, E> {
        if v.is_finite() && v.abs() < 9.0e15 {
            Ok(v.floor() as i64)
        } else {
            Err(E::custom("event_time is out of range"))
        }
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<i64, E> {
        parse_rfc3339_ms(v).ok_or_else(|| {
            E::custom(format_args!(
                "event_time {v:?} is not an RFC 3339 timestamp"
            ))
        })
    }
}

pub fn event_time<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    d.deserialize_any(EventTimeVisitor)
}

struct TagValueVisitor;

impl Visitor<'_> for TagValueVisitor {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a tag value (string, number or boolean)")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        Ok(v.to_owned())
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<String, E> {
        Ok(v)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<String, E> {
        Ok(v.to_string())
    }
}

struct TagValue(String);

impl<'de> serde::Deserialize<'de> for TagValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(TagValueVisitor).map(TagValue)
    }
}

struct TagsVisitor;

impl<'de> Visitor<'de> for TagsVisitor {
    type Value = Tags;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object of tag keys to values, or null")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Tags, E> {
        Ok(Tags::new())
    }

    fn visit_none<E: de::Error>(self) -> Result<Tags, E> {
        Ok(Tags::new())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Tags, A::Error> {
        let mut tags = Tags::new();
        while let Some((key, TagValue(value))) = map.next_entry::<String, TagValue>()? {
            if tags.insert(key, value).is_some() {
                return Err(de::Error::custom("duplicate tag key"));
            }
        }
        Ok(tags)
    }
}

pub fn tags<'de, D: Deserializer<'de>>(d: D) -> Result<Tags, D::Error> {
    d.deserialize_any(TagsVisitor)
}
