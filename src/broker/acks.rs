//! ACKs that wait for the backup, answered by the thread that learns their verdict.
//!
//! A connection's thread does not wait for the backup: once a publish is admitted and not yet
//! safe, it keeps the ACK's place in its connection's [`Writer`] ([`Writer::reserve`]), files
//! it here, and goes back to reading. Whoever learns the verdict fills the place in, and the
//! writer sends it, in its turn: so a stop-and-wait publisher costs one wake per message (the
//! reader that sees the backup's confirmation writes the ACK), and a publisher that pipelines
//! gets its ACKs in order while its next publishes are admitted.
//!
//! ```text
//!  publisher ─PUB─▶ [conn-N] admit ─ not safe yet: keep a place, file (index, ticket) ─▶ read on
//!                                                       │
//!  backup ─REPLICATED|i─▶ [repl-reader] confirm(i) ─ every ACK filed at ≤ i ─▶ fill ─▶ writer
//!  disk ─ written or synced to i ─▶ [journal] ───── every ACK filed at ≤ i ─▶ fill ─▶ writer
//!  health or role change, a deadline ─▶ [acks] ─ every ACK it decides ──────▶ fill ─▶ writer
//! ```
//!
//! The verdict is the one the broker gives when asked without waiting ([`Verdicts`], which
//! the node answers with `Node::await_safe_until`; a refusal that is not decided yet,
//! `Refusal::TimedOut`, `Refusal::Undelivered` or `Refusal::Unwritten`, may still turn into an
//! ACK), so each answer (ACK, degraded ACK, `--require-backup`, timeout, role change, a full
//! disk, shutting down) reads as it
//! would had the connection's thread waited itself. The book asks the broker only through
//! that trait, so it does not depend on the node that holds it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use parking_lot::Mutex;

use crate::protocol::Reply;

use super::verdict::Admitted;
use super::writer::{Ticket, Writer};

/// What the book asks of the broker that holds it.
pub trait Verdicts {
    /// The book.
    fn acks(&self) -> &Acks;
    /// The answer to `admitted` now, without waiting: `ack`, or the refusal in words; `None`
    /// while it is not decided yet (`Refusal::TimedOut`, `Refusal::Undelivered`), unless
    /// `give_up`.
    fn answer_now(&self, admitted: &Admitted, ack: &Reply, give_up: bool) -> Option<Reply>;
    /// How long a publish may wait for its verdict.
    fn ack_timeout(&self) -> Duration;
    /// The highest log index the backup has confirmed (and, with a log on disk, that is on
    /// disk too).
    fn confirmed(&self) -> u64;
    /// Whether the broker is stopping.
    fn stopping(&self) -> bool;
}

/// An admitted publish whose ACK waits for its verdict, and where the ACK goes.
struct Filed {
    writer: Arc<Writer>,
    ticket: Ticket,
    admitted: Admitted,
    ack: Reply,
    deadline: Instant,
}

/// A filed ACK's key: its log index, then its connection.
type Key = (u64, u64);

/// Every filed ACK, by log index.
pub struct Acks {
    book: Mutex<BTreeMap<Key, Filed>>,
    /// Rings the `acks` thread.
    alarm: (Sender<()>, Receiver<()>),
}

impl Default for Acks {
    fn default() -> Self {
        Acks {
            book: Mutex::default(),
            alarm: crossbeam_channel::bounded(1),
        }
    }
}

impl Acks {
    /// The alarm that wakes the `acks` thread; `Safety` rings it at every change of the
    /// backup's health and of the role.
    pub fn alarm(&self) -> Sender<()> {
        self.alarm.0.clone()
    }

    /// Wakes the `acks` thread to look at what is filed (a message a witnessed primary holds
    /// alone was delivered).
    pub fn ring(&self) {
        let _ = self.alarm.0.try_send(());
    }

