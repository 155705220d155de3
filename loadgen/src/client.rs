//! The typed API client: one keep-alive HTTP/1.1 connection to a node. Typed calls
//! (create a dashboard, patch its widgets, ingest, read a widget's snapshot) take and
//! return the engine's model types; raw requests serve the load generator's producers,
//! the benchmarks and the tests that probe the protocol itself.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use livedash_engine::{
    Dashboard, IngestReply, MetricEvent, NewDashboard, WidgetPatch, WidgetReading,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use uuid::Uuid;

/// Wall-clock time in epoch milliseconds.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The address of a target given as `http://host:port`.
pub fn target_addr(target: &str) -> io::Result<SocketAddr> {
    let host = target
        .strip_prefix("http://")
        .ok_or_else(|| io::Error::other(format!("target {target} must start with http://")))?
        .trim_end_matches('/');
    host.to_socket_addrs()?
        .next()
        .ok_or_else(|| io::Error::other(format!("target {target} names no address")))
}

/// The address in a node's start-up line (`livedash listening on http://ADDR ...`).
pub fn banner_addr(line: &str) -> Option<SocketAddr> {
    line.split("http://")
        .nth(1)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// A call that got no usable answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Io(#[from] io::Error),
    /// The node answered with an error status and its `{"error": ...}` reason.
    #[error("HTTP {status}: {reason}")]
    Status { status: u16, reason: String },
    #[error("unexpected answer: {0}")]
    Decode(String),
}

/// One response.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    /// The body as `T`.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, ClientError> {
        serde_json::from_slice(&self.body).map_err(|e| {
            ClientError::Decode(format!("{e}: {}", String::from_utf8_lossy(&self.body)))
        })
    }

    /// The `error` reason of an error body (empty if there is none).
    pub fn reason(&self) -> String {
        serde_json::from_slice::<serde_json::Value>(&self.body)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_string))
            .unwrap_or_default()
    }

    /// The body as `T` if the status is `expected`, else the node's reason.
    fn expect<T: DeserializeOwned>(self, expected: u16) -> Result<T, ClientError> {
        if self.status != expected {
            return Err(ClientError::Status {
                status: self.status,
                reason: self.reason(),
            });
        }
        self.decode()
    }
}

/// One keep-alive connection to a node.
#[derive(Debug)]
pub struct Client {
    /// The socket, for tests that write raw bytes.
    pub stream: TcpStream,
    buf: Vec<u8>,
    addr: SocketAddr,
    /// Sent as `Authorization: Bearer <token>` when set.
    pub token: Option<String>,
    /// The node said it closes the connection: the next request opens a new one.
    closing: bool,
    /// The request awaiting its response was a HEAD (its response has no body).
    head: bool,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> io::Result<Self> {
        Ok(Self {
            stream: Self::open(addr)?,
            buf: Vec::with_capacity(64 * 1024),
            addr,
            token: None,
            closing: false,
            head: false,
        })
    }

    fn open(addr: SocketAddr) -> io::Result<TcpStream> {
        let stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        Ok(stream)
    }

    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// With `token` if there is one.
    pub fn with_token_opt(mut self, token: Option<String>) -> Self {
        self.token = token;
        self
    }

    /// Replaces the connection with a new one (after an error, or a close by the node).
    pub fn reconnect(&mut self) -> io::Result<()> {
        self.stream = Self::open(self.addr)?;
        self.buf.clear();
        self.closing = false;
        Ok(())
    }

