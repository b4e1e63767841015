//! The broker's shared core, [`Node`], and the message's path through it: admitting a publish,
//! waiting until it is safe, and clearing it once delivered; on a backup, holding what the
//! primary replicates. One mutex, the role lock, guards role, epoch, log and the live
//! replication session together (its [`State`] and every change of role are in
//! [`super::role`]), so "am I primary in this epoch?" and "append to the log" can never be
//! split by a role change.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::net::Shutdown;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use log::{debug, warn};
use parking_lot::{Condvar, Mutex};

use crate::config::BrokerConfig;
use crate::connection::Stream;
use crate::protocol::{Epoch, Message, MsgId, PeerState, Reply, Role};
use crate::slots::Slots;

use super::acks::Acks;
use super::compute::{Backlog, Task};
use super::link::LinkCmd;
use super::log::{Admit, Log};
use super::mandate::Mandate;
use super::role::{Job, RoleState, Rules, State};
use super::safety::{BackupHealth, Safety, Verdict};
use super::status::{CounterSnapshot, Counters, Status};
use super::topics::{QueueLimits, Topics};
use super::warnings::Warnings;

/// Why a publish was not accepted or not ACKed; [`Node::explain`] words it for the client.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// We are the backup and the primary is alive, or we stopped being primary.
    NotPrimary,
    /// Too many messages (or bytes of them) wait for the compute step.
    Overloaded {
        /// How many wait.
        pending: usize,
        /// `messages` or `bytes`.
        unit: &'static str,
    },
    /// The message is too large to be replicated and delivered: its topic and payload may take
    /// at most this many bytes.
    TooLarge(usize),
    /// `--require-backup` and the backup is silent.
    BackupSilent,
    /// The backup neither confirmed nor was declared down in time.
    TimedOut,
    /// With a witness and no backup: the message was not delivered in time (a primary alone
    /// ACKs only what it delivered).
    Undelivered,
    /// With a witness: no backup holds the message and nobody vouches that we are still the
    /// only primary ([`super::mandate`]).
    CutOff,
    /// The broker is shutting down.
    Stopping,
}

impl Refusal {
    /// Whether asking again later may give another answer: the deadline passed before the
    /// backup confirmed, or before a witnessed primary alone delivered the message.
    pub fn is_undecided(&self) -> bool {
        matches!(self, Refusal::TimedOut | Refusal::Undelivered)
    }
}

/// A publish that was admitted: wait for it with [`Node::await_safe`].
#[derive(Debug)]
pub struct Admitted {
    id: MsgId,
    index: u64,
    generation: u64,
}

impl Admitted {
    /// Its place in the log.
    pub fn index(&self) -> u64 {
        self.index
    }
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
    pub counters: Counters,
    /// What waits for the compute step.
    pub backlog: Backlog,
    /// Warnings that come in floods, summed up.
    pub warnings: Warnings,
    /// ACKs filed to be written by the thread that learns their verdict.
    pub acks: Acks,
    /// Why the last replication session failed, until one confirms a message again.
    link_error: Mutex<Option<String>>,
    workers: Vec<Sender<Task>>,
    probe_now: Sender<()>,
    pub(super) redial_now: Sender<()>,
    pub(super) handoff_now: Sender<()>,
    sockets: Mutex<HashMap<u64, Stream>>,
    /// Who holds the listener's connection slots, by socket key (`crate::slots`).
    pub slots: Mutex<Slots>,
    next_socket: AtomicU64,
    anon_seq: AtomicU64,
    stopping: AtomicBool,
    gate: Gate,
}

