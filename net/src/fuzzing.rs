//! The fuzz targets' entry points (`net/fuzz`). Each takes arbitrary bytes, runs one
//! parser as the node does, and checks what must hold whatever the input: a panic here
//! is a bug. The targets: the HTTP head and body framing (chunked included), JSON ingest,
//! line protocol, WebSocket frames from clients, and dashboard and widget bodies.

// A fuzz target reports a broken invariant by panicking: that is its whole job.
#![allow(clippy::expect_used)]

use livedash_engine::limits::MAX_LISTED_REJECTIONS;
use livedash_engine::{NewDashboard, WidgetPatch, validate};
use uuid::Uuid;

use crate::api::dashboards::decode;
use crate::catalogue::{Catalogue, Edit};
use crate::parse::{self, Parsed, Precision};
use crate::stream::peer::{Heard, Peer};

/// Body limit of the HTTP target: small, so the limit's paths are reached.
const MAX_BODY: usize = 4096;
/// The node clock the parsers see (2026-11-30).
const NOW_MS: i64 = 1_796_000_000_000;

/// The first byte as a small number, and the rest.
fn split(data: &[u8]) -> (usize, &[u8]) {
    match data.split_first() {
        Some((&b, rest)) => (usize::from(b), rest),
        None => (0, data),
    }
}

/// A request framed from `data`, its chunked body fed in pieces sized by the first byte.
pub fn http(data: &[u8]) {
    let (piece, input) = split(data);
    match crate::http::frame_request(input, piece + 1, MAX_BODY) {
        Ok(Some(request)) => {
            assert!(request.body.len() <= MAX_BODY, "body over the limit");
            assert!(!request.method.is_empty());
        }
        Ok(None) => {}
        Err(status) => assert!((400..600).contains(&status), "answer {status}"),
    }
}

/// What holds for any parse: listed refusals are bounded and counted, and every accepted
/// event is valid.
fn check(parsed: &Parsed) {
    assert!(parsed.rejected.len() <= MAX_LISTED_REJECTIONS);
    assert!(parsed.rejected.len() <= parsed.rejected_total);
    assert_eq!(parsed.events.len(), parsed.origin.len());
    for event in &parsed.events {
        assert!(validate::event(event).is_ok(), "accepted an invalid event");
    }
}

/// A JSON ingest body.
pub fn json_ingest(data: &[u8]) {
    if let Ok(parsed) = parse::json(data, NOW_MS) {
        check(&parsed);
    }
}

/// A line protocol body, at a precision picked by the first byte.
pub fn line_protocol(data: &[u8]) {
    let (pick, body) = split(data);
    let precision = [
        Precision::Nanos,
        Precision::Micros,
        Precision::Millis,
        Precision::Seconds,
        Precision::Minutes,
        Precision::Hours,
    ][pick % 6];
    if let Ok(parsed) = parse::line_protocol(body, precision, NOW_MS) {
        check(&parsed);
    }
}

/// Bytes from a stream's client, read as the keep-alive sweep reads them.
pub fn websocket(data: &[u8]) {
    let mut peer = Peer::new();
    let heard = peer.hear_from(data);
    // Whatever was sent, the replies it queued stay within what one sweep may read
    // (a pong is never longer than its ping), plus a close frame.
    assert!(
        peer.queued() <= data.len() + 256,
        "replies grew past the input"
    );
    if heard != Heard::Gone {
        assert!(peer.hear_from(&[][..]) == Heard::Gone);
    }
}

/// A dashboard body, an update or a widget patch (the first byte picks), applied to a
/// catalogue holding one dashboard.
pub fn dashboards(data: &[u8]) {
    let (pick, body) = split(data);
    let mut next = 0u128;
    let mut catalogue = Catalogue::with_ids(
        Vec::new(),
        Box::new(move || {
            next += 1;
            Uuid::from_u128(next)
        }),
    );
    let seed: NewDashboard = serde_json::from_str(
        r#"{"name":"seed","widgets":[{"metric_name":"m","aggregation":"sum","window_seconds":60,"refresh_interval_seconds":1}]}"#,
    )
    .expect("the seed dashboard parses");
    let change = catalogue
        .prepare(Edit::Create(seed))
        .expect("the seed is valid");
    catalogue.commit(&change);
    let id = change.id;
    let edit = match pick % 3 {
        0 => decode::<NewDashboard>(body).map(Edit::Create),
        1 => decode(body).map(|u| Edit::Update(id, u)),
        _ => decode::<WidgetPatch>(body).map(|p| Edit::Patch(id, p)),
    };
    let Ok(edit) = edit else { return };
    let Ok(change) = catalogue.prepare(edit) else {
        return;
    };
    catalogue.commit(&change);
    let dashboard = catalogue
        .get(change.id)
        .expect("a committed dashboard is there");
    assert!(
        validate::dashboard(dashboard).is_ok(),
        "committed an invalid dashboard"
    );
    // What is stored reads back as the same dashboard.
    let stored = serde_json::to_vec(dashboard).expect("a dashboard serialises");
    let back: livedash_engine::Dashboard =
        serde_json::from_slice(&stored).expect("a stored dashboard reads back");
    assert_eq!(&back, dashboard);
}
