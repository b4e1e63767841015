//! The primary's side of replication: the replicator thread dials the backup, SYNCs it, hands
//! it the dedup table and every pending message, then streams REPLICATE and CLEAR lines to it
//! and reads back its confirmations. While no backup answers, the primary runs degraded and
//! keeps redialling.

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use log::{info, warn};

use crate::connection::{Connection, LineReader, Stream};
use crate::error::Error;
use crate::protocol::{Epoch, Message, Reply, Request, Role};

use super::acks::Verdicts;
use super::link::Link;
use super::node::Node;
use super::safety::BackupHealth;
use super::status::bump;

/// The first pause between redials of an unreachable backup; it doubles up to the ping
/// interval.
const MIN_BACKOFF: Duration = Duration::from_millis(20);

/// Why a session could not start.
enum Failure {
    /// The backup's epoch is newer: we must step down.
    Fenced(Epoch),
    /// Nothing listens there: the backup is certainly down.
    Refused(String),
    /// It did not answer in time: maybe hung, maybe dead.
    Silent(String),
    /// It answered that it would not serve us (full): alive, so it may take over with what it
    /// holds, and we must not ACK without it. (A connection closed without a word is not
    /// proof of life: a proxy on the way does that for a dead backup.)
    Busy(String),
}

/// How a synced session ended.
enum Ended {
    /// The link broke or went quiet: redial.
    Lost,
    /// The backup refused a line we sent (`ERR|…`): sending it again would fail the same
    /// way, so the next dial waits.
    Refused(String),
}

/// The replicator thread's loop.
pub fn run_replicator(node: Arc<Node>, redial_now: Receiver<()>) {
    let Some(peer) = node.config.peer.clone() else {
        if node.wait_for_role(Role::Primary) {
            warn!("no backup configured: running without replication");
        }
        return;
    };
    let mut backoff = MIN_BACKOFF;
    let mut warned = false;
    // Numbers each dial, so the backup can tell a SYNC delayed in the network from ours.
    let mut session = 0;
    while node.wait_for_role(Role::Primary) {
        let (_, epoch) = node.role();
        session += 1;
        match open_session(&node, &peer, epoch, session) {
            Ok((conn, orphans)) => {
                warned = false;
                bump(&node.counters.link_sessions);
                if !orphans.is_empty() {
                    let offered = orphans.len();
                    let adopted = node.adopt_orphans(epoch, orphans);
                    info!("the old primary handed over {offered} message(s); {adopted} were new");
                }
                let started = Instant::now();
                match run_session(&node, &peer, conn, epoch) {
                    // A session that lived a while ended by chance: redial at once (a dead
                    // backup refuses quickly). One that ended at once may end the same way
                    // again: back off.
                    Ended::Lost if started.elapsed() >= node.config.ping_interval => {
                        backoff = MIN_BACKOFF;
                        continue;
                    }
                    Ended::Lost => node.set_link_error(Some(
                        "the replication link broke within a ping interval of syncing".into(),
                    )),
                    Ended::Refused(why) => {
                        warn!(
                            "backup {peer} refused the replication stream ({why}); check that \
                             both brokers have the same limits (--max-line-bytes); retrying in {} ms",
                            backoff.as_millis()
                        );
                        node.set_link_error(Some(format!("backup refused: {why}")));
                        node.safety.set_health(node.safety.unheard());
                    }
                }
                // A session that failed at once would fail again at once, and the backup's
                // probe that its end provokes asks for a redial at once: sit the backoff out.
                if !sit_out(&node, &redial_now, backoff) {
                    return;
                }
                backoff = (backoff * 2).min(node.config.ping_interval);
                continue;
            }
            Err(Failure::Fenced(newer)) => {
                node.observe(newer);
                continue;
            }
            Err(Failure::Refused(why)) => {
                node.safety.set_health(BackupHealth::Down);
                if !warned {
                    warn!("backup {peer} {why}: running degraded, ACKing without replication");
                }
            }
            Err(Failure::Silent(why)) => {
                let health = node.safety.unheard();
                node.safety.set_health(health);
                if !warned {
                    warn!("backup {peer} {why}: counting it as {}", health.as_str());
                }
            }
            // Never degraded: a stranger holding the backup's slots must not decide that the
            // pair stops replicating. The slot it held is ours at the next dial, so dial soon.
            Err(Failure::Busy(why)) => {
                node.safety.set_health(BackupHealth::Silent);
                if !warned {
                    warn!("backup {peer} {why}: holding ACKs until it syncs; redialling");
                }
                backoff = MIN_BACKOFF;
            }
        }
        // Each failure above is warned of once, until a session syncs.
        warned = true;
        // Until asked to redial sooner (the node holds the sender: the wait cannot fail).
        let _ = redial_now.recv_timeout(backoff);
        backoff = (backoff * 2).min(node.config.ping_interval);
    }
}

