//! The witness server: a listener, one thread per connection, and the rules ([`Leases`])
//! under one parking_lot mutex. Each connection reads a line, answers it, and reads the next;
//! the only state a connection keeps is whether it has authenticated.

use std::collections::HashMap;
use std::io::{self, Write};
use std::net::{Shutdown, SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use parking_lot::{Mutex, MutexGuard};

use super::lease::{Leases, Snapshot};
use super::protocol::{Reply, Request};
use crate::auth;
use crate::config::WitnessConfig;
use crate::connection::{LineReader, Stream};
use crate::error::{Error, Result};
use crate::protocol::AuthKind;

/// The longest line a witness reads: its longest request, a `HELLO` with a 128-digit nonce,
/// fits many times over.
const MAX_LINE: usize = 1024;

/// Stack size of a connection thread: it holds a line and an answer, nothing more.
const CONN_STACK: usize = 64 * 1024;

/// A running witness. Dropping it stops it.
pub struct Witness {
    shared: Arc<Shared>,
    addr: SocketAddr,
    accept: Option<JoinHandle<()>>,
}

/// What every connection thread shares.
struct Shared {
    config: WitnessConfig,
    leases: Mutex<Leases>,
    stopping: AtomicBool,
    /// The open connections, so that stopping can close them.
    sockets: Mutex<HashMap<u64, Stream>>,
    /// The connection threads, for stopping to join.
    conns: Mutex<Vec<JoinHandle<()>>>,
    next_key: AtomicU64,
    auth_failures: AtomicU64,
    refused_connections: AtomicU64,
}

impl Witness {
    /// Binds `config.listen` and starts serving. A witness starts knowing nothing: for one
    /// lease and margin it grants and leases nothing ([`super::lease`], rule 5).
    ///
    /// ```
    /// use edgebroker::config::WitnessConfig;
    /// use edgebroker::witness::Witness;
    ///
    /// let witness = Witness::start(WitnessConfig::fast())?;
    /// assert_ne!(witness.local_addr().port(), 0);
    /// assert_eq!(witness.status().holder, None);
    /// witness.shutdown();
    /// # Ok::<(), edgebroker::Error>(())
    /// ```
    pub fn start(config: WitnessConfig) -> Result<Witness> {
        let listener =
            TcpListener::bind(config.listen).map_err(|e| Error::Listen(config.listen, e))?;
        Witness::start_on(listener, config)
    }

    /// Like [`Witness::start`] on a listener bound already (`config.listen` is ignored).
    pub fn start_on(listener: TcpListener, config: WitnessConfig) -> Result<Witness> {
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
        let shared = Arc::new(Shared {
            leases: Mutex::new(Leases::new(config.lease, config.margin, Instant::now())),
            config,
            stopping: AtomicBool::new(false),
            sockets: Mutex::new(HashMap::new()),
            conns: Mutex::new(Vec::new()),
            next_key: AtomicU64::new(0),
            auth_failures: AtomicU64::new(0),
            refused_connections: AtomicU64::new(0),
        });
        let s = Arc::clone(&shared);
        let accept = thread::Builder::new()
            .name("witness-accept".into())
            .spawn(move || accept_loop(&s, listener))?;
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

    /// The witness's view right now: the highest epoch, the holder, the time its lease has
    /// left.
    pub fn status(&self) -> Snapshot {
        self.shared.leases.lock().snapshot(Instant::now())
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

    fn stop(&mut self) {
        let Some(accept) = self.accept.take() else {
            return;
        };
        self.shared.stopping.store(true, Ordering::Release);
        // Wake the accept loop, blocked in accept().
        crate::connection::wake_listener(self.addr);
        let _ = accept.join();
        for stream in self.shared.sockets.lock().values() {
            let _ = stream.shutdown(Shutdown::Both);
        }
        for t in self.shared.conns.lock().drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Witness {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Shared {
    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    /// Remembers an open connection; `None` once stopping (the connection is closed).
    fn register(&self, stream: &Stream) -> Option<u64> {
        let mut sockets = self.sockets.lock();
        if self.stopping() {
            let _ = stream.shutdown(Shutdown::Both);
            return None;
        }
        let key = self.next_key.fetch_add(1, Ordering::Relaxed);
        sockets.insert(key, stream.clone());
        Some(key)
    }

    /// The `STATUS` fields: the rules' view, then the server's counters.
    fn status_fields(&self) -> Vec<(String, String)> {
        let mut fields = self.leases.lock().snapshot(Instant::now()).fields();
        let count = |c: &AtomicU64| c.load(Ordering::Relaxed).to_string();
        let own = [
            ("connections", self.sockets.lock().len().to_string()),
            ("auth_failures", count(&self.auth_failures)),
            ("refused_connections", count(&self.refused_connections)),
        ];
        fields.extend(own.map(|(k, v)| (k.to_string(), v)));
        fields
    }
}

fn accept_loop(shared: &Arc<Shared>, listener: TcpListener) {
    for stream in listener.incoming() {
        if shared.stopping() {
            return;
        }
        let mut stream = match stream {
            Ok(s) => s,
            Err(e) => {
                warn!("accept failed: {e}");
                thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        let open = shared.sockets.lock().len();
        if open >= shared.config.max_connections {
            shared.refused_connections.fetch_add(1, Ordering::Relaxed);
            warn!("refusing a connection: {open} already open");
            let _ = stream.write_all(&Reply::Err("too many connections".into()).to_bytes());
            continue;
        }
        let _ = stream.set_nodelay(true);
        let stream = Stream::new(stream);
        let Some(key) = shared.register(&stream) else {
            return;
        };
        let s = Arc::clone(shared);
        let spawned = thread::Builder::new()
            .name(format!("witness-conn-{key}"))
            .stack_size(CONN_STACK)
            .spawn(move || serve(&s, stream, key));
        match spawned {
            Ok(handle) => {
                let mut conns = shared.conns.lock();
                conns.retain(|h| !h.is_finished());
                conns.push(handle);
            }
            Err(e) => {
                warn!("cannot start a connection thread: {e}");
                shared.sockets.lock().remove(&key);
            }
        }
    }
}

/// One connection's thread: answers line after line until the peer leaves, falls idle or
/// fails to authenticate.
fn serve(shared: &Shared, stream: Stream, key: u64) {
    let peer = stream
        .peer_addr()
        .map_or_else(|_| "?".into(), |a| a.to_string());
    debug!("connection from {peer}");
    let mut session = Session {
        shared,
        authenticated: shared.config.secret.is_none(),
        handshake: auth::Listener::default(),
        peer,
    };
    if let Err(e) = session.run(stream.clone()) {
        debug!("connection from {} ended: {e}", session.peer);
    }
    let _ = stream.shutdown(Shutdown::Both);
    shared.sockets.lock().remove(&key);
}

/// What one connection knows of its peer.
struct Session<'a> {
    shared: &'a Shared,
    authenticated: bool,
    /// A handshake in progress.
    handshake: auth::Listener,
    peer: String,
}

impl Session<'_> {
    fn run(&mut self, mut stream: Stream) -> io::Result<()> {
        let idle = self.shared.config.idle_timeout;
        stream.set_read_timeout(Some(idle))?;
        stream.set_write_timeout(Some(idle))?;
        let mut reader = LineReader::new(stream.clone(), MAX_LINE);
        loop {
            let line = match reader.read_line() {
                Ok(Some(line)) => line,
                Ok(None) => return Ok(()),
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
        let reply = match request {
            // The time is read once the rules are locked, so it only goes up.
            Request::Lease { epoch, node } => self.leases().renew(epoch, node, Instant::now()),
            Request::Claim { seen, node } => self.leases().claim(seen, node, Instant::now()),
            Request::Status => Reply::Status(self.shared.status_fields()),
            Request::Ping => Reply::Pong,
            Request::Hello { kind, nonce } => self.challenge(kind, nonce),
            Request::Proof { proof } => return self.check_proof(&proof),
        };
        (reply, false)
    }

    fn leases(&self) -> MutexGuard<'_, Leases> {
        self.shared.leases.lock()
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
            return (Reply::Welcome, false);
        }
        self.shared.auth_failures.fetch_add(1, Ordering::Relaxed);
        warn!("authentication failed (from {}); hanging up", self.peer);
        (Reply::Err("authentication failed".into()), true)
    }
}
