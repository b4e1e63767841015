//! The broker's shared state and every change of role: admitting publishes, takeover, stepping
//! down, following a primary. One mutex guards role, epoch, log and the live replication
//! session together, so "am I primary in this epoch?" and "append to the log" can never be
//! split by a role change.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::net::Shutdown;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use log::{debug, info, warn};
use parking_lot::{Condvar, Mutex, MutexGuard};

use crate::config::BrokerConfig;
use crate::connection::Stream;
use crate::protocol::{Epoch, Message, MsgId, PeerState, Reply, Role};

use super::compute::{Backlog, Job, Task};
use super::link::{Link, LinkCmd};
use super::log::{Admit, Log};
use super::safety::{BackupHealth, Safety, Verdict};
use super::status::{CounterSnapshot, Counters, Status};
use super::topics::{QueueLimits, Topics};
use super::warnings::Warnings;

/// Everything the role mutex guards.
pub struct State {
    /// Our role.
    pub role: Role,
    /// Our epoch: the one we started as primary, or the one of the primary we follow.
    pub epoch: Epoch,
    /// Accepted, unprocessed messages and the dedup table.
    pub log: Log,
    /// The sending half of the live replication session, while we are primary and synced.
    pub link: Option<Arc<Link>>,
    /// The peer as its last answer described it.
    pub peer: Option<PeerState>,
    /// Set while a shutting-down primary hands over: it accepts no more publishes.
    handing_over: bool,
    /// What we accepted as primary and had not delivered when we stepped down. Every SYNC
    /// from the new primary is handed a copy; they are forgotten only once a synced session
    /// has shown it is alive (see [`Node::handoff_received`]), because a SYNC that waited out a
    /// cut link may come from a dial the primary has long given up on.
    orphans: Vec<Arc<Message>>,
    /// The primary session we follow: its epoch and dial counter.
    synced: (Epoch, u64),
    /// When a line last came from the primary we follow: evidence of life that a probe which
    /// merely timed out cannot outweigh.
    heard_from_primary: Option<Instant>,
    probes_requested: u64,
    probes_answered: u64,
}

impl State {
    /// Ends the live replication session, if any: its socket is shut at once, so the backup
    /// sees the session end and the replicator's threads wind down.
    fn end_link(&mut self) {
        if let Some(link) = self.link.take() {
            link.close();
        }
    }
}

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
    /// The broker is shutting down.
    Stopping,
}

/// A publish that was admitted: wait for it with [`Node::await_safe`].
#[derive(Debug)]
pub struct Admitted {
    id: MsgId,
    index: u64,
    generation: u64,
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
    state: Mutex<State>,
    state_changed: Condvar,
    /// The backup's copy of the log, as the primary sees it.
    pub safety: Safety,
    /// The subscriber map.
    pub topics: Topics,
    /// Counters for STATUS.
    pub counters: Counters,
    /// What waits for the compute step.
    pub backlog: Backlog,
    /// Warnings that come in floods, summed up.
    pub warnings: Warnings,
    /// Why the last replication session failed, until one confirms a message again.
    link_error: Mutex<Option<String>>,
    workers: Vec<Sender<Task>>,
    probe_now: Sender<()>,
    redial_now: Sender<()>,
    handoff_now: Sender<()>,
    sockets: Mutex<HashMap<u64, Stream>>,
    next_socket: AtomicU64,
    anon_seq: AtomicU64,
    stopping: AtomicBool,
    gate: Gate,
}

