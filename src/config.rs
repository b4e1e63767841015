//! Configuration of each role. `Default` gives the seed's numbers; `fast()` gives timings that
//! let tests fail over in milliseconds.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::auth::Secret;
use crate::protocol::{AuthKind, Message};
use crate::witness::Pair;

/// The pseudo edge-computing step every message goes through before it is forwarded.
#[derive(Clone)]
pub enum ComputeStep {
    /// No computing: forward at once.
    Off,
    /// Spin the CPU for a duration drawn uniformly from the range (in milliseconds).
    BusyLoop(RangeInclusive<u64>),
    /// A function of your own, run on the compute worker thread.
    Custom(Arc<dyn Fn(&Message) + Send + Sync>),
}

impl fmt::Debug for ComputeStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ComputeStep::Off => f.write_str("Off"),
            ComputeStep::BusyLoop(r) => write!(f, "BusyLoop({}-{} ms)", r.start(), r.end()),
            ComputeStep::Custom(_) => f.write_str("Custom"),
        }
    }
}

/// When the log on disk (`--data-dir`) is synced, and so what an ACK has survived.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Fsync {
    /// Before the ACK: one fsync covers every message waiting (a group commit). An ACKed
    /// message survives a power cut.
    #[default]
    Always,
    /// At most every `journal::BATCH_INTERVAL` (100 ms); the ACK waits for the write only.
    /// A process crash loses nothing ACKed, a power cut at most the last 100 ms.
    Batch,
    /// Never by the broker, by the OS when it likes; the ACK waits for the write only. A
    /// process crash loses nothing ACKed, a power cut what the OS had not written yet.
    Never,
}

impl std::str::FromStr for Fsync {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "always" => Ok(Fsync::Always),
            "batch" => Ok(Fsync::Batch),
            "never" => Ok(Fsync::Never),
            _ => Err(format!(
                "--fsync: bad value '{text}' (want always, batch or never)"
            )),
        }
    }
}

