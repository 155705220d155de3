//! One stream connection's outbox: its socket while its writer is idle (the hub writes
//! frames straight to it), the frames waiting for the writer, and the conflation that keeps
//! a slow client's queue bounded.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::io::Write;
use std::time::Instant;

use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use glommio::net::TcpStream;
use tungstenite::Bytes;

use super::metrics::Stamp;

/// Frames queued for one connection before it counts as lagging.
pub const MAX_QUEUED_FRAMES: usize = 16;
/// Bytes of frames queued for one connection before it counts as lagging, unless the
/// node sets another budget (`max_queued_bytes`).
pub const DEFAULT_MAX_QUEUED_BYTES: usize = 1 << 20;

/// What became of a frame handed to a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offered {
    /// The socket took it whole.
    Written,
    /// Queued for the connection's writer (or carried by the resync it owes).
    Queued,
    /// The socket took this many bytes; the writer sends the rest.
    Started(usize),
    /// The queue overflowed: dropped for a resync with the newest values.
    Conflated,
}

/// Why the server ends a stream.
#[derive(Debug, Clone, PartialEq)]
pub struct Closing {
    pub code: u16,
    pub reason: String,
}

/// One connection's socket, while its writer is idle, and what it is waiting to send.
#[derive(Debug)]
pub struct Outbox {
    /// Encoded frames with their stamps.
    queue: RefCell<VecDeque<(Bytes, Stamp)>>,
    /// Bytes in `queue`, and how many it may hold.
    queued_bytes: Cell<usize>,
    max_bytes: usize,
    /// The rest of a frame the hub began writing straight to the socket: it goes out
    /// before anything else, and conflation never drops it.
    tail: RefCell<Option<(Bytes, Stamp)>>,
    /// The queue overflowed: the writer must send the dashboard and every newest value.
    resync: Cell<bool>,
    closing: RefCell<Option<Closing>>,
    /// A keep-alive ping is due.
    ping: Cell<bool>,
    /// When the peer last sent anything.
    pub last_heard: Cell<Instant>,
    /// The socket while the stream's writer has nothing to do: the hub writes frames
    /// straight to it, without waking the writer. The writer takes it back to write
    /// what the socket did not take at once.
    socket: RefCell<Option<TcpStream>>,
    wake_tx: LocalSender<()>,
    wake_rx: LocalReceiver<()>,
}

impl Default for Outbox {
    fn default() -> Self {
        Self::with_budget(DEFAULT_MAX_QUEUED_BYTES)
    }
}

impl Outbox {
    /// An outbox that queues at most `max_bytes` of frames (and `MAX_QUEUED_FRAMES`).
    pub fn with_budget(max_bytes: usize) -> Self {
        let (wake_tx, wake_rx) = local_channel::new_bounded(1);
        Self {
            queue: RefCell::new(VecDeque::new()),
            queued_bytes: Cell::new(0),
            max_bytes,
            tail: RefCell::new(None),
            resync: Cell::new(false),
            closing: RefCell::new(None),
            ping: Cell::new(false),
            last_heard: Cell::new(Instant::now()),
            socket: RefCell::new(None),
            wake_tx,
            wake_rx,
        }
    }

    /// Wakes the writer. A wake-up already pending covers this one.
    fn wake(&self) {
        // A full channel means a wake-up is pending; a closed one cannot happen while
        // the outbox (which holds the receiver) exists.
        let _ = self.wake_tx.try_send(());
    }

    /// Waits until something needs the writer; `None` if the outbox is gone.
    pub async fn woken(&self) -> Option<()> {
        self.wake_rx.recv().await
    }

    /// Gives the idle socket to the hub for direct writes.
    pub fn park(&self, socket: TcpStream) {
        self.socket.replace(Some(socket));
    }

    /// Takes the socket back for the writer.
    pub fn unpark(&self) -> Option<TcpStream> {
        self.socket.borrow_mut().take()
    }

    /// Hands a frame to the connection. If its writer is idle with nothing queued, the
    /// frame goes straight to the socket (the common case: a socket with room in its
    /// send buffer takes it whole); otherwise it is queued for the writer.
    pub fn offer(&self, frame: &Bytes, stamp: Stamp) -> Offered {
        let idle = self.queue.borrow().is_empty()
            && self.tail.borrow().is_none()
            && !self.resync.get()
            && self.closing.borrow().is_none();
        if idle
            && let Ok(socket) = self.socket.try_borrow()
            && let Some(socket) = socket.as_ref()
        {
            // The socket does not block (see the stream's session).
            let sock = socket2::SockRef::from(socket);
            match (&*sock).write(frame) {
                Ok(n) if n == frame.len() => return Offered::Written,
                Ok(n) => {
                    *self.tail.borrow_mut() = Some((frame.slice(n..), stamp));
                    self.wake();
                    return Offered::Started(n);
                }
                // Full, or broken: the writer waits for room, or finds the error.
                Err(_) => {}
            }
        }
        self.push(frame.clone(), stamp)
    }

