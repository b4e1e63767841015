//! The role machine: what a broker is (primary or backup, in which epoch), what only that role
//! owns, and every change of role, as plain functions on [`State`]:
//!
//! ```text
//!              take_over (probe refused, tie won, HANDOVER, the witness's grant)
//!   Backup ──────────────────────────────────────────────▶ Primary (new epoch)
//!     ▲ │                                                     │
//!     │ └── follow (SYNC of a newer session): empty log ◀─┐   │
//!     └──────────── step down (met a newer epoch) ────────┴───┘
//!                   keeps the undelivered messages as orphans,
//!                   hands them to the new primary (ADOPT, HANDOFF)
//! ```
//!
//! Nothing here touches a socket, a thread, a lock or the clock: each transition is told the
//! time, changes the state and returns the [`Effect`]s that the caller carries out
//! (`super::reign`, under the role lock), so every rule can be tested alone (below).
//!
//! Both roles share the epoch, the log and the last word of the peer; [`RoleState`] holds the
//! rest, so a field that means something only on a primary cannot be read on a backup.

mod peer;

use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, info, warn};

use crate::config::BrokerConfig;
use crate::protocol::{Epoch, Heard, Message, PeerState, Reply, Role};
use crate::witness::Lease;

use super::link::{Link, LinkCmd};
use super::message_log::{Admit, Log};

/// A message for a compute worker: its place in the log and the reign that queued it (a job
/// from an ended reign is dropped).
#[derive(Debug)]
pub struct Job {
    pub index: u64,
    pub epoch: Epoch,
    pub message: Arc<Message>,
}

/// What the caller of a transition must do, in this order.
pub enum Effect {
    /// Queue the message on its compute worker.
    Dispatch(Job),
    /// A reign began (we took over): interrupt the old reign's waiters, start the backup's
    /// state as unheard (`Safety::unheard`), and begin the primary's mandate: until the
    /// witness's lease ends, or, without one, alone (the reason was certain).
    Reign {
        epoch: Epoch,
        until: Option<Instant>,
    },
    /// The reign ended (we stepped down): interrupt its waiters, no backup, no mandate.
    Abdicate,
    /// A backup synced: ACKs count on its confirmations from now on.
    BackupUp,
    /// Shut the ended replication session's socket.
    CloseLink(Arc<Link>),
    /// Dial the backup now.
    Redial,
    /// Hand our orphans to the new primary now.
    HandOff,
    /// For STATUS: a message adopted from the old primary counts as published.
    Adopted,
}

/// Why a takeover did not happen.
#[derive(Debug, PartialEq, Eq)]
pub enum NoTakeover {
    AlreadyPrimary,
    /// The witness granted an epoch we have already passed.
    StaleGrant(Epoch),
    /// The grant is one we may not adopt (`Epoch::may_adopt`).
    Refused(String),
    /// No epoch can follow the newest we know.
    AtLimit(Epoch),
}

/// Who this broker is and the timings its rules use; fixed at start.
pub struct Rules {
    pub node: u32,
    pub preferred: bool,
    pub ping_timeout: Duration,
    pub startup_grace: Duration,
    pub started: Instant,
    /// Started from a log read back from disk.
    pub restored: bool,
}

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
    rules: Rules,
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
    /// has shown it is alive ([`State::handoff_received`]), because a SYNC that waited out a
    /// cut link may come from a dial the primary has long given up on.
    orphans: Vec<Arc<Message>>,
}

impl State {
    /// A fresh broker, node `node` started at `started` with `config`: a backup of nobody in
    /// epoch `0.0`.
    pub fn new(node: u32, config: &BrokerConfig, started: Instant) -> Self {
        State {
            epoch: Epoch::default(),
            log: Log::new(config.dedup_publishers),
            peer: None,
            role: RoleState::Backup(BackupState::default()),
            probes: (0, 0),
            rules: Rules {
                node,
                preferred: config.preferred_primary,
                ping_timeout: config.ping_timeout,
                startup_grace: config.startup_grace,
                started,
                restored: false,
            },
        }
    }

