//! The client's side of a stream as tungstenite sees it: reads that never wait, and the
//! server's replies and control frames collected for the writer to send in order.

use std::io::{ErrorKind, Read, Write};

use futures_lite::AsyncWriteExt;
use glommio::net::TcpStream;
use tungstenite::Message;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{CloseFrame, Role, WebSocketConfig, WebSocketContext};

/// Limits for what a client may send (pongs, a close: little).
fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(1024)
        .write_buffer_size(0)
        .max_message_size(Some(64 * 1024))
        .max_frame_size(Some(64 * 1024))
}

/// The client's side of the protocol: tungstenite's state, fed by reads that never wait.
/// What tungstenite answers (pongs, the close handshake) and the server's own control
/// frames collect in `replies`, which the writer sends in order with the data frames.
pub struct Peer {
    ws: WebSocketContext,
    replies: Vec<u8>,
    /// Bytes read per sweep.
    budget: usize,
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peer")
            .field("queued", &self.replies.len())
            .finish_non_exhaustive()
    }
}

impl Default for Peer {
    fn default() -> Self {
        Self::new()
    }
}

/// Bytes read from a peer per sweep, unless the node sets another budget
/// (`stream_read_bytes`): what it sends beyond waits in the kernel for the next one, so a
/// client flooding pings costs a bounded read and a bounded batch of pongs.
pub const HEAR_BUDGET: usize = 64 * 1024;

/// The socket as tungstenite sees it: reads from the (non-blocking) socket, at most
/// `budget` bytes, and writes into the replies buffer.
struct PeerIo<'a, R> {
    source: R,
    replies: &'a mut Vec<u8>,
    budget: usize,
}

impl<R: Read> Read for PeerIo<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.budget == 0 {
            return Err(ErrorKind::WouldBlock.into());
        }
        let take = buf.len().min(self.budget);
        let n = self.source.read(&mut buf[..take])?;
        self.budget -= n;
        Ok(n)
    }
}

/// A stream's socket, read without waiting.
struct SocketRead<'a>(socket2::SockRef<'a>);

impl Read for SocketRead<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        (&*self.0).read(buf)
    }
}

impl<R> Write for PeerIo<'_, R> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.replies.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// What a read of everything the peer sent so far found.
#[derive(Debug, PartialEq)]
pub enum Heard {
    Nothing,
    Something,
    /// The peer closed, broke the protocol or went away.
    Gone,
}

impl Peer {
    pub fn new() -> Self {
        Self::with_budget(HEAR_BUDGET)
    }

    /// A peer read at most `budget` bytes per sweep.
    pub fn with_budget(budget: usize) -> Self {
        Self {
            ws: WebSocketContext::new(Role::Server, Some(ws_config())),
            replies: Vec::new(),
            budget,
        }
    }

    fn io<'a>(
        &'a mut self,
        socket: &'a TcpStream,
    ) -> (&'a mut WebSocketContext, PeerIo<'a, SocketRead<'a>>) {
        self.io_from(SocketRead(socket2::SockRef::from(socket)))
    }

    fn io_from<R: Read>(&mut self, source: R) -> (&mut WebSocketContext, PeerIo<'_, R>) {
        let io = PeerIo {
            source,
            replies: &mut self.replies,
            budget: self.budget,
        };
        (&mut self.ws, io)
    }

    /// Reads what the peer sent, without waiting, up to the budget.
    pub(super) fn hear(&mut self, socket: &TcpStream) -> Heard {
        self.hear_from(SocketRead(socket2::SockRef::from(socket)))
    }

    /// As `hear`, from any source of the peer's bytes (a socket that never waits, or a
    /// buffer).
    pub fn hear_from<R: Read>(&mut self, source: R) -> Heard {
        let (ws, mut io) = self.io_from(source);
        let mut heard = Heard::Nothing;
        loop {
            match ws.read(&mut io) {
                Ok(Message::Close(_)) => {
                    // Queues the answer to the peer's close; the stream ends either way.
                    if let Err(e) = ws.flush(&mut io) {
                        tracing::debug!("answering a close: {e}");
                    }
                    return Heard::Gone;
                }
                Ok(_) => heard = Heard::Something,
                Err(tungstenite::Error::Io(e)) if e.kind() == ErrorKind::WouldBlock => {
                    return heard;
                }
                Err(tungstenite::Error::Io(e)) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return Heard::Gone,
            }
        }
    }

    /// Queues a ping. False if the protocol no longer allows one (the stream is closing),
    /// in which case the peer cannot prove it is alive and the stream should end.
    pub(super) fn ping(&mut self, socket: &TcpStream) -> bool {
        let (ws, mut io) = self.io(socket);
        ws.write(&mut io, Message::Ping(Default::default()))
            .and_then(|()| ws.flush(&mut io))
            .is_ok()
    }

    /// Queues a close frame. One already sent (or a protocol already closed) makes this a
    /// no-op, which is what a second close wants.
    pub(super) fn close(&mut self, socket: &TcpStream, code: u16, reason: &str) {
        let frame = CloseFrame {
            code: CloseCode::from(code),
            reason: reason.to_string().into(),
        };
        let (ws, mut io) = self.io(socket);
        if let Err(e) = ws.close(&mut io, Some(frame)) {
            tracing::debug!("closing a stream with {code}: {e}");
        }
    }

    /// Bytes queued for the writer (replies and control frames).
    pub fn queued(&self) -> usize {
        self.replies.len()
    }

    /// Writes the queued replies; false if the socket failed or timed out.
    pub(super) async fn send_replies(&mut self, socket: &mut TcpStream) -> bool {
        if self.replies.is_empty() {
            return true;
        }
        let sent = socket.write_all(&self.replies).await.is_ok();
        self.replies.clear();
        sent
    }
}