/// Everything a broker needs to know; the same struct serves both roles.
#[derive(Clone, Debug)]
pub struct BrokerConfig {
    /// Where to listen. Port 0 picks a free port.
    pub listen: SocketAddr,
    /// The other broker (`host:port`); `None` runs a lone primary.
    pub peer: Option<String>,
    /// The pair's witness (`host:port`), the same for both brokers; `None` runs without one
    /// (takeover on silence alone, as the seed's brokers did).
    pub witness: Option<String>,
    /// The pair's name at its witness (`--pair`), the same for both brokers and different
    /// for every other pair that shares the witness.
    pub pair: Pair,
    /// Started as the `primary` program: wins a tie when both brokers are fresh.
    pub preferred_primary: bool,
    /// The compute step.
    pub compute: ComputeStep,
    /// How many compute workers; topics are spread over them, so each topic keeps its order.
    pub workers: usize,
    /// How often the backup probes the primary (and the primary heartbeats the backup).
    pub ping_interval: Duration,
    /// How long a probe waits for its answer before the peer counts as silent.
    pub ping_timeout: Duration,
    /// How long a fresh broker started as `backup` waits for its peer before a refused or
    /// silent probe makes it take over.
    pub startup_grace: Duration,
    /// Refuse to ACK while the backup is silent but not known dead (consistency over
    /// availability).
    pub require_backup: bool,
    /// The longest line accepted.
    pub max_line_bytes: usize,
    /// The most connections served at once.
    pub max_connections: usize,
    /// How many undelivered messages a subscriber may lag before it is disconnected.
    pub slow_consumer_limit: usize,
    /// How many bytes may wait in one subscriber's queue before it is disconnected.
    pub slow_consumer_bytes: usize,
    /// How long a line may wait in a subscriber's queue before the subscriber is disconnected
    /// (one that reads, but too slowly to keep up).
    pub slow_consumer_age: Duration,
    /// How many bytes of messages may wait in subscribers' queues, each counted once however
    /// many subscribers it waits for; past it, the subscriber with the longest queue is
    /// disconnected.
    pub max_queued_bytes: usize,
    /// How many accepted messages may wait for the compute step before the broker refuses
    /// publishes.
    pub max_pending: usize,
    /// How many bytes of messages may wait for the compute step before the broker refuses
    /// publishes.
    pub max_pending_bytes: usize,
    /// How many topics one connection may subscribe to.
    pub max_subscriptions: usize,
    /// How many bytes one connection's subscriptions may take together, each charged its topic
    /// name plus `SUBSCRIPTION_OVERHEAD` (`src/broker/topics.rs`) for what holds it.
    pub max_subscription_bytes: usize,
    /// How long a connection that must authenticate (a client secret is set, or it took one of
    /// the slots kept for the peer broker) may take to do so before it is closed.
    pub auth_timeout: Duration,
    /// How many publishers the dedup table remembers.
    pub dedup_publishers: usize,
    /// Where the log on disk lives (`--data-dir`); `None` keeps everything in memory only.
    pub data_dir: Option<PathBuf>,
    /// When the log on disk is synced (`--fsync`).
    pub fsync: Fsync,
    /// The broker-to-broker secret: when set, peer verbs need an authenticated connection.
    pub secret: Option<Secret>,
    /// The client secret: when set, every client verb but PING needs an authenticated
    /// connection.
    pub client_secret: Option<Secret>,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            listen: SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
            peer: None,
            witness: None,
            pair: Pair::default(),
            preferred_primary: false,
            compute: ComputeStep::BusyLoop(50..=150),
            workers: 1,
            ping_interval: Duration::from_millis(1000),
            ping_timeout: Duration::from_millis(500),
            startup_grace: Duration::from_millis(3000),
            require_backup: false,
            max_line_bytes: 64 * 1024,
            max_connections: 10_000,
            slow_consumer_limit: 10_000,
            slow_consumer_bytes: 32 * 1024 * 1024,
            slow_consumer_age: Duration::from_secs(10),
            max_queued_bytes: 256 * 1024 * 1024,
            max_pending: 100_000,
            max_pending_bytes: 256 * 1024 * 1024,
            max_subscriptions: 1_000,
            max_subscription_bytes: 64 * 1024,
            auth_timeout: Duration::from_secs(10),
            dedup_publishers: 100_000,
            data_dir: None,
            fsync: Fsync::Always,
            secret: None,
            client_secret: None,
        }
    }
}

impl BrokerConfig {
    /// The secret a connection of `kind` must prove, if one is set.
    pub fn secret_for(&self, kind: AuthKind) -> Option<&Secret> {
        match kind {
            AuthKind::Peer => self.secret.as_ref(),
            AuthKind::Client => self.client_secret.as_ref(),
        }
    }

    /// How this broker authenticates the connections it opens to its peer, if a secret is set.
    pub fn peer_auth(&self) -> Option<(AuthKind, &Secret)> {
        self.secret.as_ref().map(|s| (AuthKind::Peer, s))
    }

    /// Test timings on loopback port 0: compute 1–3 ms, probes every 20 ms, 200 ms timeout,
    /// a 500 ms start-up grace, 1 s to authenticate.
    pub fn fast() -> Self {
        BrokerConfig {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            compute: ComputeStep::BusyLoop(1..=3),
            ping_interval: Duration::from_millis(20),
            ping_timeout: Duration::from_millis(200),
            startup_grace: Duration::from_millis(500),
            auth_timeout: Duration::from_secs(1),
            ..BrokerConfig::default()
        }
    }
}

/// How a publisher waits and fails over.
#[derive(Clone, Debug)]
pub struct PublisherConfig {
    /// The brokers, primary first.
    pub brokers: [String; 2],
    /// How long to wait for an ACK before trying the other broker.
    pub ack_timeout: Duration,
    /// How many of the latest messages to resend after a failover.
    pub resend: usize,
    /// How many published messages may wait for their ACKs at once: 1 waits for each ACK
    /// before the next send; more pipelines them, the ACKs matched in order (at most
    /// [`crate::client::MAX_WINDOW`]). [`PublisherConfig::new`] gives 1.
    pub window: usize,
    /// How long one publish may keep trying both brokers before it gives up.
    pub give_up_after: Duration,
    /// The brokers' client secret, if they require one.
    pub secret: Option<Secret>,
}

