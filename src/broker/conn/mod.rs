//! A served connection's life: its thread reads lines until the connection closes, hands each
//! to its verb and flushes the answers, then cleans up. Clients and the peer broker use the
//! same listener; a connection becomes the replication link when the peer sends SYNC on it.
//!
//! - `gate`: what a connection must prove before it is served: probation, peer slots, access,
//!   the handshake;
//! - `client`: the client verbs: publish and its ACK, subscribe;
//! - `follower`: the verbs a backup answers for its primary: SYNC, SEEN, the hand-off's
//!   confirmation and the link's end (REPLICATE, CLEAR and HANDOVER go straight to the node);
//!
//! Everything the connection sends goes through its writer (`super::writer`), drained by its
//! `writer-N` thread when it cannot be written at once.

mod client;
mod follower;
mod gate;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use log::debug;

use crate::auth;
use crate::connection::{LineReader, Stream};
use crate::error::Error;
use crate::protocol::{Epoch, Reply, Request};

use super::acks::Verdicts;
use super::node::Node;
use super::topics::Format;
use super::writer::Writer;
use gate::Probation;

/// How long a connection that ends waits for what it still owes its client (ACKs not yet
/// decided, lines not yet taken) beyond the ACK timeout.
const LINGER: Duration = Duration::from_secs(5);

/// Stack size of a connection's writer thread: it only copies bytes.
const WRITER_STACK: usize = 64 * 1024;

/// The state of one connection, owned by its thread.
struct Conn {
    node: Arc<Node>,
    id: u64,
    stream: Stream,
    /// Every line to the client goes through it: replies, ACKs, deliveries.
    writer: Arc<Writer>,
    /// The writer's thread, `writer-N`, which writes what could not be written at once.
    writer_thread: Option<JoinHandle<()>>,
    /// Set when the peer SYNCed on this connection: it is our primary's replication link.
    link_epoch: Option<Epoch>,
    /// Set after a SYNC that handed over orphans, until the primary's next line proves it
    /// read them.
    handoff_unconfirmed: bool,
    /// Whether the connection authenticated as the peer broker, and as a client (`gate`).
    peer_proven: bool,
    client_proven: bool,
    /// A handshake in progress.
    handshake: auth::Listener,
    /// Set when the connection must close after the current line (failed authentication).
    hang_up: bool,
    /// What the connection must prove, and by when, before it is served like any other.
    probation: Option<Probation>,
    /// How many topics it subscribed to, and what they are charged (each its name plus
    /// `SUBSCRIPTION_OVERHEAD`), against `--max-subscriptions` and `--max-subscription-bytes`.
    subscribed: usize,
    subscribed_bytes: usize,
    /// The highest REPLICATE held in this read batch, confirmed once when the batch is
    /// answered: the primary counts confirmations up to the highest index.
    held: Option<u64>,
}

/// Serves one connection until it closes. `id` is its key in the node's socket registry;
/// `peer_slot` says it took one of the slots kept for the peer broker.
pub fn serve(node: Arc<Node>, stream: Stream, id: u64, peer_slot: bool) {
    let mut reader = LineReader::new(stream.clone(), node.config.max_line_bytes);
    let writer = node.topics.writer(id, stream.clone());
    let w = Arc::clone(&writer);
    let writer_thread = std::thread::Builder::new()
        .name(format!("writer-{id}"))
        .stack_size(WRITER_STACK)
        .spawn(move || w.run())
        .inspect_err(|e| log::warn!("cannot start a writer thread: {e}; closing the connection"))
        .ok();
    let mut conn = Conn {
        probation: Probation::at_start(&node, peer_slot),
        node,
        id,
        stream,
        writer,
        writer_thread,
        link_epoch: None,
        handoff_unconfirmed: false,
        peer_proven: false,
        client_proven: false,
        handshake: auth::Listener::default(),
        hang_up: false,
        subscribed: 0,
        subscribed_bytes: 0,
        held: None,
    };
    while conn.writer_thread.is_some() {
        if !conn.time_left_to_prove() {
            conn.probation_expired();
            break;
        }
        match reader.read_line() {
            Ok(Some(line)) => {
                conn.node.gate();
                conn.handle(line);
                // A client that does not read its answers is not read either.
                if !conn.writer.wait_for_room() {
                    break;
                }
            }
            Ok(None) => {
                // A newcomer took our slot (`crate::slots`): say so, so the dialler knows we
                // are alive and busy rather than gone.
                if !conn.node.slots.lock().holds(conn.id) {
                    conn.writer.push(&Reply::Err("too many connections".into()));
                }
                break;
            }
            Err(Error::LineTooLong) => {
                let max = conn.node.config.max_line_bytes;
                let warning = || format!("line over {max} bytes; closing the connection");
                conn.node.warnings.too_long.warn(warning);
                conn.writer.push(&Reply::Err("line too long".into()));
                break;
            }
            Err(Error::Timeout) if conn.probation.is_some() => {
                conn.probation_expired();
                break;
            }
            // Our primary's link went quiet (it heartbeats faster than this): check on it.
            Err(Error::Timeout) if conn.link_epoch.is_some() => {
                debug!("replication link quiet; probing the primary");
                conn.node.request_probe();
                continue;
            }
            Err(e) => {
                debug!("read failed: {e}");
                break;
            }
        }
        if conn.hang_up {
            break;
        }
        // Everything answered in this read batch leaves in one write.
        if !reader.has_buffered_line() {
            conn.flush();
        }
    }
    conn.finish();
}

