//! The pinger thread watches the other parties. While this broker is the backup, it probes
//! the primary every ping interval, and at once when asked (the replication link broke, a
//! client published to us). A dead primary process answers with a refused or reset connection
//! and is replaced at once; a silent one after the ping timeout, and, with a witness
//! (`--witness`), only once the witness grants a new epoch. While this broker is the primary
//! with a witness, the pinger renews its lease every ping interval ([`super::mandate`]).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use log::{debug, error, info, warn};

use crate::connection::Connection;
use crate::error::{Error, Result};
use crate::protocol::{PeerState, Reply, Request, Role};
use crate::witness::{self, Claim, Renewal};

use super::node::Node;

/// The pinger thread's loop.
pub fn run_monitor(node: Arc<Node>, probe_now: Receiver<()>) {
    let Some(peer_addr) = node.config.peer.clone() else {
        node.take_over("no peer configured", None);
        return;
    };
    let mut prober = Prober::new(&node, peer_addr);
    let mut witness = node
        .config
        .witness
        .clone()
        .map(|addr| Witness::new(&node, addr));
    loop {
        node.gate();
        let pause = match node.role().0 {
            Role::Backup => {
                let ticket = node.probe_started();
                let pause = watch_primary(&node, &mut prober, witness.as_mut());
                node.probe_finished(ticket);
                pause
            }
            Role::Primary => match witness.as_mut() {
                Some(witness) => witness.renew(),
                None if node.wait_for_role(Role::Backup) => continue,
                None => return,
            },
        };
        match probe_now.recv_timeout(pause) {
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

/// One probe of the primary, and what follows from its answer. Returns how long to wait
/// before the next.
fn watch_primary(node: &Node, prober: &mut Prober, witness: Option<&mut Witness>) -> Duration {
    let interval = node.config.ping_interval;
    let result = prober.probe(node.me());
    if result.is_ok() {
        prober.refusal_logged = false;
    }
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
            if !node.wins_tie(&peer) {
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
            node.counters.auth_failures.fetch_add(1, Ordering::Relaxed);
            if !prober.refusal_logged {
                error!(
                    "peer {} {e}: check that both brokers have the same --secret",
                    prober.addr
                );
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
                .warn(|| format!("peer {} is alive but refused the probe: {why}", prober.addr));
            interval
        }
        Err(Error::Shutdown) => interval,
        Err(Error::Timeout | Error::Closed | Error::Io(_)) if node.in_startup_grace() => {
            debug!(
                "peer {} not up yet; waiting out the start-up grace",
                prober.addr
            );
            interval
        }
        // Certain death: nothing listens where the primary was.
        Err(e) if is_certain_death(&e) => {
            node.take_over(&format!("peer {} {}", prober.addr, describe(&e)), None);
            interval
        }
        Err(Error::Timeout | Error::Io(_)) if node.primary_recently_heard() => {
            debug!("probe failed, but the primary's link spoke just now; not taking over");
            interval
        }
        Err(e @ (Error::Timeout | Error::Io(_))) => {
            let reason = format!("peer {} {}", prober.addr, describe(&e));
            take_over_unless_denied(node, witness, &reason, false)
        }
        // It answered, though not as a broker should: alive, so not ours to replace.
        Err(e) => {
            warn!("peer {} answered the probe oddly: {e}", prober.addr);
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

/// The pinger's conversation with the witness.
struct Witness {
    node: Arc<Node>,
    client: witness::Client,
    /// Whether the last failure was logged (one line per outage, not one per ping).
    outage_logged: bool,
    /// Whether a `HELD` answer was logged since the primary last answered (one line per
    /// silence, not one per claim).
    held_logged: bool,
}

impl Witness {
    fn new(node: &Arc<Node>, addr: String) -> Witness {
        let client =
            witness::Client::new(addr, node.config.ping_timeout, node.config.secret.clone())
                .for_pair(node.config.pair.clone());
        Witness {
            node: Arc::clone(node),
            client,
            outage_logged: false,
            held_logged: false,
        }
    }

    /// As primary: renews the lease of our epoch (or registers an epoch taken over on certain
    /// death). Returns when to renew next: every ping interval and twice per lease, sooner
    /// after a failure so that one lost answer does not cost the lease.
    fn renew(&mut self) -> Duration {
        let node = Arc::clone(&self.node);
        let interval = node.config.ping_interval;
        let (_, epoch) = node.role();
        match self.client.renew(epoch, node.id) {
            Ok(answer) => {
                self.up();
                match answer {
                    Renewal::Leased(lease) => {
                        node.mandate.leased(epoch, lease.until);
                        witness::lease::renew_interval(interval, lease.left(Instant::now()))
                            .max(Duration::from_millis(1))
                    }
                    Renewal::Fenced(newer) => {
                        warn!("the witness knows epoch {newer}, newer than our {epoch}");
                        node.observe(newer);
                        Duration::ZERO
                    }
                    Renewal::Held(held) => {
                        debug!(
                            "the witness holds epoch {}'s lease for {} ms more; registering after it",
                            held.epoch,
                            held.left.as_millis()
                        );
                        held.left.min(interval)
                    }
                    Renewal::Restarting(left) => {
                        debug!(
                            "the witness restarted; registering in {} ms",
                            left.as_millis()
                        );
                        left.min(interval)
                    }
                }
            }
            Err(e) => {
                self.down(&e);
                interval / 4
            }
        }
    }

    /// As backup, the primary silent (or both brokers backups, `certain`: nobody is
    /// primary): asks the witness for a new epoch, and takes over in it if granted. A witness
    /// out of reach grants nothing: on silence alone, nobody takes over.
    fn claim(&mut self, reason: &str, certain: bool) -> Duration {
        let node = Arc::clone(&self.node);
        let interval = node.config.ping_interval;
        match self.client.claim(node.seen_epoch(), node.id) {
            Ok(answer) => {
                self.up();
                match answer {
                    Claim::Granted(lease) => {
                        node.take_over(
                            &format!("{reason}; the witness granted epoch {}", lease.epoch),
                            Some(lease),
                        );
                        Duration::ZERO
                    }
                    Claim::Held(held) if self.held_logged => held.left.min(interval),
                    Claim::Held(held) => {
                        self.held_logged = true;
                        info!(
                            "{reason}, but the witness says the primary of epoch {} holds its \
                             lease for {} ms more; not taking over while it does",
                            held.epoch,
                            held.left.as_millis()
                        );
                        held.left.min(interval)
                    }
                    Claim::Restarting(left) => {
                        info!(
                            "{reason}, but the witness restarted and grants nothing for {} ms",
                            left.as_millis()
                        );
                        left.min(interval)
                    }
                }
            }
            Err(e) if certain => {
                self.down(&e);
                node.take_over(&format!("{reason} (the witness is out of reach)"), None);
                interval
            }
            Err(e) => {
                self.down(&e);
                if !self.outage_logged {
                    warn!("{reason}, but without the witness's grant nobody takes over on silence");
                }
                interval
            }
        }
    }

    /// As backup, the primary alive: only to know, for STATUS, whether the witness answers.
    fn check(&mut self) {
        self.held_logged = false;
        match self.client.status() {
            Ok(_) => self.up(),
            Err(e) => self.down(&e),
        }
    }

    fn up(&mut self) {
        if self.outage_logged {
            info!("the witness at {} answers again", self.client.addr());
            self.outage_logged = false;
        }
        self.node.mandate.set_witness(true);
    }

    fn down(&mut self, e: &Error) {
        if !self.outage_logged {
            warn!("the witness at {} is out of reach: {e}", self.client.addr());
            self.outage_logged = true;
        }
        self.node.mandate.set_witness(false);
    }
}

/// A persistent probe connection to the peer.
struct Prober {
    node: Arc<Node>,
    addr: String,
    /// Whether the peer's refusal to authenticate was logged since it last answered.
    refusal_logged: bool,
    /// The connection and its key in the node's socket registry.
    conn: Option<(Connection, u64)>,
}

impl Prober {
    fn new(node: &Arc<Node>, addr: String) -> Self {
        Prober {
            node: Arc::clone(node),
            addr,
            refusal_logged: false,
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
