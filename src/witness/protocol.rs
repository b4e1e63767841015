//! The witness's wire protocol: every line a witness accepts ([`Request`]) or sends
//! ([`Reply`]), parsed from and encoded to bytes. Nothing here touches a socket.
//!
//! The lines follow the brokers' rules ([`crate::protocol`]): `VERB|field|…` ended by `\n`,
//! upper-case verbs, unsigned decimal numbers, epochs written `term.node` and refused past
//! [`Epoch::MAX_TERM`]. Durations travel as whole milliseconds; a time left is rounded up, so
//! a broker that waits what it was told never asks too early. The witness's own verbs have an
//! enum of their own, apart from the brokers', so that the two protocols can change apart.
//! A witness serves many pairs: `LEASE` and `CLAIM` name the [`Pair`] they are for, and each
//! pair has its own lease and epochs. PROTOCOL.md's "Witness" section documents every line.

use std::fmt;
use std::time::Duration;

use crate::protocol::{AuthKind, Epoch, Fields, ParseError, write_status};

/// The name a pair goes by at its witness (`--pair`, the same on both brokers): 1 to
/// [`Pair::MAX_LEN`] letters, digits and `.` `_` `-` `:`. Pairs that share a witness need
/// different names; two pairs with one name would share one lease.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Pair(String);

impl Pair {
    /// The longest name.
    pub const MAX_LEN: usize = 64;

    /// The name as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The pair `default`: a pair that was given no name; `STATUS` without a name asks for it.
impl Default for Pair {
    fn default() -> Pair {
        Pair("default".into())
    }
}

impl fmt::Display for Pair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for Pair {
    type Err = ParseError;

    /// ```
    /// use edgebroker::witness::protocol::Pair;
    ///
    /// assert_eq!("site-3.north".parse::<Pair>().unwrap().as_str(), "site-3.north");
    /// assert!("".parse::<Pair>().is_err());
    /// assert!("a b".parse::<Pair>().is_err());
    /// ```
    fn from_str(name: &str) -> Result<Pair, ParseError> {
        let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':');
        if name.is_empty() || name.len() > Pair::MAX_LEN || !name.chars().all(allowed) {
            return Err(ParseError::new(format!(
                "bad pair name '{}' (want 1 to {} letters, digits, '.', '_', '-' or ':')",
                name.escape_default(),
                Pair::MAX_LEN
            )));
        }
        Ok(Pair(name.into()))
    }
}

/// Every line a witness accepts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// `LEASE|<pair>|<epoch>|<node>`: the primary of `epoch` (node `node`) in `pair` renews
    /// its lease, or registers an epoch the witness has not granted (a takeover on certain
    /// death, a restarted witness). Answered by `LEASED`, `FENCED`, `HELD`, `RESTARTING` or
    /// `ERR`.
    Lease {
        /// The sender's pair.
        pair: Pair,
        /// The sender's epoch.
        epoch: Epoch,
        /// The sender's node id.
        node: u32,
    },
    /// `CLAIM|<pair>|<seen epoch>|<node>`: a backup in `pair` whose primary went silent asks
    /// for a new epoch. Answered by `GRANTED`, `HELD`, `RESTARTING` or `ERR`.
    Claim {
        /// The claimant's pair.
        pair: Pair,
        /// The highest epoch the claimant knows of.
        seen: Epoch,
        /// The claimant's node id.
        node: u32,
    },
    /// `STATUS[|<pair>]`: answered by one `STATUS|key=value|…` line: the witness's own
    /// fields, then the pair's (the pair `default` when none is named).
    Status(Pair),
    /// `PING` (whatever follows it): answered by `PONG`.
    Ping,
    /// `HELLO|<kind>|<nonce>`: starts the shared-secret handshake ([`crate::auth`]).
    Hello {
        /// Which secret; a witness knows only the brokers' (`peer`).
        kind: AuthKind,
        /// The dialer's fresh nonce (hex).
        nonce: String,
    },
    /// `PROOF|<proof>`: the dialer's proof, HMAC-SHA256 in hex; answered by `WELCOME` or
    /// `ERR`.
    Proof(String),
}

