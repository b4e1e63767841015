//! The role state machine: what a broker is (primary or backup, in which epoch), what only
//! that role owns, and every change of role, each one function:
//!
//! ```text
//!              take_over (probe refused, tie won, HANDOVER, the witness's grant)
//!   Backup ──────────────────────────────────────────────▶ Primary (new epoch)
//!     ▲ │                                                     │
//!     │ └── follow (SYNC of a newer session): empty log ◀─┐   │
//!     └──────────── step_down (met a newer epoch) ────────┴───┘
//!                   keeps the undelivered messages as orphans,
//!                   hands them to the new primary (ADOPT, HANDOFF)
//! ```
//!
//! Both roles share the epoch, the log and the last word of the peer; [`RoleState`] holds the
//! rest, so a field that means something only on a primary cannot be read on a backup.
//!
//! **Lock order.** The role lock ([`Node`]'s `state`) comes first. Under it a thread may take
//! the locks of [`super::safety::Safety`], of a [`Link`]'s pending lines, of the topic map and
//! of the link error, never the other way round, and never writes to a socket. (The `acks`
//! thread takes the role lock under its book's and a slot's locks, to ask whether a witnessed
//! primary alone has delivered a message; nothing takes those under the role lock.)

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use log::{debug, info, warn};
use parking_lot::MutexGuard;

use crate::protocol::{Epoch, Heard, Message, PeerState, Reply, Role};
use crate::witness::Lease;

use super::compute::Job;
use super::link::{Link, LinkCmd};
use super::log::{Admit, Log};
use super::node::Node;
use super::safety::BackupHealth;

/// Everything the role lock guards.
pub struct State {
    /// Our epoch: the one we started as primary, or the one of the primary we follow.
    pub epoch: Epoch,
    /// Accepted messages not yet written to every subscriber, and the dedup table.
    pub log: Log,
    /// The peer as its last answer described it.
    pub peer: Option<PeerState>,
    /// What only our present role owns.
    pub role: RoleState,
    /// Probes asked for (a broken link, a publish on the backup) and probes done.
    pub probes: (u64, u64),
}

/// The role, with what only that role owns.
pub enum RoleState {
    /// Accepting publishes and replicating them.
    Primary(PrimaryState),
    /// Holding what the primary replicates, and watching it.
    Backup(BackupState),
}

/// What a primary owns.
#[derive(Default)]
pub struct PrimaryState {
    /// The sending half of the live replication session, once the backup is synced.
    pub link: Option<Arc<Link>>,
    /// Set while a shutting-down primary hands over: it accepts no more publishes.
    pub handing_over: bool,
}

/// What a backup owns.
#[derive(Default)]
pub struct BackupState {
    /// The primary session we follow: its epoch and dial counter.
    synced: (Epoch, u64),
    /// When a line last came from the primary we follow: evidence of life that a probe which
    /// merely timed out cannot outweigh.
    heard_from_primary: Option<Instant>,
    /// What we accepted as primary and had not delivered when we stepped down. Every SYNC
    /// from the new primary is handed a copy; they are forgotten only once a synced session
    /// has shown it is alive (see [`Node::handoff_received`]), because a SYNC that waited out a
    /// cut link may come from a dial the primary has long given up on.
    orphans: Vec<Arc<Message>>,
}

impl State {
    /// A fresh broker: a backup of nobody in epoch `0.0`.
    pub fn new(log: Log) -> Self {
        State {
            epoch: Epoch::default(),
            log,
            peer: None,
            role: RoleState::Backup(BackupState::default()),
            probes: (0, 0),
        }
    }

    /// Our role's name.
    pub fn role(&self) -> Role {
        match self.role {
            RoleState::Primary(_) => Role::Primary,
            RoleState::Backup(_) => Role::Backup,
        }
    }

    /// The live replication session, if we are a primary with a synced backup.
    pub fn link(&self) -> Option<&Arc<Link>> {
        match &self.role {
            RoleState::Primary(p) => p.link.as_ref(),
            RoleState::Backup(_) => None,
        }
    }

