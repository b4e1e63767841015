//! The subscriber map, and each subscriber's bounded outbound queue with the writer thread
//! that drains it. The compute worker only ever does a non-blocking `try_send` per subscriber,
//! so a subscriber that stops reading can hold up nobody but itself.
//!
//! A delivery carries a [`Token`] that the writer drops only once the line is written to the
//! subscriber's socket. The worker's token clears the message from the log when its last copy
//! is dropped, so the backup lets go of a message only after every subscriber's socket has it:
//! a message still queued here when the primary crashes is replayed by the backup.

use std::collections::HashMap;
use std::io::Write;
use std::net::Shutdown;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use log::{debug, warn};
use parking_lot::Mutex;

use crate::connection::Stream;
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
}

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
    slow: Arc<AtomicBool>,
    stream: Stream,
}

/// The draining end of an [`Outbox`], run by the connection's writer thread. It ends when
/// every `Arc<Outbox>` is gone (the connection closed and its subscriptions were removed).
pub struct OutboxWriter {
    conn: u64,
    rx: Receiver<Frame>,
    slow: Arc<AtomicBool>,
}

impl Outbox {
    /// Creates the queue (holding up to `limit` frames) for a connection, and its draining end.
    /// The channel itself is unbounded, so an idle subscriber costs a few hundred bytes rather
    /// than `limit` preallocated slots; [`Outbox::try_push`] enforces the limit.
    pub fn new(conn: u64, stream: Stream, limit: usize) -> (Arc<Outbox>, OutboxWriter) {
        let (tx, rx) = crossbeam_channel::unbounded();
        let slow = Arc::new(AtomicBool::new(false));
        let outbox = Outbox {
            conn,
            tx,
            limit: limit.max(1),
            slow: Arc::clone(&slow),
            stream,
        };
        (Arc::new(outbox), OutboxWriter { conn, rx, slow })
    }

    /// Queues a line behind those already queued. `Full` means the subscriber lags by the
    /// limit; `Disconnected` that its writer is gone.
    pub fn try_push(&self, frame: Frame) -> Result<(), TrySendError<Frame>> {
        if self.tx.len() >= self.limit {
            return Err(TrySendError::Full(frame));
        }
        self.tx.try_send(frame)
    }

    /// Ends the connection's reader, which then drops its subscriptions and its outbox.
    fn close(&self) {
        let _ = self.stream.shutdown(Shutdown::Read);
    }
}

struct Subscription {
    format: Format,
    outbox: Arc<Outbox>,
}

/// Topic name → the connections subscribed to it.
#[derive(Default)]
pub struct Topics {
    map: Mutex<HashMap<String, Vec<Subscription>>>,
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
            subs.push(Subscription {
                format,
                outbox: Arc::clone(outbox),
            });
        }
    }

    /// Drops every subscription of a connection that went away.
    pub fn remove_conn(&self, conn: u64) {
        let mut map = self.map.lock();
        for subs in map.values_mut() {
            subs.retain(|s| s.outbox.conn != conn);
        }
        map.retain(|_, subs| !subs.is_empty());
    }

    /// How many subscriptions there are, over all topics.
    pub fn count(&self) -> usize {
        self.map.lock().values().map(Vec::len).sum()
    }

    /// Queues `message` for every subscriber of its topic, each copy holding a clone of
    /// `token`; returns how many it was queued for and how many subscribers were cut off as
    /// slow consumers.
    pub fn deliver(&self, message: &Message, epoch: Epoch, token: &Token) -> (usize, usize) {
        let frame = |reply: Reply| Frame {
            bytes: reply.to_bytes().into(),
            _token: Some(Arc::clone(token)),
        };
        let mut raw: Option<Frame> = None;
        let mut with_ids: Option<Frame> = None;
        let mut delivered = 0;
        let mut slow = Vec::new();
        let mut map = self.map.lock();
        let Some(subs) = map.get_mut(&message.topic) else {
            return (0, 0);
        };
        subs.retain(|sub| {
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
            match sub.outbox.try_push(frame.clone()) {
                Ok(()) => {
                    delivered += 1;
                    true
                }
                Err(TrySendError::Full(_)) => {
                    slow.push(Arc::clone(&sub.outbox));
                    false
                }
                Err(TrySendError::Disconnected(_)) => false,
            }
        });
        if subs.is_empty() {
            map.remove(&message.topic);
        }
        drop(map);
        for outbox in &slow {
            warn!(
                "subscriber conn-{} is {} messages behind: disconnecting it as a slow consumer",
                outbox.conn,
                outbox.tx.len()
            );
            outbox.slow.store(true, Ordering::Release);
            self.remove_conn(outbox.conn);
            outbox.close();
        }
        (delivered, slow.len())
    }
}

impl OutboxWriter {
    /// Drains the queue onto `stream`, several frames per write when they pile up; frames
    /// (and their tokens) are dropped only after their bytes are written. A slow consumer gets
    /// `ERR|slow consumer` (if it can still take it) and its connection is closed.
    pub fn run(self, mut stream: Stream) {
        let mut bytes = Vec::with_capacity(16 * 1024);
        let mut frames = Vec::new();
        while let Ok(frame) = self.rx.recv() {
            if self.slow.load(Ordering::Acquire) {
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
            if let Err(e) = stream.write_all(&bytes) {
                debug!("conn-{}: write failed: {e}", self.conn);
                break;
            }
            bytes.clear();
            frames.clear();
        }
        if self.slow.load(Ordering::Acquire) {
            let _ = stream.write_all(&Reply::Err("slow consumer".into()).to_bytes());
        }
        let _ = stream.shutdown(Shutdown::Both);
    }
}
