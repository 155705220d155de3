//! One connection: read requests in order (pipelined ones included), hand each to the
//! handler, write the responses in the same order. Every phase has a deadline, so a client
//! that sends bytes slowly cannot hold a connection open (slow-loris).

use std::future::Future;
use std::io;
use std::time::{Duration, Instant};

use futures_lite::{AsyncReadExt, AsyncWriteExt, FutureExt};
use glommio::net::TcpStream;

use super::chunked::{Chunked, Fed};
use super::{Request, Response};
use crate::stop::Stop;

/// Longest request head (request line and headers).
const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Most headers in one request.
const MAX_HEADERS: usize = 64;
/// Bytes asked of the socket per read.
const READ_CHUNK: usize = 16 * 1024;
/// A request whose body is larger than this (or chunked) is checked (route, method,
/// token) before its body is read; a smaller body is read first, as it always was.
const ADMIT_BEFORE_BODY_OVER: usize = 64 * 1024;
/// How long, and for how many bytes, a connection closed on an error keeps reading.
const LINGER: Duration = Duration::from_millis(500);
const LINGER_BYTES: usize = 1 << 20;

/// Bytes of a body read per step: its buffer grows by at most this much ahead of what
/// arrived.
const BODY_STEP: usize = 64 * 1024;

/// Size limits and deadlines of a connection.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    pub max_body: usize,
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    pub idle_timeout: Duration,
}

/// How reading the next request ended, other than with a request.
enum Ended {
    /// The peer closed, went idle too long, or the node is stopping: close quietly.
    Quiet,
    /// Answer with this (an error) and close.
    Answer(Response),
}

impl From<io::Error> for Ended {
    fn from(e: io::Error) -> Self {
        match e.kind() {
            io::ErrorKind::TimedOut => {
                Ended::Answer(Response::error(408, "request not received in time"))
            }
            _ => Ended::Quiet,
        }
    }
}

struct Head {
    request: Request,
    keep_alive: bool,
    body: BodyKind,
    expect_continue: bool,
}

enum BodyKind {
    Length(usize),
    Chunked,
}

struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

/// What answers the requests of a connection.
pub trait Service {
    /// Decides on a plain request from its head, before its body is read: `Err` answers
    /// it and closes the connection, so a request that would be refused (no such route,
    /// a missing token) costs neither the wait for its body nor the memory.
    fn admit(&self, request: &Request) -> Result<(), Response>;
    /// Answers a plain request.
    fn call(&self, request: Request) -> impl Future<Output = Response>;
    /// Decides on a WebSocket upgrade request: `Err` answers it (and the connection goes
    /// on); `Ok` is the value `websocket` gets after the 101 response.
    fn accept_upgrade(&self, request: &Request) -> Result<Self::Upgrade, Response>;
    /// What `accept_upgrade` hands to `websocket`.
    type Upgrade;
    /// Runs the WebSocket session on the upgraded stream.
    fn websocket(&self, upgrade: Self::Upgrade, stream: TcpStream) -> impl Future<Output = ()>;
}

