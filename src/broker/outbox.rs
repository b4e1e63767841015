//! A subscriber's outbound side: its bounded queue, and the writer thread that drains it onto
//! the socket. Every line to a connection that subscribed goes through its outbox, so replies
//! and deliveries never interleave mid-line or overtake one another.
//!
//! When the compute worker has no other job waiting, it writes a delivery to a subscriber
//! whose queue is empty and whose socket nobody is writing itself: one `write` into the
//! socket's send buffer, with no thread to wake, which is what makes one message reach 10,000
//! subscribers quickly. Otherwise it queues the delivery for the writer thread, which writes
//! whatever piled up in one go: under load, fewer and larger writes. The socket's send timeout
//! is a few milliseconds, so a direct write into a full buffer gives up quickly and queues the
//! rest; a subscriber that stops reading can hold up nobody but itself.
//!
//! ```text
//!   [worker] ──idle socket, empty queue──▶ write ─────────────▶ subscriber
//!       └──────otherwise──▶ queue ─▶ [sub-writer-N] ─▶ write ─▶ subscriber
//! ```
//!
//! What waits for a subscriber is bounded three ways, each of which cuts it off as a slow
//! consumer: its queue's length in lines (`--slow-consumer-limit`) and in bytes
//! (`--slow-consumer-bytes`), and the age of the oldest line it has not taken
//! (`--slow-consumer-ms`: a subscriber that reads, but too slowly to keep up). A queued line
//! counts against its queue's limits until its `Charge` is dropped, when it was written or
//! thrown away, so the count cannot drift.
//!
//! A delivery's line holds the message's [`ClearWhenWritten`], dropped only once the line is
//! written to the socket (or thrown away): the backup lets go of a message only after every
//! subscriber's socket has it.