impl Request {
    /// Parses one line (without its `\n`).
    ///
    /// ```
    /// use edgebroker::protocol::Epoch;
    /// use edgebroker::witness::protocol::Request;
    ///
    /// assert_eq!(
    ///     Request::parse(b"LEASE|north|3.41277|41277").unwrap(),
    ///     Request::Lease {
    ///         pair: "north".parse().unwrap(),
    ///         epoch: Epoch { term: 3, node: 41277 },
    ///         node: 41277,
    ///     }
    /// );
    /// assert!(Request::parse(b"CLAIM|north|281474976710657.1|1").is_err()); // past MAX_TERM
    /// ```
    pub fn parse(line: &[u8]) -> Result<Request, ParseError> {
        let mut f = Fields::new(line)?;
        let request = match f.verb {
            "LEASE" => Request::Lease {
                pair: f.field("pair")?.parse()?,
                epoch: f.epoch()?,
                node: f.number("node")?,
            },
            "CLAIM" => Request::Claim {
                pair: f.field("pair")?.parse()?,
                seen: f.epoch()?,
                node: f.number("node")?,
            },
            "STATUS" => Request::Status(match f.rest {
                Some(_) => f.field("pair")?.parse()?,
                None => Pair::default(),
            }),
            "PING" => return Ok(Request::Ping),
            "HELLO" => Request::Hello {
                kind: f.field("kind")?.parse()?,
                nonce: f.hex("nonce")?,
            },
            "PROOF" => Request::Proof(f.hex("proof")?),
            "" => return Err(ParseError::new("empty verb")),
            verb => {
                return Err(ParseError::new(format!(
                    "unknown verb '{verb}' (a witness answers LEASE, CLAIM, STATUS, PING)"
                )));
            }
        };
        f.end()?;
        Ok(request)
    }

    /// The encoded line as bytes, `\n` included.
    pub fn to_bytes(&self) -> Vec<u8> {
        format!("{self}\n").into_bytes()
    }
}

/// The line as sent, without its `\n`.
impl fmt::Display for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Request::Lease { pair, epoch, node } => write!(f, "LEASE|{pair}|{epoch}|{node}"),
            Request::Claim { pair, seen, node } => write!(f, "CLAIM|{pair}|{seen}|{node}"),
            Request::Status(pair) => write!(f, "STATUS|{pair}"),
            Request::Ping => f.write_str("PING"),
            Request::Hello { kind, nonce } => write!(f, "HELLO|{}|{nonce}", kind.as_str()),
            Request::Proof(proof) => write!(f, "PROOF|{proof}"),
        }
    }
}

/// `HELD`: the primary of `epoch` (node `holder`) holds a lease that lapses, on the witness's
/// clock, in `left`; ask again then.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Held {
    /// The holder's epoch.
    pub epoch: Epoch,
    /// The holder's node id.
    pub holder: u32,
    /// How long until the lease lapses on the witness's side, margin included.
    pub left: Duration,
}

/// Every line a witness sends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// `LEASED|<epoch>|<ms>`: the lease of `epoch` is renewed; its primary may act for `lease`
    /// counted from when it *sent* the `LEASE`.
    Leased {
        /// The epoch leased.
        epoch: Epoch,
        /// How long the primary may act, from its sending.
        lease: Duration,
    },
    /// `GRANTED|<epoch>|<ms>`: the claimant is the primary of the new `epoch` and holds its
    /// lease for `lease` counted from when it sent the `CLAIM`.
    Granted {
        /// The new epoch, always of the claimant's node.
        epoch: Epoch,
        /// How long the new primary may act, from its sending.
        lease: Duration,
    },
    /// `HELD|<epoch>|<node>|<ms left>`: another broker's lease is live; ask again after its
    /// `left`.
    Held(Held),
    /// `RESTARTING|<ms left>`: the witness started recently and knows nothing; it grants and
    /// leases nothing until a lease it might have granted before its start has lapsed, which
    /// is how long until it answers again.
    Restarting(Duration),
    /// `FENCED|<epoch>`: the sender's epoch is stale; this is the newest the witness knows.
    Fenced(Epoch),
    /// `STATUS|key=value|…`: the witness's view (PROTOCOL.md lists the fields).
    Status(Vec<(String, String)>),
    /// `PONG`: the answer to `PING`.
    Pong,
    /// `CHALLENGE|<nonce>|<proof>`: the witness's nonce and its proof.
    Challenge {
        /// The witness's fresh nonce (hex).
        nonce: String,
        /// HMAC-SHA256 in hex.
        proof: String,
    },
    /// `WELCOME`: authenticated.
    Welcome,
    /// `ERR|<reason>`: the request was refused; the reason is for humans.
    Err(String),
}

