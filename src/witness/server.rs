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
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::{self, JoinHandle, Scope};
use std::time::Instant;

use log::{debug, info, warn};
use parking_lot::Mutex;

use super::lease::Snapshot;
use super::pairs::Pairs;
use super::protocol::{Pair, Reply};
use super::session::{self, Shared};
use crate::config::WitnessConfig;
use crate::connection;
use crate::error::{Error, Result};
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
    loop {
        let (stream, addr) = connection::accept(&listener);
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
            .spawn_scoped(scope, move || session::serve(shared, stream, key, addr));
        if let Err(e) = spawned {
            warn!("cannot start a connection thread: {e}");
            shared.sockets.forget(key);
            shared.slots.lock().leave(key);
        }
    }
}
