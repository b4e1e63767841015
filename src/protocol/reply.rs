//! The broker's replies: every line a broker sends, encoded to bytes and parsed back.

use std::fmt;

use super::fields::{Fields, write_status};
use super::{Epoch, Message, MsgId, ParseError, PeerState};

/// Every line a broker sends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// `ACK`: a seed-form publish is safe.
    Ack,
    /// `ACK|<key>|<seq>`: an idempotent publish is safe (the fields of the `PUB` it answers;
    /// `ACK|<publisher>|<seq>` for an `ADOPT`).
    AckId(MsgId),
    /// `PONG`: the answer to a client's `PING`.
    Pong,
    /// `PONG|<epoch>|<role>|<node>|<preferred>`: the answer to a peer's `PROBE`.
    PeerPong(PeerState),
    /// `ERR|<reason>`: the request was refused; the reason is for humans.
    Err(String),
    /// `MSG|<epoch>|<publisher>|<seq>|<topic>|<payload>`: a delivery to an id subscriber.
    Msg {
        /// The epoch of the broker that processed it.
        epoch: Epoch,
        /// The message.
        message: Message,
    },
    /// `REPLICATED|<index>`: the backup holds every message up to `index` that it was sent.
    Replicated {
        /// The highest log index held.
        index: u64,
    },
    /// `HANDOFF|<publisher>|<seq>|<topic>|<payload>`: before `SYNCED`, a primary that steps
    /// down hands the new primary each message it accepted but had not delivered.
    Handoff(Message),
    /// `SYNCED|<epoch>`: the backup now follows the primary of `epoch`.
    Synced {
        /// The epoch it follows.
        epoch: Epoch,
    },
    /// `FENCED|<epoch>`: the sender's epoch is stale; the current one is `epoch`.
    Fenced {
        /// The receiver's (higher) epoch.
        epoch: Epoch,
    },
    /// `STATUS|key=value|…`: the broker's role, epoch, peer state and counters.
    Status(Vec<(String, String)>),
    /// `CHALLENGE|<nonce>|<proof>`: the listener's nonce and its own proof.
    Challenge {
        /// The listener's fresh nonce (hex).
        nonce: String,
        /// HMAC-SHA256 in hex.
        proof: String,
    },
    /// `WELCOME`: authenticated.
    Welcome,
}

impl Reply {
    /// Parses one line a broker sent (without its `\n`); not the raw payload lines of a seed-form
    /// subscription (`Message::encode_payload`), which cannot be told apart from replies.
    pub fn parse(line: &[u8]) -> Result<Reply, ParseError> {
        let mut f = Fields::new(line)?;
        let reply = match f.verb {
            "ACK" if f.rest.is_none() => Reply::Ack,
            "ACK" => Reply::AckId(f.id("publisher")?),
            "PONG" if f.rest.is_none() => Reply::Pong,
            "PONG" => Reply::PeerPong(f.peer_state(true)?),
            "ERR" => Reply::Err(f.tail("reason")?.to_string()),
            "MSG" => Reply::Msg {
                epoch: f.epoch()?,
                message: f.message("publisher")?,
            },
            "REPLICATED" => Reply::Replicated {
                index: f.number("index")?,
            },
            "SYNCED" => Reply::Synced { epoch: f.epoch()? },
            "HANDOFF" => Reply::Handoff(f.message("publisher")?),
            "FENCED" => Reply::Fenced { epoch: f.epoch()? },
            "CHALLENGE" => Reply::Challenge {
                nonce: f.hex("nonce")?,
                proof: f.hex("proof")?,
            },
            "WELCOME" => Reply::Welcome,
            "STATUS" => Reply::Status(f.status_pairs()?),
            verb => return Err(format!("unknown reply '{verb}'").into()),
        };
        f.end()?;
        Ok(reply)
    }

    /// The encoded line as bytes, `\n` included.
    ///
    /// ```
    /// use edgebroker::protocol::{Epoch, Message, MsgId, Reply};
    ///
    /// assert_eq!(Reply::Ack.to_bytes(), b"ACK\n");
    /// let msg = Reply::Msg {
    ///     epoch: Epoch { term: 2, node: 7 },
    ///     message: Message {
    ///         id: MsgId { publisher: 42, seq: 1 },
    ///         topic: "t".into(),
    ///         payload: "hello".into(),
    ///     },
    /// };
    /// assert_eq!(msg.to_bytes(), b"MSG|2.7|42|1|t|hello\n");
    /// ```
    pub fn to_bytes(&self) -> Vec<u8> {
        format!("{self}\n").into_bytes()
    }
}

/// The line as sent, without its `\n`.
impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reply::Ack => f.write_str("ACK"),
            Reply::AckId(id) => write!(f, "ACK|{}|{}", id.publisher, id.seq),
            Reply::Pong => f.write_str("PONG"),
            Reply::PeerPong(s) => {
                let preferred = u8::from(s.preferred);
                write!(f, "PONG|{}|{}|{}|{preferred}", s.epoch, s.role, s.node)
            }
            Reply::Err(reason) => write!(f, "ERR|{reason}"),
            Reply::Msg { epoch, message } => write!(f, "MSG|{epoch}|{message}"),
            Reply::Replicated { index } => write!(f, "REPLICATED|{index}"),
            Reply::Synced { epoch } => write!(f, "SYNCED|{epoch}"),
            Reply::Handoff(m) => write!(f, "HANDOFF|{m}"),
            Reply::Fenced { epoch } => write!(f, "FENCED|{epoch}"),
            Reply::Status(pairs) => write_status(f, pairs),
            Reply::Challenge { nonce, proof } => write!(f, "CHALLENGE|{nonce}|{proof}"),
            Reply::Welcome => f.write_str("WELCOME"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Role, msg};

    #[test]
    fn every_reply_round_trips() {
        let epoch = Epoch { term: 1, node: 2 };
        let replies = [
            Reply::Ack,
            Reply::AckId(MsgId {
                publisher: 1,
                seq: 2,
            }),
            Reply::Pong,
            Reply::PeerPong(PeerState {
                epoch,
                role: Role::Primary,
                node: 2,
                preferred: false,
            }),
            Reply::Err("not primary".into()),
            Reply::Msg {
                epoch,
                message: msg(1, 2, "t", "a|b"),
            },
            Reply::Replicated { index: 9 },
            Reply::Handoff(msg(3, 4, "t", "x|y")),
            Reply::Synced { epoch },
            Reply::Fenced { epoch },
            Reply::Status(vec![("role".into(), "primary".into())]),
            Reply::Challenge {
                nonce: "0a".into(),
                proof: "1b".into(),
            },
            Reply::Welcome,
        ];
        for r in replies {
            let mut line = r.to_bytes();
            assert_eq!(line.pop(), Some(b'\n'));
            assert_eq!(Reply::parse(&line).unwrap(), r);
        }
    }

    #[test]
    fn seed_replies_are_byte_exact() {
        assert_eq!(Reply::Ack.to_bytes(), b"ACK\n");
        assert_eq!(Reply::Pong.to_bytes(), b"PONG\n");
        // A seed-form subscriber's delivery is the payload alone.
        let mut delivery = Vec::new();
        msg(1, 1, "t", "a|b").encode_payload(&mut delivery);
        assert_eq!(delivery, b"a|b\n");
    }
}