/// Serves `stream` until the peer closes, a deadline passes, an error closes it, `stop` is
/// set (the request in progress is still answered), or it becomes a WebSocket.
pub async fn serve<S: Service>(stream: TcpStream, limits: ConnLimits, stop: &Stop, service: &S) {
    // Small responses go out at once; a failure only costs latency.
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!("TCP_NODELAY: {e}");
    }
    // The write deadline is what stops a client that never reads from holding the
    // connection: without it, refuse the connection.
    if let Err(e) = stream.set_write_timeout(Some(limits.body_timeout)) {
        tracing::warn!(
            "cannot set a write deadline, closing the connection: {e}; the client may connect again: nothing to do unless it repeats: then check --body-timeout-ms, which sets this deadline (at least 1)"
        );
        return;
    }
    let mut conn = Conn {
        stream,
        buf: Vec::with_capacity(READ_CHUNK),
    };
    let mut out = Vec::with_capacity(1024);
    loop {
        let (request, keep_alive) = match conn.next_request(&limits, stop, service).await {
            Ok(r) => r,
            Err(Ended::Quiet) => return,
            Err(Ended::Answer(response)) => {
                out.clear();
                response.closing().write_to(&mut out);
                // The connection closes either way; a client gone already misses nothing.
                if conn.stream.write_all(&out).await.is_ok() {
                    conn.linger().await;
                }
                return;
            }
        };
        if let Some(key) = request.websocket_key.clone() {
            match service.accept_upgrade(&request) {
                Ok(upgrade) if conn.buf.is_empty() => {
                    let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
                    let head = format!(
                        "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\
                         connection: Upgrade\r\nsec-websocket-accept: {accept}\r\n\r\n"
                    );
                    if conn.stream.write_all(head.as_bytes()).await.is_err() {
                        return;
                    }
                    // Stream reads never wait (the session makes the socket
                    // non-blocking), so a read deadline left in place changes nothing.
                    if let Err(e) = conn.stream.set_read_timeout(None) {
                        tracing::debug!("clearing the read deadline: {e}");
                    }
                    // The HTTP buffers are not needed any more: free them before a
                    // possibly long-lived stream.
                    let Conn { stream, buf } = conn;
                    drop(buf);
                    drop(out);
                    service.websocket(upgrade, stream).await;
                    return;
                }
                Ok(_) => {
                    out.clear();
                    Response::error(400, "data sent before the WebSocket handshake completed")
                        .closing()
                        .write_to(&mut out);
                    // Closing either way.
                    conn.stream.write_all(&out).await.ok();
                    return;
                }
                Err(response) => {
                    out.clear();
                    response.write_to(&mut out);
                    if conn.stream.write_all(&out).await.is_err() || response.close {
                        return;
                    }
                    continue;
                }
            }
        }
        let head_only = request.method == "HEAD";
        let mut response = service.call(request).await;
        if !keep_alive || stop.is_set() {
            response.close = true;
        }
        if write_response(&mut conn.stream, &mut out, &response, head_only)
            .await
            .is_err()
            || response.close
        {
            // Closing either way.
            conn.stream.flush().await.ok();
            return;
        }
    }
}

/// Bytes handed to the socket per write of a large answer.
const WRITE_SLICE: usize = 16 * 1024;

/// Writes `bytes` a slice at a time, letting the shard's other tasks run between slices:
/// a socket with room for megabytes (a loopback peer's) would otherwise take a large
/// answer in one long system call, and many such answers would hold the shard up.
pub async fn write_in_slices(stream: &mut TcpStream, bytes: &[u8]) -> io::Result<()> {
    for slice in bytes.chunks(WRITE_SLICE) {
        stream.write_all(slice).await?;
        if slice.len() == WRITE_SLICE {
            futures_lite::future::yield_now().await;
        }
    }
    Ok(())
}

/// Writes `response` (without its body for HEAD, with the same headers as GET). A small
/// body goes out with the head in one write; a large one is written from the response's
/// shared bytes, not copied into `out`, which never keeps more than a small capacity.
async fn write_response(
    stream: &mut TcpStream,
    out: &mut Vec<u8>,
    response: &Response,
    head_only: bool,
) -> io::Result<()> {
    out.clear();
    response.write_head(out);
    let body: &[u8] = if head_only || response.status == 204 {
        &[]
    } else {
        &response.body
    };
    let result = if body.len() <= READ_CHUNK {
        out.extend_from_slice(body);
        stream.write_all(out).await
    } else {
        match stream.write_all(out).await {
            Ok(()) => write_in_slices(stream, body).await,
            Err(e) => Err(e),
        }
    };
    if out.capacity() > 4 * READ_CHUNK {
        *out = Vec::with_capacity(1024);
    }
    result
}

