//! The role machine's side of the peer: following a primary's SYNC (or fencing it), checking
//! a follower's lines, answering and hearing probes, and the session's life — its link, the
//! hand-over, the orphans handed back. Pure, like the rest of the machine ([`super`]).

use super::*;

impl State {
    /// SYNC from a primary: follow its session with an empty log, or fence it if it is stale.
    /// If we stepped down from primary, the answer first hands over what we had accepted and
    /// not delivered, so a split that ends loses nothing we ACKed alone.
    pub fn follow(
        &mut self,
        epoch: Epoch,
        session: u64,
        now: Instant,
    ) -> Result<(Vec<Reply>, Vec<Effect>), String> {
        if epoch < self.epoch || (epoch == self.epoch && self.role() == Role::Primary) {
            return Ok((vec![Reply::Fenced { epoch: self.epoch }], Vec::new()));
        }
        let effects = self.observe(epoch, Heard::Told)?;
        // Meeting a newer epoch made us a backup, if we were not one.
        let RoleState::Backup(backup) = &mut self.role else {
            return Ok((vec![Reply::Fenced { epoch: self.epoch }], effects));
        };
        // A SYNC that waited out a cut must not empty the log a newer session is filling.
        if (epoch, session) <= backup.synced {
            debug!("ignoring a stale SYNC (session {session} of epoch {epoch})");
            return Ok((vec![Reply::Err("stale session".into())], effects));
        }
        backup.synced = (epoch, session);
        backup.heard_from_primary = Some(now);
        let mut replies: Vec<Reply> = (backup.orphans.iter())
            .map(|m| Reply::Handoff(Message::clone(m)))
            .collect();
        self.log.clear();
        info!(
            "following the primary of epoch {epoch}; handing it {} undelivered message(s), receiving its log",
            replies.len()
        );
        replies.push(Reply::Synced { epoch });
        Ok((replies, effects))
    }

    /// A replication line is only taken from the primary of our own epoch: a stale sender is
    /// fenced, a newer one must SYNC first (`Some` is the refusal; `Err` an epoch that may not
    /// be adopted).
    pub fn check_follower(
        &mut self,
        epoch: Epoch,
        now: Instant,
    ) -> Result<(Option<Reply>, Vec<Effect>), String> {
        if epoch < self.epoch || (epoch == self.epoch && self.role() == Role::Primary) {
            return Ok((Some(Reply::Fenced { epoch: self.epoch }), Vec::new()));
        }
        if epoch > self.epoch {
            let effects = self.observe(epoch, Heard::Told)?;
            return Ok((
                Some(Reply::Err("not synced; send SYNC first".into())),
                effects,
            ));
        }
        self.heard_primary(now);
        Ok((None, Vec::new()))
    }

    /// A PROBE from the peer: note what it says, answer with our state. A backup probing a
    /// primary whose replication link is down makes the primary redial at once. `Err` with
    /// the reason when its epoch may not be adopted.
    pub fn answer_probe(
        &mut self,
        peer: PeerState,
        now: Instant,
    ) -> Result<(Reply, Vec<Effect>), String> {
        let mut effects = self.observe(peer.epoch, Heard::Told)?;
        self.peer = Some(peer);
        // The heartbeat of the primary we follow: it is alive, and our answer vouches for it
        // (its mandate counts on our not taking over for a ping timeout from now).
        if peer.role == Role::Primary && peer.epoch == self.epoch {
            self.heard_primary(now);
        }
        if self.role() == Role::Primary && self.link().is_none() {
            effects.push(Effect::Redial);
        }
        Ok((Reply::PeerPong(self.me()), effects))
    }

    /// Our probe's answer from the peer. `Err` with the reason when its epoch may not be
    /// adopted (then nothing is recorded).
    pub fn peer_answered(&mut self, peer: PeerState, now: Instant) -> Result<Vec<Effect>, String> {
        peer.epoch.may_adopt(self.seen(), Heard::Answered)?;
        self.peer = Some(peer);
        if peer.role != Role::Primary {
            return Ok(Vec::new());
        }
        let effects = self.adopt(peer.epoch);
        self.heard_primary(now);
        Ok(effects)
    }

    /// The primary we follow spoke at `now` (nothing, if we are the primary).
    fn heard_primary(&mut self, now: Instant) {
        if let RoleState::Backup(backup) = &mut self.role {
            backup.heard_from_primary = Some(now);
        }
    }

    /// Planned failover, on the primary that shuts down: stop taking publishes and send
    /// HANDOVER on the link; `false` without a synced backup (`backup_up` says whether the
    /// session's backup is up).
    pub fn start_handing_over(&mut self, backup_up: bool) -> bool {
        let RoleState::Primary(primary) = &mut self.role else {
            return false;
        };
        let Some(link) = primary.link.as_ref().filter(|_| backup_up) else {
            return false;
        };
        link.push(LinkCmd::Handover);
        primary.handing_over = true;
        true
    }

    /// The primary of `epoch` holds our orphans: it ACKed their ADOPT, or sent a line after
    /// our `SYNCED` (so it read the HANDOFF lines before it). Returns whether we forgot any.
    pub fn handoff_received(&mut self, epoch: Epoch) -> bool {
        match &mut self.role {
            RoleState::Backup(backup) if self.epoch == epoch && !backup.orphans.is_empty() => {
                let had = std::mem::take(&mut backup.orphans).len();
                debug!("the primary of epoch {epoch} holds our {had} orphan(s)");
                true
            }
            _ => false,
        }
    }

    /// The messages a stepped-down primary handed us while we synced it: admit the ones we do
    /// not hold (the dedup table recognises the rest), in its order.
    pub fn adopt_orphans(&mut self, epoch: Epoch, orphans: Vec<Message>) -> Vec<Effect> {
        if !self.is_primary_in(epoch) {
            return Vec::new();
        }
        let mut effects = Vec::new();
        for message in orphans {
            if let Admit::New(index, message) = self.log.admit(message) {
                debug!(
                    "{} adopted from the old primary at index {index}",
                    message.id
                );
                effects.push(Effect::Adopted);
                effects.push(Effect::Dispatch(Job {
                    index,
                    epoch,
                    message,
                }));
            }
        }
        effects
    }

    /// Installs a freshly synced replication session: appends SEEN for the dedup table and
    /// REPLICATE for every pending message to it, then makes it the live link. `None` if the
    /// reign ended meanwhile; else how many messages it was handed.
    pub fn install_link(&mut self, epoch: Epoch, link: Arc<Link>) -> Option<(usize, Vec<Effect>)> {
        let primary = match &mut self.role {
            RoleState::Primary(primary) if self.epoch == epoch => primary,
            _ => return None,
        };
        for (id, _) in self.log.seen() {
            link.push(LinkCmd::Seen(id));
        }
        for (index, message) in self.log.pending() {
            link.push(LinkCmd::Replicate { index, message });
        }
        primary.link = Some(link);
        Some((self.log.len(), vec![Effect::BackupUp]))
    }

    /// The replication session of `epoch` ended: forget it.
    pub fn drop_link(&mut self, epoch: Epoch) -> Vec<Effect> {
        let link = match &mut self.role {
            RoleState::Primary(primary) if self.epoch == epoch => primary.link.take(),
            _ => None,
        };
        Vec::from_iter(link.map(Effect::CloseLink))
    }
}
