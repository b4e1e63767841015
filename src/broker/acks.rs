//! ACKs that wait for the backup, written by the thread that learns their verdict.
//!
//! A publisher that waits for its ACK (stop and wait) sends nothing more until it has it, so
//! its connection thread need not wait for the backup too: once a message is admitted and not
//! yet safe, the thread files the ACK here and goes back to `read`. That is one sleep per
//! message instead of two (one in `read`, one until the confirmation), and one thread fewer to
//! wake when the confirmation comes.
//!
//! ```text
//!  publisher ─PUB─▶ [conn-N] admit ─ not safe yet: file (index, ACK) ─▶ read the next line
//!                                                       │
//!  backup ─REPLICATED|i─▶ [repl-reader] confirm(i) ─ every ACK filed at ≤ i ─▶ write it ─▶ publisher
//!  health or role change, a deadline ─▶ [acks] ─ every ACK it decides ──────▶ write ACK or ERR
//! ```
//!
//! The verdict is the one [`Node::await_safe_until`] gives, asked without waiting (a
//! refusal that [`Refusal::is_undecided`] may still turn into an ACK), so each
//! answer (ACK, degraded ACK, `--require-backup`, timeout, role change, shutting down) reads as
//! it would had the connection thread waited itself. Replies keep their order: a connection
//! files an ACK only when it has nothing else to write, files one at most, and takes it back
//! ([`AckSlot::take_back`]) before it handles its next line, writes anything, or closes; the
//! ACK's writer holds the slot's lock while it writes. A socket with no room for the ACK (its
//! client does not read) blocks that writer for [`SHARED_WRITE_TIMEOUT`] once: the rest goes to
//! the `acks` thread, which retries, and the connection waits for its own ACKs from then on.

use std::collections::BTreeMap;
use std::net::Shutdown;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use log::debug;
use parking_lot::Mutex;

use crate::connection::{Stream, is_timeout, write_by};
use crate::protocol::Reply;

use super::node::Node;
use super::path::{Admitted, Refusal};

/// How long one write into a publisher's socket may block the thread that writes its ACK for
/// it: it has other publishers to answer.
pub const SHARED_WRITE_TIMEOUT: Duration = Duration::from_millis(2);

/// How often the `acks` thread retries an ACK whose socket had no room.
const RETRY: Duration = Duration::from_millis(5);

/// One connection's filed ACK, shared between its thread and the threads that may answer it.
pub struct AckSlot {
    stream: Stream,
    filed: Mutex<Filed>,
    /// Set once another thread could not write this connection's ACK: it does not read its
    /// replies, and waits for its own ACKs from then on.
    slow: AtomicBool,
    /// How long a reply may wait for room before the client counts as gone.
    give_up: Duration,
}

enum Filed {
    Nothing,
    Waiting(Pending),
    /// Answered, but the socket had no room: the rest of the line, and since when it waits.
    Unwritten(Vec<u8>, Instant),
}

/// An admitted publish and the ACK it gets once it is safe.
pub struct Pending {
    admitted: Admitted,
    ack: Reply,
    deadline: Instant,
}

impl Pending {
    /// Waits as the connection thread always did, and gives the answer.
    pub fn wait(self, node: &Node) -> Reply {
        answer(
            node,
            node.await_safe_until(&self.admitted, self.deadline),
            self.ack,
        )
    }
}

/// What a connection's thread finds when it takes its slot back.
pub enum TakenBack {
    /// Nothing was filed, or it was written.
    Nothing,
    /// The ACK is still undecided: wait for it.
    Waiting(Pending),
    /// The answer's bytes that found no room: write them first.
    Unwritten(Vec<u8>),
}

/// How an attempt to answer a filed ACK went.
enum Outcome {
    /// Written, or not ours to write (taken back, or filed again for another index).
    Done,
    /// Not decided yet.
    Undecided,
    /// Decided, but the socket had no room for all of it.
    Stuck,
}

impl AckSlot {
    /// A slot for the connection on `stream`, whose replies may wait `give_up` for room. From
    /// now on a write into `stream` blocks at most [`SHARED_WRITE_TIMEOUT`]: the connection's
    /// own writes must retry (`crate::connection::write_by`).
    pub fn new(stream: Stream, give_up: Duration) -> Arc<AckSlot> {
        let _ = stream.set_write_timeout(Some(SHARED_WRITE_TIMEOUT));
        Arc::new(AckSlot {
            stream,
            filed: Mutex::new(Filed::Nothing),
            slow: AtomicBool::new(false),
            give_up,
        })
    }

