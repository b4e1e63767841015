//! The wire protocol: every line a broker can receive ([`Request`]) or send ([`Reply`]),
//! parsed from and encoded to bytes. Nothing here touches a socket, so every rule is tested
//! on byte slices.
//!
//! A line is `VERB|field|field|…` ended by `\n` (the `\n` and an optional `\r` before it are
//! stripped by [`crate::connection`] before a line reaches [`Request::parse`]). The last field of
//! a verb that carries a payload is the rest of the line and may contain `|`. Verbs are
//! upper-case; `publish` is an unknown verb, not an alias. PROTOCOL.md documents every verb.

use std::fmt;
use std::str::FromStr;

/// Identifies one published message: the publisher that made it and that publisher's sequence
/// number. Brokers use it to drop resends and subscribers to drop replays.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
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
    let mut first = [0; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first) | 1 << 63
}

impl fmt::Display for MsgId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.publisher, self.seq)
    }
}

/// A reign of one primary. Every takeover starts a new epoch with a higher `term`; the `node`
/// of the broker that started it breaks ties, so two brokers can never hold the same epoch.
/// Epochs order by term first, then node. Written `term.node` on the wire, e.g. `3.2718`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Epoch {
    /// Incremented by each takeover.
    pub term: u64,
    /// The node id of the broker that took over.
    pub node: u32,
}

impl Epoch {
    /// The highest term a line may carry: 2^48 takeovers, far beyond any that could happen (a
    /// takeover a millisecond for 8,900 years), and far from `u64::MAX`, so counting up can
    /// never wrap. A line carrying a higher term is refused.
    pub const MAX_TERM: u64 = 1 << 48;

    /// The terms kept above [`Epoch::CEILING`]: 2^47. A line anyone may have sent lifts an epoch
    /// at most to the ceiling in one go, and past it by one term at most, as a takeover does; so
    /// using up the headroom takes 2^47 lines or takeovers — over four years at a million a
    /// second — and no one line can leave a pair in an epoch no takeover could follow.
    pub const HEADROOM: u64 = 1 << 47;

    /// The highest term a line anyone may have sent can lift a broker or the witness to at
    /// once: [`Epoch::MAX_TERM`] less [`Epoch::HEADROOM`].
    pub const CEILING: u64 = Epoch::MAX_TERM - Epoch::HEADROOM;

    /// The epoch a broker that takes over after seeing `self` starts; `None` once the term
    /// reached [`Epoch::MAX_TERM`].
    pub fn next(self, node: u32) -> Option<Epoch> {
        (self.term < Epoch::MAX_TERM).then(|| Epoch {
            term: self.term + 1,
            node,
        })
    }

    /// Whether a broker or the witness, `known` the newest epoch it knows, may adopt `self`
    /// (step down into it, follow it, record it as seen), met as `heard`; `Err` says why not,
    /// in words that start with `epoch `. An epoch no takeover could follow is never adopted,
    /// and a line anyone may have sent ([`Heard::Told`]) lifts what one knows past
    /// [`Epoch::CEILING`] by one term at most.
    ///
    /// ```
    /// use edgebroker::protocol::{Epoch, Heard};
    ///
    /// let known = Epoch { term: 3, node: 1 };
    /// let at = |term| Epoch { term, node: 2 };
    /// assert!(at(Epoch::CEILING).may_adopt(known, Heard::Told).is_ok());
    /// assert!(at(Epoch::CEILING + 1).may_adopt(known, Heard::Told).is_err());
    /// assert!(at(Epoch::CEILING + 1).may_adopt(known, Heard::Answered).is_ok());
    /// assert!(at(Epoch::MAX_TERM).may_adopt(known, Heard::Answered).is_err());
    /// ```
    pub fn may_adopt(self, known: Epoch, heard: Heard) -> Result<(), String> {
        if self <= known {
            return Ok(());
        }
        if self.next(self.node).is_none() {
            return Err(format!(
                "epoch {self} is at the last term: no takeover could follow it"
            ));
        }
        if heard == Heard::Told
            && self.term > Epoch::CEILING
            && self.term > known.term.saturating_add(1)
        {
            return Err(format!(
                "epoch {self} is past term {} and more than one takeover past {known}",
                Epoch::CEILING
            ));
        }
        Ok(())
    }
}