    /// The newest epoch we know of, ours or the peer's.
    fn seen(&self) -> Epoch {
        self.peer.map_or(self.epoch, |p| p.epoch.max(self.epoch))
    }

    /// Whether we are primary in `epoch`.
    pub fn is_primary_in(&self, epoch: Epoch) -> bool {
        self.role() == Role::Primary && self.epoch == epoch
    }

    /// Whether we take publishes: primary, and not handing over.
    pub fn takes_publishes(&self) -> bool {
        matches!(&self.role, RoleState::Primary(p) if !p.handing_over)
    }

    fn orphans(&self) -> &[Arc<Message>] {
        match &self.role {
            RoleState::Backup(b) => &b.orphans,
            RoleState::Primary(_) => &[],
        }
    }

    /// Ends the live replication session, if any: its socket is shut at once, so the backup
    /// sees the session end and the replicator's threads wind down.
    fn end_link(&mut self) {
        if let RoleState::Primary(p) = &mut self.role
            && let Some(link) = p.link.take()
        {
            link.close();
        }
    }
}

impl Node {
    // ---- the transitions ----

    /// Backup → primary: starts a new epoch and queues the held messages on the workers,
    /// oldest first, before anything published later. With `grant`, the witness's, the
    /// epoch is the one it granted; without, the next after the newest we know, and the
    /// reason must be certain (the old primary is gone, handed over, or no primary exists):
    /// we act alone until the backup or the witness vouches for us ([`super::mandate`]).
    pub fn take_over(&self, reason: &str, grant: Option<Lease>) {
        let mut s = self.state.lock();
        if s.role() == Role::Primary || self.stopping() {
            return;
        }
        let seen = s.seen();
        let epoch = match grant {
            Some(lease) if lease.epoch <= seen => {
                debug!(
                    "the grant of epoch {} came after epoch {seen}; ignoring it",
                    lease.epoch
                );
                return;
            }
            Some(lease) => match self.refuses(&s, lease.epoch, Heard::Answered) {
                None => lease.epoch,
                Some(_) => return,
            },
            None => match seen.next(self.id) {
                Some(epoch) => epoch,
                None => {
                    warn!("cannot take over: epoch {seen} is at the highest term there is");
                    return;
                }
            },
        };
        self.mandate
            .begin(epoch, grant.is_none(), grant.map(|lease| lease.until));
        let old = std::mem::replace(&mut s.role, RoleState::Primary(PrimaryState::default()));
        s.epoch = epoch;
        // Orphans no primary confirmed yet are ours to deliver again; those the log still
        // holds are recognised by the dedup table.
        if let RoleState::Backup(backup) = old {
            for orphan in backup.orphans {
                s.log.admit(Message::clone(&orphan));
            }
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
            "taking over as primary in epoch {epoch} ({reason}); replaying {} buffered message(s)",
            replay.len()
        );
        for (index, message) in replay {
            self.dispatch(Job {
                index,
                epoch,
                message,
            });
        }
        self.counters.takeovers.fetch_add(1, Ordering::Relaxed);
        self.state_changed.notify_all();
        drop(s);
        let _ = self.redial_now.try_send(());
    }

    /// Meets `epoch` in an answer of the peer or the witness (a PONG, a FENCED): if it is newer
    /// than ours and ours to adopt, follow it, stepping down if we were primary. Returns
    /// whether we did.
    pub fn observe(&self, epoch: Epoch) -> bool {
        let mut s = self.state.lock();
        self.refuses(&s, epoch, Heard::Answered).is_none() && self.observe_locked(&mut s, epoch)
    }

    /// Refuses `epoch`, met as `heard`, if [`Epoch::may_adopt`] does: logs why (once per quiet
    /// period, for a stranger may send thousands) and returns it, for an `ERR`.
    fn refuses(&self, s: &State, epoch: Epoch, heard: Heard) -> Option<String> {
        let why = epoch.may_adopt(s.seen(), heard).err()?;
        self.warnings
            .epochs_refused
            .warn(|| format!("{why}; refused"));
        Some(why)
    }