    /// The same broker read back from its log on disk: in `epoch`, holding `log`, whose
    /// pending messages are also its orphans, as a primary's are when it steps down (were it
    /// the primary, no newer one may hold them: every SYNC hands them over, and the dedup
    /// table of whoever leads recognises the ones it holds). A log that knows of no epoch and
    /// holds nothing is a fresh start, without the restart grace.
    pub fn restore(self, epoch: Epoch, log: Log) -> State {
        let restored = epoch != Epoch::default() || !log.is_empty();
        let orphans = log.pending().map(|(_, m)| Arc::clone(m)).collect();
        State {
            epoch,
            log,
            role: RoleState::Backup(BackupState {
                orphans,
                ..BackupState::default()
            }),
            rules: Rules {
                restored,
                ..self.rules
            },
            ..self
        }
    }

    // ---- what the state says ----

    pub fn role(&self) -> Role {
        match self.role {
            RoleState::Primary(_) => Role::Primary,
            RoleState::Backup(_) => Role::Backup,
        }
    }

    /// What we tell the peer about ourselves.
    pub fn me(&self) -> PeerState {
        PeerState {
            epoch: self.epoch,
            role: self.role(),
            node: self.rules.node,
            preferred: self.rules.preferred,
        }
    }

    /// The live replication session, if we are a primary with a synced backup.
    pub fn link(&self) -> Option<&Arc<Link>> {
        match &self.role {
            RoleState::Primary(p) => p.link.as_ref(),
            RoleState::Backup(_) => None,
        }
    }

    /// The newest epoch we know of, ours or the peer's: a takeover or a claim asks for the
    /// one after it.
    pub fn seen(&self) -> Epoch {
        self.peer.map_or(self.epoch, |p| p.epoch.max(self.epoch))
    }

    pub fn is_primary_in(&self, epoch: Epoch) -> bool {
        self.role() == Role::Primary && self.epoch == epoch
    }

    /// Whether we take publishes: primary, and not handing over.
    pub fn takes_publishes(&self) -> bool {
        matches!(&self.role, RoleState::Primary(p) if !p.handing_over)
    }

    pub fn orphans(&self) -> &[Arc<Message>] {
        match &self.role {
            RoleState::Backup(b) => &b.orphans,
            RoleState::Primary(_) => &[],
        }
    }

    /// Whether the primary we follow spoke within the last ping timeout; a probe that timed
    /// out then is not evidence enough to take over (a refused connection always is).
    pub fn primary_recently_heard(&self, now: Instant) -> bool {
        matches!(&self.role, RoleState::Backup(b) if b.heard_from_primary
            .is_some_and(|t| now.saturating_duration_since(t) < self.rules.ping_timeout))
    }

    /// Whether a silent or refusing peer is no reason to take over yet: we were started as
    /// `backup`, have never heard the peer, hold nothing, and started less than
    /// `--startup-grace-ms` ago. Started at the same instant as its primary, a backup would
    /// otherwise find it not listening yet and take over; the preferred broker needs no
    /// grace, so two fresh brokers settle as the programs' names say. A broker read back from
    /// disk waits it out too, whatever its name ([`State::in_restart_grace`]).
    pub fn in_startup_grace(&self, now: Instant) -> bool {
        let fresh = !self.rules.preferred
            && self.peer.is_none()
            && self.epoch == Epoch::default()
            && self.log.is_empty();
        (fresh && self.within_grace(now)) || self.in_restart_grace(now)
    }

    /// Whether we were read back from disk less than `--startup-grace-ms` ago: then we take
    /// over neither on a silent peer nor on a tie, whatever our name. The peer may be coming
    /// back with a newer log (it should lead), and the subscribers that lost both brokers
    /// need the time to subscribe again before the log is replayed.
    pub fn in_restart_grace(&self, now: Instant) -> bool {
        self.rules.restored && self.within_grace(now)
    }

