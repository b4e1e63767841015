//! The witness server: a listener, one thread per connection, and every pair's rules
//! ([`Pairs`]) under one parking_lot mutex. Each connection reads a line, answers it, and
//! reads the next; the only state a connection keeps is whether it has proved itself.
//!
//! Its slots follow the broker's rules (`src/slots.rs`): [`BROKER_SLOTS`] are kept beyond
//! `max_connections` for the brokers, and a connection that has not proved itself (by the
//! handshake when the witness has a secret, by a broker's verb when it has none) gives up its
//! slot to a newcomer when every slot is taken, and is closed `auth_timeout` after it opened.
//! So strangers who fill the slots with `PING`s and `STATUS`es never keep a broker out.

use std::io::Write;
use std::net::{Shutdown, SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::{self, JoinHandle, Scope};
use std::time::Instant;

use log::{debug, info, warn};
use parking_lot::Mutex;

use super::lease::{Pairs, Snapshot};
use super::protocol::{Pair, Reply, Request};
use crate::auth;
use crate::config::WitnessConfig;
use crate::connection::{self, LineReader, Stream};
use crate::error::{Error, Result};
use crate::protocol::AuthKind;
use crate::registry::Registry;
use crate::slots::{Admission, Slots, Source};

/// Stack size of a connection thread: it holds a line and an answer, nothing more.
const CONN_STACK: usize = 64 * 1024;

/// Connection slots kept beyond `max_connections` for connections that prove themselves: the
/// brokers of two pairs, each redialling once.
pub const BROKER_SLOTS: usize = 8;

/// A running witness. Dropping it stops it.
pub struct Witness {
    shared: Arc<Shared>,
    addr: SocketAddr,
    accept: Option<JoinHandle<()>>,
}

impl Witness {
    /// Binds `config.listen` and starts serving. A witness starts knowing nothing: for one
    /// lease and margin it grants and leases nothing to any pair ([`super::lease`], rule 5).
    ///
    /// ```
    /// use edgebroker::config::WitnessConfig;
    /// use edgebroker::witness::Witness;
    ///
    /// let witness = Witness::start(WitnessConfig::fast())?;
    /// assert_ne!(witness.local_addr().port(), 0);
    /// assert_eq!(witness.status().holder, None); // of the pair named "default"
    /// witness.shutdown();
    /// # Ok::<(), edgebroker::Error>(())
    /// ```
    pub fn start(config: WitnessConfig) -> Result<Witness> {
        let listener =
            TcpListener::bind(config.listen).map_err(|e| Error::Listen(config.listen, e))?;
        let addr = listener.local_addr()?;
        info!(
            "witness listening on {addr}: leases of {} ms, margin {} ms; granting nothing for \
             the first {} ms",
            config.lease.as_millis(),
            config.margin.as_millis(),
            config.lease.saturating_add(config.margin).as_millis()
        );
        if config.secret.is_none() && !addr.ip().is_loopback() {
            warn!(
                "no --secret: anyone who can reach {addr} can claim an epoch for a pair. Set \
                 the brokers' --secret S (or BROKER_SECRET) here too, or --bind 127.0.0.1 for \
                 a local run"
            );
        }
        let now = Instant::now();
        let pairs = Pairs::new(config.lease, config.margin, now, config.max_connections);
        let shared = Arc::new(Shared {
            pairs: Mutex::new(pairs),
            slots: Mutex::new(Slots::new(config.max_connections, BROKER_SLOTS)),
            config,
            sockets: Registry::default(),
            auth_failures: AtomicU64::new(0),
            refused_connections: AtomicU64::new(0),
        });
        let s = Arc::clone(&shared);
        let accept = thread::Builder::new()
            .name("witness-accept".into())
            .spawn(move || thread::scope(|scope| accept_loop(scope, &s, listener)))?;
        Ok(Witness {
            shared,
            addr,
            accept: Some(accept),
        })
    }

    /// The address the listener is bound to (with the real port when started on port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The view of the pair named `default` right now: the highest epoch, the
    /// holder, the time its lease has left.
    pub fn status(&self) -> Snapshot {
        self.pair_status(&Pair::default())
    }

    /// The view of `pair` right now.
    pub fn pair_status(&self, pair: &Pair) -> Snapshot {
        self.shared.pairs.lock().snapshot(pair, Instant::now())
    }

    /// Runs a witness as the `witness` program does: starts it, prints `listening on <addr>`
    /// as the first stdout line, serves until Ctrl-C or SIGTERM, then stops it.
    pub fn serve(config: WitnessConfig) -> Result<()> {
        crate::cli::serve_until_interrupted(
            || Witness::start(config),
            Witness::local_addr,
            Witness::shutdown,
        )
    }

    /// Stops accepting, closes every connection and joins every thread.
    pub fn shutdown(self) {
        info!("witness shutting down");
        // Drop does the work.
    }
}

impl Drop for Witness {
    fn drop(&mut self) {
        self.shared.sockets.close_all();
        // Wake the accept loop, blocked in accept(); it joins the connection threads, which
        // the closed sockets have ended.
        connection::wake_listener(self.addr);
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
    }
}

/// Accepts connections, each served by a thread of `scope`, until the witness stops.
fn accept_loop<'a>(scope: &'a Scope<'a, '_>, shared: &'a Shared, listener: TcpListener) {
    while let Some((stream, addr)) = shared.sockets.accept(&listener) {
        // Once the witness stops, every socket is closed and none is registered: not the
        // connection that wakes this loop either.
        let Some(key) = shared.sockets.register(&stream) else {
            return;
        };
        // Every connection has to prove itself here, in an open slot too.
        let admission = shared.slots.lock().admit(key, Source::of(addr.ip()), true);
        let Admission::Granted { evicted, .. } = admission else {
            shared.sockets.forget(key);
            shared.refused_connections.fetch_add(1, Ordering::Relaxed);
            warn!("refusing a connection: every slot is held by a proven connection");
            let _ = (&*stream).write_all(&Reply::Err("too many connections".into()).to_bytes());
            continue;
        };
        if let Some(evicted) = evicted {
            debug!("witness-conn-{evicted} hung up on: its slot went to a newcomer");
            shared.refused_connections.fetch_add(1, Ordering::Relaxed);
            shared.sockets.hang_up(evicted);
        }
        let spawned = thread::Builder::new()
            .name(format!("witness-conn-{key}"))
            .stack_size(CONN_STACK)
            .spawn_scoped(scope, move || serve(shared, stream, key, addr));
        if let Err(e) = spawned {
            warn!("cannot start a connection thread: {e}");
            shared.sockets.forget(key);
            shared.slots.lock().leave(key);
        }
    }
}

