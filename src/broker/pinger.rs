//! The pinger thread watches the other parties. While this broker is the backup, it probes
//! the primary every ping interval, and at once when asked (the replication link broke, a
//! client published to us). A dead primary process answers with a refused or reset connection
//! and is replaced at once; a silent one after the ping timeout, and, with a witness
//! (`--witness`), only once the witness grants a new epoch. While this broker is the primary
//! with a witness, the pinger renews its lease every ping interval ([`super::mandate`]).
//! The probe connection is the pinger's own ([`Prober`]), the witness's
//! [`super::witness_link`]'s.

use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::Receiver;
use log::{debug, error, info, warn};

use crate::connection::Connection;
use crate::error::{Error, Result};
use crate::protocol::{PeerState, Reply, Request, Role};

use super::node::Node;
use super::status::bump;
use super::witness_link::Witness;

/// The pinger thread's loop.
pub fn run_pinger(node: Arc<Node>, probe_now: Receiver<()>) {
    let Some(peer_addr) = node.config.peer.clone() else {
        // Read back from disk: the subscribers come back before the replay.
        while node.with_state(|s, now| s.in_restart_grace(now)) && !node.stopping() {
            let _ = probe_now.recv_timeout(node.config.ping_interval);
        }
        node.take_over("no peer configured", None);
        return;
    };
    let mut prober = Prober {
        addr: peer_addr,
        refusal_logged: false,
        conn: None,
    };
    let mut witness = node
        .config
        .witness
        .clone()
        .map(|addr| Witness::new(&node, addr));
    loop {
        node.gate();
        let pause = match node.role().0 {
            Role::Backup => node.probe(|| watch_primary(&node, &mut prober, witness.as_mut())),
            Role::Primary => match witness.as_mut() {
                Some(witness) => witness.renew(),
                None if node.wait_for_role(Role::Backup) => continue,
                None => return,
            },
        };
        // Until asked to probe sooner (the node holds the sender: the wait cannot fail).
        let _ = probe_now.recv_timeout(pause);
        // Several requests may have piled up; one probe answers them all.
        while probe_now.try_recv().is_ok() {}
        if node.stopping() {
            return;
        }
    }
}

/// One probe of the primary, and what follows from its answer. Returns how long to wait
/// before the next.
fn watch_primary(node: &Node, prober: &mut Prober, witness: Option<&mut Witness>) -> Duration {
    let interval = node.config.ping_interval;
    let result = prober.probe(node);
    if result.is_ok() {
        prober.refusal_logged = false;
    }
    let addr = &prober.addr;
    match result {
        Ok(peer) if peer.role == Role::Primary => {
            node.peer_answered(peer);
            if let Some(witness) = witness {
                witness.check();
            }
            interval
        }
        Ok(peer) => {
            node.peer_answered(peer);
            if !node.with_state(|s, now| s.wins_tie(&peer, now)) {
                debug!("the peer is a backup too and ranks higher; waiting for it to lead");
                return interval;
            }
            // Nobody is primary, the peer just said so: a witness out of reach does not stop
            // us, one that knows of a lease still live does.
            let reason = "the peer is a backup too and we rank higher";
            take_over_unless_denied(node, witness, reason, true)
        }
        // The peer answered but we cannot trust it, or it will not talk to us: it is not
        // dead, the pair is misconfigured. Only the preferred primary leads.
        Err(e @ Error::Auth(_)) => {
            bump(&node.counters.auth_failures);
            if !prober.refusal_logged {
                error!("peer {addr} {e}: check that both brokers have the same --secret");
                prober.refusal_logged = true;
            }
            if !node.config.preferred_primary {
                return interval;
            }
            let reason = "the peer cannot be authenticated; we are the preferred primary";
            take_over_unless_denied(node, witness, reason, false)
        }
        // Alive, and turning us away (full): nothing to take over from.
        Err(Error::Refused(why)) => {
            node.warnings
                .refused
                .warn(|| format!("peer {addr} is alive but refused the probe: {why}"));
            interval
        }
        Err(Error::Shutdown) => interval,
        Err(Error::Timeout | Error::Closed | Error::Io(_))
            if node.with_state(|s, now| s.in_startup_grace(now)) =>
        {
            debug!("peer {addr} not up yet; waiting out the start-up grace");
            interval
        }
        // Certain death: nothing listens where the primary was.
        Err(e) if is_certain_death(&e) => {
            node.take_over(&format!("peer {addr} {}", describe(&e)), None);
            interval
        }
        Err(Error::Timeout | Error::Io(_))
            if node.with_state(|s, now| s.primary_recently_heard(now)) =>
        {
            debug!("probe failed, but the primary's link spoke just now; not taking over");
            interval
        }
        Err(e @ (Error::Timeout | Error::Io(_))) => {
            let reason = format!("peer {addr} {}", describe(&e));
            take_over_unless_denied(node, witness, &reason, false)
        }
        // It answered, though not as a broker should: alive, so not ours to replace.
        Err(e) => {
            warn!("peer {addr} answered the probe oddly: {e}");
            interval
        }
    }
}