    fn within_grace(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.rules.started) < self.rules.startup_grace
    }

    /// Whether we should lead when both brokers are backups: the one with the newer epoch
    /// (it holds the newer log), then the one that led it (both read it back from disk),
    /// then the preferred one, then the higher node id; never within a restart grace
    /// ([`State::in_restart_grace`]). A backup
    /// whose primary spoke within the last ping timeout never wins: the peer's answer is
    /// older than that (it was still a backup when it answered, and has since taken over and
    /// synced us).
    pub fn wins_tie(&self, peer: &PeerState, now: Instant) -> bool {
        let rank = |epoch: Epoch, node, preferred| (epoch, epoch.node == node, preferred, node);
        let me = rank(self.epoch, self.rules.node, self.rules.preferred);
        let them = rank(peer.epoch, peer.node, peer.preferred);
        !self.primary_recently_heard(now) && !self.in_restart_grace(now) && me > them
    }

    // ---- the transitions ----

    /// Moves to `epoch`, a line of the log on disk too.
    fn set_epoch(&mut self, epoch: Epoch) {
        self.epoch = epoch;
        self.log.begin_epoch(epoch);
    }

    /// Backup → primary: starts a new epoch and queues the held messages on the workers,
    /// oldest first, before anything published later. With `grant`, the witness's, the epoch
    /// is the one it granted; without, the next after the newest we know, and the reason
    /// must be certain (the old primary is gone, handed over, or no primary exists): we act
    /// alone until the backup or the witness vouches for us (`super::mandate`).
    pub fn take_over(&mut self, grant: Option<Lease>) -> Result<Vec<Effect>, NoTakeover> {
        if self.role() == Role::Primary {
            return Err(NoTakeover::AlreadyPrimary);
        }
        let seen = self.seen();
        let epoch = match grant {
            Some(lease) if lease.epoch <= seen => return Err(NoTakeover::StaleGrant(lease.epoch)),
            Some(lease) => {
                (lease.epoch)
                    .may_adopt(seen, Heard::Answered)
                    .map_err(NoTakeover::Refused)?;
                lease.epoch
            }
            None => seen
                .next(self.rules.node)
                .ok_or(NoTakeover::AtLimit(seen))?,
        };
        // Orphans no primary confirmed yet are ours to deliver again; those the log still
        // holds are recognised by the dedup table.
        for orphan in self.orphans().to_vec() {
            self.log.admit(Message::clone(&orphan));
        }
        self.role = RoleState::Primary(PrimaryState::default());
        self.set_epoch(epoch);
        let mut effects = vec![Effect::Reign {
            epoch,
            until: grant.map(|lease| lease.until),
        }];
        effects.extend(self.log.pending().map(|(index, message)| {
            Effect::Dispatch(Job {
                index,
                epoch,
                message: Arc::clone(message),
            })
        }));
        effects.push(Effect::Redial);
        Ok(effects)
    }

    /// Meets `epoch`, `heard` in a request or an answer: if it is newer than ours and ours to
    /// adopt ([`Epoch::may_adopt`]), follow it, stepping down if we were primary. `Err` with
    /// the reason when it may not be adopted.
    pub fn observe(&mut self, epoch: Epoch, heard: Heard) -> Result<Vec<Effect>, String> {
        epoch.may_adopt(self.seen(), heard)?;
        Ok(self.adopt(epoch))
    }

    /// Follows `epoch` if it is newer than ours (checked by the caller, `observe`).
    fn adopt(&mut self, epoch: Epoch) -> Vec<Effect> {
        // Never an epoch no takeover could follow, whoever forgot to ask.
        if epoch <= self.epoch || epoch.next(self.rules.node).is_none() {
            return Vec::new();
        }
        let effects = self.step_down(epoch);
        self.set_epoch(epoch);
        effects
    }

    /// Primary → backup, on meeting the newer `epoch`: what we accepted and had not delivered
    /// becomes our orphans, handed to the new primary at once (ADOPT) and with every SYNC. A
    /// backup stays as it is.
    fn step_down(&mut self, epoch: Epoch) -> Vec<Effect> {
        let RoleState::Primary(primary) = &mut self.role else {
            return Vec::new();
        };
        if primary.handing_over {
            info!("the backup took over in epoch {epoch}");
        } else {
            warn!(
                "met epoch {epoch}, newer than our {}: stepping down to backup",
                self.epoch
            );
        }
        let mut effects = Vec::from_iter(primary.link.take().map(Effect::CloseLink));
        let orphans: Vec<Arc<Message>> = self.log.pending().map(|(_, m)| Arc::clone(m)).collect();
        if !orphans.is_empty() {
            effects.push(Effect::HandOff);
        }
        self.role = RoleState::Backup(BackupState {
            orphans,
            ..BackupState::default()
        });
        effects.push(Effect::Abdicate);
        effects
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::MsgId;

    const NODE: u32 = 7;
    const TIMEOUT: Duration = Duration::from_millis(500);

    fn state(preferred: bool, start: Instant) -> State {
        let config = BrokerConfig {
            preferred_primary: preferred,
            ping_timeout: TIMEOUT,
            startup_grace: Duration::from_secs(3),
            dedup_publishers: 100,
            ..BrokerConfig::fast()
        };
        State::new(NODE, &config, start)
    }

    fn epoch(term: u64, node: u32) -> Epoch {
        Epoch { term, node }
    }

    fn message(seq: u64) -> Message {
        Message {
            id: MsgId { publisher: 1, seq },
            topic: "t".into(),
            payload: format!("m{seq}"),
        }
    }

    fn peer(role: Role, e: Epoch) -> PeerState {
        PeerState {
            epoch: e,
            role,
            node: 3,
            preferred: false,
        }
    }

    /// A link over a loopback connection (the other end is kept open by the caller).
    fn link() -> (Arc<Link>, std::net::TcpStream) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let ours = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (theirs, _) = listener.accept().unwrap();
        let link = Link::new(crate::connection::Stream::new(ours), epoch(1, NODE));
        (link, theirs)
    }

    /// The jobs among `effects`, as (index, epoch).
    fn jobs(effects: &[Effect]) -> Vec<(u64, Epoch)> {
        (effects.iter())
            .filter_map(|e| match e {
                Effect::Dispatch(job) => Some((job.index, job.epoch)),
                _ => None,
            })
            .collect()
    }

    fn has(effects: &[Effect], wanted: impl Fn(&Effect) -> bool) -> bool {
        effects.iter().any(wanted)
    }

    /// A primary in epoch 1.7 holding two accepted messages.
    fn primary_with_two(now: Instant) -> State {
        let mut s = state(true, now);
        s.take_over(None).unwrap();
        s.log.admit(message(1));
        s.log.admit(message(2));
        s
    }

    #[test]
    fn taking_over_starts_the_next_epoch_alone_and_replays_the_log_oldest_first() {
        let now = Instant::now();
        let mut s = state(false, now);
        s.peer = Some(peer(Role::Primary, epoch(4, 3)));
        s.log.admit(message(1));
        s.log.admit(message(2));
        let effects = s.take_over(None).unwrap();
        assert_eq!((s.role(), s.epoch), (Role::Primary, epoch(5, NODE)));
        assert!(matches!(
            effects[0],
            Effect::Reign { epoch: e, until: None }
                if e == epoch(5, NODE)
        ));
        assert_eq!(
            jobs(&effects),
            vec![(1, epoch(5, NODE)), (2, epoch(5, NODE))]
        );
        assert!(has(&effects, |e| matches!(e, Effect::Redial)));
        assert_eq!(s.take_over(None).err(), Some(NoTakeover::AlreadyPrimary));
    }

    #[test]
    fn the_witness_grant_gives_the_epoch_and_a_stale_or_unreachable_one_is_refused() {
        let now = Instant::now();
        let mut s = state(false, now);
        s.peer = Some(peer(Role::Backup, epoch(6, 9)));
        let stale = Lease {
            epoch: epoch(6, NODE),
            until: now,
        };
        assert_eq!(
            s.take_over(Some(stale)).err(),
            Some(NoTakeover::StaleGrant(stale.epoch))
        );
        let last = Lease {
            epoch: epoch(Epoch::MAX_TERM, NODE),
            until: now,
        };
        assert!(matches!(
            s.take_over(Some(last)),
            Err(NoTakeover::Refused(_))
        ));
        assert_eq!(s.role(), Role::Backup);
        let until = now + Duration::from_secs(2);
        let granted = Lease {
            epoch: epoch(9, NODE),
            until,
        };
        let effects = s.take_over(Some(granted)).unwrap();
        assert_eq!(s.epoch, epoch(9, NODE));
        assert!(matches!(effects[0], Effect::Reign { until: Some(u), .. } if u == until));
    }

    #[test]
    fn no_takeover_past_the_last_term() {
        let mut s = state(false, Instant::now());
        s.peer = Some(peer(Role::Backup, epoch(Epoch::MAX_TERM, 3)));
        assert!(matches!(s.take_over(None), Err(NoTakeover::AtLimit(_))));
        assert_eq!(s.role(), Role::Backup);
    }

    #[test]
    fn a_newer_epoch_makes_a_primary_step_down_keeping_its_undelivered_messages_as_orphans() {
        let now = Instant::now();
        let mut s = primary_with_two(now);
        let (link, _keep) = link();
        s.install_link(s.epoch, Arc::clone(&link)).unwrap();
        let effects = s.observe(epoch(2, 3), Heard::Answered).unwrap();
        assert_eq!((s.role(), s.epoch), (Role::Backup, epoch(2, 3)));
        assert_eq!(s.orphans().len(), 2);
        assert!(has(
            &effects,
            |e| matches!(e, Effect::CloseLink(l) if Arc::ptr_eq(l, &link))
        ));
        assert!(has(&effects, |e| matches!(e, Effect::HandOff)));
        assert!(has(&effects, |e| matches!(e, Effect::Abdicate)));
        // An older or equal epoch changes nothing.
        assert!(s.observe(epoch(1, 9), Heard::Told).unwrap().is_empty());
        assert_eq!(s.epoch, epoch(2, 3));
    }

    #[test]
    fn an_epoch_with_no_takeover_after_it_is_never_adopted() {
        let mut s = primary_with_two(Instant::now());
        assert!(
            s.observe(epoch(Epoch::MAX_TERM, 3), Heard::Answered)
                .is_err()
        );
        assert!(
            s.observe(epoch(Epoch::CEILING + 5, 3), Heard::Told)
                .is_err()
        );
        assert_eq!((s.role(), s.epoch), (Role::Primary, epoch(1, NODE)));
    }

    #[test]
    fn following_a_sync_empties_the_log_hands_over_orphans_and_fences_stale_sessions() {
        let now = Instant::now();
        let mut s = primary_with_two(now);
        // A primary is fenced by a SYNC of its own epoch or an older one.
        let (replies, _) = s.follow(epoch(1, NODE), 1, now).unwrap();
        assert_eq!(
            replies,
            vec![Reply::Fenced {
                epoch: epoch(1, NODE)
            }]
        );
        // A newer primary's SYNC: we step down, hand over our two, and follow.
        let newer = epoch(2, 3);
        let (replies, effects) = s.follow(newer, 1, now).unwrap();
        assert_eq!(replies.len(), 3);
        assert!(matches!(replies[0], Reply::Handoff(_)));
        assert_eq!(replies[2], Reply::Synced { epoch: newer });
        assert!(has(&effects, |e| matches!(e, Effect::Abdicate)));
        assert!(s.log.is_empty());
        // A SYNC of the same or an older session of that epoch is stale.
        let (replies, _) = s.follow(newer, 1, now).unwrap();
        assert_eq!(replies, vec![Reply::Err("stale session".into())]);
        // Until the new primary shows it holds the orphans, every SYNC carries them.
        let (replies, _) = s.follow(newer, 2, now).unwrap();
        assert_eq!(replies.len(), 3);
        assert!(s.handoff_received(newer));
        let (replies, _) = s.follow(newer, 3, now).unwrap();
        assert_eq!(replies, vec![Reply::Synced { epoch: newer }]);
    }

    #[test]
    fn replication_lines_are_fenced_or_sent_to_sync_first_unless_from_our_primary() {
        let now = Instant::now();
        let mut s = state(false, now);
        let (replies, _) = s.follow(epoch(3, 3), 1, now).unwrap();
        assert_eq!(replies, vec![Reply::Synced { epoch: epoch(3, 3) }]);
        let (refusal, _) = s.check_follower(epoch(2, 3), now).unwrap();
        assert_eq!(refusal, Some(Reply::Fenced { epoch: epoch(3, 3) }));
        assert_eq!(s.check_follower(epoch(3, 3), now).unwrap().0, None);
        let (refusal, _) = s.check_follower(epoch(4, 3), now).unwrap();
        assert!(s.check_follower(epoch(Epoch::MAX_TERM, 3), now).is_err());
        assert_eq!(
            refusal,
            Some(Reply::Err("not synced; send SYNC first".into()))
        );
        assert_eq!(s.epoch, epoch(4, 3));
    }

    #[test]
    fn hearing_the_primary_outweighs_a_timed_out_probe_for_one_ping_timeout() {
        let now = Instant::now();
        let mut s = state(true, now);
        s.follow(epoch(3, 3), 1, now).unwrap();
        assert!(s.primary_recently_heard(now + TIMEOUT / 2));
        assert!(!s.primary_recently_heard(now + TIMEOUT));
        // While heard, a tie with a backup peer is never ours, preferred as we are.
        let other = peer(Role::Backup, epoch(0, 0));
        assert!(!s.wins_tie(&other, now + TIMEOUT / 2));
        assert!(s.wins_tie(&other, now + TIMEOUT));
    }

    #[test]
    fn ties_go_to_the_newer_epoch_then_the_preferred_broker_then_the_higher_node() {
        let now = Instant::now();
        let fresh = state(false, now);
        assert!(!fresh.wins_tie(&peer(Role::Backup, epoch(1, 3)), now));
        assert!(
            fresh.wins_tie(&peer(Role::Backup, Epoch::default()), now),
            "7 > 3"
        );
        let preferred_peer = PeerState {
            preferred: true,
            ..peer(Role::Backup, Epoch::default())
        };
        assert!(!fresh.wins_tie(&preferred_peer, now));
    }

    #[test]
    fn a_broker_read_back_from_disk_holds_its_log_as_orphans_and_waits_out_its_grace() {
        let now = Instant::now();
        let later = now + Duration::from_secs(3);
        let mut log = Log::new(100);
        log.admit(message(1));
        log.admit(message(2));
        let fresh = state(true, now).restore(Epoch::default(), Log::new(10));
        assert!(
            !fresh.in_startup_grace(now),
            "an empty log is a fresh start"
        );
        let mut s = state(true, now).restore(epoch(4, NODE), log);
        assert_eq!((s.role(), s.epoch), (Role::Backup, epoch(4, NODE)));
        assert_eq!(s.orphans().len(), 2, "handed to a newer primary's SYNC");
        // Preferred as it is, it waits: the peer may come back with a newer log.
        assert!(s.in_startup_grace(now) && !s.in_startup_grace(later));
        let backup = peer(Role::Backup, epoch(1, 3));
        assert!(!s.wins_tie(&backup, now) && s.wins_tie(&backup, later));
        let effects = s.take_over(None).unwrap();
        assert_eq!(
            jobs(&effects),
            vec![(1, epoch(5, NODE)), (2, epoch(5, NODE))],
            "replayed once, in order"
        );
    }

    #[test]
    fn between_two_logs_of_one_epoch_the_one_that_led_it_wins() {
        let later = Instant::now() + Duration::from_secs(3);
        let s = state(false, later).restore(epoch(4, NODE), Log::new(10));
        let grace_over = later + Duration::from_secs(3);
        let follower = PeerState {
            preferred: true,
            ..peer(Role::Backup, epoch(4, NODE))
        };
        assert!(s.wins_tie(&follower, grace_over), "led beats preferred");
        let newer = peer(Role::Backup, epoch(5, 3));
        assert!(!s.wins_tie(&newer, grace_over), "a newer epoch beats led");
    }

    #[test]
    fn the_start_up_grace_holds_a_fresh_backup_only() {
        let now = Instant::now();
        let later = now + Duration::from_secs(3);
        let fresh = state(false, now);
        assert!(fresh.in_startup_grace(now) && !fresh.in_startup_grace(later));
        assert!(
            !state(true, now).in_startup_grace(now),
            "the preferred needs none"
        );
        let mut heard = state(false, now);
        heard
            .peer_answered(peer(Role::Backup, Epoch::default()), now)
            .unwrap();
        assert!(!heard.in_startup_grace(now));
    }

    #[test]
    fn a_probe_is_answered_with_our_state_and_a_primary_without_a_link_redials() {
        let now = Instant::now();
        let mut s = primary_with_two(now);
        let (reply, effects) = s
            .answer_probe(peer(Role::Backup, epoch(1, NODE)), now)
            .unwrap();
        assert_eq!(reply, Reply::PeerPong(s.me()));
        assert!(has(&effects, |e| matches!(e, Effect::Redial)));
        // A stranger's probe at the last term is refused and changes nothing.
        let stranger = peer(Role::Primary, epoch(Epoch::MAX_TERM, 3));
        assert!(s.answer_probe(stranger, now).is_err());
        assert!(s.is_primary_in(epoch(1, NODE)));
    }

    #[test]
    fn handing_over_needs_a_synced_backup_and_stops_publishes() {
        let now = Instant::now();
        let mut s = primary_with_two(now);
        assert!(!s.start_handing_over(true), "no link");
        let (link, _keep) = link();
        s.install_link(s.epoch, link).unwrap();
        assert!(!s.start_handing_over(false), "backup not up");
        assert!(s.takes_publishes());
        assert!(s.start_handing_over(true));
        assert!(!s.takes_publishes());
    }

    #[test]
    fn a_new_primary_adopts_only_the_orphans_it_does_not_hold() {
        let now = Instant::now();
        let mut s = primary_with_two(now);
        let e = s.epoch;
        let effects = s.adopt_orphans(e, vec![message(2), message(3)]);
        assert_eq!(jobs(&effects), vec![(3, e)]);
        assert!(
            s.adopt_orphans(epoch(9, 9), vec![message(4)]).is_empty(),
            "not our reign"
        );
    }
}
