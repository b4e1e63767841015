//! The broker's requests: every line a broker accepts, parsed from and encoded to bytes.

use std::fmt;

use super::fields::Fields;
use super::{AuthKind, Epoch, Message, MsgId, ParseError, PeerState};

/// Every line a broker accepts, from clients (`PUBLISH`, `PUB`, `SUBSCRIBE`, `SUB`, `PING`,
/// `STATUS`) and from its peer broker (`PROBE`, `SYNC`, `SEEN`, `REPLICATE`, `CLEAR`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// `PUBLISH|<topic>|<payload>`: the seed's publish, answered by `ACK`.
    Publish {
        /// The topic.
        topic: String,
        /// The payload.
        payload: String,
    },
    /// `PUB|<key>|<seq>|<topic>|<payload>`: an idempotent publish, answered by
    /// `ACK|<key>|<seq>`; a resend of an id the broker holds is ACKed but not processed again.
    /// As parsed, the message's `id.publisher` is the publisher's *key*; the broker files the
    /// message under [`publisher_id`](super::publisher_id) of it.
    PublishId(Message),
    /// `SUBSCRIBE|<topic>`: the seed's subscribe; the connection receives raw payload lines.
    Subscribe {
        /// The topic.
        topic: String,
    },
    /// `SUB|<topic>`: a subscribe whose deliveries are `MSG` lines carrying epoch and id.
    SubscribeIds {
        /// The topic.
        topic: String,
    },
    /// `PING`, `PING||` or `PING|<anything>`: answered by `PONG`.
    Ping,
    /// `STATUS`: answered by one `STATUS|key=value|…` line.
    Status,
    /// `PROBE|<epoch>|<node>|<preferred>`: a broker's alive check of its peer, answered by
    /// `PONG|<epoch>|<role>|<node>|<preferred>`.
    Probe(PeerState),
    /// `SYNC|<epoch>|<session>`: the primary of `epoch` makes the receiver its backup; the
    /// receiver drops its buffer and answers `SYNCED|<epoch>`, or `FENCED|<its epoch>` if its
    /// own is higher. `session` counts the primary's dials: a SYNC older than the session the
    /// receiver already follows (a dial delayed in the network) gets `ERR|stale session`.
    Sync {
        /// The sender's epoch.
        epoch: Epoch,
        /// The sender's dial counter.
        session: u64,
    },
    /// `SEEN|<publisher>|<seq>`: during a sync, the highest sequence the primary accepted from
    /// a publisher, so the backup can drop resends after a takeover.
    Seen(MsgId),
    /// `REPLICATE|<epoch>|<index>|<publisher>|<seq>|<topic>|<payload>`: hold this message;
    /// answered by `REPLICATED|<index>` once held.
    Replicate {
        /// The sender's epoch.
        epoch: Epoch,
        /// The message's place in the primary's log.
        index: u64,
        /// The message.
        message: Message,
    },
    /// `CLEAR|<epoch>|<index>`: the message at `index` was processed; drop it. No answer.
    Clear {
        /// The sender's epoch.
        epoch: Epoch,
        /// The log index to drop.
        index: u64,
    },
    /// `HANDOVER|<epoch>`: the primary of `epoch` is shutting down; the backup takes over now
    /// and answers `FENCED|<its new epoch>`.
    Handover(Epoch),
    /// `ADOPT|<publisher>|<seq>|<topic>|<payload>`: a primary that stepped down hands the new
    /// primary one message it accepted and had not delivered, under the message's own id;
    /// answered by `ACK|<publisher>|<seq>`.
    Adopt(Message),
    /// `HELLO|<kind>|<nonce>`: starts authentication; answered by `CHALLENGE`.
    Hello {
        /// Which secret.
        kind: AuthKind,
        /// The dialer's fresh nonce (hex).
        nonce: String,
    },
    /// `PROOF|<proof>`: the dialer's proof; answered by `WELCOME` or `ERR`.
    Proof {
        /// HMAC-SHA256 in hex.
        proof: String,
    },
}

/// Why `verb` is none a broker accepts: empty, lower-case, unknown, or the start of a line whose
/// fields are separated by spaces (`PUBLISH topicA hello`).
fn not_a_verb(verb: &str) -> ParseError {
    let separators = match verb.split_once(' ') {
        None if verb.is_empty() => return ParseError::new("empty verb"),
        None if verb.chars().any(|c| c.is_ascii_lowercase()) => {
            return format!("unknown verb '{verb}' (verbs are upper-case)").into();
        }
        None => return format!("unknown verb '{verb}'").into(),
        Some(("PUBLISH", _)) => 2,
        Some(("PUB", _)) => 4,
        Some(("SUBSCRIBE" | "SUB", _)) => 1,
        Some(_) => return format!("unknown verb '{verb}' (fields are separated by '|')").into(),
    };
    let fixed = verb.replacen(' ', "|", separators);
    format!("fields are separated by '|', not spaces: try '{fixed}'").into()
}

