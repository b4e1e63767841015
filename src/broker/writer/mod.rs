//! The one way out to a served connection's socket: every line it is sent — its replies,
//! its ACKs, its deliveries — goes into its [`Writer`], in order, and leaves from there.
//!
//! The queue holds lines ready to go and places kept for ACKs not yet decided
//! ([`Writer::reserve`]): a line behind a kept place waits until the ACK is filled in
//! ([`Writer::fill`]), so replies leave in the order of the lines that asked for them while
//! the connection's thread goes back to reading (the ACK is filled by whichever thread learns
//! its verdict, `super::acks`).
//!
//! Whoever makes the head of the queue ready writes it at once if nobody is writing: one
//! `write` into the socket's send buffer, with no thread to wake, which is what makes an ACK
//! or a delivery cheap. The socket's send timeout is [`SEND_TIMEOUT`], so that write gives up
//! quickly on a full buffer and leaves the rest to the connection's `writer-N` thread, which
//! writes whatever piled up in one go. So a client that stops reading holds up nobody but
//! itself.
//!
//! ```text
//!   [conn-N] replies, kept places ─┐
//!   [repl-reader], [acks] ACKs ────┼─▶ queue ─ head ready, nobody writing? ─▶ write ──▶ client
//!   [worker] deliveries ───────────┘           └─ the rest ─▶ [writer-N] ─▶ write ──▶ client
//! ```
//!
//! What waits for a subscriber is bounded three ways, each of which cuts it off as a slow
//! consumer: deliveries queued (`--slow-consumer-limit` lines, `--slow-consumer-bytes`), and
//! the age of the oldest line not yet written (`--slow-consumer-ms`), which bounds every line.
//! A delivery's line holds what its message must keep until every copy is written
//! ([`HeldUntilWritten`]: the message's clear), dropped only once the line is
//! written (or thrown away): the backup lets go of a message only after every subscriber's
//! socket has it.

