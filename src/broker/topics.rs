//! The subscriber map (topic → the connections subscribed to it), and the fan-out of one
//! message to them through their outboxes ([`super::outbox`]).
//!
//! A subscriber whose queue is full, or whose oldest line waited too long, is cut off as a slow
//! consumer. The messages whose lines wait in any queue take at most `--max-queued-bytes`
//! together, each counted once however many subscribers it waits for (a [`Held`] inside its
//! [`ClearWhenWritten`]); past it, the subscriber with the longest queue is cut off.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use log::warn;
use parking_lot::Mutex;

use crate::connection::Stream;
use crate::protocol::{Epoch, Message};

use super::compute::ClearWhenWritten;
pub use super::outbox::QueueLimits;
use super::outbox::{Frame, Outbox, OutboxWriter, SendError};

/// One message's share of `--max-queued-bytes`, from the moment it is handed to its
/// subscribers until its last line is written: it lives in the message's [`ClearWhenWritten`].
#[derive(Debug)]
pub struct Held {
    bytes: usize,
    held: Arc<AtomicUsize>,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.held.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// How a connection asked for a topic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Format {
    /// `SUBSCRIBE`: the raw payload line.
    Raw,
    /// `SUB`: a `MSG|epoch|publisher|seq|topic|payload` line.
    WithIds,
}

#[derive(Clone)]
struct Subscription {
    format: Format,
    outbox: Arc<Outbox>,
}

/// Topic name → the connections subscribed to it. A delivery takes the topic's list (an `Arc`)
/// and writes without the lock; a change copies a list that a delivery still holds.
pub struct Topics {
    map: Mutex<HashMap<String, Arc<Vec<Subscription>>>>,
    limits: QueueLimits,
    /// Bytes of the messages waiting for subscribers, and their limit.
    held: Arc<AtomicUsize>,
    max_held: usize,
    slow_consumers: Arc<AtomicU64>,
}

impl Topics {
    /// An empty map whose subscribers' queues obey `limits`, the messages waiting in them
    /// taking at most `max_queued_bytes`.
    pub fn new(limits: QueueLimits, max_queued_bytes: usize) -> Self {
        Topics {
            map: Mutex::new(HashMap::new()),
            limits,
            held: Arc::default(),
            max_held: max_queued_bytes,
            slow_consumers: Arc::default(),
        }
    }

    /// A queue for a connection that subscribes, and the end its writer thread drains.
    pub fn outbox(&self, conn: u64, stream: Stream) -> (Arc<Outbox>, OutboxWriter) {
        Outbox::new(conn, stream, self.limits, Arc::clone(&self.slow_consumers))
    }

    /// Subscribers cut off as slow consumers so far.
    pub fn slow_consumers(&self) -> u64 {
        self.slow_consumers.load(Ordering::Relaxed)
    }

    /// Counts `message` against `--max-queued-bytes` until the returned share is dropped.
    pub fn hold(&self, message: &Message) -> Held {
        let bytes = message.topic.len() + message.payload.len();
        self.held.fetch_add(bytes, Ordering::AcqRel);
        Held {
            bytes,
            held: Arc::clone(&self.held),
        }
    }

