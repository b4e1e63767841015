//! What a connection must prove before it is served like any other: a connection in a slot
//! kept for the peer broker, or under a client secret, is on probation until it authenticates
//! (HELLO, PROOF) or its deadline passes; each verb needs the access it proved.

use std::time::Instant;

use log::debug;

use crate::protocol::{AuthKind, Reply, Request};

use super::super::node::Node;
use super::super::status::bump;
use super::Conn;

/// What a connection must prove, and by when, or be closed.
#[derive(Clone, Copy, Debug)]
pub(super) struct Probation {
    /// It took one of the slots kept for the peer broker (all others were taken): it must
    /// authenticate as the peer (or, without `--secret`, speak a peer verb first). Else a
    /// client secret is set: it must authenticate.
    peer_slot: bool,
    /// When it must have proved it.
    until: Instant,
}

impl Probation {
    /// What a new connection must prove, if anything: `peer_slot` says it took one of the
    /// slots kept for the peer broker.
    pub(super) fn at_start(node: &Node, peer_slot: bool) -> Option<Probation> {
        let until = Instant::now() + node.config.auth_timeout;
        (peer_slot || node.config.client_secret.is_some()).then_some(Probation { peer_slot, until })
    }
}

impl Conn {
    /// Before a read: a connection on probation may wait only what is left of its deadline
    /// (the read times out then); `false` once nothing is left.
    pub(super) fn time_left_to_prove(&self) -> bool {
        let Some(probation) = self.probation else {
            return true;
        };
        let left = probation.until.saturating_duration_since(Instant::now());
        !(left.is_zero() || self.stream.set_read_timeout(Some(left)).is_err())
    }

    /// Whether the connection may have `request` served; if not, it has been answered why.
    pub(super) fn let_through(&mut self, request: &Request) -> bool {
        if !self.may_use_peer_slot(request) {
            // A stranger in a slot kept for the peer broker: it gets what any connection past
            // the limit gets.
            let node = &self.node;
            bump(&node.counters.refused_connections);
            node.warnings.refused.warn(|| {
                format!(
                    "refusing a connection: {} client connections are open (--max-connections) \
                     and the slots kept for the peer broker are for it alone",
                    node.config.max_connections
                )
            });
            self.writer.push(&Reply::Err("too many connections".into()));
            self.hang_up = true;
            return false;
        }
        if let Some(refusal) = self.check_access(request) {
            self.writer.push(&Reply::Err(refusal.into()));
            return false;
        }
        true
    }

    /// In a peer slot, only the peer's handshake (or, without a secret, a peer verb) is
    /// served.
    fn may_use_peer_slot(&self, request: &Request) -> bool {
        if !self.probation.is_some_and(|p| p.peer_slot) {
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

    /// After a line: a connection that proved what it had to comes off probation.
    pub(super) fn end_probation_if_proven(&mut self, spoke_peer_verb: bool) {
        let proven = match self.probation {
            None => return,
            Some(p) if p.peer_slot => {
                self.peer_proven || (spoke_peer_verb && self.node.config.secret.is_none())
            }
            Some(_) => self.peer_proven || self.client_proven,
        };
        if proven {
            self.probation = None;
            // A proven connection keeps its slot: no newcomer may take it any more.
            self.node.slots.lock().prove(self.id);
            // A replication link sets its own read timeout once synced.
            if self.link_epoch.is_none() {
                let _ = self.stream.set_read_timeout(None);
            }
        }
    }

    /// The deadline to authenticate passed.
    pub(super) fn probation_expired(&mut self) {
        let why = match self.probation {
            Some(p) if p.peer_slot => {
                bump(&self.node.counters.refused_connections);
                "too many connections"
            }
            _ => "authentication timed out",
        };
        debug!("{why}: closing the connection");
        self.writer.push(&Reply::Err(why.into()));
    }

    /// Refuses a verb this connection has not authenticated for.
    fn check_access(&self, request: &Request) -> Option<&'static str> {
        let config = &self.node.config;
        match request {
            Request::Ping | Request::Hello { .. } | Request::Proof { .. } => None,
            r if r.is_peer_verb() => (config.secret.is_some() && !self.peer_proven)
                .then_some("authenticate first (HELLO|peer|<nonce>)"),
            _ => (config.client_secret.is_some() && !self.client_proven && !self.peer_proven)
                .then_some("authenticate first (HELLO|client|<nonce>)"),
        }
    }

    /// HELLO: answer with our nonce and our proof.
    pub(super) fn challenge(&mut self, kind: AuthKind, theirs: String) -> Reply {
        let secret = self.node.config.secret_for(kind);
        match self.handshake.hello(kind, theirs, secret) {
            Ok((nonce, proof)) => Reply::Challenge { nonce, proof },
            Err(why) => Reply::Err(why),
        }
    }

    /// PROOF: grant access, or hang up.
    pub(super) fn check_proof(&mut self, proof: &str) -> Reply {
        if let Some(kind) = self.handshake.proof(proof) {
            match kind {
                AuthKind::Peer => self.peer_proven = true,
                AuthKind::Client => self.client_proven = true,
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
            bump(&self.node.counters.auth_failures);
            self.hang_up = true;
            Reply::Err("authentication failed".into())
        }
    }
}
