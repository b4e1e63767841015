//! The node's side of the role machine (`super::role`): each transition runs under the role
//! lock, and its effects are carried out there, in order, before the lock is let go, so no
//! thread sees the new role without its consequences.
//!
//! **Lock order.** The role lock ([`Node`]'s `state`) is taken under the `acks` book and a
//! filed ACK's slot only; under it a thread may take the backup's state, the mandate, a link's
//! heartbeats, the topic map, the link error, the slots and the registry, never the other way
//! round, and it never writes to a socket (closing one is not a write). ARCHITECTURE.md,
//! "Locks", has the whole table.

use std::sync::Arc;
use std::time::Instant;

use log::{debug, info, warn};

use crate::protocol::{Epoch, Heard, Message, PeerState, Reply, Role};
use crate::witness::Lease;

use super::link::Link;
use super::node::Node;
use super::role::{Effect, NoTakeover, State};
use super::safety::BackupHealth;
use super::status::bump;

impl Node {
    /// Carries out what a transition returned; the caller holds the role lock `_s`.
    pub(super) fn carry_out(&self, _s: &mut State, effects: Vec<Effect>) {
        if effects.is_empty() {
            return;
        }
        for effect in effects {
            match effect {
                Effect::Dispatch(job) => self.dispatch(job),
                Effect::Reign { epoch, until } => {
                    // On disk before anyone hears of it: a restart never claims it again.
                    if let Some(journal) = &self.journal {
                        journal.sync_now();
                    }
                    self.mandate.begin(epoch, until.is_none(), until);
                    // Our backup (the old primary) is unknown until the replicator reaches
                    // it: a strict pair must not ACK alone before it knows the old primary is
                    // really gone.
                    self.safety.interrupt(self.safety.unheard());
                    bump(&self.counters.takeovers);
                }
                Effect::Abdicate => {
                    self.mandate.end();
                    self.safety.interrupt(BackupHealth::Down);
                    bump(&self.counters.step_downs);
                }
                Effect::BackupUp => self.safety.set_health(BackupHealth::Up),
                Effect::CloseLink(link) => link.close(),
                Effect::Redial => {
                    let _ = self.redial_now.try_send(());
                }
                Effect::HandOff => {
                    let _ = self.handoff_now.try_send(());
                }
                Effect::Adopted => bump(&self.counters.published),
            }
        }
        // Whoever waits for a role, an epoch or the orphans looks again.
        self.state_changed.notify_all();
    }

    /// Logs an epoch refused as `Epoch::may_adopt` says (once per quiet period: a stranger
    /// may send thousands).
    fn refused(&self, why: &str) {
        self.warnings
            .epochs_refused
            .warn(|| format!("{why}; refused"));
    }

    /// Carries out a transition's effects and returns its answer; an epoch it refused is
    /// logged and its reason returned, for an `ERR`.
    fn settle<T>(
        &self,
        s: &mut State,
        outcome: Result<(T, Vec<Effect>), String>,
    ) -> Result<T, String> {
        let (answer, effects) = outcome.inspect_err(|why| self.refused(why))?;
        self.carry_out(s, effects);
        Ok(answer)
    }

    /// Backup → primary, for `reason`; with `grant` in the epoch the witness granted.
    pub fn take_over(&self, reason: &str, grant: Option<Lease>) {
        let mut s = self.state.lock();
        if self.stopping() {
            return;
        }
        match s.take_over(grant) {
            Ok(effects) => {
                // The replay: every message the log holds is queued on the workers.
                info!(
                    "taking over as primary in epoch {} ({reason}); replaying {} buffered message(s)",
                    s.epoch,
                    s.log.len()
                );
                self.carry_out(&mut s, effects);
            }
            Err(NoTakeover::AlreadyPrimary) => {}
            Err(NoTakeover::StaleGrant(granted)) => debug!(
                "the grant of epoch {granted} came after epoch {}; ignoring it",
                s.seen()
            ),
            Err(NoTakeover::Refused(why)) => self.refused(&why),
            Err(NoTakeover::AtLimit(seen)) => {
                warn!("cannot take over: epoch {seen} is at the highest term there is");
            }
        }
    }

    /// Meets `epoch` in an answer of the peer or the witness (a PONG, a FENCED): follows it if
    /// it is newer and ours to adopt. Returns whether we did.
    pub fn observe(&self, epoch: Epoch) -> bool {
        let mut s = self.state.lock();
        let before = s.epoch;
        let outcome = s.observe(epoch, Heard::Answered);
        let _ = self.settle(&mut s, outcome.map(|effects| ((), effects)));
        s.epoch != before
    }