    /// Follows `epoch` if it is newer than ours; the callers checked it with [`Self::refuses`].
    pub(super) fn observe_locked(&self, s: &mut MutexGuard<'_, State>, epoch: Epoch) -> bool {
        // Never an epoch no takeover could follow, whoever forgot to ask.
        if epoch <= s.epoch || epoch.next(self.id).is_none() {
            return false;
        }
        if s.role() == Role::Primary {
            self.step_down(s, epoch);
        }
        s.epoch = epoch;
        self.state_changed.notify_all();
        true
    }

    /// Primary → backup, on meeting the newer `epoch`: what we accepted and had not delivered
    /// becomes our orphans, handed to the new primary at once (ADOPT) and with every SYNC.
    fn step_down(&self, s: &mut State, epoch: Epoch) {
        s.end_link();
        let handing_over = matches!(&s.role, RoleState::Primary(p) if p.handing_over);
        if handing_over {
            info!("the backup took over in epoch {epoch}");
        } else {
            warn!(
                "met epoch {epoch}, newer than our {}: stepping down to backup",
                s.epoch
            );
        }
        let orphans: Vec<Arc<Message>> = s.log.pending().map(|(_, m)| Arc::clone(m)).collect();
        if !orphans.is_empty() {
            let _ = self.handoff_now.try_send(());
        }
        s.role = RoleState::Backup(BackupState {
            orphans,
            ..BackupState::default()
        });
        self.counters.step_downs.fetch_add(1, Ordering::Relaxed);
        self.mandate.end();
        self.safety.interrupt(BackupHealth::Down);
    }

    /// SYNC from a primary: follow its session with an empty log, or fence it if it is stale.
    /// If we stepped down from primary, the answer first hands over what we had accepted and
    /// not delivered, so a split that ends loses nothing we ACKed alone.
    pub fn follow(&self, epoch: Epoch, session: u64) -> Vec<Reply> {
        let mut s = self.state.lock();
        if epoch < s.epoch || (epoch == s.epoch && s.role() == Role::Primary) {
            return vec![Reply::Fenced { epoch: s.epoch }];
        }
        if let Some(why) = self.refuses(&s, epoch, Heard::Told) {
            return vec![Reply::Err(why)];
        }
        self.observe_locked(&mut s, epoch);
        // Meeting a newer epoch made us a backup, if we were not one.
        let RoleState::Backup(backup) = &mut s.role else {
            return vec![Reply::Fenced { epoch: s.epoch }];
        };
        // A SYNC that waited out a cut must not empty the log a newer session is filling.
        if (epoch, session) <= backup.synced {
            debug!("ignoring a stale SYNC (session {session} of epoch {epoch})");
            return vec![Reply::Err("stale session".into())];
        }
        backup.synced = (epoch, session);
        backup.heard_from_primary = Some(Instant::now());
        let mut replies: Vec<Reply> = backup
            .orphans
            .iter()
            .map(|m| Reply::Handoff(Message::clone(m)))
            .collect();
        s.log.clear();
        info!(
            "following the primary of epoch {epoch}; handing it {} undelivered message(s), receiving its log",
            replies.len()
        );
        replies.push(Reply::Synced { epoch });
        replies
    }

    /// Planned failover, on the primary that shuts down: stop taking publishes, ask the synced
    /// backup to take over, and wait (at most a ping timeout) until its new epoch made us step
    /// down. `false` if there was no synced backup to hand over to.
    pub fn hand_over(&self) -> bool {
        let mut s = self.state.lock();
        let RoleState::Primary(primary) = &mut s.role else {
            return false;
        };
        let Some(link) = &primary.link else {
            return false;
        };
        if self.safety.health() != BackupHealth::Up {
            return false;
        }
        primary.handing_over = true;
        link.push(LinkCmd::Handover);
        info!("handing over to the backup");
        let deadline = Instant::now() + self.config.ping_timeout;
        while s.role() == Role::Primary {
            if self.state_changed.wait_until(&mut s, deadline).timed_out() {
                warn!("the backup did not take over in time");
                return false;
            }
        }
        true
    }