    /// Whether the connection must wait for its ACKs itself (see [`AckSlot::slow`]).
    pub fn is_slow(&self) -> bool {
        self.slow.load(Ordering::Acquire)
    }

    /// Takes the filed ACK back; once this returns, nobody else writes to the socket.
    pub fn take_back(&self) -> TakenBack {
        match std::mem::replace(&mut *self.filed.lock(), Filed::Nothing) {
            Filed::Nothing => TakenBack::Nothing,
            Filed::Waiting(pending) => TakenBack::Waiting(pending),
            Filed::Unwritten(bytes, _) => TakenBack::Unwritten(bytes),
        }
    }

    /// Answers the ACK filed for `index`, if it is decided; writes it under the slot's lock.
    fn answer(&self, node: &Node, index: u64) -> Outcome {
        let mut filed = self.filed.lock();
        let pending = match std::mem::replace(&mut *filed, Filed::Nothing) {
            Filed::Waiting(p) if p.admitted.index() == index => p,
            other => {
                *filed = other;
                return Outcome::Done;
            }
        };
        let verdict = node.await_safe_until(&pending.admitted, Instant::now());
        if verdict.as_ref().is_err_and(Refusal::is_undecided) && Instant::now() < pending.deadline {
            *filed = Filed::Waiting(pending);
            return Outcome::Undecided;
        }
        let mut bytes = Vec::with_capacity(64);
        answer(node, verdict, pending.ack).encode(&mut bytes);
        let (written, result) = write_by(&self.stream, &bytes, Instant::now());
        match result {
            Ok(()) => Outcome::Done,
            Err(e) if is_timeout(&e) => {
                self.slow.store(true, Ordering::Release);
                bytes.drain(..written);
                *filed = Filed::Unwritten(bytes, Instant::now());
                Outcome::Stuck
            }
            // The connection's thread sees the socket fail too, and closes it.
            Err(e) => {
                debug!("writing an ACK failed: {e}");
                Outcome::Done
            }
        }
    }

    /// Tries again to write an answer that found no room; `true` while some still waits. A
    /// client that takes none of it for the connection's write timeout counts as gone.
    fn retry(&self) -> bool {
        let mut filed = self.filed.lock();
        let Filed::Unwritten(bytes, since) = &mut *filed else {
            return false;
        };
        let (written, result) = write_by(&self.stream, bytes, Instant::now());
        bytes.drain(..written);
        match result {
            Ok(()) => {}
            Err(e) if is_timeout(&e) && since.elapsed() < self.give_up => return true,
            Err(e) => {
                debug!(
                    "a publisher took no ACK for {:?} ({e}); closing",
                    self.give_up
                );
                let _ = self.stream.shutdown(Shutdown::Both);
            }
        }
        *filed = Filed::Nothing;
        false
    }
}

/// The ACK or the `ERR` for a verdict of [`Node::await_safe_until`].
fn answer(node: &Node, verdict: Result<(), Refusal>, ack: Reply) -> Reply {
    match verdict {
        Ok(()) => ack,
        Err(refusal) => Reply::Err(node.explain(&refusal)),
    }
}

/// Every filed ACK, by log index.
pub struct Acks {
    book: Mutex<Book>,
    alarm: Sender<()>,
    alarm_rx: Receiver<()>,
}

/// A filed ACK's key: its log index, then its connection.
type Key = (u64, u64);

#[derive(Default)]
struct Book {
    filed: BTreeMap<Key, (Arc<AckSlot>, Instant)>,
    /// Slots whose answer found no room.
    unwritten: Vec<Arc<AckSlot>>,
    /// The `acks` thread sleeps until rung: the next filing rings it, so it sets its timer.
    asleep: bool,
}

impl Default for Acks {
    fn default() -> Self {
        let (alarm, alarm_rx) = crossbeam_channel::bounded(1);
        Acks {
            book: Mutex::default(),
            alarm,
            alarm_rx,
        }
    }
}

impl Acks {
    /// The alarm that wakes the `acks` thread; `Safety` rings it at every change of the
    /// backup's health and of the role.
    pub fn alarm(&self) -> Sender<()> {
        self.alarm.clone()
    }

    /// Wakes the `acks` thread to look at what is filed (a message a witnessed primary holds
    /// alone was delivered).
    pub fn ring(&self) {
        let _ = self.alarm.try_send(());
    }

