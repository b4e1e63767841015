//! The broker's shared core, [`Node`]: what every thread of a broker holds, how it is built,
//! and what it answers about itself (its role, STATUS), with the lifecycle: the socket
//! registry, the test gate, stopping; and what waits for the compute workers ([`Task`],
//! [`Computing`]). The message's path through it is in [`super::path`].
//! One mutex, the role lock, guards role, epoch, log and the live replication session
//! together (its [`State`] and every change of role are in [`super::role`]), so "am I primary
//! in this epoch?" and "append to the log" can never be split by a role change.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use parking_lot::{Condvar, Mutex};

use crate::config::BrokerConfig;
use crate::connection::Connection;
use crate::error::Result;
use crate::protocol::{Epoch, Message, PeerState, Role};
use crate::registry::Registry;
use crate::slots::Slots;

use super::acks::Acks;
use super::journal::{Journal, Restored};
use super::mandate::Mandate;
use super::role::{Job, RoleState, State};
use super::safety::{BackupHealth, Safety};
use super::status::{Counters, Status};
use super::topics::Topics;
use super::warnings::Warnings;

/// How many messages, and how many bytes of topic and payload, wait for the compute step
/// (queued on a worker's channel or being computed). Publishes are refused past
/// `--max-pending` and `--max-pending-bytes`.
#[derive(Debug, Default)]
pub struct Computing {
    messages: AtomicUsize,
    bytes: AtomicUsize,
}

impl Computing {
    /// A message was queued for a worker.
    pub fn add(&self, message: &Message) {
        self.messages.fetch_add(1, Ordering::AcqRel);
        self.bytes.fetch_add(message.size(), Ordering::AcqRel);
    }

    /// A worker is done with a message (forwarded or dropped).
    pub fn done(&self, message: &Message) {
        self.messages.fetch_sub(1, Ordering::AcqRel);
        self.bytes.fetch_sub(message.size(), Ordering::AcqRel);
    }

    /// Messages and bytes waiting.
    pub fn get(&self) -> (usize, usize) {
        (
            self.messages.load(Ordering::Acquire),
            self.bytes.load(Ordering::Acquire),
        )
    }
}

/// What a compute worker's channel carries.
#[derive(Debug)]
pub enum Task {
    /// Process a message.
    Process(Job),
    /// The broker is stopping.
    Stop,
}

/// A test hook that freezes a broker's threads at their next step, as SIGSTOP would.
#[derive(Default)]
struct Gate {
    paused: AtomicBool,
    lock: Mutex<()>,
    resumed: Condvar,
}

/// The broker engine's shared core. Every thread of a broker holds an `Arc<Node>`.
pub struct Node {
    /// The configuration it was started with.
    pub config: BrokerConfig,
    /// This process's random node id.
    pub id: u32,
    pub(super) state: Mutex<State>,
    pub(super) state_changed: Condvar,
    /// The backup's copy of the log, as the primary sees it.
    pub safety: Safety,
    /// Whether a primary may act alone, with a witness.
    pub mandate: Mandate,
    /// The subscriber map.
    pub topics: Topics,
    /// Counters for STATUS.
    pub counters: Arc<Counters>,
    /// What waits for the compute step.
    pub computing: Computing,
    /// Warnings that come in floods, summed up.
    pub warnings: Warnings,
    /// ACKs filed to be written by the thread that learns their verdict.
    pub acks: Acks,
    /// The log on disk (`--data-dir`), if there is one.
    pub journal: Option<Arc<Journal>>,
    /// Why the last replication session failed, until one confirms a message again.
    link_error: Mutex<Option<String>>,
    pub(super) workers: Vec<Sender<Task>>,
    probe_now: Sender<()>,
    pub(super) redial_now: Sender<()>,
    pub(super) handoff_now: Sender<()>,
    /// Every open socket: served connections, and the links and probes we dialled, so that
    /// [`Node::stop`] can close them.
    pub(super) sockets: Registry,
    /// Who holds the listener's connection slots, by socket key (`crate::slots`).
    pub slots: Mutex<Slots>,
    /// The last sequence drawn for a seed-form publish (`Node::admit_anonymous`).
    pub(super) anon_seq: AtomicU64,
    stopping: AtomicBool,
    gate: Gate,
}

