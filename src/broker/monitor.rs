//! The pinger: while this broker is the backup, it probes the primary every ping interval, and
//! at once when asked (the replication link broke, a client published to us). A dead primary
//! process answers with a refused or reset connection and is acted on at once; a silent one
//! after the ping timeout.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use crossbeam_channel::{Receiver, RecvTimeoutError};
use log::{debug, error, info, warn};

use crate::connection::Connection;
use crate::error::{Error, Result};
use crate::protocol::{PeerState, Reply, Request, Role};

use super::node::Node;

/// The pinger thread's loop.
pub fn run_monitor(node: Arc<Node>, probe_now: Receiver<()>) {
    let Some(peer_addr) = node.config.peer.clone() else {
        node.take_over("no peer configured");
        return;
    };
    let mut prober = Prober::new(&node, peer_addr);
    let mut refusal_logged = false;
    loop {
        if !node.wait_for_role(Role::Backup) {
            return;
        }
        node.gate();
        let ticket = node.probe_started();
        let result = prober.probe(node.me());
        if result.is_ok() {
            refusal_logged = false;
        }
        match result {
            Ok(peer) if peer.role == Role::Primary => node.peer_answered(peer),
            Ok(peer) => {
                node.peer_answered(peer);
                if node.wins_tie(&peer) {
                    node.take_over("the peer is a backup too and we rank higher");
                } else {
                    debug!("the peer is a backup too and ranks higher; waiting for it to lead");
                }
            }
            // The peer answered but we cannot trust it, or it will not talk to us: it is not
            // dead, the pair is misconfigured. Only the preferred primary leads.
            Err(e @ Error::Auth(_)) => {
                node.counters.auth_failures.fetch_add(1, Ordering::Relaxed);
                if !refusal_logged {
                    error!(
                        "peer {} {e}: check that both brokers have the same --secret",
                        prober.addr
                    );
                    refusal_logged = true;
                }
                if node.config.preferred_primary {
                    node.take_over(
                        "the peer cannot be authenticated; we are the preferred primary",
                    );
                }
            }
            // Alive, and turning us away (full): nothing to take over from.
            Err(Error::Refused(why)) => {
                node.warnings
                    .refused
                    .warn(|| format!("peer {} is alive but refused the probe: {why}", prober.addr));
            }
            Err(Error::Shutdown) => {}
            Err(Error::Timeout) if node.primary_recently_heard() => {
                debug!("probe timed out, but the primary's link spoke just now; not taking over");
            }
            Err(Error::Timeout | Error::Closed | Error::Io(_)) if node.in_startup_grace() => {
                debug!(
                    "peer {} not up yet; waiting out the start-up grace",
                    prober.addr
                );
            }
            Err(e @ (Error::Timeout | Error::Closed | Error::Io(_))) => {
                node.take_over(&format!("peer {} {}", prober.addr, describe(&e)))
            }
            // It answered, though not as a broker should: alive, so not ours to replace.
            Err(e) => warn!("peer {} answered the probe oddly: {e}", prober.addr),
        }
        node.probe_finished(ticket);
        match probe_now.recv_timeout(node.config.ping_interval) {
            Ok(()) | Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        // Several requests may have piled up; one probe answers them all.
        while probe_now.try_recv().is_ok() {}
        if node.stopping() {
            return;
        }
    }
}

/// A persistent probe connection to the peer.
struct Prober {
    node: Arc<Node>,
    addr: String,
    /// The connection and its key in the node's socket registry.
    conn: Option<(Connection, u64)>,
}

impl Prober {
    fn new(node: &Arc<Node>, addr: String) -> Self {
        Prober {
            node: Arc::clone(node),
            addr,
            conn: None,
        }
    }

    /// Sends PROBE and reads the PONG. A connection that broke since the last probe is
    /// redialled once before the peer counts as dead. [`Error::Auth`] means the peer is alive
    /// but the secrets differ, [`Error::Refused`] that it is alive but turned us away.
    fn probe(&mut self, me: PeerState) -> Result<PeerState> {
        let fresh = self.conn.is_none();
        match self.exchange(me) {
            Err(e @ (Error::Closed | Error::Io(_))) if !fresh => {
                debug!("probe connection to {} broke ({e}); redialling", self.addr);
                self.exchange(me)
            }
            result => result,
        }
    }

    fn exchange(&mut self, me: PeerState) -> Result<PeerState> {
        let result = self.try_exchange(me);
        if result.is_err()
            && let Some((conn, key)) = self.conn.take()
        {
            conn.close();
            self.node.unregister(key);
        }
        result
    }

    fn try_exchange(&mut self, me: PeerState) -> Result<PeerState> {
        let config = &self.node.config;
        if self.conn.is_none() {
            let conn = Connection::dial(
                &self.addr,
                config.ping_timeout,
                config.max_line_bytes,
                config.peer_auth(),
            )?;
            let key = self.node.register(conn.stream()).ok_or(Error::Shutdown)?;
            self.conn = Some((conn, key));
        }
        let Some((conn, _)) = self.conn.as_mut() else {
            return Err(Error::Shutdown);
        };
        match conn.ask(&Request::Probe(me))? {
            Reply::PeerPong(peer) => Ok(peer),
            Reply::Err(reason) if reason == "too many connections" => Err(Error::Refused(reason)),
            Reply::Err(reason) => Err(Error::Auth(format!("refused the probe: {reason}"))),
            other => Err(Error::Protocol(format!(
                "answered the probe with {other:?}"
            ))),
        }
    }
}

fn describe(e: &Error) -> String {
    let text = match e {
        Error::Io(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            "refused the connection (process gone)".to_string()
        }
        Error::Closed => "closed the connection (process gone)".to_string(),
        Error::Timeout => "did not answer within the ping timeout".to_string(),
        e => format!("failed the probe: {e}"),
    };
    info!("probe failed: {text}");
    text
}