impl PublisherConfig {
    /// The seed's numbers: 500 ms ACK timeout, resend the last 5, give up after 30 s.
    pub fn new(primary: impl Into<String>, backup: impl Into<String>) -> Self {
        PublisherConfig {
            brokers: [primary.into(), backup.into()],
            ack_timeout: Duration::from_millis(500),
            resend: 5,
            window: 1,
            give_up_after: Duration::from_secs(30),
            secret: None,
        }
    }
}

/// How a subscriber reconnects.
#[derive(Clone, Debug)]
pub struct SubscriberConfig {
    /// The brokers, primary first; deliveries are labelled by which one they came from.
    pub brokers: [String; 2],
    /// The topic.
    pub topic: String,
    /// The first wait before redialling a broker that went away; it doubles up to
    /// `max_backoff`.
    pub min_backoff: Duration,
    /// The longest wait between redials.
    pub max_backoff: Duration,
    /// The brokers' client secret, if they require one.
    pub secret: Option<Secret>,
}

impl SubscriberConfig {
    /// Redial after 50 ms, backing off to 1 s.
    pub fn new(
        topic: impl Into<String>,
        primary: impl Into<String>,
        backup: impl Into<String>,
    ) -> Self {
        SubscriberConfig {
            brokers: [primary.into(), backup.into()],
            topic: topic.into(),
            min_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(1),
            secret: None,
        }
    }
}

/// How a witness runs ([`crate::witness`]).
#[derive(Clone, Debug)]
pub struct WitnessConfig {
    /// Where to listen. Port 0 picks a free port.
    pub listen: SocketAddr,
    /// How long a primary may act after it sent a renewal. With the brokers' default ping
    /// interval (1 s) and timeout (0.5 s), 2 s makes a cut-off primary stop within 2.5 s and
    /// lets the backup serve within 4 s (PROTOCOL.md, "Lease arithmetic").
    pub lease: Duration,
    /// What the witness adds to a lease on its side before it counts it lapsed: the bound on
    /// clock drift between the processes. [`WitnessConfig::margin_for`] of the lease.
    pub margin: Duration,
    /// The most connections served at once; two brokers need two, a status poller one more.
    pub max_connections: usize,
    /// A connection that sends nothing for this long is closed (a broker renews every ping
    /// interval, so only strangers and dead peers are ever this quiet).
    pub idle_timeout: Duration,
    /// A connection that has not proved itself by then (authenticated, with a secret; sent
    /// `LEASE` or `CLAIM`, without one) is closed this long after it opened.
    pub auth_timeout: Duration,
    /// The brokers' secret (`--secret`): when set, `LEASE` and `CLAIM` need an authenticated
    /// connection.
    pub secret: Option<Secret>,
}

impl WitnessConfig {
    /// The margin for a lease: an eighth of it. The same span measured on two clocks differs
    /// by about twice their drift rate; an eighth covers clocks that each run up to 1/17
    /// (5.8%) fast or slow, over a hundred times the most NTP slews a monotonic clock (0.05%).
    pub fn margin_for(lease: Duration) -> Duration {
        lease / 8
    }

    /// Test timings on loopback port 0: a 200 ms lease, 25 ms margin.
    pub fn fast() -> Self {
        let lease = Duration::from_millis(200);
        WitnessConfig {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            lease,
            margin: WitnessConfig::margin_for(lease),
            auth_timeout: Duration::from_millis(500),
            ..WitnessConfig::default()
        }
    }
}

impl Default for WitnessConfig {
    /// A 2 s lease with a 250 ms margin, on every interface like the brokers.
    fn default() -> Self {
        let lease = Duration::from_millis(2000);
        WitnessConfig {
            listen: SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
            lease,
            margin: WitnessConfig::margin_for(lease),
            max_connections: 64,
            idle_timeout: Duration::from_secs(60),
            auth_timeout: Duration::from_secs(5),
            secret: None,
        }
    }
}
