//! Who is at the other end of a line: the role a broker plays, the state it tells its peer,
//! the secret a connection proves.

use std::fmt;
use std::str::FromStr;

use super::{Epoch, ParseError};

/// Which part a broker plays at the moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// Accepts publishes, computes and forwards them, replicates to the backup.
    Primary,
    /// Holds replicated messages and watches the primary.
    Backup,
}

/// The lower-case name used on the wire and in logs.
impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Primary => "primary",
            Role::Backup => "backup",
        })
    }
}

impl FromStr for Role {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, ParseError> {
        // By the names `Display` writes, so the two cannot drift apart.
        [Role::Primary, Role::Backup]
            .into_iter()
            .find(|role| role.to_string() == s)
            .ok_or_else(|| format!("bad role '{s}'").into())
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
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            AuthKind::Peer => "peer",
            AuthKind::Client => "client",
        }
    }
}

impl FromStr for AuthKind {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, ParseError> {
        // By the names `as_str` writes, so the two cannot drift apart.
        [AuthKind::Peer, AuthKind::Client]
            .into_iter()
            .find(|kind| kind.as_str() == s)
            .ok_or_else(|| format!("bad kind '{s}' (want peer or client)").into())
    }
}

/// What a broker's peer says about itself when probed (the answer to
/// [`Request::Probe`](super::Request::Probe)).
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