impl Node {
    /// Builds the core; `workers`, `probe_now` and `redial_now` are the senders of the compute
    /// workers', the monitor's and the replicator's wake-up channels.
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
            safety: Safety::new(),
            state: Mutex::new(State {
                role: Role::Backup,
                epoch: Epoch::default(),
                log: Log::new(config.dedup_publishers),
                link: None,
                peer: None,
                handing_over: false,
                orphans: Vec::new(),
                synced: (Epoch::default(), 0),
                heard_from_primary: None,
                probes_requested: 0,
                probes_answered: 0,
            }),
            config,
            id,
            state_changed: Condvar::new(),
            topics,
            counters: Counters::default(),
            backlog: Backlog::default(),
            warnings: Warnings::default(),
            link_error: Mutex::new(None),
            workers,
            probe_now,
            redial_now,
            handoff_now,
            sockets: Mutex::new(HashMap::new()),
            next_socket: AtomicU64::new(1),
            anon_seq: AtomicU64::new(0),
            stopping: AtomicBool::new(false),
            gate: Gate::default(),
        }
    }

    /// Our role and epoch right now.
    pub fn role(&self) -> (Role, Epoch) {
        let s = self.state.lock();
        (s.role, s.epoch)
    }

    /// What we tell the peer about ourselves.
    pub fn me(&self) -> PeerState {
        let s = self.state.lock();
        self.me_locked(&s)
    }

    fn me_locked(&self, s: &State) -> PeerState {
        PeerState {
            epoch: s.epoch,
            role: s.role,
            node: self.id,
            preferred: self.config.preferred_primary,
        }
    }

    /// Whether `epoch` is still our reign as primary.
    pub fn is_current(&self, epoch: Epoch) -> bool {
        let s = self.state.lock();
        s.role == Role::Primary && s.epoch == epoch
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
        let admitted = self.admit_locked(&mut s, message);
        // The REPLICATE goes out after the role lock is let go.
        let link = s.link.clone();
        drop(s);
        if let Some(link) = link {
            link.flush(&self.safety);
        }
        admitted
    }

    fn admit_locked(&self, s: &mut State, message: Message) -> Result<Admitted, Refusal> {
        if self.stopping() {
            return Err(Refusal::Stopping);
        }
        if s.role != Role::Primary || s.handing_over {
            return Err(Refusal::NotPrimary);
        }
        if self.safety.health() == BackupHealth::Silent && self.config.require_backup {
            return Err(Refusal::BackupSilent);
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
                if let Some(link) = &s.link {
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
        let deadline = Instant::now() + self.config.ping_interval + self.config.ping_timeout * 2;
        let verdict = self.safety.wait(
            admitted.index,
            admitted.generation,
            Some(deadline),
            self.config.require_backup,
        );
        match verdict {
            Verdict::Replicated => {
                debug!("{} confirmed by the backup; ACKing", admitted.id);
                Ok(())
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
            Refusal::Stopping => "shutting down".into(),
        }
    }

    fn dispatch(&self, job: Job) {
        self.backlog.add(&job.message);
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        job.message.topic.hash(&mut hasher);
        let shard = (hasher.finish() % self.workers.len() as u64) as usize;
        let _ = self.workers[shard].send(Task::Process(job));
    }

    /// The worker finished `index`: drop it from the log and tell the backup to CLEAR it.
    pub fn processed(&self, index: u64, epoch: Epoch) {
        let mut s = self.state.lock();
        if s.role == Role::Primary
            && s.epoch == epoch
            && let Some(message) = s.log.remove(index)
        {
            debug!("{} written to every subscriber; clearing it", message.id);
            if let Some(link) = s.link.clone() {
                link.push(LinkCmd::Clear(index));
                drop(s);
                link.flush(&self.safety);
            }
        }
    }

    /// Blocks the worker until the message at `index` is replicated (or there is no backup).
    /// `false` means the reign ended meanwhile and the job must be dropped.
    pub fn await_replicated(&self, index: u64, epoch: Epoch) -> bool {
        let generation = {
            let s = self.state.lock();
            if s.role != Role::Primary || s.epoch != epoch {
                return false;
            }
            self.safety.generation()
        };
        matches!(
            self.safety.wait(index, generation, None, false),
            Verdict::Replicated | Verdict::Degraded
        )
    }

    // ---- role changes ----

    /// Becomes primary in a new epoch and queues the buffered messages, oldest first, before
    /// anything published later.
    pub fn take_over(&self, reason: &str) {
        let mut s = self.state.lock();
        if s.role == Role::Primary || self.stopping() {
            return;
        }
        let seen = s.peer.map_or(s.epoch, |p| p.epoch.max(s.epoch));
        let Some(epoch) = seen.next(self.id) else {
            warn!("cannot take over: epoch {seen} is at the highest term there is");
            return;
        };
        s.epoch = epoch;
        s.role = Role::Primary;
        s.end_link();
        // Orphans no primary confirmed yet are ours to deliver again; those the log still
        // holds are recognised by the dedup table.
        for orphan in std::mem::take(&mut s.orphans) {
            s.log.admit(Message::clone(&orphan));
        }
        // Our backup (the old primary) is unknown until the replicator reaches it: a strict
        // pair must not ACK alone before it knows the old primary is really gone.
        self.safety.interrupt(if self.config.require_backup {
            BackupHealth::Silent
        } else {
            BackupHealth::Down
        });
        let replay: Vec<(u64, Arc<Message>)> =
            s.log.pending().map(|(i, m)| (i, Arc::clone(m))).collect();
        info!(
            "taking over as primary in epoch {} ({reason}); replaying {} buffered message(s)",
            s.epoch,
            replay.len()
        );
        for (index, message) in replay {
            self.dispatch(Job {
                index,
                epoch: s.epoch,
                message,
            });
        }
        self.counters.takeovers.fetch_add(1, Ordering::Relaxed);
        self.state_changed.notify_all();
        drop(s);
        let _ = self.redial_now.try_send(());
    }

    /// Meets `epoch` somewhere: if it is newer than ours, follow it, stepping down if we were
    /// primary. Returns whether it was newer.
    pub fn observe(&self, epoch: Epoch) -> bool {
        let mut s = self.state.lock();
        self.observe_locked(&mut s, epoch)
    }

    fn observe_locked(&self, s: &mut MutexGuard<'_, State>, epoch: Epoch) -> bool {
        if epoch <= s.epoch {
            return false;
        }
        if s.role == Role::Primary {
            if s.handing_over {
                info!("the backup took over in epoch {epoch}");
            } else {
                warn!(
                    "met epoch {epoch}, newer than our {}: stepping down to backup",
                    s.epoch
                );
            }
            s.handing_over = false;
            s.orphans = s.log.pending().map(|(_, m)| Arc::clone(m)).collect();
            if !s.orphans.is_empty() {
                let _ = self.handoff_now.try_send(());
            }
            self.counters.step_downs.fetch_add(1, Ordering::Relaxed);
            s.role = Role::Backup;
            s.end_link();
            self.safety.interrupt(BackupHealth::Down);
        }
        s.epoch = epoch;
        self.state_changed.notify_all();
        true
    }

    /// SYNC from a primary: follow it with an empty log, or fence it if it is stale. If we
    /// stepped down from primary, the answer first hands over what we had accepted and not
    /// delivered, so a split that ends loses nothing we ACKed alone.
    pub fn accept_sync(&self, epoch: Epoch, session: u64) -> Vec<Reply> {
        let mut s = self.state.lock();
        if epoch < s.epoch || (epoch == s.epoch && s.role == Role::Primary) {
            return vec![Reply::Fenced { epoch: s.epoch }];
        }
        // A SYNC that waited out a cut must not empty the log a newer session is filling.
        if (epoch, session) <= s.synced {
            debug!("ignoring a stale SYNC (session {session} of epoch {epoch})");
            return vec![Reply::Err("stale session".into())];
        }
        s.synced = (epoch, session);
        s.heard_from_primary = Some(Instant::now());
        self.observe_locked(&mut s, epoch);
        s.log.clear();
        info!(
            "following the primary of epoch {epoch}; handing it {} undelivered message(s), receiving its log",
            s.orphans.len()
        );
        let mut replies: Vec<Reply> = s
            .orphans
            .iter()
            .map(|m| Reply::Handoff(Message::clone(m)))
            .collect();
        replies.push(Reply::Synced { epoch });
        replies
    }

    /// The primary of `epoch` sent a line after our `SYNCED`: it read the handoff before it,
    /// so the orphans are in its hands now.
    pub fn handoff_received(&self, epoch: Epoch) {
        let mut s = self.state.lock();
        if s.epoch == epoch && !s.orphans.is_empty() {
            debug!(
                "the primary of epoch {epoch} holds our {} orphan(s)",
                s.orphans.len()
            );
            s.orphans.clear();
            self.state_changed.notify_all();
        }
    }

    /// The epoch we follow and our orphans, if we hold any.
    pub fn orphans(&self) -> Option<(Epoch, Vec<Arc<Message>>)> {
        let s = self.state.lock();
        (s.role == Role::Backup && !s.orphans.is_empty()).then(|| (s.epoch, s.orphans.clone()))
    }

    /// A publisher reached us after we stepped down with orphans: hold its answer until the
    /// new primary has them (at most a ping interval plus timeout), so that the publisher's
    /// next messages reach the new primary after its older ones, not before.
    pub fn await_orphans_handed_over(&self) {
        let deadline = Instant::now() + self.config.ping_interval + self.config.ping_timeout;
        let mut s = self.state.lock();
        while s.role == Role::Backup && !s.orphans.is_empty() && !self.stopping() {
            if self.state_changed.wait_until(&mut s, deadline).timed_out() {
                return;
            }
        }
    }

    /// The messages a stepped-down primary handed us while we synced it: admit the ones we do
    /// not hold (the dedup table recognises the rest), in its order. Returns how many were new.
    pub fn adopt_orphans(&self, epoch: Epoch, orphans: Vec<Message>) -> usize {
        let mut s = self.state.lock();
        if s.role != Role::Primary || s.epoch != epoch {
            return 0;
        }
        let mut adopted = 0;
        for message in orphans {
            if let Admit::New(index, message) = s.log.admit(message) {
                debug!(
                    "{} adopted from the old primary at index {index}",
                    message.id
                );
                self.counters.published.fetch_add(1, Ordering::Relaxed);
                self.dispatch(Job {
                    index,
                    epoch,
                    message,
                });
                adopted += 1;
            }
        }
        adopted
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

    /// A replication line is only taken from the primary of our own epoch; a stale sender is
    /// fenced, a newer one must SYNC first.
    fn check_follower(&self, s: &mut MutexGuard<'_, State>, epoch: Epoch) -> Option<Reply> {
        if epoch < s.epoch || (epoch == s.epoch && s.role == Role::Primary) {
            return Some(Reply::Fenced { epoch: s.epoch });
        }
        if epoch > s.epoch {
            self.observe_locked(s, epoch);
            return Some(Reply::Err("not synced; send SYNC first".into()));
        }
        s.heard_from_primary = Some(Instant::now());
        None
    }

    /// Whether the primary we follow spoke within the last ping timeout; a probe that timed
    /// out then is not evidence enough to take over (a refused connection always is).
    pub fn primary_recently_heard(&self) -> bool {
        let s = self.state.lock();
        s.heard_from_primary
            .is_some_and(|t| t.elapsed() < self.config.ping_timeout)
    }

    /// HANDOVER from the primary we follow: take over now, and tell it our new epoch.
    pub fn accept_handover(&self, epoch: Epoch) -> Reply {
        let (role, ours) = self.role();
        if role == Role::Backup && epoch == ours {
            self.take_over("the primary handed over as it shut down");
        }
        let (_, now) = self.role();
        if now > epoch {
            Reply::Fenced { epoch: now }
        } else {
            Reply::Err("not following that epoch".into())
        }
    }

    /// A shutting-down primary asks its synced backup to take over, and waits (at most a ping
    /// timeout) until the backup's new epoch made it step down. `false` if there was no synced
    /// backup to hand over to.
    pub fn hand_over(&self) -> bool {
        let mut s = self.state.lock();
        let Some(link) = s.link.clone() else {
            return false;
        };
        if s.role != Role::Primary || self.safety.health() != BackupHealth::Up {
            return false;
        }
        s.handing_over = true;
        link.push(LinkCmd::Handover);
        MutexGuard::unlocked(&mut s, || link.flush(&self.safety));
        info!("handing over to the backup");
        let deadline = Instant::now() + self.config.ping_timeout;
        while s.role == Role::Primary {
            if self.state_changed.wait_until(&mut s, deadline).timed_out() {
                warn!("the backup did not take over in time");
                return false;
            }
        }
        true
    }

    /// A PROBE from the peer: note what it says, answer with our state. A backup probing a
    /// primary whose replication link is down makes the primary redial at once.
    pub fn answer_probe(&self, peer: PeerState) -> Reply {
        let mut s = self.state.lock();
        self.observe_locked(&mut s, peer.epoch);
        s.peer = Some(peer);
        if s.role == Role::Primary && s.link.is_none() {
            let _ = self.redial_now.try_send(());
        }
        Reply::PeerPong(self.me_locked(&s))
    }

    // ---- the monitor's verdicts ----

    /// Records a probe's answer from the peer.
    pub fn peer_answered(&self, peer: PeerState) {
        let mut s = self.state.lock();
        s.peer = Some(peer);
        if peer.role == Role::Primary {
            self.observe_locked(&mut s, peer.epoch);
            s.heard_from_primary = Some(Instant::now());
        }
    }

    /// Whether we should lead when both brokers are backups: the one with the newer epoch
    /// (it holds the newer log), then the preferred one, then the higher node id.
    pub fn wins_tie(&self, peer: &PeerState) -> bool {
        let s = self.state.lock();
        let me = self.me_locked(&s);
        (me.epoch, me.preferred, me.node) > (peer.epoch, peer.preferred, peer.node)
    }

    /// The monitor starts a probe; the returned ticket covers every request made so far.
    pub fn probe_started(&self) -> u64 {
        self.state.lock().probes_requested
    }

    /// The monitor finished the probe started with `ticket`.
    pub fn probe_finished(&self, ticket: u64) {
        let mut s = self.state.lock();
        s.probes_answered = s.probes_answered.max(ticket);
        self.state_changed.notify_all();
    }

    /// Asks the monitor to probe the primary now (a broken link, a publish on the backup).
    pub fn request_probe(&self) {
        let mut s = self.state.lock();
        s.probes_requested += 1;
        let _ = self.probe_now.try_send(());
    }

    /// A publish reached us as backup: probe the primary at once and wait for the verdict.
    /// Returns our role afterwards; `Primary` means we took over and can serve it.
    pub fn settle_role(&self) -> Role {
        let deadline = Instant::now() + self.config.ping_timeout * 2 + Duration::from_millis(100);
        let mut s = self.state.lock();
        if s.role == Role::Primary || self.config.peer.is_none() {
            return s.role;
        }
        s.probes_requested += 1;
        let ticket = s.probes_requested;
        let _ = self.probe_now.try_send(());
        while s.role == Role::Backup && s.probes_answered < ticket && !self.stopping() {
            if self.state_changed.wait_until(&mut s, deadline).timed_out() {
                break;
            }
        }
        s.role
    }

    /// Blocks while our role differs from `role`; returns `false` when the broker stops.
    pub fn wait_for_role(&self, role: Role) -> bool {
        let mut s = self.state.lock();
        while s.role != role && !self.stopping() {
            self.state_changed.wait(&mut s);
        }
        !self.stopping()
    }

    // ---- replication sessions, on the primary ----

    /// Installs a freshly synced replication session: appends SEEN for the dedup table and
    /// REPLICATE for every pending message to it (the caller flushes), then makes it the live
    /// link. Returns the
    /// number of messages handed over, or `None` if the reign ended meanwhile.
    pub fn install_link(&self, epoch: Epoch, link: Arc<Link>) -> Option<usize> {
        let mut s = self.state.lock();
        if s.role != Role::Primary || s.epoch != epoch {
            return None;
        }
        for (id, _) in s.log.seen() {
            link.push(LinkCmd::Seen(id));
        }
        let mut handed = 0;
        for (index, message) in s.log.pending() {
            link.push(LinkCmd::Replicate { index, message });
            handed += 1;
        }
        s.link = Some(link);
        self.safety.set_health(BackupHealth::Up);
        Some(handed)
    }

    /// The replication session ended: forget it.
    pub fn drop_link(&self, epoch: Epoch) {
        let mut s = self.state.lock();
        if s.epoch == epoch {
            s.end_link();
        }
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
            s.end_link();
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

    /// Forgets a socket that closed.
    pub fn unregister(&self, key: u64) {
        self.sockets.lock().remove(&key);
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
        Status {
            role: s.role,
            epoch: s.epoch,
            node: self.id,
            backup: self.safety.health(),
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
