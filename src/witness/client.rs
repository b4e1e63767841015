//! The brokers' side of the witness protocol: one persistent connection, with timeouts, that
//! renews the primary's lease and claims a new epoch for a backup.
//!
//! A lease is counted from the instant **before** the request was written, on the broker's
//! own monotonic clock, so it always ends before the witness's copy, which is counted from
//! the instant the line was read there and is longer by the margin. An answer that comes late
//! only shortens the lease; one that never comes leaves the broker without one.

use std::time::{Duration, Instant};

use log::debug;

use super::protocol::{Held, Pair, Reply, Request};
use crate::auth::Secret;
use crate::connection::Connection;
use crate::error::{Error, Result};
use crate::protocol::{AuthKind, Epoch};

/// The longest line a witness sends: a STATUS line of a dozen short fields fits many times.
const MAX_REPLY: usize = 4096;

/// A lease as the broker holds it: it may act as the primary of `epoch` until `until`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lease {
    /// The epoch leased (for a grant, the new one).
    pub epoch: Epoch,
    /// When the lease ends on the broker's clock: the instant it sent the request, plus the
    /// lease the witness granted.
    pub until: Instant,
}

impl Lease {
    /// How long the lease has left at `now` (zero once it ended).
    pub fn left(&self, now: Instant) -> Duration {
        self.until.saturating_duration_since(now)
    }
}

/// The witness's answer to a renewal ([`Client::renew`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Renewal {
    /// Renewed (or registered): act until the lease's end.
    Leased(Lease),
    /// The epoch is stale: a newer one exists, and this broker must step down.
    Fenced(Epoch),
    /// A registration of a newer epoch, while another broker's lease is still live: no lease
    /// yet; try again after `left`.
    Held(Held),
    /// The witness restarted and leases nothing for this long.
    Restarting(Duration),
}

/// The witness's answer to a claim ([`Client::claim`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Claim {
    /// The claimant is the primary of the lease's (new) epoch, and holds its lease.
    Granted(Lease),
    /// The current primary's lease is live on the witness's side: do not take over; claim
    /// again after `left` if the primary is still silent.
    Held(Held),
    /// The witness restarted and grants nothing for this long.
    Restarting(Duration),
}

/// A connection to the witness, opened on first use and reopened after a failure.
///
/// ```
/// use std::time::{Duration, Instant};
/// use edgebroker::config::WitnessConfig;
/// use edgebroker::protocol::Epoch;
/// use edgebroker::witness::{Claim, Client, Witness};
///
/// let witness = Witness::start(WitnessConfig::fast())?;
/// let mut client = Client::new(witness.local_addr().to_string(), Duration::from_millis(500), None);
/// // A fresh witness grants nothing for one lease and margin (225 ms here).
/// while !witness.status().restart_wait.is_zero() {
///     std::thread::sleep(Duration::from_millis(5));
/// }
/// match client.claim(Epoch::default(), 7)? {
///     Claim::Granted(lease) => {
///         assert_eq!(lease.epoch, Epoch { term: 1, node: 7 });
///         assert!(Instant::now() < lease.until);
///     }
///     other => panic!("{other:?}"),
/// }
/// # Ok::<(), edgebroker::Error>(())
/// ```
pub struct Client {
    addr: String,
    timeout: Duration,
    secret: Option<Secret>,
    /// The pair this broker belongs to, named in every LEASE and CLAIM.
    pair: Pair,
    conn: Option<Connection>,
}

impl Client {
    /// A client of the witness at `addr` (`host:port`) for the pair named `default`.
    /// Dialling, each write and each answer may take `timeout` (the brokers' ping timeout);
    /// with `secret`, every connection authenticates as a peer first.
    pub fn new(addr: impl Into<String>, timeout: Duration, secret: Option<Secret>) -> Client {
        Client {
            addr: addr.into(),
            timeout,
            secret,
            pair: Pair::default(),
            conn: None,
        }
    }

    /// The same client, for the pair named `pair` (`--pair`).
    pub fn for_pair(self, pair: Pair) -> Client {
        Client { pair, ..self }
    }

