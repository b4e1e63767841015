//! A published message and its id: the fields every line that carries one writes, and the
//! publisher id a key files its messages under.

use std::fmt;
use std::io::Write;

use super::Epoch;

/// Identifies one published message: the publisher that made it and that publisher's sequence
/// number. Brokers use it to drop resends and subscribers to drop replays.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MsgId {
    /// A number the publisher drew at random when it started (a broker's node id for messages
    /// that arrived as seed-form `PUBLISH`, which carry no id).
    pub publisher: u64,
    /// The publisher's sequence number, starting at 1.
    pub seq: u64,
}

/// The publisher id a `PUB` line's key files its messages under: the top 63 bits of
/// SHA-256 of the key, with the top bit set.
///
/// A publisher sends its *key*, a random number only it knows; deliveries, dedup and the
/// subscriber's order use the id derived from it. Whoever reads a delivery learns the id, never
/// the key, so no other client can publish under that id, and none can suppress or reorder
/// another publisher's messages by claiming it. The top bit keeps these ids apart from the
/// ones a broker gives seed-form `PUBLISH` lines (its node id, below 2^20).
///
/// ```
/// use edgebroker::protocol::publisher_id;
///
/// assert_eq!(publisher_id(42), publisher_id(42));
/// assert_ne!(publisher_id(42), publisher_id(43));
/// assert!(publisher_id(42) >= 1 << 63);
/// ```
pub fn publisher_id(key: u64) -> u64 {
    use sha2::{Digest, Sha256};
    let digest = Sha256::new()
        .chain_update(b"edgebroker publisher key ")
        .chain_update(key.to_be_bytes())
        .finalize();
    let first = digest.first_chunk().expect("a digest of 32 bytes");
    u64::from_be_bytes(*first) | 1 << 63
}

impl fmt::Display for MsgId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.publisher, self.seq)
    }
}

/// A published message as brokers store, replicate and forward it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// Its identity, for deduplication.
    pub id: MsgId,
    /// The topic it was published to; never empty, never contains `|`.
    pub topic: String,
    /// The payload; never contains `\n`.
    pub payload: String,
}

impl Message {
    /// The most bytes a broker adds around a message's topic and payload in any line it builds
    /// from it: the longest is `REPLICATE|<epoch>|<index>|<publisher>|<seq>|<topic>|<payload>`
    /// with every number at its widest.
    pub const ENVELOPE_BYTES: usize = "REPLICATE|".len()
        + 15 // term, at most Epoch::MAX_TERM
        + 1
        + 10 // node, a u32
        + 4 // the `|` after epoch, index, publisher and seq
        + 3 * 20 // index, publisher, seq: u64s
        + 1; // the `|` between topic and payload

    /// `REPLICATE|<epoch>|<index>|<publisher>|<seq>|<topic>|<payload>`, `\n` included, from a
    /// borrowed message (the primary keeps the message in its log).
    pub(crate) fn encode_replicate(&self, epoch: Epoch, index: u64, out: &mut Vec<u8>) {
        let _ = writeln!(out, "REPLICATE|{epoch}|{index}|{self}");
    }

    /// `MSG|<epoch>|<publisher>|<seq>|<topic>|<payload>`, `\n` included: a delivery to an id
    /// subscriber.
    pub(crate) fn encode_msg(&self, epoch: Epoch, out: &mut Vec<u8>) {
        let _ = writeln!(out, "MSG|{epoch}|{self}");
    }

    /// `<payload>`, `\n` included: a delivery to a seed-form subscriber.
    pub(crate) fn encode_payload(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.payload.as_bytes());
        out.push(b'\n');
    }

    /// Its topic and payload bytes: what it counts against the brokers' byte limits.
    pub fn size(&self) -> usize {
        self.topic.len().saturating_add(self.payload.len())
    }

    /// Whether every line built from this message (REPLICATE, HANDOFF, ADOPT, MSG) fits in
    /// `max_line` bytes, so a broker that accepts it can replicate, hand over and deliver it.
    pub fn fits(&self, max_line: usize) -> bool {
        self.size().saturating_add(Message::ENVELOPE_BYTES) <= max_line
    }
}

/// `<publisher>|<seq>|<topic>|<payload>`: the message's fields as every line that carries it
/// writes them.
impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Message { id, topic, payload } = self;
        write!(f, "{}|{}|{topic}|{payload}", id.publisher, id.seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Request, msg};

    #[test]
    fn the_envelope_covers_the_longest_line_built_from_a_message() {
        let message = msg(u64::MAX, u64::MAX, "topic", "payload");
        let widest = Request::Replicate {
            epoch: Epoch {
                term: Epoch::MAX_TERM,
                node: u32::MAX,
            },
            index: u64::MAX,
            message: message.clone(),
        };
        let mut line = Vec::new();
        widest.encode(&mut line);
        let without_newline = line.len() - 1;
        assert_eq!(
            without_newline,
            "topic".len() + "payload".len() + Message::ENVELOPE_BYTES
        );
        assert!(message.fits(without_newline));
        assert!(!message.fits(without_newline - 1));
    }

    #[test]
    fn publisher_ids_come_from_keys_and_never_meet_broker_ids() {
        let ids: std::collections::HashSet<u64> = (0..1000).map(publisher_id).collect();
        assert_eq!(ids.len(), 1000);
        assert!(
            ids.iter()
                .all(|&id| id >= 1 << 63 && id != u64::from(u32::MAX))
        );
    }
}
