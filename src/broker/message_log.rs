//! The ordered log of messages accepted but not yet processed, plus the table that recognises
//! resends. The primary appends to it and removes what its worker has processed; the backup
//! mirrors it from REPLICATE and CLEAR lines. On takeover the backup's log is exactly the work
//! the new primary must redo, in order. With `--data-dir` every change is also a line of the
//! log on disk ([`super::journal`]), appended here, where the change is made.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::protocol::{Epoch, Message, MsgId};

use super::journal::{Journal, Record};

/// What [`Log::admit`] decided about a message.
#[derive(Debug, PartialEq, Eq)]
pub enum Admit {
    /// New: appended at this index (the message, now shared with the log).
    New(u64, Arc<Message>),
    /// Its id was already accepted; it is safe once the log up to this index is: the
    /// highest still pending at or below its publisher's latest (0 once all of those were
    /// processed, so a resend after a restart or a takeover waits for nothing new).
    Duplicate(u64),
}

/// How many sequence numbers below a publisher's highest the dedup window tells apart.
pub const WINDOW: u64 = 1024;

/// What the dedup table knows of one publisher: its highest accepted sequence, where that went
/// in the log, and which of the [`WINDOW`] sequences up to it were accepted: a ring of bits in
/// `below`, sequence `s` at bit `s % WINDOW`. Anything older than the window counts as
/// accepted.
#[derive(Clone, Copy, Debug)]
struct Seen {
    seq: u64,
    index: u64,
    below: [u64; (WINDOW / 64) as usize],
}

impl Seen {
    /// Nothing accepted yet at or below `seq`: the caller inserts or fills it next.
    fn new(seq: u64, index: u64) -> Self {
        let below = [0; (WINDOW / 64) as usize];
        Seen { seq, index, below }
    }

    /// The word of `below` and the bit in it that stand for `seq`.
    fn bit(seq: u64) -> (usize, u64) {
        ((seq % WINDOW / 64) as usize, 1 << (seq % 64))
    }

    fn contains(&self, seq: u64) -> bool {
        let (word, bit) = Seen::bit(seq);
        seq <= self.seq && (self.seq - seq >= WINDOW || self.below[word] & bit != 0)
    }

    fn insert(&mut self, seq: u64, index: u64) {
        if seq > self.seq {
            // The window moves up: the bits of the sequences it now covers stood for ones
            // that fell out of it.
            for newer in self.seq + 1..=seq.min(self.seq.saturating_add(WINDOW)) {
                let (word, bit) = Seen::bit(newer);
                self.below[word] &= !bit;
            }
            self.seq = seq;
            self.index = index;
        }
        if self.seq - seq < WINDOW {
            let (word, bit) = Seen::bit(seq);
            self.below[word] |= bit;
        }
    }

    /// Everything up to `seq` was accepted (a SEEN line from a syncing primary).
    fn fill_to(&mut self, seq: u64, index: u64) {
        if seq >= self.seq {
            let below = [u64::MAX; (WINDOW / 64) as usize];
            *self = Seen { seq, index, below };
        }
    }
}

/// Pending messages in log order, and the dedup table.
///
/// The table keeps, per publisher, its highest accepted sequence and a window of the 1,024
/// below it (the window NATS and Kafka keep for the same job): a resend is recognised exactly,
/// and a message that arrives late but is new — one a stepped-down primary hands over after
/// a split, while the publisher has moved on — is still accepted. The table holds at most
/// `max_publishers` publishers; when it is full the least recently active half is forgotten.
#[derive(Debug)]
pub struct Log {
    pending: BTreeMap<u64, Arc<Message>>,
    seen: HashMap<u64, Seen>,
    next_index: u64,
    max_publishers: usize,
    /// The log on disk, if there is one.
    journal: Option<Arc<Journal>>,
    /// About how many bytes a rewrite of the log on disk takes (`Log::held_bytes`).
    pending_bytes: usize,
}

/// About what one line of the log on disk adds to a message's topic and payload.
const LINE_BYTES: usize = 64;

impl Log {
    /// An empty log whose dedup table remembers up to `max_publishers` publishers.
    pub fn new(max_publishers: usize) -> Self {
        Log {
            pending: BTreeMap::new(),
            seen: HashMap::new(),
            next_index: 1,
            max_publishers: max_publishers.max(1),
            journal: None,
            pending_bytes: 0,
        }
    }

    /// From now on, every change is appended to `journal` too.
    pub fn attach(&mut self, journal: Arc<Journal>) {
        self.journal = Some(journal);
    }

    /// Appends `record` to the log on disk, if there is one, and rewrites it once it grew
    /// past its bound.
    fn record(&self, record: Record) {
        if let Some(journal) = &self.journal {
            let snapshot = |epoch, out: &mut Vec<u8>| self.write_snapshot(epoch, out);
            journal.append(&record, self.held_bytes(), snapshot);
        }
    }

