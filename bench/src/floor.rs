//! The loopback floor of a fan-out: the same number of frames, of the same size, pushed
//! to the same number of sockets on the same schedule (every socket at once, or each
//! dashboard's sockets at the dashboard's phase), by a process that does nothing but
//! call `send` on non-blocking sockets from two threads (one per core), and read by
//! epoll threads in another process the way the stream clients read.
//!
//! No server can push faster than this on the machine it runs on, so a node's
//! tick-to-browser delay is best read as a ratio to it. The sender needs one socket per
//! stream, as the node does, so it runs in a process of its own (the per-process
//! open-files limit would not hold both ends).

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token};

use livedash_loadgen::client::now_ms;

use crate::helper::Helper;

/// What a floor run sends.
#[derive(Debug, Clone)]
pub struct Fanout {
    pub sockets: usize,
    /// Per dashboard, its tick phase in ms; socket `i` is on dashboard `i % len` and gets
    /// its frames at `phase + k * interval_ms`. Empty: every socket at phase 0.
    pub phases: Vec<i64>,
    /// Bytes of each frame (WebSocket header included).
    pub frame_bytes: usize,
    /// Ticks, one per `interval_ms`.
    pub ticks: u32,
    pub interval_ms: i64,
    /// Sender threads (the node's shards) and reader threads (the clients').
    pub senders: usize,
    pub readers: usize,
    /// How the senders hand a burst to the kernel.
    pub submit: Submit,
}

/// How a floor sender hands its frames to the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Submit {
    /// One non-blocking `send` per socket, as the node writes.
    Send,
    /// One io_uring submission per burst (a send entry per socket, one `io_uring_enter`
    /// for up to `URING_ENTRIES` of them).
    Uring,
}

/// Submission entries of a sender thread's ring.
const URING_ENTRIES: u32 = 1024;

/// Hidden command-line flag that turns the calling binary into the floor's sender.
pub const SENDER_FLAG: &str = "--floor-sender";

/// Header bytes of a WebSocket frame (unmasked, as a server sends) with this payload.
pub fn header_len(payload: usize) -> usize {
    match payload {
        0..126 => 2,
        126..65_536 => 4,
        _ => 10,
    }
}

/// A WebSocket text frame of `bytes` bytes, header included, as the node would send for
/// a payload of that size; a size no shortest header fits (128, 129, 65,540 to 65,545)
/// is rounded up to the next one that does.
fn frame(bytes: usize) -> Vec<u8> {
    let mut total = bytes.max(2);
    let payload = loop {
        if let Some(p) = [2, 4, 10]
            .into_iter()
            .filter_map(|h| total.checked_sub(h))
            .find(|&p| p + header_len(p) == total)
        {
            break p;
        }
        total += 1;
    };
    let mut out = vec![0x81];
    match header_len(payload) {
        2 => out.push(payload as u8),
        4 => {
            out.push(126);
            out.extend_from_slice(&(payload as u16).to_be_bytes());
        }
        _ => {
            out.push(127);
            out.extend_from_slice(&(payload as u64).to_be_bytes());
        }
    }
    out.resize(total, b'x');
    out
}

impl Fanout {
    /// The phase of socket `i`'s dashboard.
    fn phase(&self, i: usize) -> i64 {
        match self.phases.len() {
            0 => 0,
            n => self.phases[i % n],
        }
    }

    /// The tick at or before `at` of socket `i`'s schedule.
    pub fn tick_before(&self, i: usize, at: i64) -> i64 {
        let phase = self.phase(i);
        phase + (at - phase).div_euclid(self.interval_ms) * self.interval_ms
    }
}

