//! The subscriber map, and each subscriber's bounded outbound queue with the writer thread
//! that drains it.
//!
//! When the compute worker has no other job waiting, it writes a delivery to a subscriber
//! whose queue is empty and whose socket nobody is writing itself: one `write` into the
//! socket's send buffer, with no thread to wake, which is what makes one message reach 10,000
//! subscribers quickly. Otherwise it queues the delivery for the writer thread, which writes
//! whatever piled up in one go: under load, fewer and larger writes. The socket's send timeout
//! is a few milliseconds, so a direct write into a full buffer gives up quickly and queues the
//! rest; a subscriber that stops reading can hold up nobody but itself.
//!
//! What waits for a subscriber is bounded three ways, each of which cuts it off as a slow
//! consumer: its queue's length in lines (`--slow-consumer-limit`) and in bytes
//! (`--slow-consumer-bytes`), and the age of the oldest line it has not taken
//! (`--slow-consumer-ms`: a subscriber that reads, but too slowly to keep up). A queued line
//! counts against its queue's limits until its [`Charge`] is dropped, when it was written or
//! thrown away, so the count cannot drift. The messages whose lines wait in any queue take at
//! most `--max-queued-bytes` together, each counted once however many subscribers it waits for
//! (a [`Held`] inside its token); past it, the subscriber with the longest queue is cut off.
//!
//! A delivery carries a [`Token`] that the writer drops only once the line is written to the
//! subscriber's socket. The worker's token clears the message from the log when its last copy
//! is dropped, so the backup lets go of a message only after every subscriber's socket has it:
//! a message still queued here when the primary crashes is replayed by the backup.

