//! The broker engine. One engine serves both roles; takeover and step-down are changes of its
//! state, not a jump between programs. [`Broker::start`] binds the listener and starts the
//! threads:
//!
//! - `accept`: accepts connections and gives each its own `conn-N` thread (`conn`);
//! - `worker-N`: the compute workers (`compute`);
//! - `pinger`: probes the primary while this broker is the backup (`pinger`);
//! - `replicator`: dials and syncs the backup while this broker is primary, then writes the
//!   link (`link`), and its `repl-reader` reads the confirmations and writes the ACKs they
//!   cover (`replication`, `acks`);
//! - `acks`: answers filed ACKs on a change of the backup's health or of the role, or at their
//!   deadline (`acks`).
//! - `handoff`: hands the messages a stepped-down primary still holds to the new primary
//!   (`handoff`).
//! - `journal`: with `--data-dir`, writes the log on disk and syncs it, and answers the ACKs
//!   that waited for it (`journal`).
//!
//! Before it starts them, it lowers `--max-connections` to what the machine's limits fit
//! (`connection_capacity`).

mod acks;
mod compute;
mod conn;
mod handoff;
mod journal;
mod link;
mod mandate;
mod message_log;
mod node;
mod path;
mod pinger;
mod reign;
mod replication;
mod role;
mod safety;
mod status;
mod topics;
mod verdict;
mod warnings;
mod witness_link;
mod writer;

use std::fs;
use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::{self, JoinHandle, Scope};

use log::{debug, info, warn};

use crate::config::BrokerConfig;
use crate::connection;
use crate::error::{Error, Result};
use crate::protocol::{Reply, Role};
use crate::slots::{Admission, Slot, Source};

use journal::Journal;
pub use mandate::WitnessView;
use node::Node;
pub use safety::BackupHealth;
use status::bump;
pub use status::{CounterSnapshot, Status};

/// Connection slots kept, beyond `--max-connections`, for the peer broker's replication link,
/// probe connection and hand-off: a stranger holding every client slot cannot keep the pair
/// apart. A connection in one of them must authenticate as the peer within
/// `--auth-timeout-ms` (without `--secret`: speak a peer verb first) or it is closed, and until
/// it has, a newcomer may take its slot (`crate::slots`): a stranger cannot hold them.
pub const PEER_SLOTS: usize = 4;

/// Stack size of a connection thread. Ten thousand connections must fit in memory; the
/// connection keeps its buffers on the heap, so a small stack is plenty.
const CONN_STACK: usize = 128 * 1024;

/// A running broker. Dropping it shuts it down.
pub struct Broker {
    node: Arc<Node>,
    addr: SocketAddr,
    /// Every thread but the connections', which the accept thread joins before it ends.
    threads: Vec<JoinHandle<()>>,
}

impl Broker {
    /// Binds `config.listen` and starts every thread. The broker starts as a backup and
    /// settles its role at once: with no peer, or a peer that refuses, it takes over; if the
    /// peer is an active primary, it follows it.
    ///
    /// ```
    /// use edgebroker::protocol::Role;
    /// use edgebroker::{Broker, BrokerConfig};
    ///
    /// // A lone broker (no peer) on a free loopback port: it leads at once.
    /// let broker = Broker::start(BrokerConfig::fast())?;
    /// assert_ne!(broker.local_addr().port(), 0);
    /// # for _ in 0..500 {
    /// #     if broker.status().role == Role::Primary { break }
    /// #     std::thread::sleep(std::time::Duration::from_millis(2));
    /// # }
    /// assert_eq!(broker.status().role, Role::Primary);
    /// broker.shutdown();
    /// # Ok::<(), edgebroker::Error>(())
    /// ```
    pub fn start(config: BrokerConfig) -> Result<Broker> {
        let listener =
            TcpListener::bind(config.listen).map_err(|e| Error::Listen(config.listen, e))?;
        Broker::start_on(listener, config)
    }

