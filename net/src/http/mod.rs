//! A small HTTP/1.1 server over glommio sockets: keep-alive, pipelining, Content-Length
//! and chunked bodies, `Expect: 100-continue`, a body-size limit and per-phase deadlines.
//! Parsing is `httparse`; this module only frames requests and writes responses.

pub mod chunked;
mod conn;
mod response;

pub use conn::{ConnLimits, Service, frame_request, serve, write_in_slices};
pub use response::Response;

/// One parsed request with its whole body.
#[derive(Debug)]
pub struct Request {
    pub method: String,
    /// The path without the query string.
    pub path: String,
    /// The raw query string (after `?`), if any.
    pub query: Option<String>,
    pub content_type: Option<String>,
    /// `Content-Encoding` (for example `gzip`), if any.
    pub content_encoding: Option<String>,
    pub authorization: Option<String>,
    /// `Host` and `Origin` headers, for WebSocket origin checks.
    pub host: Option<String>,
    pub origin: Option<String>,
    /// `Sec-WebSocket-Key` when the request asks to upgrade to a WebSocket.
    pub websocket_key: Option<String>,
    pub body: Vec<u8>,
}

impl Request {
    /// The value of query parameter `name`, decoded.
    pub fn query_param(&self, name: &str) -> Option<String> {
        let query = self.query.as_deref()?;
        form_urlencoded::parse(query.as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    }

    /// The media type of `Content-Type`, lower-cased, without parameters (`charset`);
    /// `None` when the header is missing or empty.
    pub fn media_type(&self) -> Option<String> {
        self.content_type
            .as_deref()
            .map(|c| {
                c.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase()
            })
            .filter(|m| !m.is_empty())
    }

    /// The token of the `Authorization` header, if well formed: `Bearer <token>`, or
    /// `Token <token>` as InfluxDB clients send it.
    pub fn bearer(&self) -> Option<&str> {
        let value = self.authorization.as_deref()?.trim();
        let (scheme, token) = value.split_once(' ')?;
        (scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("token"))
            .then(|| token.trim())
    }
}
