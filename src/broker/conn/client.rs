//! The client verbs: a publish admitted and its ACK filed, a subscribe charged against the
//! connection's limits. ADOPT, the peer's publish under the message's own id, takes the same
//! path.

use std::sync::Arc;

use log::{debug, info};

use crate::protocol::{Message, MsgId, Reply, Role, publisher_id};

use super::super::node::Node;
use super::super::topics::{Format, SUBSCRIPTION_OVERHEAD};
use super::super::verdict::{Admitted, Refusal};
use super::Conn;

impl Conn {
    /// PUBLISH: a message under an id of the broker's, answered by ACK.
    pub(super) fn publish_anonymous(&mut self, topic: String, payload: String) -> Option<Reply> {
        // The node gives it an id of its own as it appends it.
        let id = MsgId::default();
        let message = Message { id, topic, payload };
        self.publish(|node| node.admit_anonymous(message.clone()), Reply::Ack)
    }

    /// PUB: the ACK echoes the key; the message travels under the id derived from it.
    pub(super) fn publish_keyed(&mut self, mut message: Message) -> Option<Reply> {
        let sent = message.id;
        message.id.publisher = publisher_id(sent.publisher);
        self.publish(|node| node.admit(message.clone()), Reply::AckId(sent))
    }

    /// ADOPT: a stepped-down primary's message, published under its own id.
    pub(super) fn adopt(&mut self, message: Message) -> Option<Reply> {
        let id = message.id;
        self.publish(|node| node.admit(message.clone()), Reply::AckId(id))
    }

    /// Admits a publish (`admit`) and answers `ack` once it is safe (or `ERR`). A backup
    /// first makes sure the primary is really alive; if it is not, the backup takes over and
    /// admits the publish again. An ACK not yet decided keeps its place in the writer and is
    /// filed (`None`): the thread that learns its verdict fills it in (`super::super::acks`).
    fn publish(
        &mut self,
        admit: impl Fn(&Node) -> Result<Admitted, Refusal>,
        ack: Reply,
    ) -> Option<Reply> {
        let node = Arc::clone(&self.node);
        let mut result = admit(&node);
        if result.as_ref().err() == Some(&Refusal::NotPrimary) {
            node.await_orphans_handed_over();
            debug!("publish on the backup; probing the primary now");
            if node.settle_role() == Role::Primary {
                result = admit(&node);
            }
        }
        match result {
            Ok(admitted) => node.acks.file(&*node, &self.writer, admitted, ack),
            Err(refusal) => Some(Reply::Err(node.explain(&refusal))),
        }
    }

    /// SUBSCRIBE and SUB: the topic charged against the connection's limits.
    pub(super) fn subscribe(&mut self, topic: &str, format: Format) -> Option<Reply> {
        let config = &self.node.config;
        if self.node.topics.is_subscribed(topic, format, self.id) {
            return None;
        }
        let cost = SUBSCRIPTION_OVERHEAD.saturating_add(topic.len());
        let bytes = self.subscribed_bytes.saturating_add(cost);
        if self.subscribed >= config.max_subscriptions || bytes > config.max_subscription_bytes {
            return Some(Reply::Err(format!(
                "too many subscriptions: one connection may subscribe to {} topics of {} bytes \
                 in all, each its name + {SUBSCRIPTION_OVERHEAD} \
                 (--max-subscriptions, --max-subscription-bytes)",
                config.max_subscriptions, config.max_subscription_bytes
            )));
        }
        self.node.topics.subscribe(topic, format, &self.writer);
        self.subscribed += 1;
        self.subscribed_bytes = bytes;
        info!("subscribed to '{topic}' ({format:?})");
        None
    }
}