    /// Files the ACK of `admitted` for the connection `conn`, unless it is decided already:
    /// then it returns the answer, for the caller to write. `slot` must hold nothing.
    pub fn file(
        &self,
        node: &Node,
        slot: &Arc<AckSlot>,
        conn: u64,
        admitted: Admitted,
        ack: Reply,
    ) -> Option<Reply> {
        // Asked under the book's lock: a confirmation recorded after this finds the filing.
        let mut book = self.book.lock();
        let verdict = node.await_safe_until(&admitted, Instant::now());
        if !verdict.as_ref().is_err_and(Refusal::is_undecided) {
            return Some(answer(node, verdict, ack));
        }
        let deadline = Instant::now() + node.ack_timeout();
        let key = (admitted.index(), conn);
        *slot.filed.lock() = Filed::Waiting(Pending {
            admitted,
            ack,
            deadline,
        });
        book.filed.insert(key, (Arc::clone(slot), deadline));
        if book.asleep {
            book.asleep = false;
            let _ = self.alarm.try_send(());
        }
        None
    }

    /// The backup confirmed every index up to `confirmed`: writes the ACKs filed for them. Run
    /// by the replication reader after [`super::safety::Safety::confirm`].
    pub fn answer_confirmed(&self, node: &Node, confirmed: u64) {
        let ready = {
            let mut book = self.book.lock();
            match book.filed.first_key_value() {
                Some(((first, _), _)) if *first <= confirmed => {}
                _ => return,
            }
            match confirmed.checked_add(1) {
                Some(next) => {
                    let later = book.filed.split_off(&(next, 0));
                    std::mem::replace(&mut book.filed, later)
                }
                None => std::mem::take(&mut book.filed),
            }
        };
        let mut stuck = Vec::new();
        let mut undecided = Vec::new();
        for (key, (slot, deadline)) in ready {
            match slot.answer(node, key.0) {
                Outcome::Done => {}
                Outcome::Stuck => stuck.push(slot),
                Outcome::Undecided => undecided.push((key, (slot, deadline))),
            }
        }
        if !stuck.is_empty() || !undecided.is_empty() {
            let mut book = self.book.lock();
            book.unwritten.extend(stuck);
            for (key, entry) in undecided {
                book.filed.entry(key).or_insert(entry);
            }
            book.asleep = false;
            let _ = self.alarm.try_send(());
        }
    }

    /// One round of the `acks` thread: answers every filed ACK that is decided (or past its
    /// deadline), retries answers that found no room. Returns when to come back (`None`: not
    /// before the alarm rings).
    fn sweep(&self, node: &Node) -> Option<Instant> {
        let now = Instant::now();
        let (filed, unwritten) = {
            let mut book = self.book.lock();
            (
                std::mem::take(&mut book.filed),
                std::mem::take(&mut book.unwritten),
            )
        };
        let mut keep = Vec::new();
        let mut stuck: Vec<Arc<AckSlot>> = unwritten.into_iter().filter(|s| s.retry()).collect();
        for (key, (slot, deadline)) in filed {
            match slot.answer(node, key.0) {
                Outcome::Done => {}
                Outcome::Stuck => stuck.push(slot),
                Outcome::Undecided => keep.push((key, (slot, deadline))),
            }
        }
        let next = {
            let mut book = self.book.lock();
            for (key, entry) in keep {
                book.filed.entry(key).or_insert(entry);
            }
            book.unwritten.extend(stuck);
            // What is filed from now on has a deadline at least one timeout away.
            let mut next = book
                .filed
                .values()
                .map(|(_, deadline)| *deadline)
                .fold(now + node.ack_timeout(), Instant::min);
            if !book.unwritten.is_empty() {
                next = next.min(now + RETRY);
            }
            book.asleep = book.filed.is_empty() && book.unwritten.is_empty();
            (!book.asleep).then_some(next)
        };
        // A confirmation recorded while the entries were out of the book did not find them.
        self.answer_confirmed(node, node.safety.confirmed());
        next
    }
}

/// The `acks` thread: answers filed ACKs when the backup's health or the role changes (the
/// alarm rings), or when their deadline passes; ends when the broker stops.
pub fn run_acks(node: Arc<Node>) {
    let alarm = node.acks.alarm_rx.clone();
    loop {
        let next = node.acks.sweep(&node);
        if node.stopping() {
            return;
        }
        // The alarm's sender lives in the node, so a receive ends only by the alarm or the
        // timer.
        match next {
            Some(at) => {
                let _ = alarm.recv_deadline(at);
            }
            None => {
                let _ = alarm.recv();
            }
        }
    }
}
