//! One thread per connection: read a line, act on it, answer. Clients and the peer broker use
//! the same listener; a connection becomes the replication link when the peer sends SYNC on it.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use log::{debug, info};

use crate::auth;
use crate::connection::{LineReader, Stream, write_by};
use crate::error::Error;
use crate::protocol::{AuthKind, Epoch, Message, MsgId, Reply, Request, Role, publisher_id};

use super::acks::{AckSlot, TakenBack};
use super::node::Node;
use super::outbox::{Frame, Outbox};
use super::path::Refusal;
use super::topics::{Format, SUBSCRIPTION_OVERHEAD, SubscriptionBudget};

/// How long a write may block before the peer counts as gone.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// Stack size of a subscriber's writer thread: it only copies bytes.
const WRITER_STACK: usize = 64 * 1024;

/// The state of one connection, owned by its thread.
struct Conn {
    node: Arc<Node>,
    id: u64,
    stream: Stream,
    /// Replies not yet written, flushed when no more input is buffered.
    out: Vec<u8>,
    /// Once the connection subscribes, every line goes through its queue.
    outbox: Option<(Arc<Outbox>, JoinHandle<()>)>,
    /// Where it files an ACK that another thread writes once it is decided (`super::acks`);
    /// made at its first publish.
    acks: Option<Arc<AckSlot>>,
    /// Set when the peer SYNCed on this connection: it is our primary's replication link.
    link_epoch: Option<Epoch>,
    /// Set after a SYNC that handed over orphans, until the primary's next line proves it
    /// read them.
    handoff_unconfirmed: bool,
    /// What the connection proved it may do.
    access: Access,
    /// A handshake in progress.
    handshake: auth::Listener,
    /// Set when the connection must close after the current line (failed authentication).
    hang_up: bool,
    /// What the connection must prove, and by when, before it is served like any other.
    probation: Probation,
    /// What its subscriptions are charged against its limits.
    subscribed: SubscriptionBudget,
}

/// A connection that must prove itself within a deadline, or be closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Probation {
    /// Nothing to prove.
    None,
    /// It took one of the slots kept for the peer broker (all others were taken): it must
    /// authenticate as the peer (or, without `--secret`, speak a peer verb first).
    PeerSlot(Instant),
    /// A client secret is set: it must authenticate.
    Authenticate(Instant),
}

impl Probation {
    fn deadline(self) -> Option<Instant> {
        match self {
            Probation::None => None,
            Probation::PeerSlot(t) | Probation::Authenticate(t) => Some(t),
        }
    }
}

/// What a connection has authenticated as.
#[derive(Clone, Copy, Debug, Default)]
struct Access {
    peer: bool,
    client: bool,
}

/// Serves one connection until it closes. `id` is its key in the node's socket registry;
/// `peer_slot` says it took one of the slots kept for the peer broker.
pub fn serve(node: Arc<Node>, stream: Stream, id: u64, peer_slot: bool) {
    let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
    let mut reader = LineReader::new(stream.clone(), node.config.max_line_bytes);
    let deadline = Instant::now() + node.config.auth_timeout;
    let probation = if peer_slot {
        Probation::PeerSlot(deadline)
    } else if node.config.client_secret.is_some() {
        Probation::Authenticate(deadline)
    } else {
        Probation::None
    };
    let mut conn = Conn {
        node,
        id,
        stream,
        out: Vec::new(),
        outbox: None,
        acks: None,
        link_epoch: None,
        handoff_unconfirmed: false,
        access: Access::default(),
        handshake: auth::Listener::default(),
        hang_up: false,
        probation,
        subscribed: SubscriptionBudget::default(),
    };
    loop {
        if let Some(deadline) = conn.probation.deadline() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || conn.stream.set_read_timeout(Some(left)).is_err() {
                conn.probation_expired();
                break;
            }
        }
        match reader.read_line() {
            Ok(Some(line)) => {
                conn.node.gate();
                conn.handle(line);
            }
            Ok(None) => {
                // A newcomer took our slot (`crate::slots`): say so, so the dialler knows we
                // are alive and busy rather than gone.
                if !conn.node.slots.lock().holds(conn.id) {
                    conn.reply(&Reply::Err("too many connections".into()));
                }
                break;
            }
            Err(Error::LineTooLong) => {
                conn.node.warnings.too_long.warn(|| {
                    format!(
                        "line over {} bytes; closing the connection",
                        conn.node.config.max_line_bytes
                    )
                });
                conn.reply(&Reply::Err("line too long".into()));
                conn.flush();
                break;
            }
            Err(Error::Timeout) if conn.probation.deadline().is_some() => {
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
            conn.flush();
            break;
        }
        if !reader.has_buffered_line() && !conn.flush() {
            break;
        }
    }
    conn.finish();
}