use std::collections::HashMap;
use std::io::{self, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use log::{debug, warn};
use parking_lot::Mutex;

use crate::connection::{Stream, is_timeout};
use crate::protocol::{Epoch, Message, Reply};

/// Something that acts when its last clone is dropped.
pub type Token = Arc<dyn Send + Sync>;

/// One encoded line, shared by every subscriber it goes to, with the token of the message it
/// delivers (none for a reply).
#[derive(Clone)]
pub struct Frame {
    bytes: Arc<[u8]>,
    /// When the line was made: how long it has waited for its subscriber.
    made: Instant,
    _token: Option<Token>,
}

impl Frame {
    /// A reply line, tied to no message.
    pub fn reply(reply: &Reply) -> Frame {
        Frame {
            bytes: reply.to_bytes().into(),
            made: Instant::now(),
            _token: None,
        }
    }

    /// What is left to write after the first `written` bytes, with the same token.
    fn rest(&self, written: usize) -> Frame {
        Frame {
            bytes: self.bytes[written..].into(),
            made: self.made,
            _token: self._token.clone(),
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

/// The bytes of the messages waiting for subscribers, their limit, and how many subscribers
/// were cut off.
#[derive(Debug)]
struct Budget {
    held_bytes: AtomicUsize,
    max_bytes: usize,
    slow_consumers: AtomicU64,
}

/// One message's share of `--max-queued-bytes`, from the moment it is handed to its
/// subscribers until its last line is written: it lives in the message's [`Token`].
#[derive(Debug)]
pub struct Held {
    bytes: usize,
    budget: Arc<Budget>,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.budget
            .held_bytes
            .fetch_sub(self.bytes, Ordering::AcqRel);
    }
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

/// How a connection asked for a topic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Format {
    /// `SUBSCRIBE`: the raw payload line.
    Raw,
    /// `SUB`: a `MSG|epoch|publisher|seq|topic|payload` line.
    WithIds,
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
    budget: Arc<Budget>,
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
            self.budget.slow_consumers.fetch_add(1, Ordering::Relaxed);
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
    fn new(
        conn: u64,
        stream: Stream,
        limits: QueueLimits,
        budget: Arc<Budget>,
    ) -> (Arc<Outbox>, OutboxWriter) {
        let _ = stream.set_write_timeout(Some(SEND_TIMEOUT));
        let (tx, rx) = crossbeam_channel::unbounded();
        let shared = Arc::new(Shared {
            stream,
            limits,
            budget,
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
    pub fn send(&self, frame: Frame, direct: bool) -> Result<(), TrySendError<Frame>> {
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
    fn queue(&self, frame: Frame) -> Result<(), TrySendError<Frame>> {
        let shared = &self.shared;
        let (lines, bytes) = (
            shared.backlog.load(Ordering::Acquire),
            shared.queued_bytes.load(Ordering::Acquire),
        );
        let len = frame.bytes.len();
        if lines > 0 && (lines >= shared.limits.lines || bytes + len > shared.limits.bytes) {
            return Err(TrySendError::Full(frame));
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
        self.tx.try_send(queued).map_err(|e| match e {
            TrySendError::Full(q) => TrySendError::Full(q.frame.clone()),
            TrySendError::Disconnected(q) => TrySendError::Disconnected(q.frame.clone()),
        })
    }

    /// Lines waiting in this queue.
    fn backlog(&self) -> usize {
        self.shared.backlog.load(Ordering::Acquire)
    }

    /// Ends the connection's reader, which then drops its subscriptions and its outbox.
    fn close(&self) {
        let _ = self.shared.stream.shutdown(Shutdown::Read);
    }
}

#[derive(Clone)]
struct Subscription {
    format: Format,
    outbox: Arc<Outbox>,
}

/// Topic name → the connections subscribed to it. A delivery takes the topic's list (an `Arc`)
/// and writes without the lock; a change copies a list that a delivery still holds.
pub struct Topics {
    map: Mutex<HashMap<String, Arc<Vec<Subscription>>>>,
    limits: QueueLimits,
    budget: Arc<Budget>,
}

impl Topics {
    /// An empty map whose subscribers' queues obey `limits`, the messages waiting in them
    /// taking at most `max_queued_bytes`.
    pub fn new(limits: QueueLimits, max_queued_bytes: usize) -> Self {
        Topics {
            map: Mutex::new(HashMap::new()),
            limits,
            budget: Arc::new(Budget {
                held_bytes: AtomicUsize::new(0),
                max_bytes: max_queued_bytes,
                slow_consumers: AtomicU64::new(0),
            }),
        }
    }

    /// A queue for a connection that subscribes, and the end its writer thread drains.
    pub fn outbox(&self, conn: u64, stream: Stream) -> (Arc<Outbox>, OutboxWriter) {
        Outbox::new(conn, stream, self.limits, Arc::clone(&self.budget))
    }

    /// Subscribers cut off as slow consumers so far.
    pub fn slow_consumers(&self) -> u64 {
        self.budget.slow_consumers.load(Ordering::Relaxed)
    }

    /// Counts `message` against `--max-queued-bytes` until the returned share is dropped.
    pub fn hold(&self, message: &Message) -> Held {
        let bytes = message.topic.len() + message.payload.len();
        self.budget.held_bytes.fetch_add(bytes, Ordering::AcqRel);
        Held {
            bytes,
            budget: Arc::clone(&self.budget),
        }
    }

    /// Bytes of the messages whose lines wait for subscribers.
    pub fn held_bytes(&self) -> usize {
        self.budget.held_bytes.load(Ordering::Relaxed)
    }

    /// Adds a subscription; subscribing twice to one topic in one format is a no-op.
    pub fn subscribe(&self, topic: &str, format: Format, outbox: &Arc<Outbox>) {
        let mut map = self.map.lock();
        let subs = map.entry(topic.to_string()).or_default();
        if !subs
            .iter()
            .any(|s| s.outbox.conn == outbox.conn && s.format == format)
        {
            Arc::make_mut(subs).push(Subscription {
                format,
                outbox: Arc::clone(outbox),
            });
        }
    }

    /// Drops every subscription of a connection that went away.
    pub fn remove_conn(&self, conn: u64) {
        let mut map = self.map.lock();
        for subs in map.values_mut() {
            if subs.iter().any(|s| s.outbox.conn == conn) {
                Arc::make_mut(subs).retain(|s| s.outbox.conn != conn);
            }
        }
        map.retain(|_, subs| !subs.is_empty());
    }

    /// How many subscriptions there are, over all topics.
    pub fn count(&self) -> usize {
        self.map.lock().values().map(|subs| subs.len()).sum()
    }

    /// Sends `message` to every subscriber of its topic, each copy holding a clone of
    /// `token` (written directly where it can be with `direct`, see [`Outbox::send`]); returns
    /// how many it was sent to. A subscriber whose queue is full is cut off as a slow
    /// consumer, and so is the one with the longest queue when all queues together hold too
    /// much. The map is locked only to take the topic's list, never during a write.
    pub fn deliver(&self, message: &Message, epoch: Epoch, token: &Token, direct: bool) -> usize {
        let Some(subs) = self.map.lock().get(&message.topic).map(Arc::clone) else {
            return 0;
        };
        let made = Instant::now();
        let frame = |reply: Reply| Frame {
            bytes: reply.to_bytes().into(),
            made,
            _token: Some(Arc::clone(token)),
        };
        let mut raw: Option<Frame> = None;
        let mut with_ids: Option<Frame> = None;
        let mut delivered = 0;
        let mut slow = Vec::new();
        let mut gone = Vec::new();
        for sub in subs.iter() {
            let frame = match sub.format {
                Format::Raw => {
                    raw.get_or_insert_with(|| frame(Reply::Payload(message.payload.clone())))
                }
                Format::WithIds => with_ids.get_or_insert_with(|| {
                    frame(Reply::Msg {
                        epoch,
                        message: message.clone(),
                    })
                }),
            };
            match sub.outbox.send(frame.clone(), direct) {
                Ok(()) => delivered += 1,
                Err(TrySendError::Full(_)) => slow.push(Arc::clone(&sub.outbox)),
                Err(TrySendError::Disconnected(_)) => gone.push(sub.outbox.conn),
            }
        }
        drop(subs);
        for conn in gone {
            self.remove_conn(conn);
        }
        for outbox in &slow {
            self.cut_off(outbox, "its queue is full");
        }
        if self.held_bytes() > self.budget.max_bytes
            && let Some(longest) = self.longest_queue()
        {
            self.cut_off(
                &longest,
                "all queues together hold more than --max-queued-bytes",
            );
        }
        delivered
    }

    /// The subscriber with the most bytes queued, not cut off yet.
    fn longest_queue(&self) -> Option<Arc<Outbox>> {
        let map = self.map.lock();
        map.values()
            .flat_map(|subs| subs.iter())
            .filter(|s| !s.outbox.shared.slow.load(Ordering::Acquire))
            .max_by_key(|s| s.outbox.shared.queued_bytes.load(Ordering::Acquire))
            .map(|s| Arc::clone(&s.outbox))
    }

    /// Disconnects a slow consumer: its writer stops at once, and its queue is thrown away.
    fn cut_off(&self, outbox: &Outbox, why: &str) {
        if outbox.shared.mark_slow() {
            warn!(
                "subscriber conn-{} is {} lines ({} bytes) behind and {why}: disconnecting it as a slow consumer",
                outbox.conn,
                outbox.backlog(),
                outbox.shared.queued_bytes.load(Ordering::Acquire)
            );
        }
        self.remove_conn(outbox.conn);
        outbox.close();
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
        let topics = Topics::new(limits(lines, usize::MAX), usize::MAX);
        let (outbox, writer, reader) = outbox_in(&topics, 1);
        (outbox, writer, reader)
    }

    fn limits(lines: usize, bytes: usize) -> QueueLimits {
        QueueLimits {
            lines,
            bytes,
            age: Duration::from_secs(60),
        }
    }

    fn outbox_in(topics: &Topics, conn: u64) -> (Arc<Outbox>, OutboxWriter, BufReader<TcpStream>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        let (outbox, writer) = topics.outbox(conn, Stream::new(server));
        (outbox, writer, BufReader::new(client))
    }

    fn big(len: usize) -> Frame {
        Frame {
            bytes: vec![b'x'; len].into(),
            made: Instant::now(),
            _token: None,
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
        let topics = Topics::new(limits(1000, 100_000), usize::MAX);
        let (outbox, writer, _reader) = outbox_in(&topics, 1);
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
        let topics = Topics::new(limits(1000, 10), usize::MAX);
        let (outbox, _writer, _reader) = outbox_in(&topics, 1);
        assert!(outbox.send(big(100), false).is_ok());
        assert!(outbox.send(big(1), false).is_err());
    }

    #[test]
    fn a_subscriber_that_reads_too_slowly_is_cut_off_when_a_line_waits_too_long() {
        let mut limits = limits(1000, usize::MAX);
        limits.age = Duration::from_millis(200);
        let topics = Topics::new(limits, usize::MAX);
        let (outbox, writer, reader) = outbox_in(&topics, 1);
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
        assert_eq!(topics.slow_consumers(), 1);
        drop(outbox);
        assert!(
            trickle.join().unwrap() < 64 * 256 * 1024,
            "it never caught up"
        );
    }

    #[test]
    fn past_the_broker_budget_the_longest_queue_is_cut_off() {
        let topics = Topics::new(limits(1000, usize::MAX), 30_000);
        let (short, _w1, _r1) = outbox_in(&topics, 1);
        let (long, _w2, _r2) = outbox_in(&topics, 2);
        topics.subscribe("t", Format::Raw, &short);
        topics.subscribe("t", Format::Raw, &long);
        topics.subscribe("u", Format::Raw, &long);
        let message = |topic: &str| Message {
            id: crate::protocol::MsgId {
                publisher: 1,
                seq: 1,
            },
            topic: topic.into(),
            payload: "y".repeat(20_000),
        };
        let epoch = Epoch::default();
        let (u, t) = (message("u"), message("t"));
        let u_token: Token = Arc::new(topics.hold(&u));
        assert_eq!(topics.deliver(&u, epoch, &u_token, false), 1);
        assert_eq!(topics.slow_consumers(), 0);
        // Two messages of 20,000 bytes wait, past 30,000: the queue holding both goes.
        let t_token: Token = Arc::new(topics.hold(&t));
        assert_eq!(topics.deliver(&t, epoch, &t_token, false), 2);
        assert_eq!(topics.held_bytes(), 40_002);
        assert_eq!(topics.slow_consumers(), 1);
        assert!(long.shared.slow.load(Ordering::Acquire));
        assert!(!short.shared.slow.load(Ordering::Acquire));
        assert_eq!(
            topics.count(),
            1,
            "only the short queue's subscription is left"
        );
    }
}
