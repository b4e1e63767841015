//! The primary's side of replication: the replicator thread dials the backup, SYNCs it, hands
//! it the dedup table and every pending message, then streams REPLICATE and CLEAR lines to it
//! and reads back its confirmations. While no backup answers, the primary runs degraded and
//! keeps redialling.

use std::io::Write;
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, select};
use log::{debug, info, warn};

use crate::auth;
use crate::connection::{LineReader, Stream, dial, is_timeout};
use crate::protocol::{AuthKind, Epoch, Message, Reply, Request, Role};

use super::node::{LinkCmd, Node};
use super::safety::BackupHealth;

/// The first pause between redials of an unreachable backup; it doubles up to the ping
/// interval.
const MIN_BACKOFF: Duration = Duration::from_millis(20);

/// Why a session could not start.
enum Failure {
    /// The backup's epoch is newer: we must step down.
    Fenced(Epoch),
    /// Nothing listens there: the backup is certainly down.
    Refused(String),
    /// It did not answer in time: silent, maybe hung.
    Silent(String),
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
            Ok((stream, orphans)) => {
                backoff = MIN_BACKOFF;
                warned = false;
                if !orphans.is_empty() {
                    let offered = orphans.len();
                    let adopted = node.adopt_orphans(epoch, orphans);
                    info!("the old primary handed over {offered} message(s); {adopted} were new");
                }
                run_session(&node, stream, epoch);
                continue; // redial at once: a dead backup refuses quickly
            }
            Err(Failure::Fenced(newer)) => {
                node.observe(newer);
                continue;
            }
            Err(Failure::Refused(why)) => {
                node.safety.set_health(BackupHealth::Down);
                if !warned {
                    warn!("backup {peer} {why}: running degraded, ACKing without replication");
                    warned = true;
                }
            }
            Err(Failure::Silent(why)) => {
                let health = if node.config.require_backup {
                    BackupHealth::Silent
                } else {
                    BackupHealth::Down
                };
                node.safety.set_health(health);
                if !warned {
                    warn!("backup {peer} {why}: counting it as {}", health.as_str());
                    warned = true;
                }
            }
        }
        match redial_now.recv_timeout(backoff) {
            Ok(()) | Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        backoff = (backoff * 2).min(node.config.ping_interval);
    }
}

/// Dials the backup and SYNCs it to our epoch; returns the link and what the peer handed
/// over (if it was a primary that stepped down).
fn open_session(
    node: &Node,
    peer: &str,
    epoch: Epoch,
    session: u64,
) -> Result<(TcpStream, Vec<Message>), Failure> {
    let timeout = node.config.ping_timeout;
    let stream = dial(peer, timeout).map_err(|e| match e.kind() {
        std::io::ErrorKind::ConnectionRefused => Failure::Refused("refused the connection".into()),
        _ if is_timeout(&e) => Failure::Silent("did not accept the connection in time".into()),
        _ => Failure::Refused(format!("is unreachable: {e}")),
    })?;
    let silent = |e: std::io::Error| {
        if is_timeout(&e) {
            Failure::Silent("did not answer SYNC in time".into())
        } else if e.kind() == std::io::ErrorKind::PermissionDenied {
            node.counters.auth_failures.fetch_add(1, Ordering::Relaxed);
            Failure::Refused(format!(
                "{e} (check that both brokers have the same --secret)"
            ))
        } else {
            Failure::Refused(format!("dropped the connection: {e}"))
        }
    };
    stream.set_read_timeout(Some(timeout)).map_err(silent)?;
    let mut reader = LineReader::new(&stream, node.config.max_line_bytes);
    if let Some(secret) = &node.config.secret {
        auth::authenticate(&stream, &mut reader, AuthKind::Peer, secret).map_err(silent)?;
    }
    let mut line = Vec::new();
    Request::Sync { epoch, session }.encode(&mut line);
    (&stream).write_all(&line).map_err(silent)?;
    let mut orphans = Vec::new();
    loop {
        let answer = reader
            .read_line()
            .map_err(silent)?
            .ok_or_else(|| Failure::Refused("closed the connection".into()))?;
        match Reply::parse(answer) {
            Ok(Reply::Handoff(message)) => orphans.push(message),
            Ok(Reply::Synced { epoch: e }) if e == epoch => return Ok((stream, orphans)),
            Ok(Reply::Fenced { epoch: newer }) => return Err(Failure::Fenced(newer)),
            other => return Err(Failure::Refused(format!("answered SYNC with {other:?}"))),
        }
    }
}