    /// About how many bytes [`Log::write_snapshot`] writes.
    fn held_bytes(&self) -> usize {
        let seen = self.seen.len().saturating_mul(LINE_BYTES);
        self.pending_bytes.saturating_add(seen)
    }

    /// What the log holds, as the lines that make it again: the epoch (with the next index),
    /// every publisher's highest accepted sequence, every pending message in order.
    pub fn write_snapshot(&self, epoch: Epoch, out: &mut Vec<u8>) {
        let next_index = self.next_index;
        Record::Epoch { epoch, next_index }.encode(out);
        for (&publisher, seen) in &self.seen {
            let (index, seq) = (seen.index, seen.seq);
            Record::Seen {
                index,
                id: MsgId { publisher, seq },
            }
            .encode(out);
        }
        for (&index, message) in &self.pending {
            let message = Arc::clone(message);
            Record::Hold { index, message }.encode(out);
        }
    }

    /// We lead or follow `epoch` from now on (a line of the log on disk).
    pub fn begin_epoch(&self, epoch: Epoch) {
        let next_index = self.next_index;
        self.record(Record::Epoch { epoch, next_index });
    }

    /// The index the next admitted message gets.
    pub fn next_index(&self) -> u64 {
        self.next_index
    }

    /// Counts indexes on from `next_index` at least (read back from the log on disk, so
    /// indexes are never reused across a restart).
    pub fn resume_at(&mut self, next_index: u64) {
        self.next_index = self.next_index.max(next_index);
    }

    /// Accepts a message on the primary: a resend of an accepted id is a duplicate, anything
    /// else is appended.
    pub fn admit(&mut self, message: Message) -> Admit {
        if let Some(seen) = self.seen.get(&message.id.publisher)
            && seen.contains(message.id.seq)
        {
            let held = self.pending.range(..=seen.index).next_back();
            return Admit::Duplicate(held.map_or(0, |(&index, _)| index));
        }
        let index = self.next_index;
        let message = Arc::new(message);
        self.insert(index, Arc::clone(&message));
        Admit::New(index, message)
    }

    /// Stores a message at `index` (the backup's side of REPLICATE, and [`Log::admit`]'s).
    pub fn insert(&mut self, index: u64, message: Arc<Message>) {
        self.note(message.id, index, Seen::insert);
        self.next_index = self.next_index.max(index.saturating_add(1));
        self.pending_bytes += message.size() + LINE_BYTES;
        if let Some(old) = self.pending.insert(index, Arc::clone(&message)) {
            self.pending_bytes -= old.size() + LINE_BYTES;
        }
        self.record(Record::Hold { index, message });
    }

    /// Records that a publisher's messages up to `id` were accepted, without holding them
    /// (SEEN, from a primary syncing us).
    pub fn note_seen(&mut self, id: MsgId, index: u64) {
        self.note(id, index, Seen::fill_to);
        self.record(Record::Seen { index, id });
    }

    /// Records `id` at `index` in its publisher's entry (`Seen::insert` or `Seen::fill_to`);
    /// once the table is over its bound, forgets the least recently active half.
    fn note(&mut self, id: MsgId, index: u64, record: fn(&mut Seen, u64, u64)) {
        let new = Seen::new(id.seq, index);
        record(self.seen.entry(id.publisher).or_insert(new), id.seq, index);
        if self.seen.len() <= self.max_publishers {
            return;
        }
        let mut indexes: Vec<u64> = self.seen.values().map(|s| s.index).collect();
        indexes.sort_unstable();
        let cutoff = indexes[indexes.len() / 2];
        self.seen.retain(|_, s| s.index > cutoff);
    }

    /// Drops the message at `index` once processed (CLEAR); returns it if it was held.
    pub fn remove(&mut self, index: u64) -> Option<Arc<Message>> {
        let message = self.pending.remove(&index)?;
        self.pending_bytes -= message.size() + LINE_BYTES;
        self.record(Record::Done { index });
        Some(message)
    }

    /// Whether the message at `index` still waits to be processed.
    pub fn holds(&self, index: u64) -> bool {
        self.pending.contains_key(&index)
    }

    /// Forgets everything (a backup about to be synced by a new primary). The index keeps
    /// counting up, so indexes are never reused by this broker.
    pub fn clear(&mut self) {
        self.pending.clear();
        self.seen.clear();
        self.pending_bytes = 0;
        self.record(Record::Reset);
    }

    /// The pending messages in log order.
    pub fn pending(&self) -> impl Iterator<Item = (u64, &Arc<Message>)> {
        self.pending.iter().map(|(i, m)| (*i, m))
    }