impl Node {
    /// Builds the core; `workers`, `probe_now` and `redial_now` are the senders of the compute
    /// workers', the pinger's and the replicator's wake-up channels.
    pub fn new(
        config: BrokerConfig,
        workers: Vec<Sender<Task>>,
        probe_now: Sender<()>,
        redial_now: Sender<()>,
        handoff_now: Sender<()>,
    ) -> Self {
        let id = rand::random_range(1..=999_999);
        let topics = Topics::new(
            QueueLimits {
                lines: config.slow_consumer_limit,
                bytes: config.slow_consumer_bytes,
                age: config.slow_consumer_age,
            },
            config.max_queued_bytes,
        );
        Node {
            safety: Safety::new(config.require_backup),
            mandate: Mandate::new(config.witness.is_some(), config.ping_timeout),
            state: Mutex::new(State::new(
                Log::new(config.dedup_publishers),
                Rules {
                    node: id,
                    preferred: config.preferred_primary,
                    require_backup: config.require_backup,
                    ping_timeout: config.ping_timeout,
                    startup_grace: config.startup_grace,
                    started: Instant::now(),
                },
            )),
            id,
            state_changed: Condvar::new(),
            topics,
            counters: Counters::default(),
            backlog: Backlog::default(),
            warnings: Warnings::default(),
            acks: Acks::default(),
            link_error: Mutex::new(None),
            workers,
            probe_now,
            redial_now,
            handoff_now,
            sockets: Mutex::new(HashMap::new()),
            slots: Mutex::new(Slots::new(config.max_connections, super::PEER_SLOTS)),
            next_socket: AtomicU64::new(1),
            anon_seq: AtomicU64::new(0),
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
        let s = self.state.lock();
        s.me()
    }

    /// Whether `epoch` is still our reign as primary.
    pub fn is_current(&self, epoch: Epoch) -> bool {
        self.state.lock().is_primary_in(epoch)
    }

    // ---- publishing, on the primary ----

    /// Gives a seed-form publish an id of our own: our node id and a counter.
    pub fn anonymous_id(&self) -> MsgId {
        MsgId {
            publisher: u64::from(self.id),
            seq: self.anon_seq.fetch_add(1, Ordering::Relaxed) + 1,
        }
    }

    /// Appends a publish to the log, hands it to replication and to its compute worker, all in
    /// one step so the log, the link and the worker see one order.
    pub fn admit(&self, message: Message) -> Result<Admitted, Refusal> {
        let mut s = self.state.lock();
        self.admit_locked(&mut s, message)
    }

    fn admit_locked(&self, s: &mut State, message: Message) -> Result<Admitted, Refusal> {
        if self.stopping() {
            return Err(Refusal::Stopping);
        }
        if !s.takes_publishes() {
            return Err(Refusal::NotPrimary);
        }
        let health = self.safety.health();
        if health == BackupHealth::Silent && self.config.require_backup {
            return Err(Refusal::BackupSilent);
        }
        if health != BackupHealth::Up && !self.mandate.may_act() {
            return Err(Refusal::CutOff);
        }
        if !message.fits(self.config.max_line_bytes) {
            return Err(Refusal::TooLarge(
                self.config.max_line_bytes - Message::ENVELOPE_BYTES,
            ));
        }
        // Only what waits for the compute step counts: messages held for slow subscribers are
        // bounded by the subscribers' own limits, so one topic's readers cannot refuse
        // another topic's publishers.
        let (waiting, waiting_bytes) = self.backlog.get();
        if waiting >= self.config.max_pending {
            return Err(Refusal::Overloaded {
                pending: waiting,
                unit: "messages",
            });
        }
        if waiting_bytes + message.topic.len() + message.payload.len()
            > self.config.max_pending_bytes
        {
            return Err(Refusal::Overloaded {
                pending: waiting_bytes,
                unit: "bytes",
            });
        }
        let id = message.id;
        let generation = self.safety.generation();
        match s.log.admit(message) {
            Admit::New(index, message) => {
                debug!("{id} accepted at index {index} in epoch {}", s.epoch);
                self.counters.published.fetch_add(1, Ordering::Relaxed);
                if let Some(link) = s.link() {
                    link.push(LinkCmd::Replicate {
                        index,
                        message: &message,
                    });
                }
                self.dispatch(Job {
                    index,
                    epoch: s.epoch,
                    message,
                });
                Ok(Admitted {
                    id,
                    index,
                    generation,
                })
            }
            Admit::Duplicate(index) => {
                debug!("{id} is a resend of a message we hold; ACKing it again");
                self.counters.duplicates.fetch_add(1, Ordering::Relaxed);
                Ok(Admitted {
                    id,
                    index,
                    generation,
                })
            }
        }
    }

    /// Waits until an admitted publish may be ACKed.
    pub fn await_safe(&self, admitted: &Admitted) -> Result<(), Refusal> {
        self.await_safe_until(admitted, Instant::now() + self.ack_timeout())
    }

    /// How long a publish may wait for the backup's confirmation before it is refused.
    pub fn ack_timeout(&self) -> Duration {
        self.config.ping_interval + self.config.ping_timeout * 2
    }

    /// [`Node::await_safe`] until `deadline`; a deadline already passed asks without waiting
    /// (a refusal that [`Refusal::is_undecided`]: not decided yet).
    pub fn await_safe_until(&self, admitted: &Admitted, deadline: Instant) -> Result<(), Refusal> {
        let verdict = self
            .safety
            .wait_to_ack(admitted.index, admitted.generation, deadline);
        match verdict {
            Verdict::Replicated => {
                debug!("{} confirmed by the backup; ACKing", admitted.id);
                Ok(())
            }
            Verdict::Degraded if self.mandate.witnessed() => {
                self.await_delivered(admitted, deadline)
            }
            Verdict::Degraded => {
                debug!("{} ACKed without a backup (degraded)", admitted.id);
                Ok(())
            }
            Verdict::BackupSilent => Err(Refusal::BackupSilent),
            Verdict::Interrupted if self.stopping() => Err(Refusal::Stopping),
            Verdict::Interrupted => Err(Refusal::NotPrimary),
            Verdict::TimedOut => Err(Refusal::TimedOut),
        }
    }

    /// With a witness, a primary without a backup ACKs a message only once it has written it
    /// to every subscriber: were it cut off (its lease ending, the backup taking over without
    /// the message), nothing it ACKed alone would wait on it for the cut to heal. Refused when
    /// nobody vouches for it any more, or the reign ends.
    fn await_delivered(&self, admitted: &Admitted, deadline: Instant) -> Result<(), Refusal> {
        let tick = self.config.ping_timeout / 4;
        let mut s = self.state.lock();
        loop {
            if self.safety.generation() != admitted.generation {
                return Err(Refusal::NotPrimary);
            }
            if !self.mandate.may_act() {
                return Err(Refusal::CutOff);
            }
            if !s.log.holds(admitted.index) {
                debug!(
                    "{} ACKed without a backup (degraded), once delivered",
                    admitted.id
                );
                return Ok(());
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Refusal::Undelivered);
            }
            // Woken by `processed`; the tick notices a mandate that ran out meanwhile.
            let _ = self
                .state_changed
                .wait_until(&mut s, deadline.min(now + tick));
        }
    }