use std::io::{self, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use log::{debug, warn};
use parking_lot::{Condvar, Mutex, MutexGuard};

use crate::connection::Stream;
use crate::error::is_timeout;
use crate::protocol::Reply;

use super::status::{Counters, bump};

mod queue;

use queue::{Entry, Queue};
pub use queue::{Frame, HeldUntilWritten, QueueLimits, Refused, Ticket};

/// How long one `write` to a served socket may block: a direct write into a full send buffer
/// gives up after this and leaves the rest to the writer thread.
pub const SEND_TIMEOUT: Duration = Duration::from_millis(2);

/// A served connection's way out, shared by its thread, its writer thread, the ACKs filed for
/// it and its subscriptions.
pub struct Writer {
    /// The connection's id, to find its subscriptions.
    pub conn: u64,
    stream: Stream,
    limits: QueueLimits,
    /// The broker's counters, to count the subscribers cut off as slow consumers.
    counters: Arc<Counters>,
    queue: Mutex<Queue>,
    /// Rings the writer thread: the head is ready and nobody writes it, or the connection
    /// ends. A channel of one rather than a condition variable: its receiver spins a moment
    /// before it sleeps, so a subscriber fed line after line costs no sleep per line (with a
    /// condition variable the pair lost about a fifth of its throughput at 8 clients;
    /// BENCHMARKS.md, "One way out per socket").
    bell: (Sender<()>, Receiver<()>),
    /// Rung for [`Writer::close`], which waits for the queue to empty.
    drained: Condvar,
}

impl Writer {
    /// The writer of connection `conn` on `stream`; run [`Writer::run`] on its own thread.
    /// From now on every write to `stream` goes through it.
    pub fn new(
        conn: u64,
        stream: Stream,
        limits: QueueLimits,
        counters: Arc<Counters>,
    ) -> Arc<Writer> {
        let _ = stream.set_write_timeout(Some(SEND_TIMEOUT));
        Arc::new(Writer {
            conn,
            stream,
            limits,
            counters,
            queue: Mutex::default(),
            bell: crossbeam_channel::bounded(1),
            drained: Condvar::new(),
        })
    }

    /// Queues one of the connection's own replies (bounded by what it sent, so no limit
    /// applies); it leaves at the next [`Writer::flush`].
    pub fn push(&self, reply: &Reply) {
        let mut q = self.queue.lock();
        if !q.done() {
            let frame = Frame::reply(reply);
            q.answer_bytes += frame.bytes.len();
            q.push(Entry::Ready(frame));
        }
    }

    /// Keeps a place for an ACK not yet decided; everything queued after it waits for it.
    pub fn reserve(&self) -> Ticket {
        Ticket(self.queue.lock().push(Entry::Kept))
    }

    /// Fills the place kept for `ticket` with `reply`; it leaves at the next flush.
    pub fn fill(&self, ticket: Ticket, reply: &Reply) {
        let mut q = self.queue.lock();
        // Found by its number, not by a search: a client that pipelines a great many
        // publishes and reads nothing costs no more per ACK.
        if let Some(entry @ Entry::Kept) = q.get_mut(ticket.0) {
            let frame = Frame::reply(reply);
            let len = frame.bytes.len();
            *entry = Entry::Ready(frame);
            q.answer_bytes += len;
        }
    }

    /// Queues a delivery, and writes it at once with `direct` (else the writer thread does).
    pub fn deliver(&self, frame: Frame, direct: bool) -> Result<(), Refused> {
        let mut q = self.queue.lock();
        let len = frame.bytes.len();
        let over = q.deliveries >= self.limits.lines
            || q.delivery_bytes.saturating_add(len) > self.limits.bytes;
        if q.failed || q.closing {
            return Err(Refused::Gone);
        }
        // An empty queue takes a line however long: it is never a backlog.
        if q.slow || (q.deliveries > 0 && over) {
            return Err(Refused::SlowConsumer);
        }
        q.deliveries += 1;
        q.delivery_bytes += len;
        q.push(Entry::Ready(frame));
        drop(q);
        if direct {
            self.flush();
        } else {
            self.ring();
        }
        Ok(())
    }

    /// Writes what is ready at the head, once, if nobody is writing; a full send buffer ends
    /// the attempt, and the writer thread takes the rest.
    pub fn flush(&self) {
        let mut q = self.queue.lock();
        if q.done() {
            return;
        }
        let (bytes, batch) = q.take_ready();
        if batch.is_empty() {
            return;
        }
        q.writing = true;
        drop(q);
        let result = (&*self.stream as &TcpStream).write(&bytes);
        let mut q = self.queue.lock();
        q.writing = false;
        match result {
            Ok(n) => q.put_back(batch, n),
            Err(e) if is_timeout(&e) || e.kind() == io::ErrorKind::Interrupted => {
                q.put_back(batch, 0);
            }
            Err(e) => self.fail(&mut q, &e),
        }
        // Whatever is left is the writer thread's.
        if q.worth_waking() {
            self.ring();
        }
        if q.draining {
            self.drained.notify_all();
        }
    }

    /// Waits, at most until `deadline`, for every kept place to be filled and every line
    /// written; then tells the writer thread to leave once nothing is left.
    pub fn close(&self, deadline: Instant) {
        let mut q = self.queue.lock();
        q.draining = true;
        while !q.done()
            && !q.entries.is_empty()
            && !self.drained.wait_until(&mut q, deadline).timed_out()
        {}
        // An ACK still undecided is never written, as when the connection dies. No place is
        // kept from now on, so what is left need not keep its numbers.
        q.entries.retain(|entry| matches!(entry, Entry::Ready(_)));
        q.closing = true;
        self.ring();
    }

    /// Waits while the connection's own answers waiting here pass their limit: a client that
    /// does not read what it asked for stops being read, and its thread waits here rather than
    /// in a write. At most the age limit; `false` if they still pass it then (the writer
    /// thread cuts such a client off as a slow consumer).
    pub fn wait_for_room(&self) -> bool {
        if self.queue.lock().answer_bytes <= self.limits.answers {
            return true;
        }
        self.flush();
        let mut q = self.queue.lock();
        let deadline = Instant::now() + self.limits.age;
        q.draining = true;
        while q.answer_bytes > self.limits.answers
            && !q.done()
            && !self.drained.wait_until(&mut q, deadline).timed_out()
        {}
        q.draining = false;
        q.answer_bytes <= self.limits.answers && !q.done()
    }

    /// Deliveries and their bytes waiting in this queue.
    pub fn queued_deliveries(&self) -> (usize, usize) {
        let q = self.queue.lock();
        (q.deliveries, q.delivery_bytes)
    }

    /// Whether the subscriber was cut off as a slow consumer.
    pub fn is_slow(&self) -> bool {
        self.queue.lock().slow
    }

    /// Cuts the connection off as a slow consumer: its writer stops at once and its reader
    /// ends, which drops its subscriptions. Returns `false` if it was cut off already.
    pub fn cut_off(&self) -> bool {
        let first = self.mark_slow(&mut self.queue.lock());
        let _ = self.stream.shutdown(Shutdown::Read);
        first
    }

    /// Drains the queue onto the socket until the connection ends, several lines per write
    /// when they pile up; lines (and their clears) are dropped only once written. A slow
    /// consumer gets `ERR|slow consumer` (if it can still take it) and its connection is
    /// closed.
    pub fn run(&self) {
        let mut q = self.queue.lock();
        while !q.done() {
            let (bytes, batch) = q.take_ready();
            if batch.is_empty() {
                if q.closing && q.entries.is_empty() {
                    break;
                }
                drop(q);
                let _ = self.bell.1.recv();
                q = self.queue.lock();
                continue;
            }
            // The first line of a batch is the oldest: the client must take it in time.
            let give_up = batch[0].made + self.limits.age;
            q.writing = true;
            drop(q);
            let (written, result) = self.write_until(&bytes, give_up);
            q = self.queue.lock();
            q.writing = false;
            match result {
                Ok(()) => q.put_back(batch, written),
                Err(e) if is_timeout(&e) => {
                    drop(batch);
                    if self.mark_slow(&mut q) {
                        warn!(
                            "conn-{} has not taken a line queued {} ms ago: disconnecting it \
                             as a slow consumer",
                            self.conn,
                            self.limits.age.as_millis()
                        );
                    }
                }
                Err(e) => {
                    drop(batch);
                    self.fail(&mut q, &e);
                }
            }
            if q.draining {
                self.drained.notify_all();
            }
        }
        let (slow, done) = (q.slow, q.done());
        q.throw_away();
        drop(q);
        if slow {
            // One try, with the send timeout: a slow consumer cannot hold this thread.
            let err = Reply::Err("slow consumer".into()).to_bytes();
            let _ = (&*self.stream as &TcpStream).write(&err);
            // Its reader sees the read side shut and drops the subscriptions.
            let _ = self.stream.shutdown(Shutdown::Read);
        }
        if done {
            let _ = self.stream.shutdown(Shutdown::Both);
        }
    }

    /// Wakes the writer thread (a ring while it is awake is kept for its next wait).
    fn ring(&self) {
        let _ = self.bell.0.try_send(());
    }

    /// Marks the connection a slow consumer and throws its queue away, once; `false` if it
    /// was marked already.
    fn mark_slow(&self, q: &mut MutexGuard<'_, Queue>) -> bool {
        let first = !q.slow;
        q.slow = true;
        q.throw_away();
        if first {
            bump(&self.counters.slow_consumers);
        }
        self.ring();
        self.drained.notify_all();
        first
    }

    /// The socket failed: nothing more is written (its reader sees the failure too, and
    /// closes the connection).
    fn fail(&self, q: &mut MutexGuard<'_, Queue>, e: &io::Error) {
        debug!("conn-{}: write failed: {e}", self.conn);
        q.failed = true;
        q.throw_away();
        self.ring();
        self.drained.notify_all();
    }

    /// Writes `bytes` until they are all out, the socket fails, the connection is cut off, or
    /// its send buffer stays full (each `write` waits up to [`SEND_TIMEOUT`]) past `give_up`.
    /// Returns how much was written and what stopped it.
    fn write_until(&self, bytes: &[u8], give_up: Instant) -> (usize, io::Result<()>) {
        let mut stream: &TcpStream = &self.stream;
        let mut written = 0;
        while written < bytes.len() {
            if self.queue.lock().slow {
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
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader};
    use std::net::{TcpListener, TcpStream};
    use std::sync::atomic::Ordering;
    use std::thread;

    use super::*;

    /// A writer on one end of a loopback connection (its thread not running), and a reader
    /// on the other end.
    fn writer(limits: QueueLimits) -> (Arc<Writer>, BufReader<TcpStream>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        let writer = Writer::new(1, Stream::new(server), limits, Arc::default());
        (writer, BufReader::new(client))
    }

    fn limits(lines: usize, bytes: usize) -> QueueLimits {
        QueueLimits {
            lines,
            bytes,
            age: Duration::from_secs(60),
            answers: 1 << 20,
        }
    }

    fn line(text: &str) -> Reply {
        Reply::Err(text.into())
    }

    /// A delivery of `len` bytes, holding nothing that needs clearing.
    fn big(len: usize) -> Frame {
        Frame::delivery(
            vec![b'x'; len],
            Instant::now(),
            &(Arc::new(()) as HeldUntilWritten),
        )
    }

    fn read(reader: &mut BufReader<TcpStream>) -> String {
        let mut s = String::new();
        reader.read_line(&mut s).unwrap();
        s
    }

    fn queued(writer: &Writer) -> usize {
        writer.queue.lock().entries.len()
    }

    #[test]
    fn a_flush_writes_what_is_ready_at_once_without_the_thread() {
        let (writer, mut reader) = writer(limits(10, usize::MAX));
        writer.push(&line("a"));
        writer.push(&line("b"));
        assert_eq!(queued(&writer), 2, "nothing leaves before the flush");
        writer.flush();
        // No writer thread runs: only the flush can have put them on the socket.
        assert_eq!(read(&mut reader), "ERR|a\n");
        assert_eq!(read(&mut reader), "ERR|b\n");
        assert_eq!(queued(&writer), 0);
    }

    #[test]
    fn a_kept_place_holds_back_what_follows_until_it_is_filled() {
        let (writer, mut reader) = writer(limits(10, usize::MAX));
        writer.push(&line("first"));
        let ticket = writer.reserve();
        writer.push(&line("third"));
        writer.flush();
        assert_eq!(read(&mut reader), "ERR|first\n");
        assert_eq!(
            queued(&writer),
            2,
            "the kept place and what waits behind it"
        );
        writer.fill(ticket, &line("second"));
        writer.flush();
        assert_eq!(read(&mut reader), "ERR|second\n");
        assert_eq!(read(&mut reader), "ERR|third\n");
    }

    #[test]
    fn a_kept_place_is_found_by_its_number_after_the_head_moved() {
        let (writer, mut reader) = writer(limits(10, usize::MAX));
        writer.push(&line("a"));
        let first = writer.reserve();
        let second = writer.reserve();
        writer.push(&line("d"));
        writer.flush(); // "a" leaves: the head moves on
        {
            // A partial write puts part of a line back at the head.
            let mut q = writer.queue.lock();
            q.push(Entry::Ready(Frame::reply(&line("x"))));
            let (_, batch) = q.take_ready();
            assert!(batch.is_empty(), "the head is a kept place");
        }
        writer.fill(second, &line("c"));
        writer.fill(first, &line("b"));
        writer.fill(first, &line("again")); // filled already: nothing changes
        writer.flush();
        for expected in ["a", "b", "c", "d", "x"] {
            assert_eq!(read(&mut reader), format!("ERR|{expected}\n"));
        }
    }

    #[test]
    fn a_client_that_reads_no_answers_is_not_read_until_it_does() {
        let mut limits = limits(10, usize::MAX);
        limits.answers = 1000;
        limits.age = Duration::from_millis(300);
        let long = line(&"y".repeat(64 * 1024));
        // Far more than the socket buffers hold, and a client that reads all of it: room.
        let (writer, reader) = writer(limits);
        let w = Arc::clone(&writer);
        let thread = thread::spawn(move || w.run());
        let draining = thread::spawn(move || {
            let mut reader = reader;
            let mut buf = vec![0; 1 << 16];
            while std::io::Read::read(reader.get_mut(), &mut buf).is_ok_and(|n| n > 0) {}
        });
        for _ in 0..128 {
            writer.push(&long);
        }
        assert!(writer.wait_for_room(), "the client took its answers");
        assert!(writer.queue.lock().answer_bytes <= 1000);
        writer.close(Instant::now() + Duration::from_secs(5));
        thread.join().unwrap();
        drop(writer);
        draining.join().unwrap();
        // One that reads none: no room, and it is cut off once its oldest answer is too old.
        let (writer, _reader) = self::writer(limits);
        let w = Arc::clone(&writer);
        let thread = thread::spawn(move || w.run());
        for _ in 0..128 {
            writer.push(&long);
        }
        assert!(!writer.wait_for_room());
        // The writer thread cuts it off at its own pace: wait for that, within a deadline.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !writer.is_slow() && Instant::now() < deadline {
            thread::yield_now();
        }
        assert!(writer.is_slow());
        thread.join().unwrap();
    }

    #[test]
    fn a_flush_never_overtakes_a_write_in_progress() {
        let (writer, mut reader) = writer(limits(10, usize::MAX));
        writer.queue.lock().writing = true; // the writer thread is mid-write
        writer.push(&line("first"));
        writer.flush();
        assert_eq!(queued(&writer), 1, "left for the writer thread");
        writer.queue.lock().writing = false;
        let w = Arc::clone(&writer);
        let thread = thread::spawn(move || w.run());
        writer.ring();
        assert_eq!(read(&mut reader), "ERR|first\n");
        writer.close(Instant::now() + Duration::from_secs(5));
        thread.join().unwrap();
    }

    #[test]
    fn a_subscriber_that_stops_reading_fills_its_queue_without_blocking_the_sender() {
        let (writer, _reader) = writer(limits(3, usize::MAX));
        let big = big(1 << 20);
        // Were a direct write to wait for the reader, the first full buffer would stop this
        // loop for good.
        let mut sent = 0;
        while writer.deliver(big.clone(), true).is_ok() {
            sent += 1;
            assert!(sent < 1000, "the queue limit never applied");
        }
        // The socket buffers took some megabytes, the queue its limit; then refused.
        assert_eq!(writer.queued_deliveries().0, 3);
        assert_eq!(writer.deliver(big, true), Err(Refused::SlowConsumer));
    }

    #[test]
    fn a_queue_is_bounded_in_bytes_and_an_empty_one_takes_any_line() {
        let (writer, _reader) = writer(limits(1000, 100_000));
        // Not direct: nothing reaches the socket, everything queues.
        let mut queued = 0;
        while writer.deliver(big(30_000), false).is_ok() {
            queued += 1;
        }
        assert_eq!(queued, 3, "three lines of 30,000 bytes fit in 100,000");
        assert_eq!(writer.queued_deliveries(), (3, 90_000));
        // The connection's own replies are bounded by what it sent, not by these limits.
        writer.push(&line("still answered"));
        let (small, _r) = self::writer(limits(1000, 10));
        assert!(small.deliver(big(100), false).is_ok());
        assert!(small.deliver(big(1), false).is_err());
    }

    #[test]
    fn a_partial_write_leaves_the_rest_first_in_line() {
        let (writer, mut reader) = writer(limits(10, usize::MAX));
        let mut q = writer.queue.lock();
        q.push(Entry::Ready(Frame::reply(&line("one"))));
        q.push(Entry::Ready(Frame::reply(&line("two"))));
        let (bytes, batch) = q.take_ready();
        assert_eq!(bytes, b"ERR|one\nERR|two\n");
        // Five bytes went out; the rest of the first line and the second stay, in order.
        q.put_back(batch, 5);
        assert_eq!(q.head_seq, 0, "the lines put back keep their numbers");
        let (rest, _) = q.take_ready();
        assert_eq!(rest, b"ne\nERR|two\n");
        drop(q);
        (&*writer.stream as &TcpStream).write_all(b"ERR|o").unwrap();
        (&*writer.stream as &TcpStream).write_all(&rest).unwrap();
        assert_eq!(read(&mut reader), "ERR|one\n");
        assert_eq!(read(&mut reader), "ERR|two\n");
    }

    #[test]
    fn closing_waits_for_the_acks_owed_and_drops_what_is_never_decided() {
        let (writer, mut reader) = writer(limits(10, usize::MAX));
        let w = Arc::clone(&writer);
        let thread = thread::spawn(move || w.run());
        let owed = writer.reserve();
        let filler = {
            let writer = Arc::clone(&writer);
            thread::spawn(move || {
                thread::sleep(Duration::from_millis(50));
                writer.fill(owed, &line("owed"));
                writer.flush();
            })
        };
        writer.close(Instant::now() + Duration::from_secs(5));
        assert_eq!(read(&mut reader), "ERR|owed\n", "written before the close");
        filler.join().unwrap();
        thread.join().unwrap();
        // A place never filled does not hold the end up past its deadline.
        let (writer, _reader) = self::writer(limits(10, usize::MAX));
        writer.reserve();
        let started = Instant::now();
        writer.close(started + Duration::from_millis(50));
        assert!(started.elapsed() < Duration::from_secs(5));
        writer.run(); // ends at once: closing, nothing left to write
        assert_eq!(queued(&writer), 0);
    }

    #[test]
    fn a_subscriber_that_reads_too_slowly_is_cut_off_when_a_line_waits_too_long() {
        let mut limits = limits(1000, usize::MAX);
        limits.age = Duration::from_millis(200);
        let (writer, reader) = writer(limits);
        let w = Arc::clone(&writer);
        let writing = thread::spawn(move || w.run());
        // Far more than the socket buffers hold, and a reader that takes a trickle.
        for _ in 0..64 {
            writer.deliver(big(256 * 1024), false).unwrap();
        }
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let trickle = {
            let stop = Arc::clone(&stop);
            thread::spawn(move || {
                let mut reader = reader;
                let mut buf = [0; 1024];
                let mut total = 0;
                while !stop.load(Ordering::Acquire) {
                    thread::sleep(Duration::from_millis(5));
                    match std::io::Read::read(reader.get_mut(), &mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => total += n,
                    }
                }
                total
            })
        };
        writing.join().unwrap();
        stop.store(true, Ordering::Release);
        assert!(writer.is_slow());
        assert_eq!(writer.counters.slow_consumers.load(Ordering::Relaxed), 1);
        assert_eq!(
            writer.queued_deliveries(),
            (0, 0),
            "its queue was thrown away"
        );
        assert!(trickle.join().unwrap() < 64 * 256 * 1024);
    }
}
