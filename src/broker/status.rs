//! Counters and the status snapshot reported by the STATUS verb and [`crate::Broker::status`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::protocol::{Epoch, Role};

use super::mandate::WitnessView;
use super::safety::BackupHealth;

/// The broker's event counters: live, updated without locks (`Counters`, every field an
/// `AtomicU64`), or read at one moment ([`CounterSnapshot`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters<T = AtomicU64> {
    /// New messages accepted.
    pub published: T,
    /// Publishes recognised as resends and not processed again.
    pub duplicates: T,
    /// Messages computed and forwarded.
    pub processed: T,
    /// Deliveries queued to subscribers.
    pub delivered: T,
    /// Subscribers cut off for lagging (counted by their writers).
    pub slow_consumers: T,
    /// Times this broker took over as primary.
    pub takeovers: T,
    /// Times this broker stepped down on meeting a newer epoch.
    pub step_downs: T,
    /// Client connections currently open.
    pub connections: T,
    /// Authentication handshakes that failed, either way.
    pub auth_failures: T,
    /// Connections refused: past `--max-connections`, or a peer slot that did not
    /// authenticate in time.
    pub refused_connections: T,
    /// Replication sessions this broker opened as primary.
    pub link_sessions: T,
}

/// A copy of the counters at one moment.
pub type CounterSnapshot = Counters<u64>;

/// Counts one event on `counter`.
pub fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Counters {
    /// Reads every counter.
    pub fn snapshot(&self) -> CounterSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        CounterSnapshot {
            published: get(&self.published),
            duplicates: get(&self.duplicates),
            processed: get(&self.processed),
            delivered: get(&self.delivered),
            slow_consumers: get(&self.slow_consumers),
            takeovers: get(&self.takeovers),
            step_downs: get(&self.step_downs),
            connections: get(&self.connections),
            auth_failures: get(&self.auth_failures),
            refused_connections: get(&self.refused_connections),
            link_sessions: get(&self.link_sessions),
        }
    }
}

/// What a broker reports about itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    /// Its role.
    pub role: Role,
    /// Its epoch.
    pub epoch: Epoch,
    /// Its node id.
    pub node: u32,
    /// Its view of the backup (meaningful on a primary).
    pub backup: BackupHealth,
    /// Whether the witness answered it last (`none` without `--witness`).
    pub witness: WitnessView,
    /// How long its lease from the witness has left (zero on a backup, or without one).
    pub lease_left: Duration,
    /// Messages accepted and not yet written to every subscriber (on a backup: held
    /// replicas).
    pub pending: usize,
    /// Of those, the messages still waiting for the compute step.
    pub computing: usize,
    /// Bytes of the messages whose lines wait in subscribers' queues (each counted once).
    pub queued_bytes: usize,
    /// The highest log index the backup confirmed.
    pub confirmed: u64,
    /// Subscriptions over all topics.
    pub subscriptions: usize,
    /// Why the last replication session failed, while no session has worked since.
    pub link_error: Option<String>,
    /// The counters.
    pub counters: CounterSnapshot,
}

impl Status {
    /// The `key=value` pairs of the STATUS reply, in a fixed order.
    pub fn pairs(&self) -> Vec<(String, String)> {
        let c = &self.counters;
        let link_error = self.link_error.as_deref().unwrap_or("none");
        [
            ("role", self.role.to_string()),
            ("epoch", self.epoch.to_string()),
            ("node", self.node.to_string()),
            ("backup", self.backup.as_str().to_string()),
            ("witness", self.witness.as_str().to_string()),
            ("lease_ms", self.lease_left.as_millis().to_string()),
            ("pending", self.pending.to_string()),
            ("computing", self.computing.to_string()),
            ("queued_bytes", self.queued_bytes.to_string()),
            ("confirmed", self.confirmed.to_string()),
            ("subscriptions", self.subscriptions.to_string()),
            ("connections", c.connections.to_string()),
            ("published", c.published.to_string()),
            ("duplicates", c.duplicates.to_string()),
            ("processed", c.processed.to_string()),
            ("delivered", c.delivered.to_string()),
            ("slow_consumers", c.slow_consumers.to_string()),
            ("takeovers", c.takeovers.to_string()),
            ("step_downs", c.step_downs.to_string()),
            ("auth_failures", c.auth_failures.to_string()),
            ("refused_connections", c.refused_connections.to_string()),
            ("link_sessions", c.link_sessions.to_string()),
            // Free text, kept to what a STATUS field can carry.
            ("link_error", link_error.replace(['|', '\n'], " ")),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }
}