impl Node {
    /// A node id for a broker without one on disk.
    pub fn fresh_id() -> u32 {
        rand::random_range(1..=999_999)
    }

    /// Builds the core; `workers`, `probe_now` and `redial_now` are the senders of the compute
    /// workers', the pinger's and the replicator's wake-up channels. With `disk`, the log on
    /// disk and what was read back from it, the node keeps its id, epoch and log.
    pub fn new(
        config: BrokerConfig,
        disk: Option<(Arc<Journal>, Restored)>,
        workers: Vec<Sender<Task>>,
        probe_now: Sender<()>,
        redial_now: Sender<()>,
        handoff_now: Sender<()>,
    ) -> Self {
        let (id, journal, state) = match disk {
            Some((journal, mut restored)) => {
                restored.log.attach(Arc::clone(&journal));
                let state = State::new(restored.node, &config, Instant::now());
                let state = state.restore(restored.epoch, restored.log);
                (restored.node, Some(journal), state)
            }
            None => {
                let id = Node::fresh_id();
                (id, None, State::new(id, &config, Instant::now()))
            }
        };
        // Seed-form ids read back from disk are taken: ours go on above them.
        let anon_seq = (state.log.seen())
            .find(|(seen, _)| seen.publisher == u64::from(id))
            .map_or(0, |(seen, _)| seen.seq);
        let counters = Arc::new(Counters::default());
        Node {
            safety: Safety::new(config.require_backup),
            mandate: Mandate::new(config.witness.is_some(), config.ping_timeout),
            state: Mutex::new(state),
            id,
            journal,
            state_changed: Condvar::new(),
            topics: Topics::new(&config, Arc::clone(&counters)),
            counters,
            computing: Computing::default(),
            warnings: Warnings::default(),
            acks: Acks::default(),
            link_error: Mutex::new(None),
            workers,
            probe_now,
            redial_now,
            handoff_now,
            sockets: Registry::default(),
            slots: Mutex::new(Slots::new(config.max_connections, super::PEER_SLOTS)),
            anon_seq: AtomicU64::new(anon_seq),
            stopping: AtomicBool::new(false),
            gate: Gate::default(),
            config,
        }
    }

    /// Our role and epoch right now.
    pub fn role(&self) -> (Role, Epoch) {
        let s = self.state.lock();
        (s.role(), s.epoch)
    }

    /// What we tell the peer about ourselves.
    pub fn me(&self) -> PeerState {
        self.state.lock().me()
    }

    /// Whether `epoch` is still our reign as primary.
    pub fn is_current(&self, epoch: Epoch) -> bool {
        self.state.lock().is_primary_in(epoch)
    }

    /// Runs the pinger's `probe`, which answers every request made before it starts: a
    /// publish waiting in [`Node::settle_role`] for one of them learns its outcome.
    pub fn probe<T>(&self, probe: impl FnOnce() -> T) -> T {
        let ticket = self.state.lock().probes.0;
        let outcome = probe();
        let mut s = self.state.lock();
        s.probes.1 = s.probes.1.max(ticket);
        self.state_changed.notify_all();
        outcome
    }

    /// Asks the pinger to probe the primary now (a broken link, a publish on the backup).
    pub fn request_probe(&self) {
        let mut s = self.state.lock();
        s.probes.0 += 1;
        let _ = self.probe_now.try_send(());
    }

    /// A publish reached us as backup: probe the primary at once and wait for the verdict.
    /// Returns our role afterwards; `Primary` means we took over and can serve it.
    pub fn settle_role(&self) -> Role {
        let deadline = Instant::now() + self.config.ping_timeout * 2 + Duration::from_millis(100);
        let mut s = self.state.lock();
        if s.role() == Role::Primary || self.config.peer.is_none() {
            return s.role();
        }
        s.probes.0 += 1;
        let ticket = s.probes.0;
        let _ = self.probe_now.try_send(());
        while s.role() == Role::Backup
            && s.probes.1 < ticket
            && !self.stopping()
            && !self.state_changed.wait_until(&mut s, deadline).timed_out()
        {}
        s.role()
    }