    /// Sends one request with a body and reads the response.
    pub fn send(
        &mut self,
        method: &str,
        path: &str,
        content_type: &str,
        body: &[u8],
    ) -> io::Result<Reply> {
        if self.closing {
            self.reconnect()?;
        }
        self.head = method == "HEAD";
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n",
            self.addr,
            body.len()
        );
        if let Some(t) = &self.token {
            head.push_str("Authorization: Bearer ");
            head.push_str(t);
            head.push_str("\r\n");
        }
        head.push_str("\r\n");
        self.stream.write_all(head.as_bytes())?;
        self.stream.write_all(body)?;
        self.read_reply()
    }

    /// Reads one response (Content-Length framed, as the node always answers; none after
    /// a HEAD); interim `100 Continue` responses are skipped. A response that closes the
    /// connection makes the next request open a new one.
    pub fn read_reply(&mut self) -> io::Result<Reply> {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut resp = httparse::Response::new(&mut headers);
            let parsed = resp.parse(&self.buf).map_err(io::Error::other)?;
            let httparse::Status::Complete(n) = parsed else {
                self.fill()?;
                continue;
            };
            let status = resp.code.unwrap_or(0);
            let headers: Vec<(String, String)> = resp
                .headers
                .iter()
                .map(|h| {
                    (
                        h.name.to_ascii_lowercase(),
                        String::from_utf8_lossy(h.value).into_owned(),
                    )
                })
                .collect();
            if status == 100 {
                self.buf.drain(..n);
                continue;
            }
            let len = if self.head {
                0
            } else {
                headers
                    .iter()
                    .find(|(k, _)| k == "content-length")
                    .and_then(|(_, v)| v.parse::<usize>().ok())
                    .unwrap_or(0)
            };
            self.closing = headers
                .iter()
                .any(|(k, v)| k == "connection" && v.eq_ignore_ascii_case("close"));
            while self.buf.len() < n + len {
                self.fill()?;
            }
            let body = self.buf[n..n + len].to_vec();
            self.buf.drain(..n + len);
            return Ok(Reply {
                status,
                headers,
                body,
            });
        }
    }

    fn fill(&mut self) -> io::Result<()> {
        let mut chunk = [0u8; 16 * 1024];
        let n = self.stream.read(&mut chunk)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "connection closed; buffered: {:?}",
                    String::from_utf8_lossy(&self.buf)
                ),
            ));
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }

    /// Sends `value` as JSON and reads the response.
    pub fn send_json(
        &mut self,
        method: &str,
        path: &str,
        value: &impl Serialize,
    ) -> Result<Reply, ClientError> {
        let body = serde_json::to_vec(value).map_err(|e| ClientError::Decode(e.to_string()))?;
        Ok(self.send(method, path, "application/json", &body)?)
    }

    /// `POST /dashboards`: the dashboard as created, with its ids.
    pub fn create_dashboard(&mut self, new: &NewDashboard) -> Result<Dashboard, ClientError> {
        self.send_json("POST", "/dashboards", new)?.expect(201)
    }

    /// `PATCH /dashboards/{id}/widgets`: the dashboard after the patch.
    pub fn patch_widgets(
        &mut self,
        dashboard: Uuid,
        patch: &WidgetPatch,
    ) -> Result<Dashboard, ClientError> {
        self.send_json("PATCH", &format!("/dashboards/{dashboard}/widgets"), patch)?
            .expect(200)
    }

    /// `POST /ingest` with events as JSON.
    pub fn ingest(&mut self, events: &[MetricEvent]) -> Result<IngestReply, ClientError> {
        self.send_json("POST", "/ingest", &events)?.expect(200)
    }

    /// `POST /ingest` with a body already encoded (JSON, or line protocol as `text/plain`
    /// with `query` such as `?precision=ms`).
    pub fn ingest_body(
        &mut self,
        content_type: &str,
        query: &str,
        body: &[u8],
    ) -> Result<IngestReply, ClientError> {
        self.send("POST", &format!("/ingest{query}"), content_type, body)?
            .expect(200)
    }

    /// `GET /dashboards/{id}/widgets/{wid}/snapshot`.
    pub fn snapshot(
        &mut self,
        dashboard: Uuid,
        widget: Uuid,
    ) -> Result<WidgetReading, ClientError> {
        let path = format!("/dashboards/{dashboard}/widgets/{widget}/snapshot");
        self.send("GET", &path, "application/json", b"")?
            .expect(200)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn banners() {
        assert_eq!(
            banner_addr("livedash listening on http://127.0.0.1:5 with 2 shards"),
            Some(SocketAddr::from(([127, 0, 0, 1], 5)))
        );
        assert_eq!(banner_addr("starting"), None);
    }

    #[test]
    fn targets() {
        assert_eq!(
            target_addr("http://127.0.0.1:8080/").ok(),
            Some(SocketAddr::from(([127, 0, 0, 1], 8080)))
        );
        assert!(target_addr("ws://127.0.0.1:8080").is_err());
    }

    #[test]
    fn replies_decode_or_name_the_status() {
        let reply = Reply {
            status: 400,
            headers: Vec::new(),
            body: br#"{"error":"name: must not be empty"}"#.to_vec(),
        };
        assert_eq!(reply.reason(), "name: must not be empty");
        let err = reply.clone().expect::<Dashboard>(201).unwrap_err();
        assert_eq!(err.to_string(), "HTTP 400: name: must not be empty");
        let ok = Reply {
            status: 200,
            headers: Vec::new(),
            body: br#"{"accepted":2,"rejected":[]}"#.to_vec(),
        };
        assert_eq!(ok.expect::<IngestReply>(200).unwrap().accepted, 2);
    }
}