/// Takes over for `reason` — with a witness, only with its grant (`certain`: nobody is
/// primary, so a witness out of reach does not stop us). Returns when to probe next.
fn take_over_unless_denied(
    node: &Node,
    witness: Option<&mut Witness>,
    reason: &str,
    certain: bool,
) -> Duration {
    match witness {
        Some(witness) => witness.claim(reason, certain),
        None => {
            node.take_over(reason, None);
            node.config.ping_interval
        }
    }
}

/// A refused connection, or one the peer's host closed: no process is there any more.
fn is_certain_death(e: &Error) -> bool {
    match e {
        Error::Closed => true,
        Error::Io(e) => e.kind() == std::io::ErrorKind::ConnectionRefused,
        _ => false,
    }
}

/// The pinger's persistent probe connection to the peer.
struct Prober {
    addr: String,
    /// Whether the peer's refusal to authenticate was logged since it last answered.
    refusal_logged: bool,
    /// The connection and its key in the node's socket registry.
    conn: Option<(Connection, u64)>,
}

impl Prober {
    /// Sends PROBE and reads the PONG. A connection that broke since the last probe is
    /// redialled once before the peer counts as dead. [`Error::Auth`] means the peer is alive
    /// but the secrets differ, [`Error::Refused`] that it is alive but turned us away.
    fn probe(&mut self, node: &Node) -> Result<PeerState> {
        let fresh = self.conn.is_none();
        match self.exchange(node) {
            Err(e @ (Error::Closed | Error::Io(_))) if !fresh => {
                debug!("probe connection to {} broke ({e}); redialling", self.addr);
                self.exchange(node)
            }
            result => result,
        }
    }

    /// One PROBE, on a connection dialled first if there is none; a failure closes it.
    fn exchange(&mut self, node: &Node) -> Result<PeerState> {
        let result = self.try_exchange(node);
        if result.is_err()
            && let Some((conn, key)) = self.conn.take()
        {
            conn.close();
            node.unregister(key);
        }
        result
    }

    fn try_exchange(&mut self, node: &Node) -> Result<PeerState> {
        let (conn, _) = match self.conn.take() {
            Some(open) => self.conn.insert(open),
            None => {
                let conn = node.dial_peer(&self.addr)?;
                let Some(key) = node.sockets.register(conn.stream()) else {
                    return Err(Error::Shutdown);
                };
                self.conn.insert((conn, key))
            }
        };
        match conn.ask(&Request::Probe(node.me()))? {
            Reply::PeerPong(peer) => Ok(peer),
            Reply::Err(reason) if reason == "too many connections" => Err(Error::Refused(reason)),
            // Our epoch is past what it may adopt yet (it restarted, and learns ours from its
            // own probe): alive, and no question of secrets.
            Reply::Err(reason) if reason.starts_with("epoch ") => Err(Error::Refused(reason)),
            Reply::Err(reason) => Err(Error::Auth(format!("refused the probe: {reason}"))),
            other => Err(Error::Protocol(format!(
                "answered the probe with {other:?}"
            ))),
        }
    }
}

/// What a failed probe says of the primary, in words for the log (and logged).
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