    /// The `ERR` text for a refusal; "not primary" names the other broker, so the client
    /// knows where to go.
    pub fn explain(&self, refusal: &Refusal) -> String {
        match refusal {
            Refusal::NotPrimary => match &self.config.peer {
                Some(peer) => format!("not primary; the primary is {peer}"),
                None => "not primary".into(),
            },
            Refusal::Overloaded { pending, unit } => {
                format!("overloaded: {pending} {unit} pending")
            }
            Refusal::TooLarge(max) => format!(
                "message too large: topic and payload may take at most {max} bytes \
                 (--max-line-bytes less {} for the fields brokers add)",
                Message::ENVELOPE_BYTES
            ),
            Refusal::BackupSilent => "backup silent; refusing to ACK (--require-backup)".into(),
            Refusal::TimedOut => "backup did not confirm in time".into(),
            Refusal::Undelivered => {
                "no backup holds the message and it was not delivered in time".into()
            }
            Refusal::CutOff => {
                "cut off: no backup holds the message and the witness has not renewed our lease"
                    .into()
            }
            Refusal::Stopping => "shutting down".into(),
        }
    }

    pub(super) fn dispatch(&self, job: Job) {
        self.backlog.add(&job.message);
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        job.message.topic.hash(&mut hasher);
        let shard = (hasher.finish() % self.workers.len() as u64) as usize;
        let _ = self.workers[shard].send(Task::Process(job));
    }

    /// The worker finished `index`: drop it from the log and tell the backup to CLEAR it.
    pub fn processed(&self, index: u64, epoch: Epoch) {
        let mut s = self.state.lock();
        if s.is_primary_in(epoch)
            && let Some(message) = s.log.remove(index)
        {
            debug!("{} written to every subscriber; clearing it", message.id);
            if let Some(link) = s.link() {
                link.push(LinkCmd::Clear(index));
            }
            if self.mandate.witnessed() {
                // A publisher alone with a witness waits for this (`await_delivered`), itself
                // or through the `acks` thread.
                self.state_changed.notify_all();
                self.acks.ring();
            }
        }
    }

    /// Blocks the worker until the message at `index` is replicated (or there is no backup).
    /// `false` means the reign ended meanwhile and the job must be dropped.
    pub fn await_replicated(&self, index: u64, epoch: Epoch) -> bool {
        let generation = {
            let s = self.state.lock();
            if !s.is_primary_in(epoch) {
                return false;
            }
            self.safety.generation()
        };
        matches!(
            self.safety.wait_replicated(index, generation),
            Verdict::Replicated | Verdict::Degraded
        )
    }