impl Reply {
    /// Parses one of the lines a broker reads from a witness (without its `\n`): the answers
    /// to `LEASE`, `CLAIM` and `STATUS`, and `ERR`. The handshake's lines are read through the
    /// brokers' protocol ([`crate::connection::Connection::authenticate`]), and no broker
    /// sends the witness `PING`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use edgebroker::protocol::Epoch;
    /// use edgebroker::witness::protocol::{Held, Reply};
    ///
    /// assert_eq!(
    ///     Reply::parse(b"HELD|3.41277|41277|1250").unwrap(),
    ///     Reply::Held(Held {
    ///         epoch: Epoch { term: 3, node: 41277 },
    ///         holder: 41277,
    ///         left: Duration::from_millis(1250),
    ///     })
    /// );
    /// ```
    pub fn parse(line: &[u8]) -> Result<Reply, ParseError> {
        let mut f = Fields::new(line)?;
        let reply = match f.verb {
            "LEASED" => Reply::Leased {
                epoch: f.epoch()?,
                lease: millis(&mut f, "lease")?,
            },
            "GRANTED" => Reply::Granted {
                epoch: f.epoch()?,
                lease: millis(&mut f, "lease")?,
            },
            "HELD" => Reply::Held(Held {
                epoch: f.epoch()?,
                holder: f.number("holder")?,
                left: millis(&mut f, "time left")?,
            }),
            "RESTARTING" => Reply::Restarting(millis(&mut f, "time left")?),
            "FENCED" => Reply::Fenced(f.epoch()?),
            "STATUS" => Reply::Status(f.status_pairs()?),
            "ERR" => Reply::Err(f.tail("reason")?.to_string()),
            verb => return Err(ParseError::new(format!("unknown reply '{verb}'"))),
        };
        f.end()?;
        Ok(reply)
    }

    /// The encoded line as bytes, `\n` included.
    ///
    /// ```
    /// use std::time::Duration;
    /// use edgebroker::protocol::Epoch;
    /// use edgebroker::witness::protocol::Reply;
    ///
    /// let granted = Reply::Granted {
    ///     epoch: Epoch { term: 4, node: 90211 },
    ///     lease: Duration::from_secs(2),
    /// };
    /// assert_eq!(granted.to_bytes(), b"GRANTED|4.90211|2000\n");
    /// ```
    pub fn to_bytes(&self) -> Vec<u8> {
        format!("{self}\n").into_bytes()
    }
}

/// The line as sent, without its `\n`.
impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // A lease is rounded down: a holder never believes in more than it got.
            Reply::Leased { epoch, lease } => write!(f, "LEASED|{epoch}|{}", lease.as_millis()),
            Reply::Granted { epoch, lease } => write!(f, "GRANTED|{epoch}|{}", lease.as_millis()),
            Reply::Held(h) => write!(f, "HELD|{}|{}|{}", h.epoch, h.holder, ms_up(h.left)),
            Reply::Restarting(left) => write!(f, "RESTARTING|{}", ms_up(*left)),
            Reply::Fenced(epoch) => write!(f, "FENCED|{epoch}"),
            Reply::Status(pairs) => write_status(f, pairs),
            Reply::Pong => f.write_str("PONG"),
            Reply::Challenge { nonce, proof } => write!(f, "CHALLENGE|{nonce}|{proof}"),
            Reply::Welcome => f.write_str("WELCOME"),
            Reply::Err(reason) => write!(f, "ERR|{reason}"),
        }
    }
}

/// A duration field in whole milliseconds. Any `u64` is a valid `Duration`, so nothing a peer
/// sends can overflow here; what the receiver adds it to is its own business.
fn millis(f: &mut Fields<'_>, what: &str) -> Result<Duration, ParseError> {
    Ok(Duration::from_millis(f.number(what)?))
}