impl Conn {
    fn handle(&mut self, line: &[u8]) {
        self.take_back_ack();
        let request = match Request::parse(line) {
            Ok(r) => r,
            Err(e) => {
                debug!("bad line: {e}");
                return self.reply(&Reply::Err(e.reason().to_string()));
            }
        };
        if !self.may_use_peer_slot(&request) {
            return self.refuse_peer_slot();
        }
        if let Some(refusal) = self.check_access(&request) {
            return self.reply(&Reply::Err(refusal.into()));
        }
        let peer_verb = request.is_peer_verb();
        let node = Arc::clone(&self.node);
        if self.handoff_unconfirmed
            && request.is_peer_verb()
            && let Some(epoch) = self.link_epoch
        {
            self.handoff_unconfirmed = false;
            node.handoff_received(epoch);
        }
        let reply = match request {
            Request::Publish { topic, payload } => {
                let message = Message {
                    id: node.anonymous_id(),
                    topic,
                    payload,
                };
                self.publish(message, Reply::Ack)
            }
            Request::PublishId(mut message) => {
                // The ACK echoes the key; the message travels under the id derived from it.
                let sent = message.id;
                message.id = MsgId {
                    publisher: publisher_id(sent.publisher),
                    seq: sent.seq,
                };
                self.publish(message, Reply::AckId(sent))
            }
            Request::Adopt(message) => {
                let id = message.id;
                self.publish(message, Reply::AckId(id))
            }
            Request::Subscribe { topic } => self.subscribe(&topic, Format::Raw),
            Request::SubscribeIds { topic } => self.subscribe(&topic, Format::WithIds),
            Request::Ping => Some(Reply::Pong),
            Request::Status => Some(Reply::Status(node.status().pairs())),
            Request::Probe(peer) => Some(node.answer_probe(peer)),
            Request::Sync { epoch, session } => {
                let mut replies = node.follow(epoch, session);
                if matches!(replies.last(), Some(Reply::Synced { .. })) {
                    self.link_epoch = Some(epoch);
                    self.handoff_unconfirmed = replies.len() > 1;
                    // The primary heartbeats every quarter ping timeout; half a timeout of
                    // silence is worth a probe.
                    let _ = self
                        .stream
                        .set_read_timeout(Some(node.config.ping_timeout / 2));
                }
                let last = replies.pop();
                for handoff in &replies {
                    self.reply(handoff);
                }
                last
            }
            Request::Seen(id) => match self.link_epoch {
                Some(epoch) => node.accept_seen(epoch, id),
                None => Some(Reply::Err("SEEN outside a sync".into())),
            },
            Request::Replicate {
                epoch,
                index,
                message,
            } => Some(node.accept_replicate(epoch, index, message)),
            Request::Clear { epoch, index } => node.accept_clear(epoch, index),
            Request::Handover { epoch } => Some(node.accept_handover(epoch)),
            Request::Hello { kind, nonce } => Some(self.challenge(kind, nonce)),
            Request::Proof { proof } => Some(self.check_proof(&proof)),
        };
        if let Some(reply) = reply {
            self.reply(&reply);
        }
        self.end_probation_if_proven(peer_verb);
    }

    /// In a peer slot, only the peer's handshake (or, without a secret, a peer verb) is
    /// served.
    fn may_use_peer_slot(&self, request: &Request) -> bool {
        if !matches!(self.probation, Probation::PeerSlot(_)) {
            return true;
        }
        match request {
            Request::Hello {
                kind: AuthKind::Peer,
                ..
            }
            | Request::Proof { .. } => self.node.config.secret.is_some(),
            r => r.is_peer_verb() && self.node.config.secret.is_none(),
        }
    }