/// Runs one synced session until either side ends it. This thread writes; a helper thread
/// reads confirmations and heartbeat answers.
fn run_session(node: &Arc<Node>, stream: TcpStream, epoch: Epoch) {
    let stream = Stream::new(stream);
    let Some(key) = node.register(&stream) else {
        return;
    };
    let (link_tx, link_rx) = crossbeam_channel::unbounded();
    let Some(handed) = node.install_link(epoch, link_tx) else {
        node.unregister(key);
        return;
    };
    info!(
        "backup {} synced in epoch {epoch}: handed it {handed} pending message(s); replicating",
        node.config.peer.as_deref().unwrap_or("?")
    );
    let (done_tx, done_rx) = crossbeam_channel::bounded::<()>(1);
    let (read_half, reader_node) = (stream.clone(), Arc::clone(node));
    let reader = thread::Builder::new()
        .name("repl-reader".into())
        .spawn(move || {
            read_confirmations(&reader_node, read_half, epoch);
            drop(done_tx);
        })
        .ok();
    if reader.is_some() {
        write_link(node, &stream, &link_rx, &done_rx, epoch);
    }
    node.drop_link(epoch);
    let _ = stream.shutdown(Shutdown::Both);
    if let Some(reader) = reader {
        let _ = reader.join();
    }
    node.unregister(key);
}

/// Writes queued link commands, batching whatever piled up into one write, and a PROBE
/// heartbeat whenever the link has been idle for a ping interval.
fn write_link(
    node: &Node,
    mut stream: &TcpStream,
    link_rx: &Receiver<LinkCmd>,
    done_rx: &Receiver<()>,
    epoch: Epoch,
) {
    let mut buf = Vec::with_capacity(64 * 1024);
    loop {
        let first = select! {
            recv(link_rx) -> cmd => match cmd {
                Ok(cmd) => Some(cmd),
                Err(_) => return, // the node dropped the link: reign over or stopping
            },
            recv(done_rx) -> _ => return, // the reader saw the session end
            default(heartbeat_interval(node)) => None,
        };
        node.gate();
        let mut highest = 0;
        match first {
            Some(cmd) => {
                highest = highest.max(encode(&cmd, epoch, &mut buf));
                while buf.len() < 64 * 1024 {
                    match link_rx.try_recv() {
                        Ok(cmd) => highest = highest.max(encode(&cmd, epoch, &mut buf)),
                        Err(_) => break,
                    }
                }
            }
            None => Request::Probe(node.me()).encode(&mut buf),
        }
        if let Err(e) = stream.write_all(&buf) {
            debug!("replication link write failed: {e}");
            return;
        }
        buf.clear();
        if highest > 0 {
            node.safety.note_sent(highest);
        }
    }
}

/// How often an idle link carries a heartbeat: often enough that the backup notices a frozen
/// primary within half a ping timeout (see the link's read timeout in `handler`).
fn heartbeat_interval(node: &Node) -> Duration {
    node.config
        .ping_interval
        .min(node.config.ping_timeout / 4)
        .max(Duration::from_millis(1))
}

/// Encodes one command; returns the index it replicates (0 if none).
fn encode(cmd: &LinkCmd, epoch: Epoch, buf: &mut Vec<u8>) -> u64 {
    match cmd {
        LinkCmd::Replicate { index, message } => {
            Request::Replicate {
                epoch,
                index: *index,
                message: Message::clone(message),
            }
            .encode(buf);
            *index
        }
        LinkCmd::Clear(index) => {
            Request::Clear {
                epoch,
                index: *index,
            }
            .encode(buf);
            0
        }
        LinkCmd::Seen(id) => {
            Request::Seen(*id).encode(buf);
            0
        }
        LinkCmd::Handover => {
            Request::Handover { epoch }.encode(buf);
            0
        }
    }
}

/// Reads the backup's answers. Ends on EOF, on a fence, or when the backup falls silent: no
/// line for a ping interval plus timeout, or a REPLICATE unconfirmed for a ping timeout.
fn read_confirmations(node: &Node, stream: Stream, epoch: Epoch) {
    let config = &node.config;
    let _ = stream.set_read_timeout(Some(config.ping_timeout.min(config.ping_interval)));
    let mut reader = LineReader::new(stream, config.max_line_bytes);
    let mut last_heard = Instant::now();
    // Confirmations that arrived together wake the waiting publishers once.
    let mut confirmed = 0;
    loop {
        if confirmed > 0 && !reader.has_buffered_line() {
            node.safety.confirm(confirmed);
            confirmed = 0;
        }
        let line = match reader.read_line() {
            Ok(Some(line)) => line,
            Ok(None) => {
                info!("backup closed the replication link");
                return;
            }
            Err(e) if is_timeout(&e) => {
                let idle = last_heard.elapsed() > config.ping_interval + config.ping_timeout;
                let stuck = node
                    .safety
                    .unconfirmed_since()
                    .is_some_and(|t| t.elapsed() > config.ping_timeout);
                if idle || stuck {
                    warn!("backup fell silent on the replication link");
                    let health = if config.require_backup {
                        BackupHealth::Silent
                    } else {
                        BackupHealth::Down
                    };
                    node.safety.set_health(health);
                    return;
                }
                continue;
            }
            Err(e) => {
                info!("replication link broke: {e}");
                return;
            }
        };
        last_heard = Instant::now();
        match Reply::parse(line) {
            Ok(Reply::Replicated { index }) => confirmed = confirmed.max(index),
            Ok(Reply::PeerPong(peer)) => {
                node.observe(peer.epoch);
            }
            Ok(Reply::Fenced { epoch: newer }) => {
                node.observe(newer);
                return;
            }
            other => {
                warn!("backup answered {other:?} in epoch {epoch}; resyncing");
                return;
            }
        }
    }
}