    /// Queues a frame; past the bound the queue is dropped and replaced by a resync of the
    /// newest values (conflation).
    fn push(&self, frame: Bytes, stamp: Stamp) -> Offered {
        let mut queue = self.queue.borrow_mut();
        let bytes = self.queued_bytes.get();
        let offered = if queue.len() >= MAX_QUEUED_FRAMES || bytes + frame.len() > self.max_bytes {
            queue.clear();
            self.queued_bytes.set(0);
            self.resync.set(true);
            Offered::Conflated
        } else if !self.resync.get() {
            self.queued_bytes.set(bytes + frame.len());
            queue.push_back((frame, stamp));
            Offered::Queued
        } else {
            // The resync owed carries this frame's values.
            Offered::Queued
        };
        drop(queue);
        self.wake();
        offered
    }

    pub fn pop(&self) -> Option<(Bytes, Stamp)> {
        let popped = self.queue.borrow_mut().pop_front();
        if let Some((frame, _)) = &popped {
            self.queued_bytes.set(self.queued_bytes.get() - frame.len());
        }
        popped
    }

    pub fn take_tail(&self) -> Option<(Bytes, Stamp)> {
        self.tail.borrow_mut().take()
    }

    pub fn take_resync(&self) -> bool {
        self.resync.replace(false)
    }

    /// Asks the writer to close the stream with `code`; the first reason given wins.
    pub fn close(&self, code: u16, reason: &str) {
        let mut closing = self.closing.borrow_mut();
        if closing.is_none() {
            *closing = Some(Closing {
                code,
                reason: reason.to_string(),
            });
        }
        drop(closing);
        self.wake();
    }

    pub fn closing(&self) -> Option<Closing> {
        self.closing.borrow().clone()
    }

    /// Asks the writer to read what the peer sent and ping it.
    pub fn ping(&self) {
        self.ping.set(true);
        self.wake();
    }

    pub fn take_ping(&self) -> bool {
        self.ping.replace(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(n: u8) -> Bytes {
        Bytes::from(vec![n; 8])
    }

    fn at(t: i64) -> Stamp {
        Stamp::framed(t)
    }

    #[test]
    fn without_a_socket_frames_queue_in_order() {
        let o = Outbox::default();
        assert_eq!(o.offer(&frame(1), at(10)), Offered::Queued);
        assert_eq!(o.offer(&frame(2), at(20)), Offered::Queued);
        assert_eq!(o.pop(), Some((frame(1), at(10))));
        assert_eq!(o.pop(), Some((frame(2), at(20))));
        assert_eq!(o.pop(), None);
        assert!(!o.take_resync());
    }

    #[test]
    fn overflow_conflates_into_one_resync() {
        let o = Outbox::default();
        for n in 0..MAX_QUEUED_FRAMES {
            o.offer(&frame(n as u8), at(n as i64));
        }
        // One more: the queue is dropped and the writer must resync instead.
        assert_eq!(o.offer(&frame(99), at(99)), Offered::Conflated);
        assert_eq!(o.pop(), None);
        // While a resync is owed, newer frames are not queued: the resync carries them.
        o.offer(&frame(100), at(100));
        assert_eq!(o.pop(), None);
        assert!(o.take_resync());
        assert!(!o.take_resync());
        // After the resync, frames queue again.
        o.offer(&frame(101), at(101));
        assert_eq!(o.pop(), Some((frame(101), at(101))));
    }

    #[test]
    fn a_byte_budget_conflates_before_the_frame_count_does() {
        let o = Outbox::with_budget(20);
        assert_eq!(o.offer(&frame(1), at(1)), Offered::Queued);
        assert_eq!(o.offer(&frame(2), at(2)), Offered::Queued);
        // 24 bytes would pass the budget of 20.
        assert_eq!(o.offer(&frame(3), at(3)), Offered::Conflated);
        assert_eq!(o.pop(), None);
        assert!(o.take_resync());
        assert_eq!(o.offer(&frame(4), at(4)), Offered::Queued);
        assert_eq!(o.pop(), Some((frame(4), at(4))));
        assert_eq!(o.offer(&frame(5), at(5)), Offered::Queued);
        assert_eq!(o.offer(&frame(6), at(6)), Offered::Queued);
    }

    #[test]
    fn the_first_close_reason_wins() {
        let o = Outbox::default();
        assert_eq!(o.closing(), None);
        o.close(4410, "dashboard deleted");
        o.close(1001, "node shutting down");
        assert_eq!(o.closing().unwrap().code, 4410);
        o.ping();
        assert!(o.take_ping());
        assert!(!o.take_ping());
    }
}