    fn end_probation_if_proven(&mut self, spoke_peer_verb: bool) {
        let proven = match self.probation {
            Probation::None => return,
            Probation::PeerSlot(_) => {
                self.access.peer || (spoke_peer_verb && self.node.config.secret.is_none())
            }
            Probation::Authenticate(_) => self.access.peer || self.access.client,
        };
        if proven {
            self.probation = Probation::None;
            // A proven connection keeps its slot: no newcomer may take it any more.
            self.node.slots.lock().prove(self.id);
            // A replication link sets its own read timeout once synced.
            if self.link_epoch.is_none() {
                let _ = self.stream.set_read_timeout(None);
            }
        }
    }

    /// A stranger in a slot kept for the peer broker: it gets what any connection past the
    /// limit gets.
    fn refuse_peer_slot(&mut self) {
        let node = &self.node;
        node.counters
            .refused_connections
            .fetch_add(1, Ordering::Relaxed);
        node.warnings.refused.warn(|| {
            format!(
                "refusing a connection: {} client connections are open (--max-connections) and \
                 the slots kept for the peer broker are for it alone",
                node.config.max_connections
            )
        });
        self.reply(&Reply::Err("too many connections".into()));
        self.hang_up = true;
    }

    /// The deadline to authenticate passed.
    fn probation_expired(&mut self) {
        let why = match self.probation {
            Probation::PeerSlot(_) => {
                self.node
                    .counters
                    .refused_connections
                    .fetch_add(1, Ordering::Relaxed);
                "too many connections"
            }
            _ => "authentication timed out",
        };
        debug!("{why}: closing the connection");
        self.reply(&Reply::Err(why.into()));
        self.flush();
    }

