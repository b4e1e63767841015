//! The subscriber: one thread per broker keeps a `SUB` connection open (redialling with
//! backoff), and [`Subscriber::recv`] merges what they read, returning each publisher's
//! messages once and in order.

use std::collections::HashMap;
use std::net::Shutdown;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TryRecvError};
use log::{debug, info, warn};
use parking_lot::Mutex;

use super::Source;
use crate::config::SubscriberConfig;
use crate::connection::{Connection, Stream};
use crate::error::Error;
use crate::protocol::{AuthKind, Epoch, Message, MsgId, Reply, Request};

/// The longest line a subscriber reads: a delivery of the largest message a broker with the
/// default `--max-line-bytes` takes.
const MAX_LINE: usize = 64 * 1024;

/// A message as the subscriber hands it out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// Which broker delivered it.
    pub source: Source,
    /// The epoch of the broker that processed it.
    pub epoch: Epoch,
    /// The message.
    pub message: Message,
}

/// The longest [`Subscriber::connect`] waits for the brokers to confirm the subscription.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(2);

/// A subscriber connected to both brokers that returns each message once, each publisher's
/// in the order they were published.
pub struct Subscriber {
    rx: Receiver<Delivery>,
    seen: Seen,
    closer: Closer,
    threads: Vec<JoinHandle<()>>,
}

/// What the subscriber has returned: the highest sequence number per publisher, and the
/// highest epoch.
#[derive(Default)]
struct Seen {
    last: HashMap<u64, u64>,
    highest_epoch: Epoch,
}

/// Closes a [`Subscriber`] from another thread (a Ctrl-C handler, say): its `recv` then
/// returns `None`.
#[derive(Clone)]
pub struct Closer {
    /// Dropped to tell the connection threads to stop.
    stop: Arc<Mutex<Option<Sender<()>>>>,
    sockets: Arc<Mutex<[Option<Stream>; 2]>>,
}