/// Waits `pause`, ignoring requests to redial sooner; `false` when the broker stops. (The
/// node holds the sender, so each wait ends with a request or at `pause`.)
fn sit_out(node: &Node, redial_now: &Receiver<()>, pause: Duration) -> bool {
    let until = Instant::now() + pause;
    while redial_now.recv_deadline(until).is_ok() {
        if node.stopping() {
            return false;
        }
    }
    true
}

/// Dials the backup and SYNCs it to our epoch; returns the connection and what the peer
/// handed over (if it was a primary that stepped down).
fn open_session(
    node: &Node,
    peer: &str,
    epoch: Epoch,
    session: u64,
) -> Result<(Connection, Vec<Message>), Failure> {
    let failure = |e: Error| match e {
        Error::Io(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            Failure::Refused("refused the connection".into())
        }
        Error::Timeout => Failure::Silent("did not answer in time".into()),
        Error::Auth(_) => {
            bump(&node.counters.auth_failures);
            Failure::Refused(format!(
                "{e} (check that both brokers have the same --secret)"
            ))
        }
        Error::Refused(why) => Failure::Busy(format!("is alive but refused us: {why}")),
        e => Failure::Refused(format!("is unreachable: {e}")),
    };
    let mut conn = node.dial_peer(peer).map_err(failure)?;
    conn.send(&Request::Sync { epoch, session })
        .map_err(failure)?;
    let mut orphans = Vec::new();
    loop {
        match conn.recv().map_err(failure)? {
            Reply::Handoff(message) => orphans.push(message),
            Reply::Synced { epoch: e } if e == epoch => return Ok((conn, orphans)),
            Reply::Fenced { epoch: newer } => return Err(Failure::Fenced(newer)),
            Reply::Err(why) if why == "too many connections" => {
                return Err(failure(Error::Refused(why)));
            }
            other => return Err(Failure::Refused(format!("answered SYNC with {other:?}"))),
        }
    }
}

/// Runs one synced session until either side ends it: this thread writes what is pushed to
/// the [`Link`] and a PROBE heartbeat every heartbeat interval, and a helper thread reads the
/// confirmations and the heartbeats' answers. Whichever ends first closes the link, which
/// ends the other.
fn run_session(node: &Node, peer: &str, conn: Connection, epoch: Epoch) -> Ended {
    // A backup that stops reading must not hold a writer for long: past the ping timeout the
    // write fails and the session ends (the connection's write timeout).
    let stream = conn.stream().clone();
    let Some(key) = node.sockets.register(&stream) else {
        return Ended::Lost;
    };
    let link = Link::new(stream, epoch);
    let Some(handed) = node.install_link(epoch, Arc::clone(&link)) else {
        node.unregister(key);
        return Ended::Lost;
    };
    info!(
        "backup {peer} synced in epoch {epoch}: handed it {handed} pending message(s); replicating"
    );
    let read_half = conn.into_reader();
    let ended = thread::scope(|scope| {
        let reader = thread::Builder::new()
            .name("repl-reader".into())
            .spawn_scoped(scope, || {
                let ended = read_confirmations(node, read_half, &link);
                link.close();
                ended
            });
        if reader.is_ok() {
            keep_alive(node, &link);
        }
        node.drop_link(epoch);
        link.close();
        reader.ok().and_then(|reader| reader.join().ok())
    });
    node.unregister(key);
    ended.unwrap_or(Ended::Lost)
}

