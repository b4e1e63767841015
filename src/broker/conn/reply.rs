//! What a connection writes, in order: a filed ACK taken back before anything else, then its
//! replies, buffered (or, once it subscribes, queued with its deliveries) until the flush.

use std::time::Instant;

use log::debug;

use crate::connection::write_by;
use crate::protocol::Reply;

use super::super::acks::TakenBack;
use super::super::outbox::Frame;
use super::{Conn, WRITE_TIMEOUT};

impl Conn {
    /// Takes back a filed ACK before anything else is written: waits for it if it is still
    /// undecided, and puts its answer (or what of it found no room) first in line.
    pub(super) fn take_back_ack(&mut self) {
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

    /// Buffers `reply` (or queues it behind the deliveries of a subscribed connection).
    pub(super) fn reply(&mut self, reply: &Reply) {
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
    pub(super) fn flush(&mut self) -> bool {
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
}