    /// SYNC from a primary: the replies to send, in order.
    pub fn follow(&self, epoch: Epoch, session: u64) -> Vec<Reply> {
        let mut s = self.state.lock();
        let outcome = s.follow(epoch, session, Instant::now());
        (self.settle(&mut s, outcome)).unwrap_or_else(|why| vec![Reply::Err(why)])
    }

    /// A replication line's epoch checked under the role lock `s`: `Some` is the refusal.
    pub(super) fn check_follower(&self, s: &mut State, epoch: Epoch) -> Option<Reply> {
        let outcome = s.check_follower(epoch, Instant::now());
        (self.settle(s, outcome)).unwrap_or_else(|why| Some(Reply::Err(why)))
    }

    /// A PROBE from the peer, answered.
    pub fn answer_probe(&self, peer: PeerState) -> Reply {
        let mut s = self.state.lock();
        let outcome = s.answer_probe(peer, Instant::now());
        (self.settle(&mut s, outcome)).unwrap_or_else(Reply::Err)
    }

    /// Records our probe's answer from the peer.
    pub fn peer_answered(&self, peer: PeerState) {
        let mut s = self.state.lock();
        let outcome = s.peer_answered(peer, Instant::now());
        let _ = self.settle(&mut s, outcome.map(|effects| ((), effects)));
    }

    /// Planned failover, on the primary that shuts down: stop taking publishes, ask the synced
    /// backup to take over, and wait (at most a ping timeout) until its new epoch made us step
    /// down. `false` if there was no synced backup to hand over to.
    pub fn hand_over(&self) -> bool {
        let mut s = self.state.lock();
        let backup_up = self.safety.health() == BackupHealth::Up;
        if !s.start_handing_over(backup_up) {
            return false;
        }
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

    /// The primary of `epoch` holds our orphans (`State::handoff_received`).
    pub fn handoff_received(&self, epoch: Epoch) {
        let mut s = self.state.lock();
        if s.handoff_received(epoch) {
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
        let held = |s: &mut State| !s.orphans().is_empty() && !self.stopping();
        let _ = self.state_changed.wait_while_until(&mut s, held, deadline);
    }

    /// The messages a stepped-down primary handed us while we synced it; returns how many
    /// were new.
    pub fn adopt_orphans(&self, epoch: Epoch, orphans: Vec<Message>) -> usize {
        let mut s = self.state.lock();
        let effects = s.adopt_orphans(epoch, orphans);
        let adopted = (effects.iter())
            .filter(|e| matches!(e, Effect::Adopted))
            .count();
        self.carry_out(&mut s, effects);
        adopted
    }

    /// Asks our state `question` under the role lock, now: what the pinger weighs before a
    /// takeover (`State::wins_tie`, `State::in_startup_grace`, `State::seen`, ...).
    pub fn with_state<T>(&self, question: impl FnOnce(&State, Instant) -> T) -> T {
        question(&self.state.lock(), Instant::now())
    }

    /// Installs a freshly synced replication session (`State::install_link`).
    pub fn install_link(&self, epoch: Epoch, link: Arc<Link>) -> Option<usize> {
        let mut s = self.state.lock();
        let (handed, effects) = s.install_link(epoch, link)?;
        self.carry_out(&mut s, effects);
        Some(handed)
    }

    /// The replication session ended: forget it.
    pub fn drop_link(&self, epoch: Epoch) {
        let mut s = self.state.lock();
        let effects = s.drop_link(epoch);
        self.carry_out(&mut s, effects);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::BrokerConfig;

    #[test]
    fn a_strict_pair_starts_its_reign_with_the_backup_silent() {
        for (require_backup, health) in [(false, BackupHealth::Down), (true, BackupHealth::Silent)]
        {
            let (worker, _jobs) = crossbeam_channel::unbounded();
            let config = BrokerConfig {
                require_backup,
                ..BrokerConfig::fast()
            };
            let node = Node::idle_with(config, vec![worker]);
            node.safety.set_health(BackupHealth::Up);
            node.take_over("the test says so", None);
            assert_eq!(node.role().0, Role::Primary);
            assert_eq!(node.safety.health(), health);
        }
    }
}