impl Closer {
    /// Stops both connection threads; what they already read can still be received.
    pub fn close(&self) {
        self.stop.lock().take();
        for s in self.sockets.lock().iter().flatten() {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

impl Subscriber {
    /// Starts one connection thread per broker; they subscribe and redial on their own.
    /// Returns once each broker has either confirmed the subscription or failed its first
    /// dial (at most two seconds), so a message published afterwards reaches this
    /// subscriber through every broker that is up.
    pub fn connect(config: SubscriberConfig) -> crate::Result<Subscriber> {
        let (tx, rx) = crossbeam_channel::unbounded();
        let (settled_tx, settled) = crossbeam_channel::bounded(2);
        let (stop, stopped) = crossbeam_channel::bounded(0);
        let sockets = Arc::new(Mutex::new([None, None]));
        let config = Arc::new(config);
        let mut threads = Vec::new();
        for (slot, source) in [Source::Primary, Source::Backup].into_iter().enumerate() {
            let link = Link {
                config: Arc::clone(&config),
                slot,
                source,
                tx: tx.clone(),
                stopped: stopped.clone(),
                sockets: Arc::clone(&sockets),
                settled: Mutex::new(Some(settled_tx.clone())),
            };
            let name = format!("sub-{}", source.to_string().to_lowercase());
            threads.push(
                thread::Builder::new()
                    .name(name)
                    .spawn(move || link.run())?,
            );
        }
        let deadline = Instant::now() + SETTLE_TIMEOUT;
        for _ in 0..2 {
            if settled.recv_deadline(deadline).is_err() {
                break;
            }
        }
        Ok(Subscriber {
            rx,
            seen: Seen::default(),
            closer: Closer {
                stop: Arc::new(Mutex::new(Some(stop))),
                sockets,
            },
            threads,
        })
    }

    /// The next message not returned before, waiting as long as it takes. `None` once the
    /// subscriber is closed.
    pub fn recv(&mut self) -> Option<Delivery> {
        self.rx.iter().find_map(|d| self.seen.fresh(d))
    }

    /// Like [`Subscriber::recv`], giving up after `timeout`.
    pub fn recv_timeout(&mut self, timeout: Duration) -> Option<Delivery> {
        let deadline = Instant::now() + timeout;
        let mut arrivals = std::iter::from_fn(|| self.rx.recv_deadline(deadline).ok());
        arrivals.find_map(|d| self.seen.fresh(d))
    }

    /// A handle that closes this subscriber from another thread.
    pub fn closer(&self) -> Closer {
        self.closer.clone()
    }

    /// Stops both connection threads and waits for them.
    pub fn close(mut self) {
        self.shut();
    }

    fn shut(&mut self) {
        self.closer.close();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.shut();
    }
}

impl Seen {
    /// Returns each publisher's messages in order, each once: drops a message no newer than
    /// the last one returned from its publisher. That is a message returned already (the
    /// backup's replay of its buffer after a takeover, a zombie primary's late forward), or one
    /// published before this subscriber joined: after a split, the broker taking over replays
    /// messages the other one forwarded before the subscriber came, and they can arrive after
    /// newer ones.
    fn fresh(&mut self, d: Delivery) -> Option<Delivery> {
        let MsgId { publisher, seq } = d.message.id;
        let last = self.last.entry(publisher).or_default();
        if seq <= *last {
            debug!(
                "dropping {} from {} (epoch {}): {publisher}:{last} was returned already",
                d.message.id, d.source, d.epoch
            );
            return None;
        }
        *last = seq;
        if d.epoch > self.highest_epoch {
            if self.highest_epoch != Epoch::default() {
                info!("epoch {} began (delivered by {})", d.epoch, d.source);
            }
            self.highest_epoch = d.epoch;
        }
        Some(d)
    }
}

/// One broker's connection, run by its own thread.
struct Link {
    config: Arc<SubscriberConfig>,
    slot: usize,
    source: Source,
    tx: Sender<Delivery>,
    /// Disconnects when the subscriber closes.
    stopped: Receiver<()>,
    sockets: Arc<Mutex<[Option<Stream>; 2]>>,
    /// Told once, when the first subscription is confirmed or the first dial fails.
    settled: Mutex<Option<Sender<()>>>,
}

impl Link {
    fn settle(&self) {
        if let Some(tx) = self.settled.lock().take() {
            let _ = tx.try_send(());
        }
    }

    fn run(self) {
        let addr = &self.config.brokers[self.slot];
        let mut backoff = self.config.min_backoff;
        let mut announced_loss = false;
        while !self.is_stopped() {
            match self.session(addr) {
                Ok(true) => {
                    backoff = self.config.min_backoff;
                    announced_loss = false;
                }
                Ok(false) => return, // the subscriber is gone
                Err(e) => {
                    self.settle();
                    if !announced_loss {
                        warn!("{} broker {addr}: {e}; redialling", self.source);
                        announced_loss = true;
                    }
                }
            }
            self.sleep(backoff);
            backoff = (backoff * 2).min(self.config.max_backoff);
        }
    }

    /// One connection: subscribe and forward deliveries until it ends. `Ok(true)` when it
    /// had been up, `Ok(false)` when nobody listens any more.
    fn session(&self, addr: &str) -> crate::Result<bool> {
        let mut conn = Connection::dial(addr, Duration::from_secs(1), MAX_LINE, None)?;
        // Registered before the handshake, so that closing the subscriber interrupts it.
        self.sockets.lock()[self.slot] = Some(conn.stream().clone());
        if let Some(secret) = &self.config.secret {
            conn.authenticate(AuthKind::Client, secret)?;
        }
        if self.is_stopped() {
            return Ok(false);
        }
        conn.set_read_timeout(None)?;
        let topic = self.config.topic.clone();
        // Lines are handled in order: the PONG confirms the subscription.
        conn.send_all(&[Request::SubscribeIds { topic }, Request::Ping])?;
        info!(
            "{} broker {addr}: subscribed to '{}'",
            self.source, self.config.topic
        );
        loop {
            let source = self.source;
            match conn.recv() {
                Ok(Reply::Msg { epoch, message }) => {
                    let delivery = Delivery {
                        source,
                        epoch,
                        message,
                    };
                    if self.tx.send(delivery).is_err() {
                        return Ok(false);
                    }
                }
                Ok(Reply::Pong) => self.settle(),
                Ok(Reply::Err(reason)) => warn!("{source} broker {addr}: ERR {reason}"),
                Ok(other) => debug!("{source} broker {addr}: ignoring {other:?}"),
                Err(Error::Closed) => {
                    info!("{source} broker {addr} closed the connection");
                    return Ok(true);
                }
                Err(Error::Protocol(why)) => {
                    debug!("{source} broker {addr}: ignoring a line: {why}")
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Sleeps up to `d`, returning early when the subscriber closes.
    fn sleep(&self, d: Duration) {
        let _ = self.stopped.recv_timeout(d);
    }

    fn is_stopped(&self) -> bool {
        matches!(self.stopped.try_recv(), Err(TryRecvError::Disconnected))
    }
}