/// The sender process: listens, prints its port, takes `sockets` connections (in the
/// order the reader opens them), then at each tick writes one frame to every connection
/// at its dashboard's phase, its share on each of `senders` threads. Returns when the
/// ticks are done; its sockets close when the process exits.
pub fn sender_main(plan: Fanout) -> Result<(), String> {
    // Bounded even if the reading side never connects or goes away.
    let limit = Duration::from_millis(
        u64::from(plan.ticks.saturating_add(4)) * plan.interval_ms.max(0) as u64,
    ) + Duration::from_secs(120);
    std::thread::spawn(move || {
        std::thread::sleep(limit);
        eprintln!("floor sender: still running after {limit:?}, stopping");
        std::process::exit(1);
    });
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    println!("{port}");
    std::io::stdout().flush().map_err(|e| e.to_string())?;
    let mut streams = Vec::with_capacity(plan.sockets);
    while streams.len() < plan.sockets {
        let (s, _) = listener.accept().map_err(|e| e.to_string())?;
        s.set_nodelay(true).map_err(|e| e.to_string())?;
        s.set_nonblocking(true).map_err(|e| e.to_string())?;
        streams.push(s);
    }
    // Start a little later, so the reader has registered every socket.
    let first = (now_ms() / plan.interval_ms + 2) * plan.interval_ms;
    let frame = Arc::new(frame(plan.frame_bytes));
    let senders = plan.senders.max(1);
    // Each thread's share, by phase: (phase, sockets).
    let mut shares: Vec<Vec<(i64, Vec<TcpStream>)>> = (0..senders).map(|_| Vec::new()).collect();
    for (i, s) in streams.into_iter().enumerate() {
        let share = &mut shares[i % senders];
        let phase = plan.phase(i);
        match share.iter_mut().find(|(p, _)| *p == phase) {
            Some((_, group)) => group.push(s),
            None => share.push((phase, vec![s])),
        }
    }
    let threads: Vec<_> = shares
        .into_iter()
        .map(|mut share| {
            share.sort_by_key(|(phase, _)| *phase);
            let frame = Arc::clone(&frame);
            let interval = plan.interval_ms;
            let ticks = i64::from(plan.ticks);
            let submit = plan.submit;
            std::thread::spawn(move || {
                let mut ring = match submit {
                    Submit::Send => None,
                    Submit::Uring => match io_uring::IoUring::new(URING_ENTRIES) {
                        Ok(ring) => Some(ring),
                        Err(e) => {
                            eprintln!("floor sender: no io_uring: {e}");
                            return u64::MAX;
                        }
                    },
                };
                let mut short = 0u64;
                for tick in 0..ticks {
                    for (phase, group) in &mut share {
                        let deadline = first + tick * interval + *phase;
                        let wait = deadline - now_ms();
                        if wait > 0 {
                            std::thread::sleep(Duration::from_millis(wait as u64));
                        }
                        short += match &mut ring {
                            None => group
                                .iter_mut()
                                .map(|s| s.write(&frame))
                                .filter(|w| !matches!(w, Ok(n) if *n == frame.len()))
                                .count() as u64,
                            Some(ring) => uring_burst(ring, group, &frame),
                        };
                    }
                }
                short
            })
        })
        .collect();
    let short = threads
        .into_iter()
        .map(|t| t.join().unwrap_or(0))
        .fold(0u64, u64::saturating_add);
    if short > 0 {
        eprintln!("floor sender: {short} frames not taken whole by the socket");
    }
    Ok(())
}

/// Sends `frame` to every socket of `group` through `ring`, a submission of up to
/// `URING_ENTRIES` sends at a time; returns how many were not taken whole.
#[allow(unsafe_code)]
fn uring_burst(ring: &mut io_uring::IoUring, group: &[TcpStream], frame: &[u8]) -> u64 {
    use io_uring::{opcode, types};
    use std::os::fd::AsRawFd;
    let mut short = 0u64;
    for chunk in group.chunks(URING_ENTRIES as usize) {
        for (i, s) in chunk.iter().enumerate() {
            let send =
                opcode::Send::new(types::Fd(s.as_raw_fd()), frame.as_ptr(), frame.len() as u32)
                    .build()
                    .user_data(i as u64);
            // SAFETY: the socket and `frame` outlive the submission: it is waited for
            // below, before either can go.
            if unsafe { ring.submission().push(&send) }.is_err() {
                short += 1;
            }
        }
        let queued = ring.submission().len();
        if ring.submit_and_wait(queued).is_err() {
            return short + chunk.len() as u64;
        }
        for done in ring.completion() {
            if done.result() != frame.len() as i32 {
                short += 1;
            }
        }
    }
    short
}

/// Runs the sender in a child process (`exe` with `SENDER_FLAG`, which must call
/// `sender_main`) and reads from this one; returns, per frame received, the delay from
/// its tick to its arrival in ms.
pub fn measure(exe: &std::path::Path, plan: Fanout) -> Result<Vec<i64>, String> {
    let plan = Arc::new(Fanout {
        interval_ms: plan.interval_ms.max(1),
        ..plan
    });
    let phases = plan
        .phases
        .iter()
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join(",");
    // Stopped by its drop if the reading side gives up before it is done.
    let mut sender = Helper::start(
        exe,
        SENDER_FLAG,
        &[
            plan.sockets.to_string(),
            plan.frame_bytes.to_string(),
            plan.ticks.to_string(),
            plan.interval_ms.to_string(),
            plan.senders.to_string(),
            phases,
            match plan.submit {
                Submit::Send => "send".to_string(),
                Submit::Uring => "uring".to_string(),
            },
        ],
        "floor sender",
    )?;
    let port = sender.port;
    let readers = plan.readers.max(1);
    let mut shares: Vec<Vec<(usize, TcpStream)>> = (0..readers).map(|_| Vec::new()).collect();
    for i in 0..plan.sockets {
        let s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
        s.set_nonblocking(true).map_err(|e| e.to_string())?;
        shares[i % readers].push((i, s));
    }
    let delays = Arc::new(Mutex::new(Vec::with_capacity(
        plan.sockets * plan.ticks as usize,
    )));
    // Long enough for every tick plus a slow start; the sender's exit ends it sooner.
    let give_up = Instant::now()
        + Duration::from_millis((i64::from(plan.ticks) + 4) as u64 * plan.interval_ms as u64)
        + Duration::from_secs(10);
    let threads: Vec<_> = shares
        .into_iter()
        .map(|share| {
            let (delays, plan) = (Arc::clone(&delays), Arc::clone(&plan));
            std::thread::spawn(move || read_share(share, &plan, give_up, &delays))
        })
        .collect();
    for t in threads {
        t.join()
            .map_err(|_| "a floor reader panicked".to_string())??;
    }
    sender.wait();
    let mut delays = std::mem::take(&mut *delays.lock().unwrap_or_else(PoisonError::into_inner));
    delays.sort_unstable();
    Ok(delays)
}