/// The longest line a witness reads: its longest request, a `HELLO` with a 128-digit nonce,
/// fits many times over.
const MAX_LINE: usize = 1024;

/// What a connection that must authenticate is told.
const AUTH_FIRST: &str = "authenticate first (HELLO|peer|<nonce>)";

/// What every connection thread shares.
struct Shared {
    config: WitnessConfig,
    pairs: Mutex<Pairs>,
    /// Who holds which connection slot.
    slots: Mutex<Slots>,
    /// The open connections, so that stopping can close them.
    sockets: Registry,
    auth_failures: AtomicU64,
    refused_connections: AtomicU64,
}

impl Shared {
    /// The `STATUS` fields: `pair`'s view, then the server's own.
    fn status_fields(&self, pair: &Pair) -> Vec<(String, String)> {
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
fn serve(shared: &Shared, stream: Stream, key: u64, peer: SocketAddr) {
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
    fn run(&mut self, stream: Stream) -> Result<()> {
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
    fn answer(&mut self, line: &[u8]) -> std::result::Result<Reply, String> {
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
            // PROOF: grant access, or hang up.
            Request::Proof(proof) => {
                if self.handshake.proof(&proof).is_none() {
                    shared.auth_failures.fetch_add(1, Ordering::Relaxed);
                    warn!("authentication failed (from {}); hanging up", self.peer);
                    return Err("authentication failed".into());
                }
                debug!("{} authenticated", self.peer);
                self.prove();
                Reply::Welcome
            }
        })
    }

    /// From now on the connection keeps its slot and its idle timeout.
    fn prove(&mut self) {
        if !self.proven {
            self.proven = true;
            self.shared.slots.lock().prove(self.key);
        }
    }
}