    /// Blocks the worker, before it forwards, while nobody vouches that we are the only
    /// primary (with a witness: [`super::mandate`]); `false` means the reign ended meanwhile.
    pub fn await_mandate(&self, epoch: Epoch) -> bool {
        let mut warned = false;
        while !self.mandate.wait(self.config.ping_interval) {
            if !self.is_current(epoch) || self.stopping() {
                return false;
            }
            if !warned {
                warn!(
                    "cut off: neither the backup nor the witness vouches for us; \
                     holding {} message(s) until one does or a newer primary takes them",
                    self.backlog.get().0
                );
                warned = true;
            }
        }
        self.is_current(epoch)
    }

    /// REPLICATE from the primary we follow.
    pub fn accept_replicate(&self, epoch: Epoch, index: u64, message: Message) -> Reply {
        let mut s = self.state.lock();
        if let Some(fenced) = self.check_follower(&mut s, epoch) {
            return fenced;
        }
        debug!("{} held at index {index} (epoch {epoch})", message.id);
        s.log.insert(index, Arc::new(message));
        Reply::Replicated { index }
    }

    /// CLEAR from the primary we follow; answered only when the sender is stale.
    pub fn accept_clear(&self, epoch: Epoch, index: u64) -> Option<Reply> {
        let mut s = self.state.lock();
        if let Some(fenced) = self.check_follower(&mut s, epoch) {
            return Some(fenced);
        }
        if let Some(m) = s.log.remove(index) {
            debug!("{} cleared at index {index}", m.id);
        }
        None
    }

    /// SEEN from the primary we follow, during a sync.
    pub fn accept_seen(&self, epoch: Epoch, id: MsgId) -> Option<Reply> {
        let mut s = self.state.lock();
        if let Some(fenced) = self.check_follower(&mut s, epoch) {
            return Some(fenced);
        }
        s.log.note_seen(id, 0);
        None
    }

    // ---- probes, on the backup ----

    /// The pinger starts a probe; the returned ticket covers every request made so far.
    pub fn probe_started(&self) -> u64 {
        self.state.lock().probes.0
    }

    /// The pinger finished the probe started with `ticket`.
    pub fn probe_finished(&self, ticket: u64) {
        let mut s = self.state.lock();
        s.probes.1 = s.probes.1.max(ticket);
        self.state_changed.notify_all();
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
        while s.role() == Role::Backup && s.probes.1 < ticket && !self.stopping() {
            if self.state_changed.wait_until(&mut s, deadline).timed_out() {
                break;
            }
        }
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
        for (_, sock) in self.sockets.lock().drain() {
            let _ = sock.shutdown(Shutdown::Both);
        }
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
        for w in &self.workers {
            let _ = w.send(Task::Stop);
        }
        let _ = self.probe_now.try_send(());
        let _ = self.redial_now.try_send(());
        let _ = self.handoff_now.try_send(());
    }

    /// Remembers a socket so that [`Node::stop`] can close it; returns its key.
    pub fn register(&self, stream: &Stream) -> Option<u64> {
        let key = self.next_socket.fetch_add(1, Ordering::Relaxed);
        let mut sockets = self.sockets.lock();
        if self.stopping() {
            let _ = stream.shutdown(Shutdown::Both);
            return None;
        }
        sockets.insert(key, stream.clone());
        Some(key)
    }

    /// Forgets a socket that closed, and frees its connection slot.
    pub fn unregister(&self, key: u64) {
        self.sockets.lock().remove(&key);
        self.slots.lock().leave(key);
    }

    /// Ends the reading side of a registered socket: its thread's read returns as if the other
    /// side had closed, and the thread says why and closes (`handler::serve`).
    pub fn hang_up(&self, key: u64) {
        if let Some(sock) = self.sockets.lock().get(&key) {
            let _ = sock.shutdown(Shutdown::Read);
        }
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
        let s = self.state.lock();
        let (witness, lease_left) = self.mandate.witness();
        Status {
            role: s.role(),
            epoch: s.epoch,
            node: self.id,
            backup: self.safety.health(),
            witness,
            lease_left,
            pending: s.log.len(),
            computing: self.backlog.get().0,
            queued_bytes: self.topics.held_bytes(),
            confirmed: self.safety.confirmed(),
            subscriptions: self.topics.count(),
            link_error: self.link_error.lock().clone(),
            counters: CounterSnapshot {
                slow_consumers: self.topics.slow_consumers(),
                ..self.counters.snapshot()
            },
        }
    }

    /// Records why a replication session failed (`None`: a session works again).
    pub fn set_link_error(&self, error: Option<String>) {
        *self.link_error.lock() = error;
    }
}
