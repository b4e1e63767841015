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
//! A delivery carries a [`Token`] that the writer drops only once the line is written to the
//! subscriber's socket. The worker's token clears the message from the log when its last copy
//! is dropped, so the backup lets go of a message only after every subscriber's socket has it:
//! a message still queued here when the primary crashes is replayed by the backup.

use std::collections::HashMap;
use std::io::{self, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
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
    _token: Option<Token>,
}

impl Frame {
    /// A reply line, tied to no message.
    pub fn reply(reply: &Reply) -> Frame {
        Frame {
            bytes: reply.to_bytes().into(),
            _token: None,
        }
    }

    /// What is left to write after the first `written` bytes, with the same token.
    fn rest(&self, written: usize) -> Frame {
        Frame {
            bytes: self.bytes[written..].into(),
            _token: self._token.clone(),
        }
    }
}

/// How long one `write` to a subscriber's socket may block: a direct write into a full send
/// buffer gives up after this and queues what is left.
const SEND_TIMEOUT: Duration = Duration::from_millis(2);

/// How long the writer thread keeps trying to write into a full send buffer before the
/// subscriber counts as gone.
const WRITE_PATIENCE: Duration = Duration::from_secs(5);

/// How a connection asked for a topic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `SUBSCRIBE`: the raw payload line.
    Raw,
    /// `SUB`: a `MSG|epoch|publisher|seq|topic|payload` line.
    WithIds,
}

/// A connection's outbound side, shared between its reader thread, its writer thread and the
/// subscriber map.
#[derive(Debug)]
pub struct Outbox {
    /// The connection's id, to find its subscriptions.
    pub conn: u64,
    tx: Sender<Frame>,
    /// How many frames may wait before the subscriber counts as slow.
    limit: usize,
    shared: Arc<Shared>,
}

/// What an [`Outbox`] shares with its writer thread.
#[derive(Debug)]
struct Shared {
    stream: Stream,
    /// Held by whoever writes to the socket, so lines never interleave.
    writing: Mutex<()>,
    /// Frames queued and not yet written; a direct write is allowed only when it is zero, so
    /// nothing overtakes what is queued.
    backlog: AtomicUsize,
    slow: AtomicBool,
}

/// The draining end of an [`Outbox`], run by the connection's writer thread. It ends when
/// every `Arc<Outbox>` is gone (the connection closed and its subscriptions were removed).
pub struct OutboxWriter {
    conn: u64,
    rx: Receiver<Frame>,
    shared: Arc<Shared>,
}

impl Outbox {
    /// Creates the queue (holding up to `limit` frames) for a connection, and its draining end.
    /// The channel itself is unbounded, so an idle subscriber costs a few hundred bytes rather
    /// than `limit` preallocated slots; [`Outbox::send`] enforces the limit. From now on every
    /// write to `stream` goes through the outbox.
    pub fn new(conn: u64, stream: Stream, limit: usize) -> (Arc<Outbox>, OutboxWriter) {
        let _ = stream.set_write_timeout(Some(SEND_TIMEOUT));
        let (tx, rx) = crossbeam_channel::unbounded();
        let shared = Arc::new(Shared {
            stream,
            writing: Mutex::new(()),
            backlog: AtomicUsize::new(0),
            slow: AtomicBool::new(false),
        });
        let outbox = Outbox {
            conn,
            tx,
            limit: limit.max(1),
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
            let (written, _) = write_until(&self.shared.stream, &frame.bytes, Instant::now());
            if written == frame.bytes.len() {
                return Ok(());
            }
            // Queued while we still hold the socket, so nothing gets in before the rest of
            // the line (the queue is empty, so the limit cannot refuse it).
            return self.queue(frame.rest(written));
        }
        self.queue(frame)
    }

    fn queue(&self, frame: Frame) -> Result<(), TrySendError<Frame>> {
        if self.tx.len() >= self.limit {
            return Err(TrySendError::Full(frame));
        }
        self.shared.backlog.fetch_add(1, Ordering::AcqRel);
        self.tx.try_send(frame).inspect_err(|_| {
            self.shared.backlog.fetch_sub(1, Ordering::AcqRel);
        })
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
#[derive(Default)]
pub struct Topics {
    map: Mutex<HashMap<String, Arc<Vec<Subscription>>>>,
}

impl Topics {
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
    /// how many it was sent to and how many subscribers were cut off as slow consumers. The
    /// map is locked only to take the topic's list, never during a write.
    pub fn deliver(
        &self,
        message: &Message,
        epoch: Epoch,
        token: &Token,
        direct: bool,
    ) -> (usize, usize) {
        let Some(subs) = self.map.lock().get(&message.topic).map(Arc::clone) else {
            return (0, 0);
        };
        let frame = |reply: Reply| Frame {
            bytes: reply.to_bytes().into(),
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
            warn!(
                "subscriber conn-{} is {} messages behind: disconnecting it as a slow consumer",
                outbox.conn,
                outbox.tx.len()
            );
            outbox.shared.slow.store(true, Ordering::Release);
            self.remove_conn(outbox.conn);
            outbox.close();
        }
        (delivered, slow.len())
    }
}

impl OutboxWriter {
    /// Drains the queue onto the socket, several frames per write when they pile up; frames
    /// (and their tokens) are dropped only after their bytes are written. A slow consumer gets
    /// `ERR|slow consumer` (if it can still take it) and its connection is closed.
    pub fn run(self) {
        let mut bytes = Vec::with_capacity(16 * 1024);
        let mut frames = Vec::new();
        while let Ok(frame) = self.rx.recv() {
            if self.shared.slow.load(Ordering::Acquire) {
                break;
            }
            bytes.extend_from_slice(&frame.bytes);
            frames.push(frame);
            while bytes.len() < 64 * 1024 {
                match self.rx.try_recv() {
                    Ok(frame) => {
                        bytes.extend_from_slice(&frame.bytes);
                        frames.push(frame);
                    }
                    Err(_) => break,
                }
            }
            let written = {
                let _writing = self.shared.writing.lock();
                write_patiently(&self.shared.stream, &bytes)
            };
            self.shared
                .backlog
                .fetch_sub(frames.len(), Ordering::AcqRel);
            if let Err(e) = written {
                debug!("conn-{}: write failed: {e}", self.conn);
                break;
            }
            bytes.clear();
            frames.clear();
        }
        if self.shared.slow.load(Ordering::Acquire) {
            let _ = write_patiently(
                &self.shared.stream,
                &Reply::Err("slow consumer".into()).to_bytes(),
            );
        }
        let _ = self.shared.stream.shutdown(Shutdown::Both);
    }
}

/// Writes all of `bytes`, waiting out a full send buffer for up to [`WRITE_PATIENCE`].
fn write_patiently(stream: &TcpStream, bytes: &[u8]) -> io::Result<()> {
    write_until(stream, bytes, Instant::now() + WRITE_PATIENCE).1
}

/// Writes `bytes` until they are all out, the socket fails, or its send buffer stays full
/// (each `write` waits up to [`SEND_TIMEOUT`]) past `give_up`. Returns how much was written
/// and what stopped it.
fn write_until(mut stream: &TcpStream, bytes: &[u8], give_up: Instant) -> (usize, io::Result<()>) {
    let mut written = 0;
    while written < bytes.len() {
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
    fn outbox(limit: usize) -> (Arc<Outbox>, OutboxWriter, BufReader<TcpStream>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        let (outbox, writer) = Outbox::new(1, Stream::new(server), limit);
        (outbox, writer, BufReader::new(client))
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
        let big = Frame {
            bytes: vec![b'x'; 1 << 20].into(),
            _token: None,
        };
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
}
