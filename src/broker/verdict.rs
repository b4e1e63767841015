//! What a publish's answer is made of: why it may be refused ([`Refusal`]), and the admitted
//! publish whose verdict is asked for ([`Admitted`]). Plain data, shared by the message's path
//! (`super::path`), the ACK book (`super::acks`) and the connections.

use crate::protocol::MsgId;

/// Why a publish was not accepted or not ACKed; `Node::explain` words it for the client.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// We are the backup and the primary is alive, or we stopped being primary.
    NotPrimary,
    /// Too many messages (or bytes of them) wait for the compute step: how many wait, and
    /// in what unit (`messages` or `bytes`).
    Overloaded(usize, &'static str),
    /// The message is too large to be replicated and delivered: its topic and payload may take
    /// at most this many bytes.
    TooLarge(usize),
    /// `--require-backup` and the backup is silent.
    BackupSilent,
    /// The backup neither confirmed nor was declared down in time (not decided yet: asking
    /// again later may give another answer).
    TimedOut,
    /// With a witness and no backup: the message was not delivered in time (a primary alone
    /// ACKs only what it delivered; not decided yet, like `TimedOut`).
    Undelivered,
    /// With a witness: no backup holds the message and nobody vouches that we are still the
    /// only primary ([`super::mandate`]).
    CutOff,
    /// The broker is shutting down.
    Stopping,
    /// The log on disk cannot be written (a full disk): why.
    Disk(String),
    /// The message's line is not yet on disk (not decided yet, like `TimedOut`).
    Unwritten,
}

/// A publish that was admitted: its verdict comes from `Node::await_safe_until`.
#[derive(Debug)]
pub struct Admitted {
    pub(super) id: MsgId,
    pub(super) index: u64,
    pub(super) generation: u64,
}