impl Conn {
    /// Before closing with bytes of the client's possibly unread: ends the writing side,
    /// then reads and drops what still comes for a moment, so the kernel does not answer
    /// the client with a reset that could discard the response it has not read yet.
    async fn linger(&mut self) {
        if self
            .stream
            .shutdown(std::net::Shutdown::Write)
            .await
            .is_err()
        {
            return;
        }
        let until = Instant::now() + LINGER;
        let mut left = LINGER_BYTES;
        let mut scratch = [0u8; 4096];
        while left > 0 {
            let wait = until.saturating_duration_since(Instant::now());
            if wait.is_zero() || self.stream.set_read_timeout(Some(wait)).is_err() {
                return;
            }
            match self.stream.read(&mut scratch).await {
                Ok(0) | Err(_) => return,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    }

    /// Reads more bytes into the buffer before `deadline`; `Ok(0)` is end of stream.
    async fn fill(&mut self, deadline: Instant) -> io::Result<usize> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        self.stream
            .set_read_timeout(Some(left))
            .map_err(|e| io::Error::other(e.to_string()))?;
        let old = self.buf.len();
        self.buf.resize(old + READ_CHUNK, 0);
        let read = self.stream.read(&mut self.buf[old..]).await;
        self.buf.truncate(old + *read.as_ref().unwrap_or(&0));
        read
    }

    async fn next_request<S: Service>(
        &mut self,
        limits: &ConnLimits,
        stop: &Stop,
        service: &S,
    ) -> Result<(Request, bool), Ended> {
        if self.buf.is_empty() {
            // Idle between requests: wait for a first byte, the idle deadline, or stop.
            let deadline = Instant::now() + limits.idle_timeout;
            let first = async { Some(self.fill(deadline).await) }
                .or(async {
                    stop.wait().await;
                    None
                })
                .await;
            match first {
                Some(Ok(n)) if n > 0 => {}
                _ => return Err(Ended::Quiet),
            }
        }
        let head_deadline = Instant::now() + limits.header_timeout;
        let (head, head_len) = loop {
            match parse_head(&self.buf)? {
                Some(parsed) if parsed.1 <= MAX_HEAD_BYTES => break parsed,
                Some(_) => {
                    return Err(head_too_large());
                }
                None if self.buf.len() > MAX_HEAD_BYTES => {
                    return Err(head_too_large());
                }
                None => {
                    if self.fill(head_deadline).await? == 0 {
                        return Err(Ended::Quiet);
                    }
                }
            }
        };
        self.buf.drain(..head_len);
        let Head {
            mut request,
            keep_alive,
            body,
            expect_continue,
        } = head;
        if let BodyKind::Length(n) = body
            && n > limits.max_body
        {
            return Err(Ended::Answer(Response::error(
                413,
                &format!(
                    "body of {n} bytes is over the limit of {} bytes",
                    limits.max_body
                ),
            )));
        }
        // A large or chunked body is not read for a request that would be refused; a
        // small one is, so its refusal is answered like any response, on a connection
        // that goes on.
        let large = !matches!(body, BodyKind::Length(n) if n <= ADMIT_BEFORE_BODY_OVER);
        if large && request.websocket_key.is_none() {
            service.admit(&request).map_err(Ended::Answer)?;
        }
        let wants_body = !matches!(body, BodyKind::Length(0));
        if expect_continue && wants_body && self.buf.is_empty() {
            self.stream
                .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                .await
                .map_err(|_| Ended::Quiet)?;
        }
        let body_deadline = Instant::now() + limits.body_timeout;
        request.body = match body {
            BodyKind::Length(n) => self.read_exact_body(n, body_deadline).await?,
            BodyKind::Chunked => self.read_chunked(limits.max_body, body_deadline).await?,
        };
        Ok((request, keep_alive))
    }

    async fn read_exact_body(&mut self, n: usize, deadline: Instant) -> Result<Vec<u8>, Ended> {
        if self.buf.len() >= n {
            let rest = self.buf.split_off(n);
            return Ok(std::mem::replace(&mut self.buf, rest));
        }
        // Memory follows the bytes that arrive, never the declared length: a client that
        // announces 16 MiB and sends one byte holds one step.
        let mut body = std::mem::take(&mut self.buf);
        while body.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::Error::from(io::ErrorKind::TimedOut).into());
            }
            self.stream
                .set_read_timeout(Some(left))
                .map_err(|_| Ended::Quiet)?;
            let filled = body.len();
            body.resize(filled + (n - filled).min(BODY_STEP), 0);
            let read = self.stream.read(&mut body[filled..]).await;
            body.truncate(filled + *read.as_ref().unwrap_or(&0));
            if read? == 0 {
                return Err(Ended::Quiet);
            }
        }
        self.buf.reserve(READ_CHUNK);
        Ok(body)
    }

    async fn read_chunked(&mut self, max: usize, deadline: Instant) -> Result<Vec<u8>, Ended> {
        let mut decoder = Chunked::new(max);
        loop {
            match decoder.feed(&self.buf).map_err(Ended::Answer)? {
                Fed::Done(used) => {
                    self.buf.drain(..used);
                    return Ok(decoder.into_body());
                }
                // Need more bytes: drop what is decoded, then read.
                Fed::More(used) => {
                    self.buf.drain(..used);
                }
            }
            if self.buf.len() > MAX_HEAD_BYTES + max {
                return Err(bad("malformed chunked body"));
            }
            if self.fill(deadline).await? == 0 {
                return Err(Ended::Quiet);
            }
        }
    }
}

