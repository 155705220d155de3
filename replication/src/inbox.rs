//! How a foreign thread (librdkafka's) hands work to a shard without a lock or a blocking
//! call on the shard: a bounded lock-free queue plus a doorbell. The shard waits for the
//! doorbell on a blocking-pool thread (`Doorbell::wait`) and drains the queue itself.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crossbeam_queue::ArrayQueue;
use crossbeam_utils::sync::{Parker, Unparker};

/// The waiting half of a doorbell: kept by the shard, moved into its blocking wait.
#[derive(Debug)]
pub struct Doorbell {
    parker: Parker,
    rung: Arc<AtomicBool>,
}

/// The ringing half, shared with foreign threads.
#[derive(Debug, Clone)]
pub struct Bell {
    unparker: Unparker,
    rung: Arc<AtomicBool>,
}

impl Doorbell {
    /// A doorbell and a bell that rings it.
    pub fn new() -> (Self, Bell) {
        let parker = Parker::new();
        let unparker = parker.unparker().clone();
        let rung = Arc::new(AtomicBool::new(false));
        let bell = Bell {
            unparker,
            rung: Arc::clone(&rung),
        };
        (Self { parker, rung }, bell)
    }

    /// Blocks until the bell rings or `timeout` passes; true when it rang. Call it on a
    /// thread that may block (the executor's blocking pool), never on a shard.
    pub fn wait(&self, timeout: Duration) -> bool {
        if !self.rung.swap(false, Ordering::AcqRel) {
            self.parker.park_timeout(timeout);
        }
        self.rung.swap(false, Ordering::AcqRel)
    }
}

impl Bell {
    /// Wakes the waiting side (or makes its next wait return at once).
    pub fn ring(&self) {
        if !self.rung.swap(true, Ordering::AcqRel) {
            self.unparker.unpark();
        }
    }
}

/// A bounded queue into one shard, with the bell that tells it there is something to take.
#[derive(Debug)]
pub struct Inbox<T> {
    queue: ArrayQueue<T>,
    bell: Bell,
    /// Times the sender found the queue full and held back (paused its source).
    pauses: std::sync::atomic::AtomicU64,
}

impl<T> Inbox<T> {
    pub fn new(capacity: usize, bell: Bell) -> Self {
        Self {
            queue: ArrayQueue::new(capacity.max(1)),
            bell,
            pauses: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Counts a pause of the sender (the queue was full).
    pub fn count_pause(&self) {
        self.pauses.fetch_add(1, Ordering::Relaxed);
    }

    /// How often the sender paused because the queue was full.
    pub fn pauses(&self) -> u64 {
        self.pauses.load(Ordering::Relaxed)
    }

    /// Queues `item` and rings; gives it back when the queue is full.
    pub fn push(&self, item: T) -> Result<(), T> {
        self.queue.push(item)?;
        self.bell.ring();
        Ok(())
    }

    /// Queues `item`, waiting (on the calling foreign thread) while the queue is full,
    /// at most `patience`; gives it back if the shard never made room.
    pub fn push_waiting(&self, mut item: T, patience: Duration) -> Result<(), T> {
        let give_up = std::time::Instant::now() + patience;
        loop {
            match self.push(item) {
                Ok(()) => return Ok(()),
                Err(back) if std::time::Instant::now() < give_up => {
                    item = back;
                    std::thread::sleep(Duration::from_micros(200));
                }
                Err(back) => return Err(back),
            }
        }
    }

    /// The next queued item.
    pub fn pop(&self) -> Option<T> {
        self.queue.pop()
    }

    /// Items queued now.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Room for this many more items.
    pub fn room(&self) -> usize {
        self.queue.capacity() - self.queue.len()
    }

    /// Rings without queuing (for work kept beside the queue).
    pub fn ring(&self) {
        self.bell.ring();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ring_from_another_thread_ends_the_wait() {
        let (door, bell) = Doorbell::new();
        let inbox = Arc::new(Inbox::new(2, bell));
        assert!(!door.wait(Duration::from_millis(1)));
        let sender = Arc::clone(&inbox);
        let t = std::thread::spawn(move || sender.push(7u32).is_ok());
        assert!(door.wait(Duration::from_secs(10)));
        assert!(t.join().unwrap_or(false));
        assert_eq!(inbox.pop(), Some(7));
        assert!(inbox.push(1).is_ok() && inbox.push(2).is_ok());
        assert_eq!(inbox.push(3), Err(3), "a full inbox gives the item back");
        assert_eq!(
            inbox.push_waiting(4, Duration::from_millis(5)),
            Err(4),
            "nobody made room"
        );
    }
}
