//! The handoff thread: when this broker steps down from primary holding messages it accepted
//! but had not delivered ("orphans"), it publishes them to the new primary at once, with their
//! ids, before any publisher it refuses can get there with newer ones. If that fails, the new
//! primary's SYNC collects them instead.

use std::io::Write;
use std::sync::Arc;

use crossbeam_channel::Receiver;
use log::{debug, info};

use crate::auth;
use crate::connection::{LineReader, Stream, dial};
use crate::protocol::{AuthKind, Message, Reply, Request};

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
                info!(
                    "handed {} undelivered message(s) to the new primary",
                    orphans.len()
                );
                node.handoff_received(epoch);
            }
            Err(e) => debug!("direct handoff failed ({e}); the next SYNC will carry it"),
        }
    }
}

/// Hands `orphans` to the peer as `ADOPT` lines (publishes under their own ids), in order,
/// each waiting for its ACK.
fn push(node: &Node, peer: &str, orphans: &[Arc<Message>]) -> std::io::Result<()> {
    let config = &node.config;
    let stream = Stream::new(dial(peer, config.ping_timeout)?);
    stream.set_read_timeout(Some(config.ping_interval + config.ping_timeout * 2))?;
    let mut reader = LineReader::new(stream.clone(), config.max_line_bytes);
    if let Some(secret) = &config.secret {
        auth::authenticate(stream.clone(), &mut reader, AuthKind::Peer, secret)?;
    } else if let Some(secret) = &config.client_secret {
        auth::authenticate(stream.clone(), &mut reader, AuthKind::Client, secret)?;
    }
    let mut line = Vec::new();
    for message in orphans {
        line.clear();
        Request::Adopt(Message::clone(message)).encode(&mut line);
        (&*stream).write_all(&line)?;
        let answer = reader
            .read_line()?
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "closed"))?;
        match Reply::parse(answer) {
            Ok(Reply::AckId(id)) if id == message.id => {}
            other => {
                return Err(std::io::Error::other(format!(
                    "answered {} with {other:?}",
                    message.id
                )));
            }
        }
    }
    Ok(())
}
