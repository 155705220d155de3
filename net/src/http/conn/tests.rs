//! Tests of request heads: parsing, framing headers and the heads that are refused.

use super::*;

fn head(text: &str) -> Result<Option<(Head, usize)>, Ended> {
    parse_head(text.as_bytes())
}

fn status(r: Result<Option<(Head, usize)>, Ended>) -> u16 {
    match r {
        Err(Ended::Answer(resp)) => resp.status,
        _ => 0,
    }
}

#[test]
fn parses_a_head() {
    let (h, n) = head("POST /ingest?precision=ms HTTP/1.1\r\nContent-Length: 5\r\nAuthorization: Bearer abc\r\n\r\nhello")
        .ok()
        .flatten()
        .unwrap();
    assert_eq!(n, 84, "the head ends before the 5-byte body");
    assert_eq!(h.request.path, "/ingest");
    assert_eq!(h.request.query_param("precision").as_deref(), Some("ms"));
    assert_eq!(h.request.bearer(), Some("abc"));
    assert!(h.keep_alive);
    assert!(matches!(h.body, BodyKind::Length(5)));
}

#[test]
fn partial_head_needs_more() {
    assert!(matches!(head("GET / HTTP/1.1\r\nHost: x\r\n"), Ok(None)));
}

#[test]
fn refuses_ambiguous_framing() {
    assert_eq!(
        status(head(
            "POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
        )),
        400
    );
    assert_eq!(
        status(head(
            "POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n"
        )),
        400
    );
    assert_eq!(
        status(head("POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n")),
        501
    );
    assert_eq!(status(head("GET / HTTP/1.1\r\nExpect: magic\r\n\r\n")), 417);
    assert_eq!(status(head("GET /\x01 HTTP/1.1\r\n\r\n")), 400);
    for length in ["+2", "-1", " ", "0x10", "1_0", "2 2"] {
        assert_eq!(
            status(head(&format!(
                "POST / HTTP/1.1\r\nContent-Length: {length}\r\n\r\n"
            ))),
            400,
            "{length:?}"
        );
    }
}

#[test]
fn http10_closes_by_default() {
    let (h, _) = head("GET / HTTP/1.0\r\n\r\n").ok().flatten().unwrap();
    assert!(!h.keep_alive);
    let (h, _) = head("GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
        .ok()
        .flatten()
        .unwrap();
    assert!(!h.keep_alive);
}