    /// Refuses a verb this connection has not authenticated for.
    fn check_access(&self, request: &Request) -> Option<&'static str> {
        let config = &self.node.config;
        match request {
            Request::Ping | Request::Hello { .. } | Request::Proof { .. } => None,
            r if r.is_peer_verb() => (config.secret.is_some() && !self.access.peer)
                .then_some("authenticate first (HELLO|peer|<nonce>)"),
            _ => (config.client_secret.is_some() && !self.access.client && !self.access.peer)
                .then_some("authenticate first (HELLO|client|<nonce>)"),
        }
    }

    /// HELLO: answer with our nonce and our proof.
    fn challenge(&mut self, kind: AuthKind, theirs: String) -> Reply {
        match self
            .handshake
            .hello(kind, theirs, self.node.config.secret_for(kind))
        {
            Ok((nonce, proof)) => Reply::Challenge { nonce, proof },
            Err(why) => Reply::Err(why),
        }
    }

    /// PROOF: grant access, or hang up.
    fn check_proof(&mut self, proof: &str) -> Reply {
        let config = &self.node.config;
        let proven = self.handshake.proof(proof, |kind| config.secret_for(kind));
        if let Some(kind) = proven {
            match kind {
                AuthKind::Peer => self.access.peer = true,
                AuthKind::Client => self.access.client = true,
            }
            debug!("authenticated");
            Reply::Welcome
        } else {
            let who = self
                .stream
                .peer_addr()
                .map_or_else(|_| "?".into(), |a| a.to_string());
            self.node
                .warnings
                .auth_failed
                .warn(|| format!("authentication failed (from {who}); hanging up"));
            self.node
                .counters
                .auth_failures
                .fetch_add(1, Ordering::Relaxed);
            self.hang_up = true;
            Reply::Err("authentication failed".into())
        }
    }

    /// Admits a publish and answers `ack` once it is safe (or `ERR`). A backup first makes
    /// sure the primary is really alive; if it is not, the backup takes over and serves the
    /// publish. With nothing else to write, the connection files the ACK (`None`) and another
    /// thread writes it once decided (`super::acks`); otherwise it waits for it here.
    fn publish(&mut self, message: Message, ack: Reply) -> Option<Reply> {
        let node = Arc::clone(&self.node);
        let mut result = node.admit(message.clone());
        if result.as_ref().err() == Some(&Refusal::NotPrimary) {
            node.await_orphans_handed_over();
            debug!("publish on the backup; probing the primary now");
            if node.settle_role() == Role::Primary {
                result = node.admit(message);
            }
        }
        let admitted = match result {
            Ok(admitted) => admitted,
            Err(refusal) => return Some(Reply::Err(node.explain(&refusal))),
        };
        if let Some(slot) = self.ack_slot() {
            return node.acks.file(&node, &slot, self.id, admitted, ack);
        }
        Some(match node.await_safe(&admitted) {
            Ok(()) => ack,
            Err(refusal) => Reply::Err(node.explain(&refusal)),
        })
    }

    /// The slot to file an ACK in, if this connection may: nothing else waits to be written
    /// (no replies buffered, no subscriber queue) and it reads its replies.
    fn ack_slot(&mut self) -> Option<Arc<AckSlot>> {
        if self.outbox.is_some() || !self.out.is_empty() {
            return None;
        }
        let slot = self
            .acks
            .get_or_insert_with(|| AckSlot::new(self.stream.clone(), WRITE_TIMEOUT));
        (!slot.is_slow()).then(|| Arc::clone(slot))
    }

    /// Takes back a filed ACK before anything else is written: waits for it if it is still
    /// undecided, and puts its answer (or what of it found no room) first in line.
    fn take_back_ack(&mut self) {
        let Some(slot) = &self.acks else {
            return;
        };
        match slot.take_back() {
            TakenBack::Nothing => {}
            TakenBack::Waiting(pending) => {
                let reply = pending.wait(&self.node);
                reply.encode(&mut self.out);
            }
            TakenBack::Unwritten(bytes) => {
                self.out.splice(0..0, bytes);
            }
        }
    }

    fn subscribe(&mut self, topic: &str, format: Format) -> Option<Reply> {
        let config = &self.node.config;
        if let Some((outbox, _)) = &self.outbox
            && self.node.topics.is_subscribed(topic, format, outbox.conn)
        {
            return None;
        }
        if !self.subscribed.fits(
            topic,
            config.max_subscriptions,
            config.max_subscription_bytes,
        ) {
            return Some(Reply::Err(format!(
                "too many subscriptions: one connection may subscribe to {} topics of {} bytes \
                 in all, each its name + {SUBSCRIPTION_OVERHEAD} \
                 (--max-subscriptions, --max-subscription-bytes)",
                config.max_subscriptions, config.max_subscription_bytes
            )));
        }
        if self.outbox.is_none() {
            // Replies already queued go out before the first delivery.
            self.flush();
            let (outbox, writer) = self.node.topics.outbox(self.id, self.stream.clone());
            let thread = std::thread::Builder::new()
                .name(format!("sub-writer-{}", self.id))
                .stack_size(WRITER_STACK)
                .spawn(move || writer.run())
                .ok()?;
            self.outbox = Some((outbox, thread));
        }
        let (outbox, _) = self.outbox.as_ref()?;
        self.node.topics.subscribe(topic, format, outbox);
        self.subscribed.charge(topic);
        info!("subscribed to '{topic}' ({format:?})");
        None
    }

    fn reply(&mut self, reply: &Reply) {
        self.take_back_ack();
        match &self.outbox {
            Some((outbox, _)) => {
                if outbox.send(Frame::reply(reply), true).is_err() {
                    debug!("queue full; reply dropped");
                }
            }
            None => reply.encode(&mut self.out),
        }
    }

    /// Writes the buffered replies; `false` if the peer is gone.
    fn flush(&mut self) -> bool {
        if self.out.is_empty() {
            return true;
        }
        // The socket's write timeout may be short (a filed ACK's writer must not block long
        // on it): retry up to ours.
        let give_up = Instant::now() + WRITE_TIMEOUT;
        let ok = write_by(&self.stream, &self.out, give_up).1.is_ok();
        self.out.clear();
        ok
    }

    fn finish(mut self) {
        // A client that closed its sending side may still wait for its last ACK.
        self.take_back_ack();
        self.flush();
        if let Some((outbox, thread)) = self.outbox.take() {
            self.node.topics.remove_conn(self.id);
            drop(outbox);
            let _ = thread.join();
        }
        if let Some(epoch) = self.link_epoch {
            let (role, current) = self.node.role();
            if role == Role::Backup && current == epoch && !self.node.stopping() {
                info!("replication link from the primary closed; probing it now");
                self.node.request_probe();
            }
        }
        self.node.unregister(self.id);
        self.node
            .counters
            .connections
            .fetch_sub(1, Ordering::Relaxed);
        debug!("closed");
    }
}