    /// The witness's address.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// `LEASE|<pair>|<epoch>|<node>`: renews the lease of the primary of `epoch` (this broker, node
    /// `node`), or registers an epoch taken over without the witness. An `ERR` is
    /// [`Error::Refused`]; no answer in time is an I/O error of a timeout kind.
    pub fn renew(&mut self, epoch: Epoch, node: u32) -> Result<Renewal> {
        let pair = self.pair.clone();
        let (sent, reply) = self.ask(&Request::Lease { pair, epoch, node })?;
        match reply {
            Reply::Leased { epoch: e, lease } if e == epoch => {
                Ok(Renewal::Leased(lease_from(e, sent, lease)?))
            }
            Reply::Fenced(newer) if newer > epoch => Ok(Renewal::Fenced(newer)),
            Reply::Held(held) => Ok(Renewal::Held(held)),
            Reply::Restarting(left) => Ok(Renewal::Restarting(left)),
            Reply::Err(reason) => Err(Error::Refused(reason)),
            other => Err(odd("LEASE", &other)),
        }
    }

    /// `CLAIM|<pair>|<seen>|<node>`: asks for the epoch after `seen` (the newest this broker knows)
    /// for node `node`. A grant is always of this node and no older than `seen`; anything else
    /// is a protocol error.
    pub fn claim(&mut self, seen: Epoch, node: u32) -> Result<Claim> {
        let pair = self.pair.clone();
        let (sent, reply) = self.ask(&Request::Claim { pair, seen, node })?;
        match reply {
            Reply::Granted { epoch, lease } if epoch.node == node && epoch >= seen => {
                Ok(Claim::Granted(lease_from(epoch, sent, lease)?))
            }
            Reply::Held(held) => Ok(Claim::Held(held)),
            Reply::Restarting(left) => Ok(Claim::Restarting(left)),
            Reply::Err(reason) => Err(Error::Refused(reason)),
            other => Err(odd("CLAIM", &other)),
        }
    }

    /// `STATUS|<pair>`: the witness's view of our pair as `key=value` pairs (PROTOCOL.md
    /// lists them).
    pub fn status(&mut self) -> Result<Vec<(String, String)>> {
        match self.ask(&Request::Status(self.pair.clone()))? {
            (_, Reply::Status(pairs)) => Ok(pairs),
            (_, Reply::Err(reason)) => Err(Error::Refused(reason)),
            (_, other) => Err(odd("STATUS", &other)),
        }
    }

    /// Sends `request` and reads the answer; returns the instant just before the write. A
    /// connection that broke since its last use is redialled once, so a witness that
    /// restarted is reached at once; a timeout is not retried (the caller's clock is
    /// running).
    fn ask(&mut self, request: &Request) -> Result<(Instant, Reply)> {
        let fresh = self.conn.is_none();
        match self.exchange(request) {
            Err(e @ (Error::Closed | Error::Io(_))) if !fresh => {
                debug!(
                    "witness connection to {} broke ({e}); redialling",
                    self.addr
                );
                self.exchange(request)
            }
            result => result,
        }
    }

    /// One attempt, on the open connection or a new one. Any failure closes the connection,
    /// so that a late answer can never be read as the answer to the next request.
    fn exchange(&mut self, request: &Request) -> Result<(Instant, Reply)> {
        let mut conn = match self.conn.take() {
            Some(conn) => conn,
            None => {
                let auth = self.secret.as_ref().map(|s| (AuthKind::Peer, s));
                let conn = Connection::dial(&self.addr, self.timeout, MAX_REPLY, auth)?;
                debug!("connected to the witness at {}", self.addr);
                conn
            }
        };
        let sent = Instant::now();
        let reply = conn.send_line(&request.to_bytes()).and_then(|()| {
            Reply::parse(conn.read_line()?)
                .map_err(|e| Error::Protocol(format!("the witness answered oddly: {e}")))
        });
        match &reply {
            Ok(_) => self.conn = Some(conn),
            Err(_) => conn.close(),
        }
        Ok((sent, reply?))
    }
}

/// The broker's lease: `lease` from `sent`. A lease too long for the clock is refused rather
/// than wrapped.
fn lease_from(epoch: Epoch, sent: Instant, lease: Duration) -> Result<Lease> {
    let until = sent.checked_add(lease).ok_or_else(|| {
        Error::Protocol(format!(
            "the witness granted a lease of {} ms, beyond this clock",
            lease.as_millis()
        ))
    })?;
    Ok(Lease { epoch, until })
}

fn odd(verb: &str, reply: &Reply) -> Error {
    Error::Protocol(format!("the witness answered {verb} with {reply:?}"))
}