    /// Files the ACK of `admitted`, keeping its place in its connection's `writer`,
    /// unless it is decided already: then it returns the answer, for the caller to send.
    pub fn file(
        &self,
        broker: &impl Verdicts,
        writer: &Arc<Writer>,
        admitted: Admitted,
        ack: Reply,
    ) -> Option<Reply> {
        // Asked under the book's lock: a confirmation recorded after this finds the filing.
        let mut book = self.book.lock();
        if let Some(reply) = broker.answer_now(&admitted, &ack, false) {
            return Some(reply);
        }
        let filed = Filed {
            writer: Arc::clone(writer),
            ticket: writer.reserve(),
            admitted,
            ack,
            deadline: Instant::now() + broker.ack_timeout(),
        };
        // No need to wake the `acks` thread: it looks again within one ACK timeout of its
        // last look (`sweep`), before this filing's deadline.
        book.insert((filed.admitted.index, writer.conn), filed);
        None
    }

    /// The backup confirmed every index up to `confirmed`: answers the ACKs filed for them.
    /// Run by the replication reader after [`super::safety::Safety::confirm`].
    pub fn answer_confirmed(&self, broker: &impl Verdicts, confirmed: u64) {
        let ready = {
            let mut book = self.book.lock();
            if book
                .keys()
                .next()
                .is_none_or(|&(first, _)| first > confirmed)
            {
                return;
            }
            // Saturating: no log index reaches `u64::MAX`, whatever a backup confirms.
            let later = book.split_off(&(confirmed.saturating_add(1), 0));
            std::mem::replace(&mut *book, later)
        };
        if self.answer_all(broker, ready) {
            // Filed again while the `acks` thread may have set its timer without them.
            self.ring();
        }
    }

    /// Answers every entry of `entries` that is decided (or past its deadline), filling in
    /// its ACK's place, and files the others again (then returns `true`). Each connection's
    /// ACKs are filled in first and then leave in one write.
    fn answer_all(&self, broker: &impl Verdicts, entries: BTreeMap<Key, Filed>) -> bool {
        let mut answered: Vec<Arc<Writer>> = Vec::new();
        let mut undecided = Vec::new();
        for (key, filed) in entries {
            let give_up = Instant::now() >= filed.deadline;
            match broker.answer_now(&filed.admitted, &filed.ack, give_up) {
                Some(reply) => {
                    filed.writer.fill(filed.ticket, &reply);
                    answered.push(filed.writer);
                }
                None => undecided.push((key, filed)),
            }
        }
        answered.sort_by_key(|w| w.conn);
        answered.dedup_by_key(|w| w.conn);
        for writer in answered {
            writer.flush();
        }
        let filed_again = !undecided.is_empty();
        self.book.lock().extend(undecided);
        filed_again
    }

    /// One round of the `acks` thread: answers every filed ACK that is decided (or past its
    /// deadline). Returns when to come back: the earliest deadline filed, and at the latest
    /// one ACK timeout from now, since what is filed from now on has a deadline at least that
    /// far away. So a filing never has to wake the thread, which costs a stop-and-wait
    /// publisher nothing per message.
    fn sweep(&self, broker: &impl Verdicts) -> Instant {
        let now = Instant::now();
        let filed = std::mem::take(&mut *self.book.lock());
        self.answer_all(broker, filed);
        let next = self
            .book
            .lock()
            .values()
            .map(|f| f.deadline)
            .fold(now + broker.ack_timeout(), Instant::min);
        // A confirmation recorded while the entries were out of the book did not find them.
        self.answer_confirmed(broker, broker.confirmed());
        next
    }
}

/// The `acks` thread: answers filed ACKs when the backup's health or the role changes (the
/// alarm rings), or when their deadline passes; ends when the broker stops.
pub fn run_acks(broker: Arc<impl Verdicts>) {
    let acks = broker.acks();
    loop {
        let next = acks.sweep(&*broker);
        if broker.stopping() {
            return;
        }
        // The alarm's sender lives in the node, so a receive ends only by the alarm or the
        // timer.
        let _ = acks.alarm.1.recv_deadline(next);
    }
}
