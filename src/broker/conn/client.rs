//! The client verbs: a publish admitted and its ACK filed (or awaited), a subscribe charged
//! against the connection's limits and given its queue. ADOPT, the peer's publish under the
//! message's own id, takes the same path.

use std::sync::Arc;

use log::{debug, info};

use crate::protocol::{Message, MsgId, Reply, Role, publisher_id};

use super::super::acks::AckSlot;
use super::super::path::Refusal;
use super::super::topics::{Format, SUBSCRIPTION_OVERHEAD};
use super::{Conn, WRITE_TIMEOUT};

/// Stack size of a subscriber's writer thread: it only copies bytes.
const WRITER_STACK: usize = 64 * 1024;

impl Conn {
    /// PUBLISH: a message under an id of the broker's, answered by ACK.
    pub(super) fn publish_anonymous(&mut self, topic: String, payload: String) -> Option<Reply> {
        let message = Message {
            id: self.node.anonymous_id(),
            topic,
            payload,
        };
        self.publish(message, Reply::Ack)
    }

    /// PUB: the ACK echoes the key; the message travels under the id derived from it.
    pub(super) fn publish_keyed(&mut self, mut message: Message) -> Option<Reply> {
        let sent = message.id;
        message.id = MsgId {
            publisher: publisher_id(sent.publisher),
            seq: sent.seq,
        };
        self.publish(message, Reply::AckId(sent))
    }

    /// ADOPT: a stepped-down primary's message, published under its own id.
    pub(super) fn adopt(&mut self, message: Message) -> Option<Reply> {
        let id = message.id;
        self.publish(message, Reply::AckId(id))
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

    /// SUBSCRIBE and SUB: the topic charged against the connection's limits, and the
    /// connection's queue and writer made at its first subscribe.
    pub(super) fn subscribe(&mut self, topic: &str, format: Format) -> Option<Reply> {
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
}
