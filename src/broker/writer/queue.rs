//! A writer's queue: the lines it holds in order and the places kept for ACKs, what counts
//! against a subscriber's limits, and taking lines off the head and putting back what a write
//! did not take. Plain data under the writer's lock; [`super::Writer`] decides when to write.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::protocol::Reply;

/// What a delivery's line holds until it is written or thrown away: its message's clear
/// (`ClearWhenWritten`, `src/broker/compute.rs`), which runs once the last copy lets go. The
/// writer only drops it, so it does not need to know what it is.
pub type HeldUntilWritten = Arc<dyn Send + Sync>;

/// The most bytes one write takes from the queue.
const BATCH_BYTES: usize = 64 * 1024;

/// One encoded line, shared by every subscriber it goes to, with what the message it delivers
/// holds until the line is written (none for a reply): a line that holds a message is a
/// delivery, and counts against the subscriber's limits.
#[derive(Clone)]
pub struct Frame {
    pub(super) bytes: Arc<[u8]>,
    /// When the line was made: how long it has waited.
    pub(super) made: Instant,
    pub(super) clear: Option<HeldUntilWritten>,
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
    pub fn delivery(bytes: Vec<u8>, made: Instant, clear: &HeldUntilWritten) -> Frame {
        Frame {
            bytes: bytes.into(),
            made,
            clear: Some(Arc::clone(clear)),
        }
    }

    /// Whether the line delivers a message (a reply holds none).
    pub(super) fn is_delivery(&self) -> bool {
        self.clear.is_some()
    }

    /// What is left to write after the first `written` bytes, for the same message.
    pub(super) fn rest(&self, written: usize) -> Frame {
        Frame {
            bytes: self.bytes[written..].into(),
            made: self.made,
            clear: self.clear.clone(),
        }
    }
}

/// What may wait for one subscriber before it counts as a slow consumer.
#[derive(Clone, Copy, Debug)]
pub struct QueueLimits {
    /// Deliveries queued.
    pub lines: usize,
    /// Bytes of deliveries queued.
    pub bytes: usize,
    /// How long the oldest line not yet written may have waited.
    pub age: Duration,
    /// Bytes of the connection's own answers that may wait before its thread stops reading
    /// until the client takes them (`--max-line-bytes`).
    pub answers: usize,
}

/// Why a delivery was not queued.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// The subscriber lags by one of its limits (or was cut off): it is a slow consumer.
    SlowConsumer,
    /// Its socket failed or its connection ended.
    Gone,
}

/// A place kept in the queue for an ACK, filled in by [`Writer::fill`](super::Writer::fill).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ticket(pub(super) u64);

pub(super) enum Entry {
    /// A line to write.
    Ready(Frame),
    /// A place kept for an ACK, found by its number in the queue (its ticket).
    Kept,
}

/// The queue and who is writing, under the writer's one lock.
#[derive(Default)]
pub(super) struct Queue {
    /// The lines and kept places, oldest first. Each has a number, one more than the one
    /// before it: the head's is `head_seq`, so a kept place is found without a search.
    pub(super) entries: VecDeque<Entry>,
    pub(super) head_seq: u64,
    /// Deliveries queued, and their bytes: what the limits count.
    pub(super) deliveries: usize,
    pub(super) delivery_bytes: usize,
    /// Bytes of the connection's own answers queued (a kept place counts once filled).
    pub(super) answer_bytes: usize,
    /// A thread is writing bytes taken from the head, outside the lock.
    pub(super) writing: bool,
    /// Cut off as a slow consumer: nothing more is queued or written.
    pub(super) slow: bool,
    /// The socket failed: nothing more is queued or written.
    pub(super) failed: bool,
    /// The connection is ending: the writer thread leaves once the queue is empty.
    pub(super) closing: bool,
    /// The connection's thread waits in [`Writer::close`](super::Writer::close) for the queue
    /// to empty.
    pub(super) draining: bool,
}

impl Queue {
    /// Appends `entry`; returns its number.
    pub(super) fn push(&mut self, entry: Entry) -> u64 {
        self.entries.push_back(entry);
        self.head_seq + self.entries.len() as u64 - 1
    }

    /// The entry numbered `seq`, if it is still queued.
    pub(super) fn get_mut(&mut self, seq: u64) -> Option<&mut Entry> {
        let offset = usize::try_from(seq.checked_sub(self.head_seq)?).ok()?;
        self.entries.get_mut(offset)
    }

    /// Whether nothing more will be written.
    pub(super) fn done(&self) -> bool {
        self.slow || self.failed
    }

    /// Whether the writer thread has something to wake for: a ready head nobody writes, or
    /// an end. Waking it for nothing would cost a context switch
    /// a message.
    pub(super) fn worth_waking(&self) -> bool {
        let ready = matches!(self.entries.front(), Some(Entry::Ready(_)));
        (ready && !self.writing) || self.done() || self.closing
    }

    /// Takes the ready lines at the head, up to [`BATCH_BYTES`] (one at least), with their
    /// bytes; none while another thread is writing.
    pub(super) fn take_ready(&mut self) -> (Vec<u8>, Vec<Frame>) {
        let mut bytes = Vec::new();
        let mut batch = Vec::new();
        let ready = |entry: &mut Entry| matches!(entry, Entry::Ready(_));
        while !self.writing
            && bytes.len() < BATCH_BYTES
            && let Some(Entry::Ready(frame)) = self.entries.pop_front_if(ready)
        {
            self.head_seq += 1;
            bytes.extend_from_slice(&frame.bytes);
            batch.push(frame);
        }
        (bytes, batch)
    }

    /// Puts back at the head what of `batch` the first `written` bytes did not cover, and
    /// lets go of the rest (their clears run now).
    pub(super) fn put_back(&mut self, batch: Vec<Frame>, written: usize) {
        if self.done() {
            return; // thrown away already: the batch goes with it
        }
        let mut offset = 0;
        let mut unwritten = Vec::new();
        for frame in batch {
            let len = frame.bytes.len();
            let done = written.saturating_sub(offset).min(len);
            offset += len;
            if frame.is_delivery() {
                self.delivery_bytes = self.delivery_bytes.saturating_sub(done);
                if done == len {
                    self.deliveries = self.deliveries.saturating_sub(1);
                }
            } else {
                self.answer_bytes = self.answer_bytes.saturating_sub(done);
            }
            if done < len {
                unwritten.push(if done == 0 { frame } else { frame.rest(done) });
            }
        }
        // Back at the head, each as the number before it.
        for frame in unwritten.into_iter().rev() {
            self.entries.push_front(Entry::Ready(frame));
            self.head_seq -= 1;
        }
    }

    /// Empties the queue: its lines are dropped (their clears run), and so are the places
    /// kept; numbering goes on after them.
    pub(super) fn throw_away(&mut self) {
        self.head_seq += self.entries.len() as u64;
        self.entries.clear();
        self.deliveries = 0;
        self.delivery_bytes = 0;
        self.answer_bytes = 0;
    }
}