impl Request {
    /// Whether only an authenticated peer broker may send this (when a secret is set).
    pub(crate) fn is_peer_verb(&self) -> bool {
        matches!(
            self,
            Request::Probe(_)
                | Request::Sync { .. }
                | Request::Seen(_)
                | Request::Replicate { .. }
                | Request::Clear { .. }
                | Request::Handover(_)
                | Request::Adopt(_)
        )
    }

    /// Parses one line (without its `\n`).
    ///
    /// ```
    /// use edgebroker::protocol::Request;
    ///
    /// let publish = Request::parse(b"PUBLISH|topicA|a|b").unwrap();
    /// assert_eq!(
    ///     publish,
    ///     Request::Publish { topic: "topicA".into(), payload: "a|b".into() }
    /// );
    /// let bad = Request::parse(b"publish|t|x").unwrap_err();
    /// assert_eq!(bad.reason(), "unknown verb 'publish' (verbs are upper-case)");
    /// ```
    pub fn parse(line: &[u8]) -> Result<Request, ParseError> {
        let mut f = Fields::new(line)?;
        let request = match f.verb {
            "PUBLISH" => Request::Publish {
                topic: f.topic()?,
                payload: f.payload()?,
            },
            "PUB" => Request::PublishId(f.message("publisher key")?),
            "SUBSCRIBE" => Request::Subscribe { topic: f.topic()? },
            "SUB" => Request::SubscribeIds { topic: f.topic()? },
            // The seed's alive check ignores whatever follows the verb.
            "PING" => return Ok(Request::Ping),
            "STATUS" => Request::Status,
            "PROBE" => Request::Probe(f.peer_state(false)?),
            "SYNC" => Request::Sync {
                epoch: f.epoch()?,
                session: f.number("session")?,
            },
            "SEEN" => Request::Seen(f.id("publisher")?),
            "REPLICATE" => Request::Replicate {
                epoch: f.epoch()?,
                index: f.number("index")?,
                message: f.message("publisher")?,
            },
            "CLEAR" => Request::Clear {
                epoch: f.epoch()?,
                index: f.number("index")?,
            },
            "HANDOVER" => Request::Handover(f.epoch()?),
            "ADOPT" => Request::Adopt(f.message("publisher")?),
            "HELLO" => Request::Hello {
                kind: f.field("kind")?.parse()?,
                nonce: f.hex("nonce")?,
            },
            "PROOF" => Request::Proof {
                proof: f.hex("proof")?,
            },
            verb => return Err(not_a_verb(verb)),
        };
        f.end()?;
        Ok(request)
    }

    /// Appends the line, `\n` included, to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        use std::io::Write;
        // Writing into a Vec cannot fail.
        let _ = writeln!(out, "{self}");
    }
}