    /// Like [`Broker::start`] on a listener bound already (`config.listen` is ignored). Tests
    /// bind both brokers' listeners first, so each knows the other's address before it starts.
    pub fn start_on(listener: TcpListener, mut config: BrokerConfig) -> Result<Broker> {
        let addr = listener.local_addr()?;
        if let Some(cap) = connection_capacity()
            && config.max_connections > cap
        {
            debug!(
                "this machine's limits (open files, vm.max_map_count) fit about {cap} connections; \
                 lowering --max-connections from {} to {cap}",
                config.max_connections
            );
            config.max_connections = cap;
        }
        let (probe_tx, probe_rx) = crossbeam_channel::bounded(1);
        let (redial_tx, redial_rx) = crossbeam_channel::bounded(1);
        let (handoff_tx, handoff_rx) = crossbeam_channel::bounded(1);
        let (worker_txs, worker_rxs): (Vec<_>, Vec<_>) = (0..config.workers.max(1))
            .map(|_| crossbeam_channel::unbounded())
            .unzip();
        let disk = match &config.data_dir {
            Some(dir) => {
                let (journal, restored) = Journal::open(dir, &config, Node::fresh_id())?;
                Some((Arc::new(journal), restored))
            }
            None => None,
        };
        let node = Node::new(config, disk, worker_txs, probe_tx, redial_tx, handoff_tx);
        let node = Arc::new(node);
        info!("listening on {addr} (node {})", node.id);
        if node.config.secret.is_none() && !addr.ip().is_loopback() {
            warn!(
                "no --secret: anyone who can reach {addr} can drive the pair (take over, \
                 replicate, fence). Set the same --secret S (or BROKER_SECRET) on both brokers, \
                 or --bind 127.0.0.1 for a local run"
            );
        }

        let mut threads = Vec::new();
        for (i, rx) in worker_rxs.into_iter().enumerate() {
            let worker = |n| compute::run_worker(n, rx);
            threads.push(spawn(&node, &format!("worker-{i}"), worker)?);
        }
        let replicator = |n| replication::run_replicator(n, redial_rx);
        threads.push(spawn(&node, "replicator", replicator)?);
        node.safety.watch(node.acks.alarm());
        threads.push(spawn(&node, "acks", acks::run_acks)?);
        threads.push(spawn(&node, "pinger", |n| pinger::run_pinger(n, probe_rx))?);
        if let Some(journal) = node.journal.clone() {
            let write = move |n: Arc<Node>| {
                let leading = || n.role().0 == Role::Primary;
                journal.run(leading, |durable| n.answer_durable(durable));
            };
            threads.push(spawn(&node, "journal", write)?);
        }
        let hand_off = |n| handoff::run_handoff(n, handoff_rx);
        threads.push(spawn(&node, "handoff", hand_off)?);
        let accept = |n| thread::scope(|scope| accept_loop(scope, n, listener));
        threads.push(spawn(&node, "accept", accept)?);
        Ok(Broker {
            node,
            addr,
            threads,
        })
    }

    /// The address the listener is bound to (with the real port when started on port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The broker's role, epoch, backup state and counters right now.
    pub fn status(&self) -> Status {
        self.node.status()
    }

    /// Test hook: freezes the broker's threads at their next step, as `SIGSTOP` freezes a
    /// process. Connections stay open; what arrives waits in the socket buffers.
    pub fn pause(&self) {
        self.node.pause();
    }

    /// Undoes [`Broker::pause`], as `SIGCONT` does.
    pub fn resume(&self) {
        self.node.resume();
    }

    /// Stops like a crashed process, and returns at once: every socket closes, nothing is
    /// handed over, the compute in hand is abandoned and what is queued stays with the backup.
    /// It takes `&self`, so a test or a lesson can kill a broker shared with other threads
    /// (`Arc<Broker>`); dropping the broker afterwards joins its threads.
    pub fn kill(&self) {
        info!("killed");
        self.node.stop();
        connection::wake_listener(self.addr);
    }

    /// Runs a broker as the `primary` and `backup` programs do: starts it, prints
    /// `listening on <addr>` as the first stdout line, serves until Ctrl-C or SIGTERM, then
    /// shuts it down cleanly (a planned failover when it is the primary).
    pub fn serve(config: BrokerConfig) -> Result<()> {
        crate::cli::serve_until_interrupted(
            || Broker::start(config),
            Broker::local_addr,
            Broker::shutdown,
        )
    }

