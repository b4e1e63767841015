//! The handoff thread: when this broker steps down from primary holding messages it accepted
//! but had not delivered ("orphans"), it publishes them to the new primary at once, with their
//! ids, before any publisher it refuses can get there with newer ones. If that fails, the new
//! primary's SYNC collects them instead.

use std::sync::Arc;

use crossbeam_channel::Receiver;
use log::{debug, info};

use crate::connection::Connection;
use crate::error::{Error, Result};
use crate::protocol::{AuthKind, Message, Reply, Request};

use super::acks::Verdicts;
use super::node::Node;

/// The handoff thread's loop: woken on each step-down that left orphans.
pub fn run_handoff(node: Arc<Node>, wake: Receiver<()>) {
    let Some(peer) = node.config.peer.clone() else {
        return;
    };
    while wake.recv().is_ok() && !node.stopping() {
        let Some((epoch, orphans)) = node.orphans() else {
            continue;
        };
        match push(&node, &peer, &orphans) {
            Ok(()) => {
                let n = orphans.len();
                info!("handed {n} undelivered message(s) to the new primary");
                node.handoff_received(epoch);
            }
            Err(e) => debug!("direct handoff failed ({e}); the next SYNC will carry it"),
        }
    }
}

/// Hands `orphans` to the peer as `ADOPT` lines (publishes under their own ids), in order,
/// each waiting for its ACK.
fn push(node: &Node, peer: &str, orphans: &[Arc<Message>]) -> Result<()> {
    let config = &node.config;
    let auth = config
        .peer_auth()
        .or_else(|| config.client_secret.as_ref().map(|s| (AuthKind::Client, s)));
    let mut conn = Connection::dial(peer, config.ping_timeout, config.max_line_bytes, auth)?;
    // The new primary answers each within its ACK timeout, which is ours.
    conn.set_read_timeout(Some(node.ack_timeout()))?;
    for message in orphans {
        let id = message.id;
        match conn.ask(&Request::Adopt(Message::clone(message)))? {
            Reply::AckId(acked) if acked == id => {}
            other => return Err(Error::Protocol(format!("answered {id} with {other:?}"))),
        }
    }
    Ok(())
}
