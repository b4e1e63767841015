//! The witness's connections: what they all share ([`Shared`]), and one connection's
//! session, which reads a line, answers it, and reads the next, until the peer leaves, falls
//! idle, fails to authenticate, or gives up its unproven slot ([`super::server`] says when).
//! A session's only state is what its peer has proved.

use std::io::{self, Write};
use std::net::Shutdown;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Instant;

use log::{debug, warn};
use parking_lot::{Mutex, MutexGuard};

use super::pairs::Pairs;
use super::protocol::{Pair, Reply, Request};
use crate::auth;
use crate::config::WitnessConfig;
use crate::connection::{LineReader, Stream};
use crate::error::Error;
use crate::protocol::AuthKind;
use crate::registry::Registry;
use crate::slots::Slots;

/// The longest line a witness reads: its longest request, a `HELLO` with a 128-digit nonce,
/// fits many times over.
const MAX_LINE: usize = 1024;

/// What every connection thread shares.
pub(super) struct Shared {
    pub(super) config: WitnessConfig,
    pub(super) pairs: Mutex<Pairs>,
    /// Who holds which connection slot.
    pub(super) slots: Mutex<Slots>,
    pub(super) stopping: AtomicBool,
    /// The open connections, so that stopping can close them.
    pub(super) sockets: Registry,
    /// The connection threads, for stopping to join.
    pub(super) conns: Mutex<Vec<JoinHandle<()>>>,
    pub(super) auth_failures: AtomicU64,
    pub(super) refused_connections: AtomicU64,
}

impl Shared {
    pub(super) fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    /// The `STATUS` fields: `pair`'s view, then the server's own.
    pub(super) fn status_fields(&self, pair: &Pair) -> Vec<(String, String)> {
        let (mut fields, pairs) = {
            let all = self.pairs.lock();
            (all.snapshot(pair, Instant::now()).fields(), all.len())
        };
        let count = |c: &AtomicU64| c.load(Ordering::Relaxed).to_string();
        let own = [
            ("pair", pair.to_string()),
            ("pairs", pairs.to_string()),
            ("connections", self.sockets.len().to_string()),
            ("auth_failures", count(&self.auth_failures)),
            ("refused_connections", count(&self.refused_connections)),
        ];
        fields.extend(own.map(|(k, v)| (k.to_string(), v)));
        fields
    }
}

/// One connection's thread: answers line after line until the peer leaves, falls idle,
/// fails to authenticate, or gives up its slot unproven.
pub(super) fn serve(shared: &Shared, stream: Stream, key: u64) {
    let peer = stream
        .peer_addr()
        .map_or_else(|_| "?".into(), |a| a.to_string());
    debug!("connection from {peer}");
    let mut session = Session {
        shared,
        key,
        authenticated: shared.config.secret.is_none(),
        proven: false,
        handshake: auth::Listener::default(),
        peer,
    };
    if let Err(e) = session.run(stream.clone()) {
        debug!("connection from {} ended: {e}", session.peer);
    }
    let _ = stream.shutdown(Shutdown::Both);
    shared.sockets.forget(key);
    shared.slots.lock().leave(key);
}

/// What one connection knows of its peer.
struct Session<'a> {
    shared: &'a Shared,
    key: u64,
    /// It may send `LEASE` and `CLAIM`: it passed the handshake, or the witness has no secret.
    authenticated: bool,
    /// It keeps its slot and its idle timeout: it authenticated (with a secret) or spoke a
    /// broker's verb (without one).
    proven: bool,
    /// A handshake in progress.
    handshake: auth::Listener,
    peer: String,
}