/// Where an epoch was met, which bounds how far it may lift what a broker or the witness knows
/// ([`Epoch::may_adopt`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Heard {
    /// In a request: without `--secret`, anyone who can connect may have sent it.
    Told,
    /// In an answer from the peer or the witness we dialled: an epoch it holds, granted or
    /// knows, each adopted by these same rules or started by a takeover.
    Answered,
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.term, self.node)
    }
}

impl FromStr for Epoch {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, ParseError> {
        let (term, node) = s
            .split_once('.')
            .ok_or_else(|| ParseError::new(format!("bad epoch '{s}' (want term.node)")))?;
        let term = number(term, "epoch term")?;
        if term > Epoch::MAX_TERM {
            return Err(ParseError::new(format!(
                "epoch term {term} is beyond any a broker can reach"
            )));
        }
        Ok(Epoch {
            term,
            node: number(node, "epoch node")?,
        })
    }
}

/// Which part a broker plays at the moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// Accepts publishes, computes and forwards them, replicates to the backup.
    Primary,
    /// Holds replicated messages and watches the primary.
    Backup,
}

impl Role {
    /// The lower-case name used on the wire and in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Primary => "primary",
            Role::Backup => "backup",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, ParseError> {
        match s {
            "primary" => Ok(Role::Primary),
            "backup" => Ok(Role::Backup),
            _ => Err(ParseError::new(format!("bad role '{s}'"))),
        }
    }
}

/// Which secret a connection authenticates with (see [`crate::auth`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AuthKind {
    /// The broker-to-broker secret (`--secret`).
    Peer,
    /// The client secret (`--client-secret`).
    Client,
}

impl AuthKind {
    /// The lower-case name used on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthKind::Peer => "peer",
            AuthKind::Client => "client",
        }
    }
}

impl FromStr for AuthKind {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, ParseError> {
        match s {
            "peer" => Ok(AuthKind::Peer),
            "client" => Ok(AuthKind::Client),
            _ => Err(ParseError::new(format!(
                "bad kind '{s}' (want peer or client)"
            ))),
        }
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
    pub fn encode_replicate(&self, epoch: Epoch, index: u64, out: &mut Vec<u8>) {
        use std::io::Write;
        let _ = writeln!(out, "REPLICATE|{epoch}|{index}|{self}");
    }

    /// `MSG|<epoch>|<publisher>|<seq>|<topic>|<payload>`, `\n` included: a delivery to an id
    /// subscriber.
    pub fn encode_msg(&self, epoch: Epoch, out: &mut Vec<u8>) {
        use std::io::Write;
        let _ = writeln!(out, "MSG|{epoch}|{self}");
    }

    /// `<payload>`, `\n` included: a delivery to a seed-form subscriber.
    pub fn encode_payload(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.payload.as_bytes());
        out.push(b'\n');
    }

    /// Whether every line built from this message (REPLICATE, HANDOFF, ADOPT, MSG) fits in
    /// `max_line` bytes, so a broker that accepts it can replicate, hand over and deliver it.
    pub fn fits(&self, max_line: usize) -> bool {
        self.topic.len() + self.payload.len() + Message::ENVELOPE_BYTES <= max_line
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

/// What a broker's peer says about itself when probed (the answer to [`Request::Probe`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerState {
    /// The peer's epoch.
    pub epoch: Epoch,
    /// The peer's role.
    pub role: Role,
    /// The peer's node id.
    pub node: u32,
    /// Whether the peer was started as the preferred primary (the `primary` program).
    pub preferred: bool,
}

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
    /// message under [`publisher_id`] of it.
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
    Handover {
        /// The sender's epoch.
        epoch: Epoch,
    },
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
    /// `<payload>`: a delivery to a seed-form subscriber (written raw, never parsed back).
    Payload(String),
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

/// Why a line could not be parsed; its text goes back to the client as `ERR|<reason>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError(String);

impl ParseError {
    pub(crate) fn new(reason: impl Into<String>) -> Self {
        ParseError(reason.into())
    }