/// One reader thread: an epoll loop over its sockets until each is closed by the sender.
fn read_share(
    share: Vec<(usize, TcpStream)>,
    plan: &Fanout,
    give_up: Instant,
    delays: &Mutex<Vec<i64>>,
) -> Result<(), String> {
    let mut poll = Poll::new().map_err(|e| e.to_string())?;
    let (index, share): (Vec<usize>, Vec<TcpStream>) = share.into_iter().unzip();
    let mut socks: Vec<(mio::net::TcpStream, usize, bool)> = share
        .into_iter()
        .map(|s| (mio::net::TcpStream::from_std(s), 0usize, false))
        .collect();
    for (i, (s, _, _)) in socks.iter_mut().enumerate() {
        poll.registry()
            .register(s, Token(i), Interest::READABLE)
            .map_err(|e| e.to_string())?;
    }
    let mut open = socks.len();
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; 64 * 1024];
    let mut mine = Vec::new();
    let frame_bytes = plan.frame_bytes.max(8);
    while open > 0 && Instant::now() < give_up {
        poll.poll(&mut events, Some(Duration::from_millis(100)))
            .map_err(|e| e.to_string())?;
        for ev in &events {
            let token = ev.token().0;
            let Some((s, got, closed)) = socks.get_mut(token) else {
                continue;
            };
            loop {
                match s.read(&mut buf) {
                    Ok(0) => {
                        if !*closed {
                            *closed = true;
                            open -= 1;
                        }
                        break;
                    }
                    Ok(n) => {
                        let done = (*got + n) / frame_bytes - *got / frame_bytes;
                        *got += n;
                        if done > 0 {
                            let at = now_ms();
                            let tick = plan.tick_before(index[token], at);
                            mine.extend(std::iter::repeat_n(at - tick, done));
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(_) => {
                        if !*closed {
                            *closed = true;
                            open -= 1;
                        }
                        break;
                    }
                }
            }
        }
    }
    delays
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .extend(mine);
    Ok(())
}

/// Parses the arguments after `SENDER_FLAG`.
pub fn sender_plan(args: &[String]) -> Result<Fanout, String> {
    let n = |i: usize| -> Result<i64, String> {
        args.get(i)
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| format!("{SENDER_FLAG}: argument {} missing or not a number", i + 1))
    };
    Ok(Fanout {
        sockets: n(0)? as usize,
        frame_bytes: n(1)? as usize,
        ticks: n(2)? as u32,
        interval_ms: n(3)?.max(1),
        senders: n(4)? as usize,
        readers: 0,
        phases: args
            .get(5)
            .map(|list| {
                list.split(',')
                    .filter(|p| !p.is_empty())
                    .map(|p| {
                        p.parse::<i64>()
                            .map_err(|e| format!("{SENDER_FLAG}: phase {p}: {e}"))
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()?
            .unwrap_or_default(),
        submit: match args.get(6).map(String::as_str) {
            Some("uring") => Submit::Uring,
            _ => Submit::Send,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_have_the_asked_size_and_the_shortest_header() {
        for bytes in [
            2, 100, 127, 128, 129, 130, 2000, 65_539, 65_540, 65_546, 100_000,
        ] {
            let f = frame(bytes);
            let payload = match f[1] {
                126 => usize::from(u16::from_be_bytes([f[2], f[3]])),
                127 => u64::from_be_bytes(f[2..10].try_into().unwrap()) as usize,
                n => usize::from(n),
            };
            assert_eq!(f[0], 0x81);
            assert_eq!(header_len(payload) + payload, f.len(), "{bytes}");
            let rounded = match bytes {
                128 | 129 => 130,
                65_540..65_546 => 65_546,
                b => b,
            };
            assert_eq!(f.len(), rounded);
        }
    }
}