    /// HANDOVER from the primary we follow: take over now, and tell it our new epoch.
    pub fn accept_handover(&self, epoch: Epoch) -> Reply {
        let (role, ours) = self.role();
        if role == Role::Backup && epoch == ours {
            self.take_over("the primary handed over as it shut down", None);
        }
        let (_, now) = self.role();
        if now > epoch {
            Reply::Fenced { epoch: now }
        } else {
            Reply::Err("not following that epoch".into())
        }
    }

    // ---- the orphans of a step-down ----

    /// The primary of `epoch` holds our orphans: it ACKed their ADOPT, or sent a line after
    /// our `SYNCED` (so it read the HANDOFF lines before it).
    pub fn handoff_received(&self, epoch: Epoch) {
        let mut s = self.state.lock();
        if s.epoch == epoch
            && let RoleState::Backup(backup) = &mut s.role
            && !backup.orphans.is_empty()
        {
            debug!(
                "the primary of epoch {epoch} holds our {} orphan(s)",
                backup.orphans.len()
            );
            backup.orphans.clear();
            self.state_changed.notify_all();
        }
    }

    /// The epoch we follow and our orphans, if we hold any.
    pub fn orphans(&self) -> Option<(Epoch, Vec<Arc<Message>>)> {
        let s = self.state.lock();
        let orphans = s.orphans();
        (!orphans.is_empty()).then(|| (s.epoch, orphans.to_vec()))
    }

    /// A publisher reached us after we stepped down with orphans: hold its answer until the
    /// new primary has them (at most a ping interval plus timeout), so that the publisher's
    /// next messages reach the new primary after its older ones, not before.
    pub fn await_orphans_handed_over(&self) {
        let deadline = Instant::now() + self.config.ping_interval + self.config.ping_timeout;
        let mut s = self.state.lock();
        while !s.orphans().is_empty() && !self.stopping() {
            if self.state_changed.wait_until(&mut s, deadline).timed_out() {
                return;
            }
        }
    }

