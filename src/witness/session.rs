//! The witness's connections: what they all share ([`Shared`]), and one connection's
//! session, which reads a line, answers it, and reads the next, until the peer leaves, falls
//! idle, fails to authenticate, or gives up its unproven slot ([`super::server`] says when).
//! A session's only state is what its peer has proved.

use std::io::Write;
use std::net::{Shutdown, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use log::{debug, warn};
use parking_lot::Mutex;

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

/// What a connection that must authenticate is told.
const AUTH_FIRST: &str = "authenticate first (HELLO|peer|<nonce>)";

/// What every connection thread shares.
pub(super) struct Shared {
    pub(super) config: WitnessConfig,
    pub(super) pairs: Mutex<Pairs>,
    /// Who holds which connection slot.
    pub(super) slots: Mutex<Slots>,
    /// The open connections, so that stopping can close them.
    pub(super) sockets: Registry,
    pub(super) auth_failures: AtomicU64,
    pub(super) refused_connections: AtomicU64,
}

impl Shared {
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
pub(super) fn serve(shared: &Shared, stream: Stream, key: u64, peer: SocketAddr) {
    debug!("connection from {peer}");
    let mut session = Session {
        shared,
        key,
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
    /// It keeps its slot and its idle timeout: it authenticated (with a secret) or spoke a
    /// broker's verb (without one). With a secret, only a proven connection may send `LEASE`
    /// and `CLAIM`.
    proven: bool,
    /// A handshake in progress.
    handshake: auth::Listener,
    peer: SocketAddr,
}

impl Session<'_> {
    fn run(&mut self, stream: Stream) -> Result<(), Error> {
        let config = &self.shared.config;
        let (idle, proof_deadline) = (config.idle_timeout, Instant::now() + config.auth_timeout);
        stream.set_write_timeout(Some(idle))?;
        let mut reader = LineReader::new(stream.clone(), MAX_LINE);
        // The reason of the `ERR` sent before hanging up, if one is.
        let last_word = loop {
            let wait = if self.proven {
                idle
            } else {
                proof_deadline.saturating_duration_since(Instant::now())
            };
            if wait.is_zero() {
                let why = match config.secret {
                    Some(_) => AUTH_FIRST,
                    None => "a connection that sends no LEASE or CLAIM is closed",
                };
                break Some(format!(
                    "{why} within {} ms",
                    config.auth_timeout.as_millis()
                ));
            }
            stream.set_read_timeout(Some(wait))?;
            let line = match reader.read_line() {
                Ok(Some(line)) => line,
                // A newcomer took our slot: say so, so the dialler knows we are busy.
                Ok(None) if !self.shared.slots.lock().holds(self.key) => {
                    break Some("too many connections".into());
                }
                Ok(None) => break None,
                Err(Error::Timeout) if !self.proven => continue,
                Err(Error::Timeout) => {
                    debug!(
                        "{} said nothing for {} s; closing",
                        self.peer,
                        idle.as_secs()
                    );
                    break None;
                }
                Err(Error::LineTooLong) => break Some("line too long".into()),
                Err(e) => return Err(e),
            };
            match self.answer(line) {
                Ok(reply) => (&*stream).write_all(&reply.to_bytes())?,
                Err(reason) => break Some(reason),
            }
        };
        if let Some(reason) = last_word {
            (&*stream).write_all(&Reply::Err(reason).to_bytes())?;
        }
        Ok(())
    }

    /// The answer to one line, or the reason to send before hanging up.
    fn answer(&mut self, line: &[u8]) -> Result<Reply, String> {
        let request = match Request::parse(line) {
            Ok(request) => request,
            Err(e) => return Ok(Reply::Err(e.reason().to_string())),
        };
        // A broker's verbs need the proof (when the witness has a secret); the alive check,
        // the status and the handshake itself are free.
        if matches!(request, Request::Lease { .. } | Request::Claim { .. }) {
            if !self.proven && self.shared.config.secret.is_some() {
                return Ok(Reply::Err(AUTH_FIRST.into()));
            }
            // Without a secret a broker's verb is all the proof there is.
            self.prove();
        }
        let shared = self.shared;
        Ok(match request {
            // The time is read once the rules are locked, so it only goes up.
            Request::Lease { pair, epoch, node } => {
                let mut rules = shared.pairs.lock();
                rules.renew(&pair, epoch, node, Instant::now())
            }
            Request::Claim { pair, seen, node } => {
                let mut rules = shared.pairs.lock();
                rules.claim(&pair, seen, node, Instant::now())
            }
            Request::Status(pair) => Reply::Status(shared.status_fields(&pair)),
            Request::Ping => Reply::Pong,
            // HELLO: answer with our nonce and our proof. A witness knows only the peer secret.
            Request::Hello { kind, nonce } => {
                let peer = kind == AuthKind::Peer;
                let secret = shared.config.secret.as_ref().filter(|_| peer);
                match self.handshake.hello(kind, nonce, secret) {
                    Ok((nonce, proof)) => Reply::Challenge { nonce, proof },
                    Err(why) => Reply::Err(why),
                }
            }
            Request::Proof(proof) => return self.check_proof(&proof),
        })
    }

    /// From now on the connection keeps its slot and its idle timeout.
    fn prove(&mut self) {
        if !self.proven {
            self.proven = true;
            self.shared.slots.lock().prove(self.key);
        }
    }

    /// PROOF: grant access, or hang up.
    fn check_proof(&mut self, proof: &str) -> Result<Reply, String> {
        if self.handshake.proof(proof).is_none() {
            self.shared.auth_failures.fetch_add(1, Ordering::Relaxed);
            warn!("authentication failed (from {}); hanging up", self.peer);
            return Err("authentication failed".into());
        }
        debug!("{} authenticated", self.peer);
        self.prove();
        Ok(Reply::Welcome)
    }
}
