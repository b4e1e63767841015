//! The publisher: sends each message with its id and matches the ACKs that come back, in
//! order. With a window of 1 it waits for each ACK before the next send; with a window of N up
//! to N messages wait for their ACKs at once (pipelining, PROTOCOL.md). On a timeout, an error
//! or a refusal it switches to the other broker and resends its latest messages there, every
//! one still waiting for its ACK among them, in order.

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

/// The widest window: the brokers' dedup table tells apart the 1,024 sequence numbers below a
/// publisher's highest (`src/broker/log.rs`) and counts anything older as accepted, so a
/// resend must never reach further back. A wider `window` is taken as this.
pub const MAX_WINDOW: usize = 1024;

/// What became of a published message.
#[derive(Debug)]
pub struct Outcome {
    /// Its sequence number.
    pub seq: u64,
    /// `Ok` once a broker ACKed it; otherwise why the publisher gave it up:
    /// [`Error::Timeout`] when no broker ACKed it within `give_up_after`, [`Error::Refused`]
    /// when a broker refused it for good (too large) or took a later message instead.
    pub result: Result<()>,
}

/// A message sent and waiting for its ACK.
struct Sent {
    message: Message,
    /// When it was sent on the current connection: its ACK is due `ack_timeout` later.
    sent_at: Instant,
    /// When the publisher gives it up: `give_up_after` after it was published.
    give_up: Instant,
}

/// A blocking publisher with failover, idempotent resends and, with a window above 1,
/// pipelining.
///
/// Every message gets an id: this publisher's id and a sequence number counting from 1.
/// Brokers recognise a resent id and ACK it without processing it again, so resending the
/// latest messages after a failover never duplicates one. On the wire the publisher sends its
/// *key*, a random number only it knows; the brokers file its messages under the id derived
/// from it ([`publisher_id`]), so nobody who reads the deliveries can publish in its name.
///
/// A broker answers the lines of one connection in the order they came, so the publisher keeps
/// the messages waiting for their ACKs in a queue, oldest first: the next ACK must be the
/// oldest message's. Failing over, it resends the last `resend` messages up to the oldest
/// waiting one (the seed's "last five": a broker that ACKed them alone may have died with
/// them) and every waiting one after it, one at a time, in order.
pub struct Publisher {
    config: PublisherConfig,
    key: u64,
    next_seq: u64,
    /// Sent on `conn` and waiting for their ACKs, oldest first.
    in_flight: VecDeque<Sent>,
    /// The latest settled messages (ACKed or given up), oldest first, resent after a failover
    /// before the waiting ones: the last `resend` messages up to the oldest waiting one.
    recent: VecDeque<Message>,
    /// What became of each message, in publish order, until the caller takes it.
    outcomes: VecDeque<Outcome>,
    /// Which of the two brokers we talk to.
    current: usize,
    conn: Option<Connection>,
    /// Whether `conn` has ACKed a message yet. A fresh connection carries one message at a time
    /// until then: a backup that refused the first line and took over before the second would
    /// otherwise take the second without the first.
    proven: bool,
}