    /// The human-readable reason.
    pub fn reason(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ParseError {}

/// Splits a line into its verb and fields; the last of `n` fields takes the rest of the line.
/// The witness's verbs (`crate::witness::protocol`) are parsed with it too.
pub(crate) struct Fields<'a> {
    pub(crate) verb: &'a str,
    pub(crate) rest: Option<&'a str>,
}

impl<'a> Fields<'a> {
    pub(crate) fn new(line: &'a [u8]) -> Result<Self, ParseError> {
        let line =
            std::str::from_utf8(line).map_err(|_| ParseError::new("line is not valid UTF-8"))?;
        if line.contains('\n') {
            return Err(ParseError::new("line contains a newline"));
        }
        let (verb, rest) = split_bar(line);
        Ok(Fields { verb, rest })
    }

    /// The next `|`-separated field.
    pub(crate) fn field(&mut self, what: &str) -> Result<&'a str, ParseError> {
        let (field, rest) = split_bar(self.rest.ok_or_else(|| missing(self.verb, what))?);
        self.rest = rest;
        Ok(field)
    }

    /// Everything left, `|` included (a payload).
    pub(crate) fn tail(&mut self, what: &str) -> Result<&'a str, ParseError> {
        self.rest.take().ok_or_else(|| missing(self.verb, what))
    }

    fn topic(&mut self) -> Result<String, ParseError> {
        let topic = self.field("topic")?;
        if topic.is_empty() {
            return Err(ParseError::new("empty topic"));
        }
        if topic.trim() != topic {
            return Err(ParseError::new(format!(
                "topic '{topic}' has leading or trailing whitespace"
            )));
        }
        Ok(topic.to_string())
    }

    /// The rest of the line as a payload. A payload ending in `\r` is refused: the `\r\n`
    /// line ending of every hop would swallow that byte.
    fn payload(&mut self) -> Result<String, ParseError> {
        let payload = self.tail("payload")?;
        if payload.ends_with('\r') {
            return Err(ParseError::new(
                "payload ends in a carriage return, which the line ending would swallow",
            ));
        }
        Ok(payload.to_string())
    }

    pub(crate) fn number<T: FromStr>(&mut self, what: &str) -> Result<T, ParseError> {
        number(self.field(what)?, what)
    }

    pub(crate) fn epoch(&mut self) -> Result<Epoch, ParseError> {
        self.field("epoch")?.parse()
    }

    pub(crate) fn hex(&mut self, what: &str) -> Result<String, ParseError> {
        let text = self.field(what)?;
        if text.is_empty() || text.len() > 128 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ParseError::new(format!("bad {what} (want hex)")));
        }
        Ok(text.to_string())
    }

    /// A message id: any publisher, a sequence number from 1.
    fn id(&mut self, publisher: &str) -> Result<MsgId, ParseError> {
        let publisher = self.number(publisher)?;
        let seq = self.number("seq")?;
        if seq == 0 {
            return Err(ParseError::new("seq must be at least 1"));
        }
        Ok(MsgId { publisher, seq })
    }

    fn message(&mut self, publisher: &str) -> Result<Message, ParseError> {
        let id = self.id(publisher)?;
        let topic = self.topic()?;
        let payload = self.payload()?;
        Ok(Message { id, topic, payload })
    }

    /// `<epoch>|[<role>|]<node>|<preferred>`: a peer's state, as PONG (`with_role`) or PROBE
    /// (without, from a broker that is asking, so a backup) carry it.
    fn peer_state(&mut self, with_role: bool) -> Result<PeerState, ParseError> {
        let epoch = self.epoch()?;
        let role = if with_role {
            self.field("role")?.parse()?
        } else {
            Role::Backup
        };
        let node = self.number("node")?;
        let preferred = match self.field("preferred")? {
            "0" => false,
            "1" => true,
            text => return Err(ParseError::new(format!("bad flag '{text}' (want 0 or 1)"))),
        };
        Ok(PeerState {
            epoch,
            role,
            node,
            preferred,
        })
    }

    /// The `key=value` fields of a `STATUS` line, up to its end.
    pub(crate) fn status_pairs(&mut self) -> Result<Vec<(String, String)>, ParseError> {
        let mut pairs = Vec::new();
        while self.rest.is_some() {
            let pair = self.field("key=value")?;
            let (k, v) = pair
                .split_once('=')
                .ok_or_else(|| ParseError::new(format!("bad status field '{pair}'")))?;
            pairs.push((k.to_string(), v.to_string()));
        }
        Ok(pairs)
    }

    /// Fails if fields remain after the last one a verb takes.
    pub(crate) fn end(self) -> Result<(), ParseError> {
        match self.rest {
            None => Ok(()),
            Some(_) => Err(ParseError::new(format!(
                "too many fields for {}",
                self.verb
            ))),
        }
    }
}

