//! The subscriber map (topic → the connections subscribed to it), and the fan-out of one
//! message to them through their writers ([`super::writer`]).
//!
//! A subscriber whose queue is full, or whose oldest line waited too long, is cut off as a slow
//! consumer. The messages whose lines wait in any queue take at most `--max-queued-bytes`
//! together, each counted once however many subscribers it waits for ([`Topics::hold`], given
//! back by what its lines hold until written, [`HeldUntilWritten`]); past it, the subscriber
//! with the longest queue is cut off.
//!
//! What a connection's subscriptions take is charged to it (`Conn::subscribe`): each costs its
//! topic name plus [`SUBSCRIPTION_OVERHEAD`], the most the map spends on one.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use log::warn;
use parking_lot::Mutex;

use crate::config::BrokerConfig;
use crate::connection::Stream;
use crate::protocol::{Epoch, Message};

use super::status::Counters;
use super::writer::{Frame, HeldUntilWritten, QueueLimits, Refused, Writer};

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
    writer: Arc<Writer>,
}

/// What one subscription is charged against `--max-subscription-bytes` besides its topic's
/// name: the most the map spends on a subscription that adds a topic (64-bit, glibc malloc).
/// The name's allocation rounds up by at most 31 bytes (8 of header, 16-byte chunks of 32 at
/// least); the list is 48 (two counters and a `Vec`) and its room for one 16-byte
/// `Subscription` 32; the table's slot is 25 (a 24-byte entry and a control byte), and the
/// table has at most 16/7 slots per entry after it grows, 24/7 while the old one is still
/// alive: 86. A subscription to a topic that exists takes 16 bytes in its list, 48 while the
/// list grows (the list's room at most doubles).
pub const SUBSCRIPTION_OVERHEAD: usize = 200;

/// Topic name → the connections subscribed to it. A delivery takes the topic's list (an `Arc`)
/// and writes without the lock; a change copies a list that a delivery still holds. A name
/// takes no more than its bytes, a new list room for one, a list that lost subscribers no more
/// room than it holds.
pub struct Topics {
    map: Mutex<HashMap<Box<str>, Arc<Vec<Subscription>>>>,
    limits: QueueLimits,
    /// Bytes of the messages waiting for subscribers, and their limit.
    held: AtomicUsize,
    max_held: usize,
    /// The broker's counters, which the writers count slow consumers on.
    counters: Arc<Counters>,
}

impl Topics {
    /// An empty map whose subscribers' queues obey `config`'s limits (`--slow-consumer-*`,
    /// and `--max-line-bytes` for a connection's own answers), the messages waiting in them
    /// taking at most `--max-queued-bytes`; slow consumers are counted on `counters`.
    pub fn new(config: &BrokerConfig, counters: Arc<Counters>) -> Self {
        Topics {
            map: Mutex::new(HashMap::new()),
            limits: QueueLimits {
                lines: config.slow_consumer_limit,
                bytes: config.slow_consumer_bytes,
                age: config.slow_consumer_age,
                answers: config.max_line_bytes,
            },
            held: AtomicUsize::new(0),
            max_held: config.max_queued_bytes,
            counters,
        }
    }

    /// A queue for a connection that subscribes, and the end its writer thread drains.
    pub fn writer(&self, conn: u64, stream: Stream) -> Arc<Writer> {
        Writer::new(conn, stream, self.limits, Arc::clone(&self.counters))
    }

    /// Counts a message of `bytes` against `--max-queued-bytes` from the moment it is handed
    /// to its subscribers until [`Topics::release`] gives them back, once its last line is
    /// written (what its lines hold, [`HeldUntilWritten`], the message's clear).
    pub fn hold(&self, bytes: usize) {
        self.held.fetch_add(bytes, Ordering::AcqRel);
    }

    /// Gives back what [`Topics::hold`] counted.
    pub fn release(&self, bytes: usize) {
        self.held.fetch_sub(bytes, Ordering::AcqRel);
    }