    /// The highest sequence accepted from each publisher, with its index, for a sync.
    pub fn seen(&self) -> impl Iterator<Item = (MsgId, u64)> + '_ {
        let entry = |(&publisher, &Seen { seq, index, .. })| (MsgId { publisher, seq }, index);
        self.seen.iter().map(entry)
    }

    /// How many messages wait to be processed.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// Whether nothing waits to be processed.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The index an admission went to, and whether it was new.
    fn admitted(a: Admit) -> (bool, u64) {
        match a {
            Admit::New(i, _) => (true, i),
            Admit::Duplicate(i) => (false, i),
        }
    }

    fn msg(publisher: u64, seq: u64) -> Message {
        Message {
            id: MsgId { publisher, seq },
            topic: "t".into(),
            payload: seq.to_string(),
        }
    }

    #[test]
    fn resends_are_duplicates_of_the_latest_index() {
        let mut log = Log::new(10);
        assert_eq!(admitted(log.admit(msg(1, 1))), (true, 1));
        assert_eq!(admitted(log.admit(msg(1, 2))), (true, 2));
        assert_eq!(admitted(log.admit(msg(2, 1))), (true, 3));
        assert_eq!(admitted(log.admit(msg(1, 1))), (false, 2));
        assert_eq!(admitted(log.admit(msg(1, 2))), (false, 2));
        assert_eq!(admitted(log.admit(msg(1, 3))), (true, 4));
        assert_eq!(log.len(), 4);
        // Once processed, a resend waits for the highest still held below, or nothing.
        log.remove(4);
        assert_eq!(admitted(log.admit(msg(1, 3))), (false, 3));
        log.remove(3);
        log.remove(2);
        assert_eq!(admitted(log.admit(msg(1, 3))), (false, 1));
        log.remove(1);
        assert_eq!(admitted(log.admit(msg(1, 3))), (false, 0));
    }

    #[test]
    fn mirrored_log_keeps_order_and_dedup_state() {
        let mut backup = Log::new(10);
        backup.insert(7, Arc::new(msg(1, 5)));
        backup.insert(8, Arc::new(msg(1, 6)));
        backup.note_seen(
            MsgId {
                publisher: 2,
                seq: 9,
            },
            3,
        );
        assert!(backup.remove(7).is_some());
        let order: Vec<u64> = backup.pending().map(|(i, _)| i).collect();
        assert_eq!(order, vec![8]);
        // After a takeover the mirrored table recognises resends of both publishers.
        assert_eq!(admitted(backup.admit(msg(1, 6))), (false, 8));
        assert_eq!(admitted(backup.admit(msg(2, 9))), (false, 0), "none held");
        assert_eq!(admitted(backup.admit(msg(2, 10))), (true, 9));
    }

    #[test]
    fn a_late_message_inside_the_window_is_new_and_a_resend_is_not() {
        let mut log = Log::new(10);
        for seq in [1, 2, 3, 7, 8] {
            assert!(admitted(log.admit(msg(1, seq))).0);
        }
        // 4..=6 never came here (a stepped-down primary held them): they are new.
        assert_eq!(admitted(log.admit(msg(1, 5))), (true, 6));
        assert!(!admitted(log.admit(msg(1, 5))).0);
        assert!(!admitted(log.admit(msg(1, 7))).0);
        // Far behind the window counts as seen.
        assert!(admitted(log.admit(msg(1, 5000))).0);
        assert!(!admitted(log.admit(msg(1, 4))).0);
        assert!(admitted(log.admit(msg(1, 4999 - 64))).0);
    }

    #[test]
    fn a_synced_table_counts_everything_up_to_seen_as_accepted() {
        let mut log = Log::new(10);
        log.note_seen(
            MsgId {
                publisher: 1,
                seq: 40,
            },
            0,
        );
        for seq in [1, 35, 40] {
            assert!(!admitted(log.admit(msg(1, seq))).0, "{seq}");
        }
        assert!(admitted(log.admit(msg(1, 41))).0);
    }

    #[test]
    fn the_window_shifts_across_word_boundaries() {
        let mut seen = Seen::new(10, 0);
        for seq in [10, 9, 5, 2] {
            seen.insert(seq, 0);
        }
        for by in [1, 63, 64, 65, 130] {
            let mut s = seen;
            s.insert(10 + by, 0);
            for seq in [10, 9, 5, 2] {
                assert!(s.contains(seq), "shift {by}: {seq}");
            }
            for seq in [8, 7, 3] {
                assert!(!s.contains(seq), "shift {by}: {seq}");
            }
        }
    }

    #[test]
    fn dedup_table_is_bounded() {
        let mut log = Log::new(4);
        for p in 0..100 {
            log.admit(msg(p, 1));
        }
        assert!(log.seen().count() <= 4);
        // The most recent publisher is still recognised.
        assert_eq!(admitted(log.admit(msg(99, 1))), (false, 100));
    }
}