    /// Blocks while our role differs from `role`; returns `false` when the broker stops.
    pub fn wait_for_role(&self, role: Role) -> bool {
        let mut s = self.state.lock();
        while s.role() != role && !self.stopping() {
            self.state_changed.wait(&mut s);
        }
        !self.stopping()
    }

    // ---- lifecycle ----

    /// Whether the broker is shutting down.
    pub fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    /// Stops like a crash: first every socket closes, so nothing more reaches a peer or a
    /// client; then every wait returns and every worker gets `Stop`.
    pub fn stop(&self) {
        {
            // Under the role lock, so no publish is admitted once stopping is set.
            let _s = self.state.lock();
            self.stopping.store(true, Ordering::Release);
        }
        self.sockets.close_all();
        self.resume();
        {
            let mut s = self.state.lock();
            if let RoleState::Primary(primary) = &mut s.role
                && let Some(link) = primary.link.take()
            {
                link.close();
            }
            self.state_changed.notify_all();
        }
        self.safety.interrupt(BackupHealth::Down);
        if let Some(journal) = &self.journal {
            journal.stop();
        }
        for w in &self.workers {
            let _ = w.send(Task::Stop);
        }
        let _ = self.probe_now.try_send(());
        let _ = self.redial_now.try_send(());
        let _ = self.handoff_now.try_send(());
    }

    /// Forgets a socket that closed, and frees its connection slot.
    pub fn unregister(&self, key: u64) {
        self.sockets.forget(key);
        self.slots.lock().leave(key);
    }

    /// Test hook: freeze every thread at its next step, as SIGSTOP does.
    pub fn pause(&self) {
        self.gate.paused.store(true, Ordering::Release);
    }

    /// Undoes [`Node::pause`].
    pub fn resume(&self) {
        let _guard = self.gate.lock.lock();
        self.gate.paused.store(false, Ordering::Release);
        self.gate.resumed.notify_all();
    }

    /// Called by every thread before each step; blocks while the broker is paused.
    pub fn gate(&self) {
        if self.gate.paused.load(Ordering::Acquire) {
            let mut guard = self.gate.lock.lock();
            while self.gate.paused.load(Ordering::Acquire) {
                self.gate.resumed.wait(&mut guard);
            }
        }
    }

    /// A snapshot for STATUS and the library API.
    pub fn status(&self) -> Status {
        // The role lock only for what it guards: the topic map is never taken under it, for
        // a writer's queue is taken under the map and the role lock under a queue (the lock
        // table in ARCHITECTURE.md).
        let (role, epoch, pending) = {
            let s = self.state.lock();
            (s.role(), s.epoch, s.log.len())
        };
        let (witness, lease_left) = self.mandate.witness();
        Status {
            role,
            epoch,
            node: self.id,
            backup: self.safety.health(),
            witness,
            lease_left,
            pending,
            computing: self.computing.get().0,
            queued_bytes: self.topics.held_bytes(),
            confirmed: self.safety.confirmed(),
            subscriptions: self.topics.count(),
            link_error: self.link_error.lock().clone(),
            counters: self.counters.snapshot(),
        }
    }

    /// Dials the peer broker at `addr` and authenticates as the peer, within the ping timeout.
    pub fn dial_peer(&self, addr: &str) -> Result<Connection> {
        let c = &self.config;
        Connection::dial(addr, c.ping_timeout, c.max_line_bytes, c.peer_auth())
    }

    /// Records why a replication session failed (`None`: a session works again).
    pub fn set_link_error(&self, error: Option<String>) {
        *self.link_error.lock() = error;
    }
}

#[cfg(test)]
impl Node {
    /// For unit tests: a core with the fast preset, fed `workers`, whose wake-up channels
    /// nobody reads.
    pub fn idle(workers: Vec<Sender<Task>>) -> Self {
        Node::idle_with(BrokerConfig::fast(), workers)
    }

    /// The same with `config`.
    pub fn idle_with(config: BrokerConfig, workers: Vec<Sender<Task>>) -> Self {
        let (probe, _) = crossbeam_channel::bounded(1);
        let (redial, _) = crossbeam_channel::bounded(1);
        let (handoff, _) = crossbeam_channel::bounded(1);
        Node::new(config, None, workers, probe, redial, handoff)
    }
}