    /// Bytes of the messages whose lines wait for subscribers.
    pub fn held_bytes(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    /// Whether connection `conn` is subscribed to `topic` in `format`.
    pub fn is_subscribed(&self, topic: &str, format: Format, conn: u64) -> bool {
        self.map.lock().get(topic).is_some_and(|subs| {
            subs.iter()
                .any(|s| s.writer.conn == conn && s.format == format)
        })
    }

    /// Adds a subscription the connection does not have yet ([`Topics::is_subscribed`]; only
    /// its own thread subscribes it).
    pub fn subscribe(&self, topic: &str, format: Format, writer: &Arc<Writer>) {
        let writer = Arc::clone(writer);
        let sub = Subscription { format, writer };
        let mut map = self.map.lock();
        match map.get_mut(topic) {
            None => {
                map.insert(topic.into(), Arc::new(vec![sub]));
            }
            Some(subs) => Arc::make_mut(subs).push(sub),
        }
    }

    /// Drops every subscription of a connection that went away.
    pub fn remove_conn(&self, conn: u64) {
        let mut map = self.map.lock();
        for subs in map.values_mut() {
            if subs.iter().any(|s| s.writer.conn == conn) {
                let subs = Arc::make_mut(subs);
                subs.retain(|s| s.writer.conn != conn);
                subs.shrink_to_fit();
            }
        }
        map.retain(|_, subs| !subs.is_empty());
    }

    /// How many subscriptions there are, over all topics.
    pub fn count(&self) -> usize {
        self.map.lock().values().map(|subs| subs.len()).sum()
    }

    /// Sends `message` to every subscriber of its topic, each line holding `clear` (written
    /// directly where it can be with `direct`, see [`Writer::deliver`]); returns how many it was
    /// sent to. A subscriber whose queue is full is cut off as a slow consumer, and so is the
    /// one with the longest queue when the messages waiting for subscribers take too much.
    /// The map is locked only to take the topic's list, never during a write.
    pub fn deliver(
        &self,
        message: &Message,
        epoch: Epoch,
        clear: &HeldUntilWritten,
        direct: bool,
    ) -> usize {
        let Some(subs) = self.map.lock().get(message.topic.as_str()).map(Arc::clone) else {
            return 0;
        };
        let made = Instant::now();
        // Each format is encoded once, for every subscriber that asked for it.
        let mut frames: [Option<Frame>; 2] = [None, None];
        let mut delivered = 0;
        let mut refused = Vec::new();
        for sub in subs.iter() {
            let frame = frames[sub.format as usize].get_or_insert_with(|| {
                let mut line = Vec::new();
                match sub.format {
                    Format::Raw => message.encode_payload(&mut line),
                    Format::WithIds => message.encode_msg(epoch, &mut line),
                }
                Frame::delivery(line, made, clear)
            });
            match sub.writer.deliver(frame.clone(), direct) {
                Ok(()) => delivered += 1,
                Err(why) => refused.push((Arc::clone(&sub.writer), why)),
            }
        }
        drop(subs);
        for (writer, why) in refused {
            match why {
                Refused::SlowConsumer => self.cut_off(&writer, "its queue is full"),
                Refused::Gone => self.remove_conn(writer.conn),
            }
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
    fn longest_queue(&self) -> Option<Arc<Writer>> {
        let map = self.map.lock();
        map.values()
            .flat_map(|subs| subs.iter())
            .filter(|s| !s.writer.is_slow())
            .max_by_key(|s| s.writer.queued_deliveries().1)
            .map(|s| Arc::clone(&s.writer))
    }

    /// Disconnects a slow consumer.
    fn cut_off(&self, writer: &Writer, why: &str) {
        let (lines, bytes) = writer.queued_deliveries();
        if writer.cut_off() {
            warn!(
                "subscriber conn-{} is {lines} lines ({bytes} bytes) behind and {why}: \
                 disconnecting it as a slow consumer",
                writer.conn
            );
        }
        self.remove_conn(writer.conn);
    }
}

#[cfg(test)]
impl Topics {
    /// The least the map allocates: its table's slots (an entry and a control byte each), every
    /// name, every list (two counters and its subscriptions). The allocator's headers and
    /// rounding come on top.
    fn allocated_at_least(&self) -> usize {
        let map = self.map.lock();
        let slot = size_of::<(Box<str>, Arc<Vec<Subscription>>)>() + 1;
        let list = 2 * size_of::<usize>() + size_of::<Vec<Subscription>>();
        let held: usize = map
            .iter()
            .map(|(name, subs)| name.len() + list + subs.capacity() * size_of::<Subscription>())
            .sum();
        map.capacity() * slot + held
    }
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader, Write};
    use std::net::{TcpListener, TcpStream};
    use std::time::Duration;

    use super::*;
    use crate::protocol::MsgId;

    /// A subscriber's writer (its thread not running) and the client's end of its socket.
    fn subscriber(topics: &Topics, conn: u64) -> (Arc<Writer>, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        (topics.writer(conn, Stream::new(server)), client)
    }

    fn idle_node() -> Arc<super::super::node::Node> {
        Arc::new(super::super::node::Node::idle(Vec::new()))
    }

    #[test]
    fn the_overhead_covers_the_most_a_new_topic_takes() {
        // glibc: 8 bytes of header, chunks of 16 bytes and at least 32.
        let chunk = |bytes: usize| (bytes + 8).next_multiple_of(16).max(32);
        let name_rounding = (1..=64).map(|n| chunk(n) - n).max().unwrap();
        let list = chunk(2 * size_of::<usize>() + size_of::<Vec<Subscription>>())
            + chunk(size_of::<Subscription>());
        let slot = size_of::<(Box<str>, Arc<Vec<Subscription>>)>() + 1;
        // Right after the table grows it has 16/7 slots per entry, and the old one 8/7 more.
        let table = (slot * 24).div_ceil(7);
        assert_eq!((name_rounding, list, slot), (31, 48 + 32, 25));
        assert!(name_rounding + list + table <= SUBSCRIPTION_OVERHEAD);
    }

    #[test]
    fn a_connection_is_charged_at_least_what_its_subscriptions_take() {
        let node = idle_node();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let (server, _) = listener.accept().unwrap();
        let served = {
            let node = Arc::clone(&node);
            std::thread::spawn(move || {
                super::super::conn::serve(node, Stream::new(server), 1, false)
            })
        };
        // 1,000 names of 65 bytes that nobody else uses: the names alone fit in 64 KiB.
        let names: Vec<String> = (0..1000).map(|i| format!("{i:04}.").repeat(13)).collect();
        let mut lines: String = names.iter().map(|n| format!("SUBSCRIBE|{n}\n")).collect();
        lines.push_str("PING\n");
        (&client).write_all(lines.as_bytes()).unwrap();
        let mut refused = 0;
        for line in BufReader::new(&client).lines() {
            match line.unwrap().as_str() {
                "PONG" => break,
                err => {
                    assert!(err.starts_with("ERR|too many subscriptions"), "{err}");
                    refused += 1;
                }
            }
        }
        let accepted = node.topics.count();
        assert_eq!(accepted + refused, names.len());
        // Refused at the budget: what was accepted fits, one more would not.
        let (cost, budget) = (
            SUBSCRIPTION_OVERHEAD + names[0].len(),
            node.config.max_subscription_bytes,
        );
        let charged = accepted * cost;
        assert!(
            charged <= budget && charged + cost > budget,
            "{accepted} accepted"
        );
        // What the budget charged covers what the map took for them.
        let allocated = node.topics.allocated_at_least();
        assert!(
            allocated <= charged,
            "{accepted} subscriptions take at least {allocated} bytes, charged {charged}"
        );
        drop(client);
        served.join().unwrap();
        assert_eq!(node.topics.count(), 0);
    }

    #[test]
    fn past_the_broker_budget_the_longest_queue_is_cut_off() {
        let config = BrokerConfig {
            slow_consumer_limit: 1000,
            slow_consumer_bytes: usize::MAX,
            slow_consumer_age: Duration::from_secs(60),
            max_line_bytes: 1 << 20,
            max_queued_bytes: 30_000,
            ..BrokerConfig::fast()
        };
        let topics = Topics::new(&config, Arc::default());
        let (short, _r1) = subscriber(&topics, 1);
        let (long, _r2) = subscriber(&topics, 2);
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
        // What the lines hold: the messages' shares of the budget.
        topics.hold(u.size());
        let clear_u: HeldUntilWritten = Arc::new(());
        assert_eq!(topics.deliver(&u, epoch, &clear_u, false), 1);
        assert_eq!(topics.counters.slow_consumers.load(Ordering::Relaxed), 0);
        // Two messages of 20,000 bytes wait, past 30,000: the queue holding both goes.
        topics.hold(t.size());
        let clear_t: HeldUntilWritten = Arc::new(());
        assert_eq!(topics.deliver(&t, epoch, &clear_t, false), 2);
        assert_eq!(topics.held_bytes(), 40_002);
        assert_eq!(topics.counters.slow_consumers.load(Ordering::Relaxed), 1);
        assert!(long.is_slow());
        assert!(!short.is_slow());
        assert_eq!(
            topics.count(),
            1,
            "only the short queue's subscription is left"
        );
    }
}