impl Publisher {
    /// A publisher that will connect to `config.brokers[0]` first.
    pub fn new(config: PublisherConfig) -> Self {
        Publisher {
            config,
            key: rand::random(),
            next_seq: 1,
            in_flight: VecDeque::new(),
            recent: VecDeque::new(),
            outcomes: VecDeque::new(),
            current: 0,
            conn: None,
            proven: false,
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

    /// How many messages wait for their ACKs.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Publishes one message and returns its sequence number once a broker ACKed it (with a
    /// window above 1, once every message published before it is settled too).
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
        let seq = self.submit(topic, payload)?;
        self.flush();
        // The latest outcome of that number is this message's (a message refused as too large
        // gives its number to the next one).
        let mine = self.outcomes.iter().rposition(|o| o.seq == seq);
        match mine.and_then(|i| self.outcomes.remove(i)) {
            Some(Outcome { result: Ok(()), .. }) => Ok(seq),
            Some(Outcome { result: Err(e), .. }) => Err(e),
            None => Err(Error::Protocol(format!("message {seq} was never settled"))),
        }
    }

    /// Publishes one message without waiting for its ACK, and returns its sequence number.
    ///
    /// It sends the message, then waits until fewer than `window` messages wait for their ACKs
    /// (with a window of 1, until this one is ACKed). [`Publisher::take_outcomes`] says what
    /// became of each. Fails only with [`Error::Usage`] for a topic or payload that cannot
    /// travel, before anything is sent.
    pub fn submit(&mut self, topic: &str, payload: &str) -> Result<u64> {
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
        let seq = self.next_seq;
        self.next_seq += 1;
        let now = Instant::now();
        let written = self.write(&message);
        self.in_flight.push_back(Sent {
            message,
            sent_at: now,
            give_up: now + self.config.give_up_after,
        });
        self.trim_recent();
        if let Err(e) = written {
            self.drop_connection();
            self.fail_over(&e);
        }
        while self.in_flight.len() >= self.room() {
            self.settle_oldest(None);
        }
        Ok(seq)
    }

    /// Waits until every message published so far is settled: ACKed or given up.
    pub fn flush(&mut self) {
        while !self.in_flight.is_empty() {
            self.settle_oldest(None);
        }
    }

    /// Reads the ACKs that arrive before `until` (failing over if one is late); returns at once
    /// when no message waits.
    pub fn wait_for_acks(&mut self, until: Instant) {
        while !self.in_flight.is_empty() && Instant::now() < until {
            self.settle_oldest(Some(until));
        }
    }

    /// What became of the messages settled since the last call: one outcome per message, in the
    /// order they were published. A caller of [`Publisher::submit`] takes them now and then;
    /// [`Publisher::publish`] takes its own.
    pub fn take_outcomes(&mut self) -> Vec<Outcome> {
        self.outcomes.drain(..).collect()
    }

    /// How many messages may wait on the current connection: the window once it has ACKed one.
    fn room(&self) -> usize {
        if self.proven {
            self.config.window.clamp(1, MAX_WINDOW)
        } else {
            1
        }
    }

    /// Reads the answer to the oldest waiting message and settles it. A late answer, a broken
    /// connection or a refusal fails over. With `until`, returns quietly at that time.
    fn settle_oldest(&mut self, until: Option<Instant>) {
        let Some(oldest) = self.in_flight.front() else {
            return;
        };
        let (id, due) = (oldest.message.id, oldest.sent_at + self.config.ack_timeout);
        match self.read_answer(id, until.map_or(due, |u| u.min(due))) {
            Ok(()) => self.settle(Ok(())),
            // `until` came before the ACK was due.
            Err(Error::Timeout) if Instant::now() < due => {}
            Err(Error::Refused(reason)) if too_large(&reason) => {
                self.settle(Err(Error::Refused(reason)))
            }
            Err(Error::Refused(reason)) => self.refused(reason),
            Err(e) => {
                self.drop_connection();
                self.fail_over(&e);
            }
        }
    }

    /// The oldest waiting message was refused. If later ones wait, the broker may have taken
    /// them all the same (it was overloaded for one line and not the next), and their answers
    /// decide: a later ACK means the refused messages can no longer come before it, so they
    /// are given up rather than resent behind it. Otherwise every waiting message goes to the
    /// other broker.
    fn refused(&mut self, reason: String) {
        // Why each of the oldest `reasons.len()` waiting messages was refused.
        let mut reasons = vec![reason];
        while let Some(next) = self.in_flight.get(reasons.len()) {
            let (id, due) = (next.message.id, next.sent_at + self.config.ack_timeout);
            match self.read_answer(id, due) {
                Ok(()) => {
                    for reason in reasons {
                        warn!("{}: {reason}; a later message was taken", self.broker());
                        self.settle(Err(Error::Refused(reason)));
                    }
                    self.settle(Ok(()));
                    return;
                }
                Err(Error::Refused(reason)) => reasons.push(reason),
                Err(_) => break,
            }
        }
        let error = Error::Refused(reasons.swap_remove(0));
        self.drop_connection();
        self.fail_over(&error);
    }

    /// Settles the oldest waiting message with `result`: tells the caller, and keeps the
    /// message for resending unless no broker would ever take it.
    fn settle(&mut self, result: Result<()>) {
        let Some(sent) = self.in_flight.pop_front() else {
            return;
        };
        let seq = sent.message.id.seq;
        if result.is_ok() {
            self.proven = true;
        }
        match &result {
            Err(Error::Refused(reason)) if too_large(reason) => {
                // Never taken anywhere: its number is free again if nothing came after it.
                if seq + 1 == self.next_seq {
                    self.next_seq = seq;
                }
            }
            _ => self.recent.push_back(sent.message),
        }
        self.trim_recent();
        self.outcomes.push_back(Outcome { seq, result });
    }

    /// Forgets the oldest settled messages beyond the last `resend` up to the oldest waiting
    /// one (with a window of 1, the seed's "last five", the one waiting among them).
    fn trim_recent(&mut self) {
        let keep = self.config.resend.max(1) - usize::from(!self.in_flight.is_empty());
        while self.recent.len() > keep {
            self.recent.pop_front();
        }
    }

    /// Switches brokers until one ACKs every recent and waiting message, resent one at a time
    /// in order. A waiting message whose `give_up` time passes meanwhile is given up
    /// ([`Error::Timeout`]); the failover ends when none waits.
    fn fail_over(&mut self, first: &Error) {
        let mut error = first.to_string();
        for round in 0u32.. {
            let from = self.broker().to_string();
            self.drop_connection();
            self.current = 1 - self.current;
            warn!(
                "{from}: {error}; failing over to {} and resending the last {}",
                self.broker(),
                self.recent.len() + self.in_flight.len()
            );
            match self.resend_all() {
                Ok(()) => {
                    info!("now publishing to {}", self.broker());
                    return;
                }
                Err(e) => error = e.to_string(),
            }
            let now = Instant::now();
            while self.in_flight.front().is_some_and(|s| now >= s.give_up) {
                self.settle(Err(Error::Timeout));
            }
            if self.in_flight.is_empty() {
                return;
            }
            // After trying both brokers, pause before the next round.
            if round % 2 == 1 {
                thread::sleep(Duration::from_millis(50 * u64::from(round.min(20))));
            }
        }
    }

    /// Resends the recent messages, then the waiting ones, each after the previous one's ACK;
    /// each waiting one is settled as its ACK comes.
    fn resend_all(&mut self) -> Result<()> {
        let recent: Vec<Message> = self.recent.iter().cloned().collect();
        for message in &recent {
            self.send(message)?;
        }
        while let Some(oldest) = self.in_flight.front() {
            let message = oldest.message.clone();
            match self.send(&message) {
                Ok(()) => self.settle(Ok(())),
                Err(Error::Refused(reason)) if too_large(&reason) => {
                    self.settle(Err(Error::Refused(reason)))
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Sends one message on the current connection and waits for its ACK.
    fn send(&mut self, message: &Message) -> Result<()> {
        self.write(message)
            .and_then(|()| {
                let due = Instant::now() + self.config.ack_timeout;
                self.read_answer(message.id, due)
            })
            .inspect_err(|_| self.drop_connection())
    }

    /// Writes one message on the current connection, dialling the current broker if there is
    /// none.
    fn write(&mut self, message: &Message) -> Result<()> {
        let conn = match &mut self.conn {
            Some(conn) => conn,
            slot @ None => {
                let auth = self.config.secret.as_ref().map(|s| (AuthKind::Client, s));
                let addr = &self.config.brokers[self.current];
                let timeout = self.config.ack_timeout;
                slot.insert(Connection::dial(addr, timeout, MAX_LINE, auth)?)
            }
        };
        conn.send(&Request::PublishId(message.clone()))
    }

    /// Reads the answer to message `id` on the current connection by `until`: `Ok` for its
    /// ACK, [`Error::Refused`] for an `ERR`. Answers come in order, so an ACK of a message sent
    /// after it is a protocol error; one of a message not waiting (a repeated ACK) is skipped.
    fn read_answer(&mut self, id: MsgId, until: Instant) -> Result<()> {
        let Some(conn) = &mut self.conn else {
            return Err(Error::Closed);
        };
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::Timeout);
            }
            conn.set_read_timeout(Some(left))?;
            match conn.recv()? {
                Reply::AckId(acked) if acked == id => {
                    debug!("{} ACKed by {}", id, self.config.brokers[self.current]);
                    return Ok(());
                }
                Reply::AckId(acked) if self.in_flight.iter().any(|s| s.message.id == acked) => {
                    return Err(Error::Protocol(format!(
                        "the ACK of {acked} came before the ACK of {id}"
                    )));
                }
                Reply::AckId(_) => continue,
                Reply::Err(reason) => return Err(Error::Refused(reason)),
                other => return Err(Error::Protocol(format!("unexpected answer {other:?}"))),
            }
        }
    }

    /// Closes the current connection; the next write dials again.
    fn drop_connection(&mut self) {
        self.conn = None;
        self.proven = false;
    }
}

/// Whether a refusal is for good: the message does not fit the lines brokers build.
fn too_large(reason: &str) -> bool {
    reason.starts_with("message too large")
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader, Write};
    use std::net::{TcpListener, TcpStream};

    use super::*;

    /// A fake broker's end of one connection: reads `PUB` lines, answers what the test says.
    struct Peer {
        reader: BufReader<TcpStream>,
        stream: TcpStream,
    }

    impl Peer {
        fn accept(listener: &TcpListener) -> Peer {
            let (stream, _) = listener.accept().unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            Peer {
                reader: BufReader::new(stream.try_clone().unwrap()),
                stream,
            }
        }

        /// The next line's `(key, seq)`.
        fn read(&mut self) -> (String, u64) {
            let mut line = String::new();
            self.reader.read_line(&mut line).unwrap();
            let fields: Vec<&str> = line.trim_end().split('|').collect();
            assert_eq!(fields[0], "PUB", "{line}");
            (fields[1].to_string(), fields[2].parse().unwrap())
        }

        fn answer(&mut self, line: &str) {
            self.stream
                .write_all(format!("{line}\n").as_bytes())
                .unwrap();
        }

        /// Reads one message and ACKs it; returns its seq.
        fn ack_next(&mut self) -> u64 {
            let (key, seq) = self.read();
            self.answer(&format!("ACK|{key}|{seq}"));
            seq
        }
    }

    fn publisher(a: &TcpListener, b: &TcpListener, window: usize) -> Publisher {
        let mut config = PublisherConfig::new(
            a.local_addr().unwrap().to_string(),
            b.local_addr().unwrap().to_string(),
        );
        config.window = window;
        config.ack_timeout = Duration::from_secs(2);
        config.give_up_after = Duration::from_secs(5);
        Publisher::new(config)
    }

    fn outcomes(p: &mut Publisher) -> Vec<(u64, bool)> {
        let all = p.take_outcomes();
        all.iter().map(|o| (o.seq, o.result.is_ok())).collect()
    }

    #[test]
    fn a_window_sends_ahead_and_matches_the_acks_in_order() {
        let (a, b) = (listener(), listener());
        let mut p = publisher(&a, &b, 4);
        let broker = thread::spawn(move || {
            let mut peer = Peer::accept(&a);
            // A fresh connection carries one message until its ACK.
            assert_eq!(peer.ack_next(), 1);
            // Then three lines arrive before any answer: they were pipelined.
            let lines: Vec<(String, u64)> = (0..3).map(|_| peer.read()).collect();
            assert_eq!(lines.iter().map(|l| l.1).collect::<Vec<_>>(), [2, 3, 4]);
            for (key, seq) in lines {
                peer.answer(&format!("ACK|{key}|{seq}"));
            }
            peer
        });
        for i in 1..=4 {
            assert_eq!(p.submit("t", &i.to_string()).unwrap(), i);
        }
        assert_eq!(p.in_flight(), 3);
        p.flush();
        assert_eq!(
            outcomes(&mut p),
            [(1, true), (2, true), (3, true), (4, true)]
        );
        drop(broker.join().unwrap());
    }

    #[test]
    fn an_ack_out_of_order_fails_over_and_resends_every_waiting_message() {
        let (a, b) = (listener(), listener());
        let mut p = publisher(&a, &b, 4);
        let first = thread::spawn(move || {
            let mut peer = Peer::accept(&a);
            peer.ack_next();
            let (key, _) = peer.read();
            let (_, three) = peer.read();
            // The ACK of 3 before the ACK of 2.
            peer.answer(&format!("ACK|{key}|{three}"));
            peer
        });
        let second = thread::spawn(move || {
            let mut peer = Peer::accept(&b);
            (0..3).map(|_| peer.ack_next()).collect::<Vec<u64>>()
        });
        for i in 1..=3 {
            p.submit("t", &i.to_string()).unwrap();
        }
        p.flush();
        // Message 1 as the recent one, then both waiting ones, in order.
        assert_eq!(second.join().unwrap(), [1, 2, 3]);
        assert_eq!(outcomes(&mut p), [(1, true), (2, true), (3, true)]);
        assert_eq!(p.broker(), p.config.brokers[1]);
        drop(first.join().unwrap());
    }

    #[test]
    fn a_refusal_before_a_later_ack_gives_the_refused_message_up() {
        let (a, b) = (listener(), listener());
        let mut p = publisher(&a, &b, 4);
        let broker = thread::spawn(move || {
            let mut peer = Peer::accept(&a);
            peer.ack_next();
            let (key, _) = peer.read();
            let (_, three) = peer.read();
            peer.answer("ERR|overloaded: 9 messages pending");
            peer.answer(&format!("ACK|{key}|{three}"));
            // The connection goes on.
            peer.ack_next()
        });
        for i in 1..=3 {
            p.submit("t", &i.to_string()).unwrap();
        }
        p.flush();
        let settled = p.take_outcomes();
        assert!(
            matches!(&settled[1].result, Err(Error::Refused(r)) if r.starts_with("overloaded")),
            "{settled:?}"
        );
        assert_eq!(p.publish("t", "4").unwrap(), 4);
        assert_eq!(broker.join().unwrap(), 4);
        let seqs: Vec<(u64, bool)> = settled.iter().map(|o| (o.seq, o.result.is_ok())).collect();
        assert_eq!(seqs, [(1, true), (2, false), (3, true)]);
    }

    fn listener() -> TcpListener {
        TcpListener::bind("127.0.0.1:0").unwrap()
    }
}