    /// Bytes of the messages whose lines wait for subscribers.
    pub fn held_bytes(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    /// Adds a subscription; subscribing twice to one topic in one format is a no-op.
    pub fn subscribe(&self, topic: &str, format: Format, outbox: &Arc<Outbox>) {
        let mut map = self.map.lock();
        let subs = map.entry(topic.to_string()).or_default();
        if !subs
            .iter()
            .any(|s| s.outbox.conn == outbox.conn && s.format == format)
        {
            Arc::make_mut(subs).push(Subscription {
                format,
                outbox: Arc::clone(outbox),
            });
        }
    }

    /// Drops every subscription of a connection that went away.
    pub fn remove_conn(&self, conn: u64) {
        let mut map = self.map.lock();
        for subs in map.values_mut() {
            if subs.iter().any(|s| s.outbox.conn == conn) {
                Arc::make_mut(subs).retain(|s| s.outbox.conn != conn);
            }
        }
        map.retain(|_, subs| !subs.is_empty());
    }

    /// How many subscriptions there are, over all topics.
    pub fn count(&self) -> usize {
        self.map.lock().values().map(|subs| subs.len()).sum()
    }

    /// Sends `message` to every subscriber of its topic, each line holding `clear` (written
    /// directly where it can be with `direct`, see [`Outbox::send`]); returns how many it was
    /// sent to. A subscriber whose queue is full is cut off as a slow consumer, and so is the
    /// one with the longest queue when the messages waiting for subscribers take too much.
    /// The map is locked only to take the topic's list, never during a write.
    pub fn deliver(
        &self,
        message: &Message,
        epoch: Epoch,
        clear: &Arc<ClearWhenWritten>,
        direct: bool,
    ) -> usize {
        let Some(subs) = self.map.lock().get(&message.topic).map(Arc::clone) else {
            return 0;
        };
        let made = Instant::now();
        // Each format is encoded once, for every subscriber that asked for it.
        let mut frames: [Option<Frame>; 2] = [None, None];
        let mut delivered = 0;
        let mut slow = Vec::new();
        let mut gone = Vec::new();
        for sub in subs.iter() {
            let frame = frames[sub.format as usize].get_or_insert_with(|| {
                let mut line = Vec::new();
                match sub.format {
                    Format::Raw => message.encode_payload(&mut line),
                    Format::WithIds => message.encode_msg(epoch, &mut line),
                }
                Frame::delivery(line, made, clear)
            });
            match sub.outbox.send(frame.clone(), direct) {
                Ok(()) => delivered += 1,
                Err(SendError::Full) => slow.push(Arc::clone(&sub.outbox)),
                Err(SendError::Gone) => gone.push(sub.outbox.conn),
            }
        }
        drop(subs);
        for conn in gone {
            self.remove_conn(conn);
        }
        for outbox in &slow {
            self.cut_off(outbox, "its queue is full");
        }
        if self.held_bytes() > self.max_held
            && let Some(longest) = self.longest_queue()
        {
            self.cut_off(
                &longest,
                "the messages waiting for subscribers pass --max-queued-bytes",
            );
        }
        delivered
    }

    /// The subscriber with the most bytes queued, not cut off yet.
    fn longest_queue(&self) -> Option<Arc<Outbox>> {
        let map = self.map.lock();
        map.values()
            .flat_map(|subs| subs.iter())
            .filter(|s| !s.outbox.is_slow())
            .max_by_key(|s| s.outbox.backlog().1)
            .map(|s| Arc::clone(&s.outbox))
    }

    /// Disconnects a slow consumer.
    fn cut_off(&self, outbox: &Outbox, why: &str) {
        let (lines, bytes) = outbox.backlog();
        if outbox.cut_off() {
            warn!(
                "subscriber conn-{} is {lines} lines ({bytes} bytes) behind and {why}: \
                 disconnecting it as a slow consumer",
                outbox.conn
            );
        }
        self.remove_conn(outbox.conn);
    }
}

#[cfg(test)]
mod tests {
    use std::net::{TcpListener, TcpStream};
    use std::time::Duration;

    use super::*;
    use crate::protocol::MsgId;

    fn subscriber(topics: &Topics, conn: u64) -> (Arc<Outbox>, OutboxWriter, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        let (outbox, writer) = topics.outbox(conn, Stream::new(server));
        (outbox, writer, client)
    }

    fn idle_node() -> Arc<super::super::node::Node> {
        let (probe, _) = crossbeam_channel::bounded(1);
        let (redial, _) = crossbeam_channel::bounded(1);
        let (handoff, _) = crossbeam_channel::bounded(1);
        let config = crate::config::BrokerConfig::fast();
        Arc::new(super::super::node::Node::new(
            config,
            Vec::new(),
            probe,
            redial,
            handoff,
        ))
    }

    #[test]
    fn past_the_broker_budget_the_longest_queue_is_cut_off() {
        let limits = QueueLimits {
            lines: 1000,
            bytes: usize::MAX,
            age: Duration::from_secs(60),
        };
        let topics = Topics::new(limits, 30_000);
        let (short, _w1, _r1) = subscriber(&topics, 1);
        let (long, _w2, _r2) = subscriber(&topics, 2);
        topics.subscribe("t", Format::Raw, &short);
        topics.subscribe("t", Format::Raw, &long);
        topics.subscribe("u", Format::Raw, &long);
        let message = |topic: &str| Message {
            id: MsgId {
                publisher: 1,
                seq: 1,
            },
            topic: topic.into(),
            payload: "y".repeat(20_000),
        };
        // Not direct: the lines wait in the queues (no writer runs), holding the messages.
        let epoch = Epoch::default();
        let (u, t) = (message("u"), message("t"));
        // A broker that is no primary: the clears do nothing when dropped.
        let node = idle_node();
        let clear_u = ClearWhenWritten::new(&node, 1, epoch, topics.hold(&u));
        assert_eq!(topics.deliver(&u, epoch, &clear_u, false), 1);
        assert_eq!(topics.slow_consumers(), 0);
        // Two messages of 20,000 bytes wait, past 30,000: the queue holding both goes.
        let clear_t = ClearWhenWritten::new(&node, 2, epoch, topics.hold(&t));
        assert_eq!(topics.deliver(&t, epoch, &clear_t, false), 2);
        assert_eq!(topics.held_bytes(), 40_002);
        assert_eq!(topics.slow_consumers(), 1);
        assert!(long.is_slow());
        assert!(!short.is_slow());
        assert_eq!(
            topics.count(),
            1,
            "only the short queue's subscription is left"
        );
    }
}