/// The `|key=value` fields of a `STATUS` line, as written after its verb.
pub(crate) struct StatusPairs<'a>(pub(crate) &'a [(String, String)]);

impl fmt::Display for StatusPairs<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|(k, v)| write!(f, "|{k}={v}"))
    }
}

/// `text` up to its first `|`, and what follows that `|` if there is one.
fn split_bar(text: &str) -> (&str, Option<&str>) {
    match text.split_once('|') {
        Some((head, tail)) => (head, Some(tail)),
        None => (text, None),
    }
}

fn missing(verb: &str, what: &str) -> ParseError {
    ParseError::new(format!("{verb} is missing its {what}"))
}

fn number<T: FromStr>(text: &str, what: &str) -> Result<T, ParseError> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ParseError::new(format!("bad {what} '{text}'")));
    }
    text.parse()
        .map_err(|_| ParseError::new(format!("{what} '{text}' is out of range")))
}

/// The error for `PUBLISH topicA hello`: fields separated by spaces, not `|`.
fn spaces_for_bars(line: &str) -> ParseError {
    let verb = line.split(' ').next().unwrap_or_default();
    let separators = match verb {
        "PUBLISH" => 2,
        "PUB" => 4,
        "SUBSCRIBE" | "SUB" => 1,
        _ => {
            return ParseError::new(format!(
                "unknown verb '{line}' (fields are separated by '|')"
            ));
        }
    };
    ParseError::new(format!(
        "fields are separated by '|', not spaces: try '{}'",
        line.replacen(' ', "|", separators)
    ))
}