impl Session<'_> {
    fn run(&mut self, mut stream: Stream) -> io::Result<()> {
        let config = &self.shared.config;
        let (idle, proof_deadline) = (config.idle_timeout, Instant::now() + config.auth_timeout);
        stream.set_write_timeout(Some(idle))?;
        let mut reader = LineReader::new(stream.clone(), MAX_LINE);
        loop {
            let wait = if self.proven {
                idle
            } else {
                proof_deadline.saturating_duration_since(Instant::now())
            };
            if wait.is_zero() {
                let why = match config.secret {
                    Some(_) => "authenticate first (HELLO|peer|<nonce>)",
                    None => "a connection that sends no LEASE or CLAIM is closed",
                };
                let reason = format!("{why} within {} ms", config.auth_timeout.as_millis());
                stream.write_all(&Reply::Err(reason).to_bytes())?;
                return Ok(());
            }
            stream.set_read_timeout(Some(wait))?;
            let line = match reader.read_line() {
                Ok(Some(line)) => line,
                Ok(None) => {
                    // A newcomer took our slot: say so, so the dialler knows we are busy.
                    if !self.shared.slots.lock().holds(self.key) {
                        stream.write_all(&Reply::Err("too many connections".into()).to_bytes())?;
                    }
                    return Ok(());
                }
                Err(Error::Timeout) if !self.proven => continue,
                Err(Error::Timeout) => {
                    debug!(
                        "{} said nothing for {} s; closing",
                        self.peer,
                        idle.as_secs()
                    );
                    return Ok(());
                }
                Err(Error::LineTooLong) => {
                    stream.write_all(&Reply::Err("line too long".into()).to_bytes())?;
                    return Ok(());
                }
                Err(e) => return Err(e.into()),
            };
            let (reply, hang_up) = self.answer(line);
            stream.write_all(&reply.to_bytes())?;
            if hang_up {
                return Ok(());
            }
        }
    }

    /// The answer to one line, and whether to hang up after sending it.
    fn answer(&mut self, line: &[u8]) -> (Reply, bool) {
        let request = match Request::parse(line) {
            Ok(request) => request,
            Err(e) => return (Reply::Err(e.reason().to_string()), false),
        };
        if request.needs_auth() && !self.authenticated {
            let why = "authenticate first (HELLO|peer|<nonce>)";
            return (Reply::Err(why.into()), false);
        }
        if request.needs_auth() {
            // Without a secret a broker's verb is all the proof there is.
            self.prove();
        }
        let reply = match request {
            // The time is read once the rules are locked, so it only goes up.
            Request::Lease { pair, epoch, node } => {
                self.pairs().renew(&pair, epoch, node, Instant::now())
            }
            Request::Claim { pair, seen, node } => {
                self.pairs().claim(&pair, seen, node, Instant::now())
            }
            Request::Status(pair) => Reply::Status(self.shared.status_fields(&pair)),
            Request::Ping => Reply::Pong,
            Request::Hello { kind, nonce } => self.challenge(kind, nonce),
            Request::Proof { proof } => return self.check_proof(&proof),
        };
        (reply, false)
    }

    fn pairs(&self) -> MutexGuard<'_, Pairs> {
        self.shared.pairs.lock()
    }

    /// From now on the connection keeps its slot and its idle timeout.
    fn prove(&mut self) {
        if !self.proven {
            self.proven = true;
            self.shared.slots.lock().prove(self.key);
        }
    }

    /// HELLO: answer with our nonce and our proof.
    fn challenge(&mut self, kind: AuthKind, theirs: String) -> Reply {
        match self
            .handshake
            .hello(kind, theirs, self.shared.config.secret_for(kind))
        {
            Ok((nonce, proof)) => Reply::Challenge { nonce, proof },
            Err(why) => Reply::Err(why),
        }
    }

    /// PROOF: grant access, or hang up.
    fn check_proof(&mut self, proof: &str) -> (Reply, bool) {
        let config = &self.shared.config;
        let verified = self
            .handshake
            .proof(proof, |kind| config.secret_for(kind))
            .is_some();
        if verified {
            debug!("{} authenticated", self.peer);
            self.authenticated = true;
            self.prove();
            return (Reply::Welcome, false);
        }
        self.shared.auth_failures.fetch_add(1, Ordering::Relaxed);
        warn!("authentication failed (from {}); hanging up", self.peer);
        (Reply::Err("authentication failed".into()), true)
    }
}