/// Frames one request out of `input` as a connection does, with no socket: the head,
/// then its body (sized, or chunked and fed `piece` bytes at a time). `Ok(None)` when
/// `input` ends first; `Err(status)` for the answer a connection would close with. The
/// fuzz targets drive this.
pub fn frame_request(input: &[u8], piece: usize, max_body: usize) -> Result<Option<Request>, u16> {
    let status = |e: Ended| match e {
        Ended::Answer(r) => r.status,
        Ended::Quiet => 0,
    };
    let Some((head, head_len)) = parse_head(input).map_err(status)? else {
        return Ok(None);
    };
    if head_len > MAX_HEAD_BYTES {
        return Err(status(head_too_large()));
    }
    let mut request = head.request;
    let rest = &input[head_len..];
    request.body = match head.body {
        BodyKind::Length(n) if n > max_body => return Err(413),
        BodyKind::Length(n) if n > rest.len() => return Ok(None),
        BodyKind::Length(n) => rest[..n].to_vec(),
        BodyKind::Chunked => {
            let mut decoder = Chunked::new(max_body);
            let mut buf = Vec::new();
            let mut done = false;
            for part in rest.chunks(piece.max(1)) {
                buf.extend_from_slice(part);
                match decoder.feed(&buf).map_err(|r| r.status)? {
                    Fed::Done(_) => {
                        done = true;
                        break;
                    }
                    Fed::More(used) => drop(buf.drain(..used)),
                }
            }
            if !done {
                return Ok(None);
            }
            decoder.into_body()
        }
    };
    Ok(Some(request))
}

fn head_too_large() -> Ended {
    Ended::Answer(Response::error(431, "request head larger than 16 KiB"))
}

fn bad(reason: &str) -> Ended {
    Ended::Answer(Response::error(400, reason))
}