/// A time left as whole milliseconds, rounded up: a claimant that waits it is never early.
pub(crate) fn ms_up(d: Duration) -> u128 {
    d.as_nanos().div_ceil(1_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn epoch(term: u64, node: u32) -> Epoch {
        Epoch { term, node }
    }

    fn pair(name: &str) -> Pair {
        name.parse().unwrap()
    }

    #[test]
    fn every_request_round_trips() {
        let requests = [
            Request::Lease {
                pair: pair("north"),
                epoch: epoch(3, 41277),
                node: 41277,
            },
            Request::Claim {
                pair: pair("a.b_c-d:9"),
                seen: epoch(Epoch::MAX_TERM, 1),
                node: 9,
            },
            Request::Status(Pair::default()),
            Request::Status(pair("north")),
            Request::Ping,
            Request::Hello {
                kind: AuthKind::Peer,
                nonce: "00ff".into(),
            },
            Request::Proof("abcdef".into()),
        ];
        for request in requests {
            let bytes = request.to_bytes();
            let line = bytes.strip_suffix(b"\n").expect("a line");
            assert_eq!(Request::parse(line).unwrap(), request);
        }
    }

    #[test]
    fn every_reply_a_broker_reads_round_trips() {
        let replies = [
            Reply::Leased {
                epoch: epoch(3, 7),
                lease: Duration::from_millis(2000),
            },
            Reply::Granted {
                epoch: epoch(4, 9),
                lease: Duration::from_millis(2000),
            },
            Reply::Held(Held {
                epoch: epoch(3, 7),
                holder: 7,
                left: Duration::from_millis(1250),
            }),
            Reply::Restarting(Duration::from_millis(2250)),
            Reply::Fenced(epoch(5, 1)),
            Reply::Status(vec![("role".into(), "witness".into())]),
            Reply::Err("no | trouble".into()),
        ];
        for reply in replies {
            let bytes = reply.to_bytes();
            let line = bytes.strip_suffix(b"\n").expect("a line");
            assert_eq!(Reply::parse(line).unwrap(), reply);
        }
        // The answers no broker parses here: to PING, and the handshake's.
        assert_eq!(Reply::Pong.to_bytes(), b"PONG\n");
        let challenge = Reply::Challenge {
            nonce: "aa".into(),
            proof: "bb".into(),
        };
        assert_eq!(challenge.to_bytes(), b"CHALLENGE|aa|bb\n");
        assert_eq!(Reply::Welcome.to_bytes(), b"WELCOME\n");
    }

    #[test]
    fn the_wire_forms_are_exact() {
        let lease = Request::Lease {
            pair: Pair::default(),
            epoch: epoch(2, 41277),
            node: 41277,
        };
        assert_eq!(lease.to_bytes(), b"LEASE|default|2.41277|41277\n");
        let claim = Request::Claim {
            pair: pair("north"),
            seen: epoch(2, 41277),
            node: 90211,
        };
        assert_eq!(claim.to_bytes(), b"CLAIM|north|2.41277|90211\n");
        assert_eq!(
            Request::parse(b"STATUS").unwrap(),
            Request::Status(Pair::default())
        );
        let held = Reply::Held(Held {
            epoch: epoch(2, 41277),
            holder: 41277,
            left: Duration::from_micros(1_249_001),
        });
        assert_eq!(held.to_bytes(), b"HELD|2.41277|41277|1250\n", "rounded up");
        let leased = Reply::Leased {
            epoch: epoch(2, 41277),
            lease: Duration::from_micros(1_999_999),
        };
        assert_eq!(leased.to_bytes(), b"LEASED|2.41277|1999\n", "rounded down");
    }

    #[test]
    fn malformed_lines_have_reasons() {
        let too_high = format!("LEASE|p|{}.1|1", Epoch::MAX_TERM + 1);
        let long = format!("CLAIM|{}|1.1|1", "p".repeat(Pair::MAX_LEN + 1));
        let bad_long = format!(
            "bad pair name '{}' (want 1 to 64 letters, digits, '.', '_', '-' or ':')",
            "p".repeat(Pair::MAX_LEN + 1)
        );
        let cases = [
            ("", "empty verb"),
            ("LEASE", "LEASE is missing its pair"),
            ("LEASE|p", "LEASE is missing its epoch"),
            ("LEASE|p|3.1", "LEASE is missing its node"),
            ("LEASE|p|3|1", "bad epoch '3' (want term.node)"),
            ("LEASE|p|3.1|-1", "bad node '-1'"),
            (
                "LEASE|p|3.1|4294967296",
                "node '4294967296' is out of range",
            ),
            ("LEASE|p|3.1|1|x", "too many fields for LEASE"),
            ("CLAIM|p|x.1|1", "bad epoch term 'x'"),
            ("CLAIM|3.1|1", "bad epoch '1' (want term.node)"), // no pair named
            (
                "LEASE|a\x1b|3.1|1",
                "bad pair name 'a\\u{1b}' (want 1 to 64 letters, digits, '.', '_', '-' or ':')",
            ),
            (long.as_str(), bad_long.as_str()),
            (
                too_high.as_str(),
                "epoch term 281474976710657 is beyond any a broker can reach",
            ),
            (
                "PUBLISH|t|x",
                "unknown verb 'PUBLISH' (a witness answers LEASE, CLAIM, STATUS, PING)",
            ),
            ("STATUS|x|y", "too many fields for STATUS"),
            (
                "STATUS|",
                "bad pair name '' (want 1 to 64 letters, digits, '.', '_', '-' or ':')",
            ),
        ];
        for (line, reason) in cases {
            let err = Request::parse(line.as_bytes()).expect_err(line);
            assert_eq!(err.reason(), reason, "{line}");
        }
        assert_eq!(Request::parse(b"PING|anything").unwrap(), Request::Ping);
    }

    #[test]
    fn replies_a_peer_could_garble_are_refused() {
        for line in [
            "LEASED|3.1",
            "LEASED|3.1|-5",
            "LEASED|3.1|18446744073709551616",
            "GRANTED|281474976710657.1|10",
            "HELD|3.1|1",
            "RESTARTING|",
            "NOPE",
        ] {
            assert!(Reply::parse(line.as_bytes()).is_err(), "{line}");
        }
        // The largest number a field holds is still a Duration, not a wrap.
        assert_eq!(
            Reply::parse(b"RESTARTING|18446744073709551615").unwrap(),
            Reply::Restarting(Duration::from_millis(u64::MAX))
        );
    }
}
