//! The publisher: sends each message with its id, waits for the ACK, and on a timeout, an
//! error or a refusal switches to the other broker and resends its latest messages there.

use std::collections::VecDeque;
use std::thread;
use std::time::{Duration, Instant};

use log::{debug, info, warn};

use crate::config::PublisherConfig;
use crate::connection::Connection;
use crate::error::{Error, Result};
use crate::protocol::{AuthKind, Message, MsgId, Reply, Request, publisher_id};

/// The longest line a publisher reads: its ACKs are short.
const MAX_LINE: usize = 1024;

/// A blocking publisher with failover and idempotent resends.
///
/// Every message gets an id: this publisher's id and a sequence number counting from 1.
/// Brokers recognise a resent id and ACK it without processing it again, so resending the
/// latest messages after a failover never duplicates one. On the wire the publisher sends its
/// *key*, a random number only it knows; the brokers file its messages under the id derived
/// from it ([`publisher_id`]), so nobody who reads the deliveries can publish in its name.
pub struct Publisher {
    config: PublisherConfig,
    key: u64,
    next_seq: u64,
    /// The latest messages, oldest first, for resending after a failover.
    window: VecDeque<Message>,
    /// Which of the two brokers we talk to.
    current: usize,
    conn: Option<Connection>,
}

impl Publisher {
    /// A publisher that will connect to `config.brokers[0]` first.
    pub fn new(config: PublisherConfig) -> Self {
        Publisher {
            config,
            key: rand::random(),
            next_seq: 1,
            window: VecDeque::new(),
            current: 0,
            conn: None,
        }
    }

    /// This publisher's id, as deliveries carry it.
    pub fn id(&self) -> u64 {
        publisher_id(self.key)
    }

    /// The broker this publisher sends to now.
    pub fn broker(&self) -> &str {
        &self.config.brokers[self.current]
    }

    /// Publishes one message and returns its sequence number once a broker ACKed it.
    ///
    /// ```
    /// use edgebroker::{Broker, BrokerConfig, Publisher, PublisherConfig};
    ///
    /// let broker = Broker::start(BrokerConfig::fast())?;
    /// let addr = broker.local_addr().to_string();
    /// // With one broker, give it as both addresses.
    /// let mut publisher = Publisher::new(PublisherConfig::new(&addr, &addr));
    /// assert_eq!(publisher.publish("news", "hello")?, 1);
    /// assert_eq!(publisher.publish("news", "again")?, 2);
    /// assert!(publisher.publish("bad|topic", "x").is_err());
    /// # Ok::<(), edgebroker::Error>(())
    /// ```
    ///
    /// Fails with [`Error::Usage`] for a topic or payload that cannot travel (empty topic,
    /// `|` in the topic, a newline anywhere), with [`Error::Refused`] at once for a message
    /// larger than the brokers take, and with [`Error::Timeout`] when neither broker ACKed it
    /// within `give_up_after`.
    pub fn publish(&mut self, topic: &str, payload: &str) -> Result<u64> {
        if topic.is_empty() || topic.contains(['|', '\n', '\r']) {
            return Err(Error::Usage(format!("bad topic '{topic}'")));
        }
        if payload.contains(['\n', '\r']) {
            return Err(Error::Usage("a payload cannot contain a newline".into()));
        }
        // As sent: the key in the id's place (see `Request::PublishId`).
        let message = Message {
            id: MsgId {
                publisher: self.key,
                seq: self.next_seq,
            },
            topic: topic.to_string(),
            payload: payload.to_string(),
        };
        self.next_seq += 1;
        self.window.push_back(message.clone());
        while self.window.len() > self.config.resend.max(1) {
            self.window.pop_front();
        }
        let give_up = Instant::now() + self.config.give_up_after;
        match self.send(&message) {
            Ok(()) => {}
            // No broker of the pair takes it: trying the other one would only loop.
            Err(Error::Refused(reason)) if reason.starts_with("message too large") => {
                self.window.pop_back();
                self.next_seq -= 1;
                return Err(Error::Refused(reason));
            }
            Err(e) => self.fail_over(&e, give_up)?,
        }
        Ok(message.id.seq)
    }

    /// Switches brokers until one ACKs the whole resend window (which ends with the message
    /// being published).
    fn fail_over(&mut self, first: &Error, give_up: Instant) -> Result<()> {
        let mut error = first.to_string();
        for round in 0u32.. {
            let from = self.broker().to_string();
            self.conn = None;
            self.current = 1 - self.current;
            warn!(
                "{from}: {error}; failing over to {} and resending the last {}",
                self.broker(),
                self.window.len()
            );
            match self.resend_window() {
                Ok(()) => {
                    info!("now publishing to {}", self.broker());
                    return Ok(());
                }
                Err(e) => error = e.to_string(),
            }
            if Instant::now() >= give_up {
                return Err(Error::Timeout);
            }
            // After trying both brokers, pause before the next round.
            if round % 2 == 1 {
                thread::sleep(Duration::from_millis(50 * u64::from(round.min(20))));
            }
        }
        unreachable!("the loop only ends by returning")
    }

    fn resend_window(&mut self) -> Result<()> {
        let window: Vec<Message> = self.window.iter().cloned().collect();
        for message in &window {
            self.send(message)?;
        }
        Ok(())
    }

    /// Sends one message on the current connection and waits for its ACK.
    fn send(&mut self, message: &Message) -> Result<()> {
        self.try_send(message).inspect_err(|_| self.conn = None)
    }

    fn try_send(&mut self, message: &Message) -> Result<()> {
        let timeout = self.config.ack_timeout;
        let deadline = Instant::now() + timeout;
        let conn = match &mut self.conn {
            Some(conn) => conn,
            slot @ None => {
                let auth = self.config.secret.as_ref().map(|s| (AuthKind::Client, s));
                let addr = &self.config.brokers[self.current];
                slot.insert(Connection::dial(addr, timeout, MAX_LINE, auth)?)
            }
        };
        conn.send(&Request::PublishId(message.clone()))?;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::Timeout);
            }
            conn.set_read_timeout(Some(left))?;
            match conn.recv()? {
                Reply::AckId(id) if id == message.id => {
                    debug!("{} ACKed by {}", id, self.config.brokers[self.current]);
                    return Ok(());
                }
                // A late ACK of an earlier message on this connection.
                Reply::AckId(_) => continue,
                Reply::Err(reason) => return Err(Error::Refused(reason)),
                other => return Err(Error::Protocol(format!("unexpected answer {other:?}"))),
            }
        }
    }
}
