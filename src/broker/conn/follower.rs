//! The verbs a backup answers for its primary, the replication link's intake: SYNC makes this
//! connection the link, SEEN fills the dedup table during a sync; the link's first line after a
//! hand-off confirms it, and its close sends the backup to check on the primary. REPLICATE,
//! CLEAR and HANDOVER go straight to the node (`Conn::handle`).

use log::info;

use crate::protocol::{Epoch, MsgId, Reply, Role};

use super::Conn;

impl Conn {
    /// A peer verb on a link whose SYNC handed over orphans: the primary read them.
    pub(super) fn confirm_handoff(&mut self) {
        if self.handoff_unconfirmed
            && let Some(epoch) = self.link_epoch
        {
            self.handoff_unconfirmed = false;
            self.node.handoff_received(epoch);
        }
    }

    /// SYNC: follow the primary of `epoch`. Once synced, this connection is its replication
    /// link; the orphans a stepped-down primary hands over go out before the last reply.
    pub(super) fn sync(&mut self, epoch: Epoch, session: u64) -> Option<Reply> {
        let mut replies = self.node.follow(epoch, session);
        if matches!(replies.last(), Some(Reply::Synced { .. })) {
            self.link_epoch = Some(epoch);
            self.handoff_unconfirmed = replies.len() > 1;
            // The primary heartbeats every quarter ping timeout; half a timeout of
            // silence is worth a probe.
            let quiet = self.node.config.ping_timeout / 2;
            let _ = self.stream.set_read_timeout(Some(quiet));
        }
        let last = replies.pop();
        for handoff in &replies {
            self.writer.push(handoff);
        }
        last
    }

    /// SEEN: only on a synced link.
    pub(super) fn seen(&mut self, id: MsgId) -> Option<Reply> {
        match self.link_epoch {
            Some(epoch) => self.node.accept_seen(epoch, id),
            None => Some(Reply::Err("SEEN outside a sync".into())),
        }
    }

    /// At the connection's end: if it was the link of the primary we still follow, probe it.
    pub(super) fn link_closed(&self) {
        if let Some(epoch) = self.link_epoch
            && self.node.role() == (Role::Backup, epoch)
            && !self.node.stopping()
        {
            info!("replication link from the primary closed; probing it now");
            self.node.request_probe();
        }
    }
}