    /// The messages a stepped-down primary handed us while we synced it: admit the ones we do
    /// not hold (the dedup table recognises the rest), in its order. Returns how many were new.
    pub fn adopt_orphans(&self, epoch: Epoch, orphans: Vec<Message>) -> usize {
        let mut s = self.state.lock();
        if !s.is_primary_in(epoch) {
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

    // ---- what the peer says ----

    /// A replication line is only taken from the primary of our own epoch; a stale sender is
    /// fenced, a newer one must SYNC first.
    pub(super) fn check_follower(
        &self,
        s: &mut MutexGuard<'_, State>,
        epoch: Epoch,
    ) -> Option<Reply> {
        if epoch < s.epoch || (epoch == s.epoch && s.role() == Role::Primary) {
            return Some(Reply::Fenced { epoch: s.epoch });
        }
        if epoch > s.epoch {
            if let Some(why) = self.refuses(s, epoch, Heard::Told) {
                return Some(Reply::Err(why));
            }
            self.observe_locked(s, epoch);
            return Some(Reply::Err("not synced; send SYNC first".into()));
        }
        if let RoleState::Backup(backup) = &mut s.role {
            backup.heard_from_primary = Some(Instant::now());
        }
        None
    }

    /// Whether the primary we follow spoke within the last ping timeout; a probe that timed
    /// out then is not evidence enough to take over (a refused connection always is).
    pub fn primary_recently_heard(&self) -> bool {
        let s = self.state.lock();
        matches!(&s.role, RoleState::Backup(b)
            if b.heard_from_primary.is_some_and(|t| t.elapsed() < self.config.ping_timeout))
    }

    /// A PROBE from the peer: note what it says, answer with our state. A backup probing a
    /// primary whose replication link is down makes the primary redial at once.
    pub fn answer_probe(&self, peer: PeerState) -> Reply {
        let mut s = self.state.lock();
        if let Some(why) = self.refuses(&s, peer.epoch, Heard::Told) {
            return Reply::Err(why);
        }
        self.observe_locked(&mut s, peer.epoch);
        s.peer = Some(peer);
        // The heartbeat of the primary we follow: it is alive, and our answer vouches for it
        // (its mandate counts on our not taking over for a ping timeout from now).
        if peer.role == Role::Primary
            && peer.epoch == s.epoch
            && let RoleState::Backup(backup) = &mut s.role
        {
            backup.heard_from_primary = Some(Instant::now());
        }
        if s.role() == Role::Primary && s.link().is_none() {
            let _ = self.redial_now.try_send(());
        }
        Reply::PeerPong(self.me_locked(&s))
    }

    /// Records a probe's answer from the peer.
    pub fn peer_answered(&self, peer: PeerState) {
        let mut s = self.state.lock();
        if self.refuses(&s, peer.epoch, Heard::Answered).is_some() {
            return;
        }
        s.peer = Some(peer);
        if peer.role == Role::Primary {
            self.observe_locked(&mut s, peer.epoch);
            if let RoleState::Backup(backup) = &mut s.role {
                backup.heard_from_primary = Some(Instant::now());
            }
        }
    }

    /// Whether a silent or refusing peer is no reason to take over yet: we were started as
    /// `backup`, have never heard the peer, hold nothing, and started less than
    /// `--startup-grace-ms` ago. Started at the same instant as its primary, a backup would
    /// otherwise find it not listening yet and take over; the preferred broker needs no
    /// grace, so two fresh brokers settle as the programs' names say.
    pub fn in_startup_grace(&self) -> bool {
        let s = self.state.lock();
        !self.config.preferred_primary
            && s.peer.is_none()
            && s.epoch == Epoch::default()
            && s.log.is_empty()
            && self.started.elapsed() < self.config.startup_grace
    }

    /// The newest epoch we know of, ours or the peer's: a claim asks for the one after it.
    pub fn seen_epoch(&self) -> Epoch {
        self.state.lock().seen()
    }

    /// Whether we should lead when both brokers are backups: the one with the newer epoch
    /// (it holds the newer log), then the preferred one, then the higher node id.
    /// A backup whose primary spoke within the last ping timeout never wins: the peer's
    /// answer is older than that (it was still a backup when it answered, and has since
    /// taken over and synced us).
    pub fn wins_tie(&self, peer: &PeerState) -> bool {
        let s = self.state.lock();
        if let RoleState::Backup(backup) = &s.role
            && backup
                .heard_from_primary
                .is_some_and(|t| t.elapsed() < self.config.ping_timeout)
        {
            return false;
        }
        let me = self.me_locked(&s);
        (me.epoch, me.preferred, me.node) > (peer.epoch, peer.preferred, peer.node)
    }

    // ---- the primary's replication session ----

    /// Installs a freshly synced replication session: appends SEEN for the dedup table and
    /// REPLICATE for every pending message to it, then makes it the live link. Returns the number of messages handed over, or `None` if the reign ended
    /// meanwhile.
    pub fn install_link(&self, epoch: Epoch, link: Arc<Link>) -> Option<usize> {
        let mut s = self.state.lock();
        if s.epoch != epoch {
            return None;
        }
        let State { log, role, .. } = &mut *s;
        let RoleState::Primary(primary) = role else {
            return None;
        };
        for (id, _) in log.seen() {
            link.push(LinkCmd::Seen(id));
        }
        let mut handed = 0;
        for (index, message) in log.pending() {
            link.push(LinkCmd::Replicate { index, message });
            handed += 1;
        }
        primary.link = Some(link);
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
}