/// The line as sent, without its `\n`.
impl fmt::Display for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Request::Publish { topic, payload } => write!(f, "PUBLISH|{topic}|{payload}"),
            Request::PublishId(m) => write!(f, "PUB|{m}"),
            Request::Subscribe { topic } => write!(f, "SUBSCRIBE|{topic}"),
            Request::SubscribeIds { topic } => write!(f, "SUB|{topic}"),
            Request::Ping => f.write_str("PING"),
            Request::Status => f.write_str("STATUS"),
            Request::Probe(s) => {
                write!(f, "PROBE|{}|{}|{}", s.epoch, s.node, u8::from(s.preferred))
            }
            Request::Sync { epoch, session } => write!(f, "SYNC|{epoch}|{session}"),
            Request::Seen(id) => write!(f, "SEEN|{}|{}", id.publisher, id.seq),
            Request::Replicate {
                epoch,
                index,
                message,
            } => write!(f, "REPLICATE|{epoch}|{index}|{message}"),
            Request::Clear { epoch, index } => write!(f, "CLEAR|{epoch}|{index}"),
            Request::Handover(epoch) => write!(f, "HANDOVER|{epoch}"),
            Request::Adopt(m) => write!(f, "ADOPT|{m}"),
            Request::Hello { kind, nonce } => write!(f, "HELLO|{}|{nonce}", kind.as_str()),
            Request::Proof { proof } => write!(f, "PROOF|{proof}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Role, msg};

    fn req(line: &str) -> Result<Request, ParseError> {
        Request::parse(line.as_bytes())
    }

    #[test]
    fn seed_forms_parse() {
        assert_eq!(
            req("PUBLISH|topicA|Hello").unwrap(),
            Request::Publish {
                topic: "topicA".into(),
                payload: "Hello".into()
            }
        );
        assert_eq!(
            req("SUBSCRIBE|topicA").unwrap(),
            Request::Subscribe {
                topic: "topicA".into()
            }
        );
        for ping in ["PING", "PING||", "PING|whatever|else"] {
            assert_eq!(req(ping).unwrap(), Request::Ping, "{ping}");
        }
    }

    #[test]
    fn payload_keeps_separators_and_may_be_empty() {
        assert_eq!(
            req("PUBLISH|t|a|b||c").unwrap(),
            Request::Publish {
                topic: "t".into(),
                payload: "a|b||c".into()
            }
        );
        assert_eq!(
            req("PUBLISH|t|").unwrap(),
            Request::Publish {
                topic: "t".into(),
                payload: String::new()
            }
        );
    }

    #[test]
    fn malformed_lines_have_reasons() {
        let cases = [
            ("", "empty verb"),
            ("PUBLISH", "PUBLISH is missing its topic"),
            ("PUBLISH|t", "PUBLISH is missing its payload"),
            ("PUBLISH||x", "empty topic"),
            ("SUBSCRIBE|", "empty topic"),
            ("SUBSCRIBE|a|b", "too many fields for SUBSCRIBE"),
            (
                "publish|t|x",
                "unknown verb 'publish' (verbs are upper-case)",
            ),
            ("FROB|x", "unknown verb 'FROB'"),
            ("|||", "empty verb"),
            ("PUB|x|1|t|p", "bad publisher key 'x'"),
            ("PUB|-1|1|t|p", "bad publisher key '-1'"),
            (
                "PUB|1|99999999999999999999|t|p",
                "seq '99999999999999999999' is out of range",
            ),
            ("CLEAR|7|1", "bad epoch '7' (want term.node)"),
        ];
        for (line, reason) in cases {
            assert_eq!(req(line).unwrap_err().reason(), reason, "{line:?}");
        }
        assert_eq!(
            Request::parse(b"PUBLISH|t|\xff").unwrap_err().reason(),
            "line is not valid UTF-8"
        );
    }

    #[test]
    fn every_request_round_trips() {
        let epoch = Epoch { term: 3, node: 77 };
        let requests = [
            Request::Publish {
                topic: "t".into(),
                payload: "x|y".into(),
            },
            Request::PublishId(msg(9, 1, "t", "p|q")),
            Request::Subscribe { topic: "t".into() },
            Request::SubscribeIds { topic: "t".into() },
            Request::Ping,
            Request::Status,
            Request::Probe(PeerState {
                epoch,
                role: Role::Backup,
                node: 5,
                preferred: true,
            }),
            Request::Sync { epoch, session: 3 },
            Request::Seen(MsgId {
                publisher: 4,
                seq: 8,
            }),
            Request::Replicate {
                epoch,
                index: 12,
                message: msg(1, 2, "topicC", "42"),
            },
            Request::Clear { epoch, index: 12 },
            Request::Handover(epoch),
            Request::Adopt(msg(5, 6, "t", "a|b")),
            Request::Hello {
                kind: AuthKind::Client,
                nonce: "00ff".into(),
            },
            Request::Proof {
                proof: "abcdef01".into(),
            },
        ];
        for r in requests {
            let mut line = Vec::new();
            r.encode(&mut line);
            assert_eq!(line.pop(), Some(b'\n'));
            assert_eq!(Request::parse(&line).unwrap(), r);
        }
    }

    #[test]
    fn hostile_fields_are_refused_with_reasons() {
        let cases = [
            ("PUB|1|0|t|p", "seq must be at least 1"),
            ("SEEN|1|0", "seq must be at least 1"),
            (
                "PROBE|18446744073709551615.1|1|0",
                "epoch term 18446744073709551615 is beyond any a broker can reach",
            ),
            (
                "PUBLISH| topicA|x",
                "topic ' topicA' has leading or trailing whitespace",
            ),
            (
                "SUBSCRIBE|topicA ",
                "topic 'topicA ' has leading or trailing whitespace",
            ),
            (
                "PUBLISH|t|abc\r",
                "payload ends in a carriage return, which the line ending would swallow",
            ),
            (
                "PUBLISH topicA hello",
                "fields are separated by '|', not spaces: try 'PUBLISH|topicA|hello'",
            ),
            (
                "SUBSCRIBE topicA",
                "fields are separated by '|', not spaces: try 'SUBSCRIBE|topicA'",
            ),
        ];
        for (line, reason) in cases {
            assert_eq!(req(line).unwrap_err().reason(), reason, "{line:?}");
        }
        // A carriage return inside a payload survives every hop, so it is allowed.
        assert!(req("PUBLISH|t|a\rb").is_ok());
        let top = format!("CLEAR|{}.1|1", Epoch::MAX_TERM);
        assert!(req(&top).is_ok());
    }
}