/// The session's link writer: writes what is pushed to the link, and a PROBE heartbeat every
/// heartbeat interval, until the link is closed or a write breaks it. A session that lasted a
/// ping interval works: the error of an earlier one is forgotten.
fn keep_alive(node: &Node, link: &Link) {
    // How often the link carries a heartbeat: often enough that the backup notices a frozen
    // primary within half a ping timeout (see the link's read timeout in `conn::follower`),
    // and that the backup's answers keep vouching for the primary ([`super::mandate`]).
    let config = &node.config;
    let interval =
        (config.ping_interval.min(config.ping_timeout / 4)).max(Duration::from_millis(1));
    let mut works_at = Some(Instant::now() + config.ping_interval);
    loop {
        if works_at.is_some_and(|t| Instant::now() >= t) {
            works_at = None;
            node.set_link_error(None);
        }
        node.gate();
        if !link.write_next(interval, || Request::Probe(node.me()), &node.safety) {
            return;
        }
    }
}

/// Reads the backup's answers. Ends on EOF, on a fence, or when the backup falls silent: no
/// line for a ping interval plus timeout, or a REPLICATE unconfirmed for a ping timeout.
fn read_confirmations(node: &Node, mut reader: LineReader<Stream>, link: &Link) -> Ended {
    let (config, epoch) = (&node.config, link.epoch);
    let timeout = config.ping_timeout.min(config.ping_interval);
    let _ = reader.get_ref().set_read_timeout(Some(timeout));
    let mut last_heard = Instant::now();
    // Confirmations that arrived together wake the waiting publishers once.
    let mut confirmed = 0;
    loop {
        if confirmed > 0 && !reader.has_buffered_line() {
            node.safety.confirm(confirmed);
            // The publishers these cover wait in `read`, their ACKs filed: write them here.
            node.acks.answer_confirmed(node, Verdicts::confirmed(node));
            confirmed = 0;
        }
        let line = match reader.read_line() {
            Ok(Some(line)) => line,
            Ok(None) => {
                info!("backup closed the replication link");
                return Ended::Lost;
            }
            Err(Error::Timeout) => {
                let idle = last_heard.elapsed() > config.ping_interval + config.ping_timeout;
                let unconfirmed = node.safety.unconfirmed_since();
                let stuck = unconfirmed.is_some_and(|t| t.elapsed() > config.ping_timeout);
                if idle || stuck {
                    warn!("backup fell silent on the replication link");
                    node.safety.set_health(node.safety.unheard());
                    return Ended::Lost;
                }
                continue;
            }
            Err(e) => {
                info!("replication link broke: {e}");
                return Ended::Lost;
            }
        };
        last_heard = Instant::now();
        match Reply::parse(line) {
            Ok(Reply::Replicated { index }) => confirmed = confirmed.max(index),
            Ok(Reply::PeerPong(peer)) => {
                let sent = link.heartbeat_answered();
                // Only a backup that follows our epoch vouches for us; one that took over
                // meanwhile answers with its newer epoch, and we step down instead.
                if !node.observe(peer.epoch)
                    && peer.epoch == epoch
                    && peer.role == Role::Backup
                    && let Some(sent) = sent
                {
                    node.mandate.vouched(epoch, sent);
                }
            }
            Ok(Reply::Fenced { epoch: newer }) => {
                node.observe(newer);
                return Ended::Lost;
            }
            Ok(Reply::Err(why)) => return Ended::Refused(why),
            other => {
                warn!("backup answered {other:?} in epoch {epoch}; resyncing");
                return Ended::Lost;
            }
        }
    }
}