    /// Stops the broker cleanly. A primary with a synced backup first hands over: it stops
    /// accepting publishes, tells the backup to take over at once (a planned failover, faster
    /// than detection, nothing lost), and waits for the backup's new epoch. Then it syncs its
    /// log on disk, if it has one, closes the listener and every connection and joins every
    /// thread.
    pub fn shutdown(self) {
        info!("shutting down");
        self.node.hand_over();
        // What was appended is on disk before the threads stop (a crash, `kill`, leaves it).
        if let Some(journal) = &self.node.journal {
            journal.sync_now();
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.node.stop();
        connection::wake_listener(self.addr);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Starts the thread `name`, which runs `f` on a handle of its own on the node.
fn spawn<F>(node: &Arc<Node>, name: &str, f: F) -> Result<JoinHandle<()>>
where
    F: FnOnce(Arc<Node>) + Send + 'static,
{
    let node = Arc::clone(node);
    Ok(thread::Builder::new()
        .name(name.into())
        .spawn(move || f(node))?)
}

/// Accepts connections until the broker stops, each served by a thread of `scope`.
fn accept_loop<'a>(scope: &'a Scope<'a, '_>, node: Arc<Node>, listener: TcpListener) {
    while let Some((stream, addr)) = node.sockets.accept(&listener) {
        // Paused, as a stopped process, we accept no more: dials wait in the listen queue.
        node.gate();
        // Once the broker stops, every socket is closed and none is registered: not the
        // connection that wakes this loop either.
        let Some(key) = node.sockets.register(&stream) else {
            return;
        };
        let (source, prove_open) = (Source::of(addr.ip()), node.config.client_secret.is_some());
        let admission = node.slots.lock().admit(key, source, prove_open);
        let Admission::Granted { slot, evicted } = admission else {
            node.unregister(key);
            bump(&node.counters.refused_connections);
            let open = node.counters.connections.load(Ordering::Relaxed);
            let max = node.config.max_connections;
            node.warnings.refused.warn(|| {
                format!("refusing a connection: {open} already open (--max-connections {max})")
            });
            let _ = (&*stream).write_all(&Reply::Err("too many connections".into()).to_bytes());
            continue;
        };
        if let Some(evicted) = evicted {
            // An unproven connection gives up its slot to the newcomer (`crate::slots`).
            debug!("conn-{evicted} hung up on: its slot went to a newcomer");
            bump(&node.counters.refused_connections);
            node.sockets.hang_up(evicted);
        }
        let peer_slot = slot == Slot::Reserved;
        bump(&node.counters.connections);
        debug!("conn-{key} from {}", addr.ip());
        let n = Arc::clone(&node);
        let spawned = thread::Builder::new()
            .name(format!("conn-{key}"))
            .stack_size(CONN_STACK)
            .spawn_scoped(scope, move || conn::serve(n, stream, key, peer_slot));
        if let Err(e) = spawned {
            warn!("cannot start a connection thread: {e}");
            node.unregister(key);
            node.counters.connections.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// Mappings a connection may need: two threads, four each.
const MAPS_PER_CONNECTION: usize = 8;
/// Mappings and descriptors kept for everything else in the process.
const RESERVE: usize = 1024;

/// How many connections this machine lets one broker serve, if its limits can be read
/// (Linux). A connection costs one file descriptor and two threads (its reader and its
/// writer), and each thread costs about four memory mappings (stack, guard page, signal stack
/// and its guard). Past either limit the operating system refuses a socket or a thread — and a
/// thread that cannot set up its signal stack aborts the whole process — so the broker lowers
/// `--max-connections` to what fits, and says so, instead of failing under load.
fn connection_capacity() -> Option<usize> {
    let by_maps = read_number("/proc/sys/vm/max_map_count")
        .map(|maps| maps.saturating_sub(RESERVE) / MAPS_PER_CONNECTION);
    let by_files = open_file_limit().map(|files| files.saturating_sub(RESERVE.min(files / 2)));
    // The lower of the two that could be read.
    by_maps.into_iter().chain(by_files).min()
}

fn read_number(path: &str) -> Option<usize> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The soft limit on open files, from `/proc/self/limits`.
fn open_file_limit() -> Option<usize> {
    let limits = fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacity_is_positive_where_limits_are_readable() {
        if let Some(cap) = connection_capacity() {
            assert!(cap > 0);
        }
    }
}