/// Parses a complete request head at the start of `buf`; `None` if more bytes are needed.
fn parse_head(buf: &[u8]) -> Result<Option<(Head, usize)>, Ended> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    let head_len = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(Ended::Answer(Response::error(431, "more than 64 headers")));
        }
        Err(e) => return Err(bad(&format!("malformed request: {e}"))),
    };
    let version = parsed.version.unwrap_or(1);
    let method = parsed.method.unwrap_or("GET").to_string();
    let target = parsed.path.unwrap_or("/");
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_string(), Some(q.to_string())),
        None => (target.to_string(), None),
    };
    let mut keep_alive = version == 1;
    let mut content_length: Option<usize> = None;
    let mut chunked = false;
    let mut expect_continue = false;
    let mut content_type = None;
    let mut content_encoding = None;
    let mut authorization = None;
    let mut host = None;
    let mut origin = None;
    let mut upgrade_websocket = false;
    let mut connection_upgrade = false;
    let mut websocket_key = None;
    let mut websocket_version = None;
    for h in parsed.headers.iter() {
        let value = std::str::from_utf8(h.value)
            .map_err(|_| bad(&format!("header {} is not valid UTF-8", h.name)))?
            .trim();
        let name = h.name;
        if name.eq_ignore_ascii_case("content-length") {
            // Digits only: `parse` would also take a sign (`+2`).
            let n: usize = Some(value)
                .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| bad("content-length is not a number"))?;
            if content_length.is_some_and(|m| m != n) {
                return Err(bad("conflicting content-length headers"));
            }
            content_length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            let last = value.rsplit(',').next().unwrap_or("").trim();
            if !last.eq_ignore_ascii_case("chunked") {
                return Err(Ended::Answer(Response::error(
                    501,
                    &format!("transfer-encoding {value} is not supported; use chunked"),
                )));
            }
            chunked = true;
        } else if name.eq_ignore_ascii_case("connection") {
            for token in value.split(',').map(str::trim) {
                if token.eq_ignore_ascii_case("upgrade") {
                    connection_upgrade = true;
                }
                if token.eq_ignore_ascii_case("close") {
                    keep_alive = false;
                } else if token.eq_ignore_ascii_case("keep-alive") {
                    keep_alive = true;
                }
            }
        } else if name.eq_ignore_ascii_case("expect") {
            if !value.eq_ignore_ascii_case("100-continue") {
                return Err(Ended::Answer(Response::error(
                    417,
                    &format!("expectation {value} is not supported"),
                )));
            }
            expect_continue = true;
        } else if name.eq_ignore_ascii_case("content-type") {
            content_type = Some(value.to_string());
        } else if name.eq_ignore_ascii_case("content-encoding") {
            content_encoding = Some(value.to_string());
        } else if name.eq_ignore_ascii_case("authorization") {
            authorization = Some(value.to_string());
        } else if name.eq_ignore_ascii_case("host") {
            host = Some(value.to_string());
        } else if name.eq_ignore_ascii_case("origin") {
            origin = Some(value.to_string());
        } else if name.eq_ignore_ascii_case("upgrade") {
            upgrade_websocket = value.eq_ignore_ascii_case("websocket");
        } else if name.eq_ignore_ascii_case("sec-websocket-key") {
            websocket_key = Some(value.to_string());
        } else if name.eq_ignore_ascii_case("sec-websocket-version") {
            websocket_version = Some(value.to_string());
        }
    }
    let websocket_key = if upgrade_websocket && connection_upgrade {
        if method != "GET" {
            return Err(bad("a WebSocket upgrade must use GET"));
        }
        if websocket_version.as_deref() != Some("13") {
            return Err(Ended::Answer(Response::error(
                426,
                "Sec-WebSocket-Version 13 is required",
            )));
        }
        Some(websocket_key.ok_or_else(|| bad("Sec-WebSocket-Key is missing"))?)
    } else {
        None
    };
    if chunked && content_length.is_some() {
        return Err(bad("both content-length and transfer-encoding given"));
    }
    let body = if chunked {
        BodyKind::Chunked
    } else {
        BodyKind::Length(content_length.unwrap_or(0))
    };
    let request = Request {
        method,
        path,
        query,
        content_type,
        content_encoding,
        authorization,
        host,
        origin,
        websocket_key,
        body: Vec::new(),
    };
    Ok(Some((
        Head {
            request,
            keep_alive,
            body,
            expect_continue,
        },
        head_len,
    )))
}

#[cfg(test)]
mod tests;