impl Conn {
    /// One line: parsed, let through the gate, handed to its verb, answered.
    fn handle(&mut self, line: &[u8]) {
        let request = match Request::parse(line) {
            Ok(r) => r,
            Err(e) => {
                debug!("bad line: {e}");
                return self.writer.push(&Reply::Err(e.reason().to_string()));
            }
        };
        if !self.let_through(&request) {
            return;
        }
        let peer_verb = request.is_peer_verb();
        if peer_verb {
            self.confirm_handoff();
        }
        let reply = match request {
            // What a connection must prove (`gate`).
            Request::Hello { kind, nonce } => Some(self.challenge(kind, nonce)),
            Request::Proof { proof } => Some(self.check_proof(&proof)),
            // A client's verbs (`client`).
            Request::Publish { topic, payload } => self.publish_anonymous(topic, payload),
            Request::PublishId(message) => self.publish_keyed(message),
            Request::Subscribe { topic } => self.subscribe(&topic, Format::Raw),
            Request::SubscribeIds { topic } => self.subscribe(&topic, Format::WithIds),
            Request::Ping => Some(Reply::Pong),
            Request::Status => Some(Reply::Status(self.node.status().pairs())),
            // The peer broker's: its probe, its hand-off (a publish, `client`), and what a
            // backup answers for its primary (`follower`).
            Request::Probe(peer) => Some(self.node.answer_probe(peer)),
            Request::Adopt(message) => self.adopt(message),
            Request::Sync { epoch, session } => self.sync(epoch, session),
            Request::Seen(id) => self.seen(id),
            Request::Replicate {
                epoch,
                index,
                message,
            } => {
                let fenced = self.node.accept_replicate(epoch, index, message);
                if fenced.is_none() {
                    self.held = Some(index);
                }
                fenced
            }
            Request::Clear { epoch, index } => self.node.accept_clear(epoch, index),
            Request::Handover(epoch) => Some(self.node.accept_handover(epoch)),
        };
        if let Some(reply) = reply {
            self.writer.push(&reply);
        }
        self.end_probation_if_proven(peer_verb);
    }

    /// Writes what this read batch answered, its one confirmation last.
    fn flush(&mut self) {
        if let Some(index) = self.held.take() {
            self.writer.push(&Reply::Replicated { index });
        }
        self.writer.flush();
    }

    /// The connection's end: what is still owed written, its subscriptions and writer gone,
    /// its slot freed.
    fn finish(mut self) {
        let node = Arc::clone(&self.node);
        // A client that closed its sending side may still wait for its last ACKs.
        self.flush();
        self.writer
            .close(Instant::now() + node.ack_timeout() + LINGER);
        node.topics.remove_conn(self.id);
        if let Some(thread) = self.writer_thread.take() {
            let _ = thread.join();
        }
        self.link_closed();
        node.unregister(self.id);
        node.counters.connections.fetch_sub(1, Ordering::Relaxed);
        debug!("closed");
    }
}