impl Request {
    /// Whether only an authenticated peer broker may send this (when a secret is set).
    pub fn is_peer_verb(&self) -> bool {
        matches!(
            self,
            Request::Probe(_)
                | Request::Sync { .. }
                | Request::Seen(_)
                | Request::Replicate { .. }
                | Request::Clear { .. }
                | Request::Handover { .. }
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
            "HANDOVER" => Request::Handover { epoch: f.epoch()? },
            "ADOPT" => Request::Adopt(f.message("publisher")?),
            "HELLO" => Request::Hello {
                kind: f.field("kind")?.parse()?,
                nonce: f.hex("nonce")?,
            },
            "PROOF" => Request::Proof {
                proof: f.hex("proof")?,
            },
            "" => return Err(ParseError::new("empty verb")),
            verb if verb.contains(' ') => return Err(spaces_for_bars(verb)),
            verb if verb.chars().any(|c| c.is_ascii_lowercase()) => {
                return Err(ParseError::new(format!(
                    "unknown verb '{verb}' (verbs are upper-case)"
                )));
            }
            verb => return Err(ParseError::new(format!("unknown verb '{verb}'"))),
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

    /// The encoded line as bytes, `\n` included.
    pub fn to_bytes(&self) -> Vec<u8> {
        format!("{self}\n").into_bytes()
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
            Request::Handover { epoch } => write!(f, "HANDOVER|{epoch}"),
            Request::Adopt(m) => write!(f, "ADOPT|{m}"),
            Request::Hello { kind, nonce } => write!(f, "HELLO|{}|{nonce}", kind.as_str()),
            Request::Proof { proof } => write!(f, "PROOF|{proof}"),
        }
    }
}

impl Reply {
    /// Parses one line a broker sent (without its `\n`). A raw payload line cannot be told
    /// apart from other replies, so [`Reply::Payload`] is never returned.
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
            verb => return Err(ParseError::new(format!("unknown reply '{verb}'"))),
        };
        f.end()?;
        Ok(reply)
    }

    /// Appends the line, `\n` included, to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        use std::io::Write;
        let _ = writeln!(out, "{self}");
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
            Reply::Payload(payload) => f.write_str(payload),
            Reply::Msg { epoch, message } => write!(f, "MSG|{epoch}|{message}"),
            Reply::Replicated { index } => write!(f, "REPLICATED|{index}"),
            Reply::Synced { epoch } => write!(f, "SYNCED|{epoch}"),
            Reply::Handoff(m) => write!(f, "HANDOFF|{m}"),
            Reply::Fenced { epoch } => write!(f, "FENCED|{epoch}"),
            Reply::Status(pairs) => write!(f, "STATUS{}", StatusPairs(pairs)),
            Reply::Challenge { nonce, proof } => write!(f, "CHALLENGE|{nonce}|{proof}"),
            Reply::Welcome => f.write_str("WELCOME"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(line: &str) -> Result<Request, ParseError> {
        Request::parse(line.as_bytes())
    }

    fn msg(publisher: u64, seq: u64, topic: &str, payload: &str) -> Message {
        Message {
            id: MsgId { publisher, seq },
            topic: topic.into(),
            payload: payload.into(),
        }
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
            Request::Handover { epoch },
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
        assert_eq!(Reply::Payload("a|b".into()).to_bytes(), b"a|b\n");
    }

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

    #[test]
    fn publisher_ids_come_from_keys_and_never_meet_broker_ids() {
        let ids: std::collections::HashSet<u64> = (0..1000).map(publisher_id).collect();
        assert_eq!(ids.len(), 1000);
        assert!(
            ids.iter()
                .all(|&id| id >= 1 << 63 && id != u64::from(u32::MAX))
        );
    }

    #[test]
    fn epochs_order_by_term_then_node() {
        let a = Epoch { term: 1, node: 9 };
        let b = Epoch { term: 2, node: 1 };
        assert!(a < b);
        assert!(Epoch { term: 2, node: 2 } > b);
        assert_eq!(a.next(5), Some(Epoch { term: 2, node: 5 }));
        let last = Epoch {
            term: Epoch::MAX_TERM,
            node: 1,
        };
        assert_eq!(
            last.next(5),
            None,
            "counting up past the limit is refused, never wrapped"
        );
        assert_eq!("2.1".parse::<Epoch>().unwrap(), b);
    }

    #[test]
    fn no_epoch_without_a_next_is_adopted_and_a_stranger_climbs_one_term_past_the_ceiling() {
        let at = |term| Epoch { term, node: 2 };
        let known = Epoch { term: 7, node: 1 };
        for heard in [Heard::Told, Heard::Answered] {
            assert!(at(Epoch::MAX_TERM).may_adopt(known, heard).is_err());
            assert!(at(Epoch::CEILING).may_adopt(known, heard).is_ok());
            assert!(
                at(3).may_adopt(known, heard).is_ok(),
                "an older epoch lifts nothing"
            );
        }
        let jump = at(Epoch::CEILING + 1).may_adopt(known, Heard::Told);
        assert_eq!(
            jump.unwrap_err(),
            format!(
                "epoch {}.2 is past term {} and more than one takeover past 7.1",
                Epoch::CEILING + 1,
                Epoch::CEILING
            )
        );
        // Past the ceiling a line lifts one term, as a takeover does, up to the last but one.
        for term in [
            Epoch::CEILING,
            Epoch::CEILING + 1,
            Epoch::MAX_TERM - 2,
            Epoch::MAX_TERM - 1,
        ] {
            let known = Epoch { term, node: 1 };
            for heard in [Heard::Told, Heard::Answered] {
                let next = known.next(2).expect("a known epoch has a next");
                let adopted = next.may_adopt(known, heard).is_ok();
                assert_eq!(adopted, next.next(2).is_some(), "{next} after {known}");
                assert!(at(term + 2).may_adopt(known, Heard::Told).is_err());
            }
        }
        assert!(
            at(Epoch::MAX_TERM)
                .may_adopt(at(Epoch::MAX_TERM - 1), Heard::Told)
                .unwrap_err()
                .starts_with("epoch ")
        );
    }
}