use std::io::{self, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use log::{debug, warn};
use parking_lot::Mutex;

use crate::connection::{Stream, is_timeout};
use crate::protocol::Reply;

use super::compute::ClearWhenWritten;

/// One encoded line, shared by every subscriber it goes to, with the [`ClearWhenWritten`] of
/// the message it delivers (none for a reply).
#[derive(Clone)]
pub struct Frame {
    bytes: Arc<[u8]>,
    /// When the line was made: how long it has waited for its subscriber.
    made: Instant,
    clear: Option<Arc<ClearWhenWritten>>,
}

impl Frame {
    /// A reply line, tied to no message.
    pub fn reply(reply: &Reply) -> Frame {
        Frame {
            bytes: reply.to_bytes().into(),
            made: Instant::now(),
            clear: None,
        }
    }

    /// A line that delivers a message, made at `made`.
    pub fn delivery(bytes: Vec<u8>, made: Instant, clear: &Arc<ClearWhenWritten>) -> Frame {
        Frame {
            bytes: bytes.into(),
            made,
            clear: Some(Arc::clone(clear)),
        }
    }

    /// What is left to write after the first `written` bytes, for the same message.
    fn rest(&self, written: usize) -> Frame {
        Frame {
            bytes: self.bytes[written..].into(),
            made: self.made,
            clear: self.clear.clone(),
        }
    }
}

/// How long one `write` to a subscriber's socket may block: a direct write into a full send
/// buffer gives up after this and queues what is left.
const SEND_TIMEOUT: Duration = Duration::from_millis(2);

/// What may wait for one subscriber before it counts as a slow consumer.
#[derive(Clone, Copy, Debug)]
pub struct QueueLimits {
    /// Lines queued.
    pub lines: usize,
    /// Bytes queued.
    pub bytes: usize,
    /// How long the oldest line not yet written may have waited.
    pub age: Duration,
}

/// A queued line's share of its queue's and the broker's limits, given back when it is
/// dropped: after it was written, or when the queue is thrown away.
struct Charge {
    bytes: usize,
    shared: Arc<Shared>,
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.shared.backlog.fetch_sub(1, Ordering::AcqRel);
        self.shared
            .queued_bytes
            .fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// A line in a subscriber's queue.
struct Queued {
    frame: Frame,
    _charge: Charge,
}

/// Why a line was not sent.
#[derive(Debug, PartialEq, Eq)]
pub enum SendError {
    /// The subscriber's queue is at one of its limits: it is a slow consumer.
    Full,
    /// The connection's writer is gone.
    Gone,
}

/// A connection's outbound side, shared between its reader thread, its writer thread and the
/// subscriber map.
pub struct Outbox {
    /// The connection's id, to find its subscriptions.
    pub conn: u64,
    tx: Sender<Queued>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox").field("conn", &self.conn).finish()
    }
}

/// What an [`Outbox`] shares with its writer thread.
#[derive(Debug)]
struct Shared {
    stream: Stream,
    limits: QueueLimits,
    /// The broker's count of subscribers cut off as slow consumers.
    slow_consumers: Arc<AtomicU64>,
    /// Held by whoever writes to the socket, so lines never interleave.
    writing: Mutex<()>,
    /// Lines queued and not yet written; a direct write is allowed only when it is zero, so
    /// nothing overtakes what is queued.
    backlog: AtomicUsize,
    /// The bytes of those lines.
    queued_bytes: AtomicUsize,
    slow: AtomicBool,
}

impl Shared {
    /// Marks the subscriber a slow consumer, once; `false` if it was marked already.
    fn mark_slow(&self) -> bool {
        let first = !self.slow.swap(true, Ordering::AcqRel);
        if first {
            self.slow_consumers.fetch_add(1, Ordering::Relaxed);
        }
        first
    }
}

/// The draining end of an [`Outbox`], run by the connection's writer thread. It ends when
/// every `Arc<Outbox>` is gone (the connection closed and its subscriptions were removed).
pub struct OutboxWriter {
    conn: u64,
    rx: Receiver<Queued>,
    shared: Arc<Shared>,
}

impl Outbox {
    /// Creates the queue for a connection, and its draining end. The channel itself is
    /// unbounded, so an idle subscriber costs a few hundred bytes rather than preallocated
    /// slots; [`Outbox::send`] enforces the limits. From now on every write to `stream` goes
    /// through the outbox.
    pub fn new(
        conn: u64,
        stream: Stream,
        limits: QueueLimits,
        slow_consumers: Arc<AtomicU64>,
    ) -> (Arc<Outbox>, OutboxWriter) {
        let _ = stream.set_write_timeout(Some(SEND_TIMEOUT));
        let (tx, rx) = crossbeam_channel::unbounded();
        let shared = Arc::new(Shared {
            stream,
            limits,
            slow_consumers,
            writing: Mutex::new(()),
            backlog: AtomicUsize::new(0),
            queued_bytes: AtomicUsize::new(0),
            slow: AtomicBool::new(false),
        });
        let outbox = Outbox {
            conn,
            tx,
            shared: Arc::clone(&shared),
        };
        (Arc::new(outbox), OutboxWriter { conn, rx, shared })
    }

    /// Sends a line: with `direct`, written at once if nothing is queued and nobody is
    /// writing; otherwise queued behind the others. `Full` means the subscriber lags by the
    /// limit; `Disconnected` that its writer is gone.
    pub fn send(&self, frame: Frame, direct: bool) -> Result<(), SendError> {
        if direct
            && let Some(_writing) = self.shared.writing.try_lock()
            && self.shared.backlog.load(Ordering::Acquire) == 0
        {
            // A full send buffer ends the attempt at once: the writer thread takes the rest.
            let (written, _) = write_until(&self.shared, &frame.bytes, Instant::now());
            if written == frame.bytes.len() {
                return Ok(());
            }
            // Queued while we still hold the socket, so nothing gets in before the rest of
            // the line (the queue is empty, so no limit refuses it).
            return self.queue(frame.rest(written));
        }
        self.queue(frame)
    }

    /// Queues a line unless that would break one of the subscriber's limits. An empty queue
    /// always takes one line, however long.
    fn queue(&self, frame: Frame) -> Result<(), SendError> {
        let shared = &self.shared;
        let (lines, bytes) = (
            shared.backlog.load(Ordering::Acquire),
            shared.queued_bytes.load(Ordering::Acquire),
        );
        let len = frame.bytes.len();
        if lines > 0 && (lines >= shared.limits.lines || bytes + len > shared.limits.bytes) {
            return Err(SendError::Full);
        }
        shared.backlog.fetch_add(1, Ordering::AcqRel);
        shared.queued_bytes.fetch_add(len, Ordering::AcqRel);
        let queued = Queued {
            frame,
            _charge: Charge {
                bytes: len,
                shared: Arc::clone(shared),
            },
        };
        // The channel is unbounded: it refuses only once the writer is gone.
        self.tx.try_send(queued).map_err(|_| SendError::Gone)
    }

    /// Lines and bytes waiting in this queue.
    pub fn backlog(&self) -> (usize, usize) {
        (
            self.shared.backlog.load(Ordering::Acquire),
            self.shared.queued_bytes.load(Ordering::Acquire),
        )
    }

    /// Whether the subscriber was cut off as a slow consumer.
    pub fn is_slow(&self) -> bool {
        self.shared.slow.load(Ordering::Acquire)
    }

    /// Cuts the subscriber off as a slow consumer: its writer stops at once, and its
    /// connection's reader ends, which drops its subscriptions and this queue. Returns `false`
    /// if it was cut off already.
    pub fn cut_off(&self) -> bool {
        let first = self.shared.mark_slow();
        self.close();
        first
    }

    /// Ends the connection's reader, which then drops its subscriptions and its outbox.
    fn close(&self) {
        let _ = self.shared.stream.shutdown(Shutdown::Read);
    }
}

impl OutboxWriter {
    /// Drains the queue onto the socket, several frames per write when they pile up; frames
    /// (and their tokens) are dropped only after their bytes are written. A slow consumer gets
    /// `ERR|slow consumer` (if it can still take it) and its connection is closed.
    pub fn run(self) {
        let shared = &self.shared;
        let mut bytes = Vec::with_capacity(16 * 1024);
        let mut batch = Vec::new();
        while let Ok(queued) = self.rx.recv() {
            if shared.slow.load(Ordering::Acquire) {
                break;
            }
            // The first line of a batch is the oldest: the subscriber must take it in time.
            let give_up = queued.frame.made + shared.limits.age;
            bytes.extend_from_slice(&queued.frame.bytes);
            batch.push(queued);
            while bytes.len() < 64 * 1024 {
                match self.rx.try_recv() {
                    Ok(queued) => {
                        bytes.extend_from_slice(&queued.frame.bytes);
                        batch.push(queued);
                    }
                    Err(_) => break,
                }
            }
            let written = {
                let _writing = shared.writing.lock();
                write_until(shared, &bytes, give_up).1
            };
            match written {
                Ok(()) => {}
                Err(e) if is_timeout(&e) => {
                    if shared.mark_slow() {
                        warn!(
                            "subscriber conn-{} has not taken a line queued {} ms ago: disconnecting it as a slow consumer",
                            self.conn,
                            shared.limits.age.as_millis()
                        );
                    }
                    break;
                }
                Err(e) => {
                    debug!("conn-{}: write failed: {e}", self.conn);
                    break;
                }
            }
            bytes.clear();
            batch.clear();
        }
        if shared.slow.load(Ordering::Acquire) {
            // One try, with the send timeout: a slow consumer cannot hold this thread.
            let _ = (&*shared.stream).write(&Reply::Err("slow consumer".into()).to_bytes());
            // Its reader sees the read side shut and drops the subscriptions.
            let _ = shared.stream.shutdown(Shutdown::Read);
        }
        let _ = shared.stream.shutdown(Shutdown::Both);
    }
}

/// Writes `bytes` until they are all out, the socket fails, the subscriber is cut off, or its
/// send buffer stays full (each `write` waits up to [`SEND_TIMEOUT`]) past `give_up`. Returns
/// how much was written and what stopped it.
fn write_until(shared: &Shared, bytes: &[u8], give_up: Instant) -> (usize, io::Result<()>) {
    let mut stream: &TcpStream = &shared.stream;
    let mut written = 0;
    while written < bytes.len() {
        if shared.slow.load(Ordering::Acquire) {
            return (written, Err(io::ErrorKind::ConnectionAborted.into()));
        }
        match stream.write(&bytes[written..]) {
            Ok(0) => return (written, Err(io::ErrorKind::WriteZero.into())),
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if is_timeout(&e) && Instant::now() < give_up => {}
            Err(e) => return (written, Err(e)),
        }
    }
    (written, Ok(()))
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader};
    use std::net::{TcpListener, TcpStream};

    use super::*;

    /// An outbox on one end of a loopback connection (its writer not yet running), and a
    /// reader on the other end.
    fn outbox(lines: usize) -> (Arc<Outbox>, OutboxWriter, BufReader<TcpStream>) {
        outbox_with(limits(lines, usize::MAX), &Arc::default())
    }

    fn limits(lines: usize, bytes: usize) -> QueueLimits {
        QueueLimits {
            lines,
            bytes,
            age: Duration::from_secs(60),
        }
    }

    fn outbox_with(
        limits: QueueLimits,
        slow: &Arc<AtomicU64>,
    ) -> (Arc<Outbox>, OutboxWriter, BufReader<TcpStream>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        let (outbox, writer) = Outbox::new(1, Stream::new(server), limits, Arc::clone(slow));
        (outbox, writer, BufReader::new(client))
    }

    fn big(len: usize) -> Frame {
        Frame {
            bytes: vec![b'x'; len].into(),
            made: Instant::now(),
            clear: None,
        }
    }

    fn line(text: &str) -> Frame {
        Frame::reply(&Reply::Err(text.into()))
    }

    fn read(reader: &mut BufReader<TcpStream>) -> String {
        let mut s = String::new();
        reader.read_line(&mut s).unwrap();
        s
    }

    #[test]
    fn an_idle_subscriber_is_written_to_directly() {
        let (outbox, _writer, mut reader) = outbox(10);
        outbox.send(line("a"), true).unwrap();
        // No writer thread runs: only a direct write can have put it on the socket.
        assert_eq!(read(&mut reader), "ERR|a\n");
        assert!(outbox.tx.is_empty());
    }

    #[test]
    fn a_direct_write_never_overtakes_a_queued_frame() {
        let (outbox, writer, mut reader) = outbox(10);
        let busy = outbox.shared.writing.lock(); // the writer thread is mid-write
        outbox.send(line("first"), true).unwrap();
        drop(busy);
        outbox.send(line("second"), true).unwrap();
        assert_eq!(outbox.tx.len(), 2, "queued behind the first");
        std::thread::spawn(move || writer.run());
        assert_eq!(read(&mut reader), "ERR|first\n");
        assert_eq!(read(&mut reader), "ERR|second\n");
    }

    #[test]
    fn a_subscriber_that_stops_reading_fills_its_queue_without_blocking_the_sender() {
        let (outbox, _writer, _reader) = outbox(3);
        let big = big(1 << 20);
        // Were a direct write to wait for the reader, the first full buffer would stop this
        // loop for good.
        let mut sent = 0;
        while outbox.send(big.clone(), true).is_ok() {
            sent += 1;
            assert!(sent < 1000, "the queue limit never applied");
        }
        // The socket buffers took some megabytes, the queue its limit; then `Full`.
        assert_eq!(outbox.tx.len(), 3);
    }

    #[test]
    fn a_queue_is_bounded_in_bytes_and_gives_them_back_when_thrown_away() {
        let (outbox, writer, _reader) = outbox_with(limits(1000, 100_000), &Arc::default());
        // Not direct: nothing reaches the socket, everything queues.
        let mut queued = 0;
        while outbox.send(big(30_000), false).is_ok() {
            queued += 1;
        }
        assert_eq!(
            queued, 3,
            "three lines of 30,000 bytes fit in 100,000, a fourth does not"
        );
        let shared = Arc::clone(&outbox.shared);
        assert_eq!(shared.queued_bytes.load(Ordering::Acquire), 90_000);
        drop(writer); // the queue is thrown away: its charges come back
        drop(outbox);
        assert_eq!(shared.queued_bytes.load(Ordering::Acquire), 0);
        assert_eq!(shared.backlog.load(Ordering::Acquire), 0);
    }

    #[test]
    fn an_empty_queue_takes_a_line_longer_than_its_byte_limit() {
        let (outbox, _writer, _reader) = outbox_with(limits(1000, 10), &Arc::default());
        assert!(outbox.send(big(100), false).is_ok());
        assert!(outbox.send(big(1), false).is_err());
    }

    #[test]
    fn a_subscriber_that_reads_too_slowly_is_cut_off_when_a_line_waits_too_long() {
        let mut limits = limits(1000, usize::MAX);
        limits.age = Duration::from_millis(200);
        let slow = Arc::default();
        let (outbox, writer, reader) = outbox_with(limits, &slow);
        let writing = std::thread::spawn(move || writer.run());
        // Far more than the socket buffers hold, and a reader that takes a trickle.
        for _ in 0..64 {
            outbox.send(big(256 * 1024), false).unwrap();
        }
        let trickle = std::thread::spawn(move || {
            let mut reader = reader;
            let mut buf = [0; 1024];
            let mut total = 0;
            loop {
                std::thread::sleep(Duration::from_millis(5));
                match std::io::Read::read(reader.get_mut(), &mut buf) {
                    Ok(0) | Err(_) => return total,
                    Ok(n) => total += n,
                }
            }
        });
        writing.join().unwrap();
        assert_eq!(slow.load(Ordering::Acquire), 1);
        drop(outbox);
        assert!(
            trickle.join().unwrap() < 64 * 256 * 1024,
            "it never caught up"
        );
    }
}
