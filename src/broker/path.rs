//! A message's path through the core ([`super::node::Node`]): on the primary, admitted to the
//! log, replication and its worker in one step under the role lock, waited on until the backup
//! holds it, computed, and cleared once delivered; on a backup, held as the primary replicates
//! it and cleared when the primary says so.

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use log::{debug, warn};

use crate::protocol::{Epoch, Message, MsgId, Reply};

use super::acks::{Acks, Verdicts};
use super::link::LinkCmd;
use super::message_log::{Admit, Log};
use super::node::{Node, Task};
use super::role::{Job, State};
use super::safety::{BackupHealth, Verdict};
use super::status::bump;
use super::verdict::{Admitted, Refusal};

impl Node {
    /// Appends a publish to the log, hands it to replication and to its compute worker, all in
    /// one step so the log, the link and the worker see one order.
    pub fn admit(&self, message: Message) -> Result<Admitted, Refusal> {
        self.admit_locked(&mut self.state.lock(), message)
    }

    /// Admits a seed-form publish under an id of ours (our node id and a counter), drawn under
    /// the role lock as the message is appended: the ids then rise in the log's order. (Drawn before the lock, a thread
    /// that waited for it while more than the dedup window of others went ahead would find
    /// its id behind the window, taken for a resend: ACKed and never delivered.)
    /// The message is built by the caller, outside the lock; only its id is set here.
    pub fn admit_anonymous(&self, mut message: Message) -> Result<Admitted, Refusal> {
        let mut s = self.state.lock();
        message.id = MsgId {
            publisher: u64::from(self.id),
            seq: self.anon_seq.fetch_add(1, Ordering::Relaxed) + 1,
        };
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
        if let Some(why) = self.journal.as_ref().and_then(|j| j.failure()) {
            return Err(Refusal::Disk(why));
        }
        let max_line = self.config.max_line_bytes;
        if !message.fits(max_line) {
            return Err(Refusal::TooLarge(max_line - Message::ENVELOPE_BYTES));
        }
        // Only what waits for the compute step counts: messages held for slow subscribers are
        // bounded by the subscribers' own limits, so one topic's readers cannot refuse
        // another topic's publishers.
        let (waiting, waiting_bytes) = self.computing.get();
        if waiting >= self.config.max_pending {
            return Err(Refusal::Overloaded(waiting, "messages"));
        }
        if waiting_bytes.saturating_add(message.size()) > self.config.max_pending_bytes {
            return Err(Refusal::Overloaded(waiting_bytes, "bytes"));
        }
        let id = message.id;
        let generation = self.safety.generation();
        let index = match s.log.admit(message) {
            Admit::New(index, message) => {
                debug!("{id} accepted at index {index} in epoch {}", s.epoch);
                bump(&self.counters.published);
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
                index
            }
            Admit::Duplicate(index) => {
                debug!("{id} is a resend of a message we hold; ACKing it again");
                bump(&self.counters.duplicates);
                index
            }
        };
        Ok(Admitted {
            id,
            index,
            generation,
        })
    }

    /// Waits until `admitted` may be ACKed, at most until `deadline`; a deadline already passed
    /// asks without waiting (`Refusal::TimedOut`, `Refusal::Undelivered` or
    /// `Refusal::Unwritten`: not decided yet). It is safe once the backup holds it (or we may
    /// ACK alone) and, with a log on disk, once its line is there: the disk is not waited
    /// for, the journal thread answers what it covers (`Node::answer_durable`).
    pub fn await_safe_until(&self, admitted: &Admitted, deadline: Instant) -> Result<(), Refusal> {
        self.await_copied_until(admitted, deadline)?;
        match self.journal.as_ref().map(|j| j.covers(admitted.index)) {
            None | Some(Ok(true)) => Ok(()),
            Some(Ok(false)) => Err(Refusal::Unwritten),
            Some(Err(why)) => Err(Refusal::Disk(why)),
        }
    }

    /// The backup's part of [`Node::await_safe_until`].
    fn await_copied_until(&self, admitted: &Admitted, deadline: Instant) -> Result<(), Refusal> {
        let (id, index, generation) = (admitted.id, admitted.index, admitted.generation);
        match self.safety.wait_to_ack(index, generation, deadline) {
            Verdict::Replicated => {
                debug!("{id} confirmed by the backup; ACKing");
                Ok(())
            }
            Verdict::Degraded if self.mandate.witnessed() => {
                self.await_delivered(admitted, deadline)
            }
            Verdict::Degraded => {
                debug!("{id} ACKed without a backup (degraded)");
                Ok(())
            }
            // A message the witnessed primary delivered alone was safe from then on. A backup
            // that synced after its clear was never sent it, so would never confirm it.
            Verdict::TimedOut if self.mandate.witnessed() && self.delivered_in_reign(admitted) => {
                debug!("{id} delivered before the backup synced; ACKing");
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
        let (id, index, generation) = (admitted.id, admitted.index, admitted.generation);
        let tick = self.config.ping_timeout / 4;
        let mut s = self.state.lock();
        loop {
            if self.safety.generation() != generation {
                return Err(Refusal::NotPrimary);
            }
            if !self.mandate.may_act() {
                return Err(Refusal::CutOff);
            }
            if !s.log.holds(index) {
                debug!("{id} ACKed without a backup (degraded), once delivered");
                return Ok(());
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Refusal::Undelivered);
            }
            // Woken by `clear_delivered`; the tick notices a mandate that ran out meanwhile.
            let _ = self
                .state_changed
                .wait_until(&mut s, deadline.min(now + tick));
        }
    }

    /// Whether `admitted` left the log in the reign that admitted it: written to every
    /// subscriber (a step-down or takeover would have ended the reign).
    fn delivered_in_reign(&self, admitted: &Admitted) -> bool {
        let s = self.state.lock();
        self.safety.generation() == admitted.generation && !s.log.holds(admitted.index)
    }

    /// The `ERR` text for a refusal; "not primary" names the other broker, so the client
    /// knows where to go.
    pub fn explain(&self, refusal: &Refusal) -> String {
        match refusal {
            Refusal::NotPrimary => match &self.config.peer {
                Some(peer) => format!("not primary; the primary is {peer}"),
                None => "not primary".into(),
            },
            Refusal::Overloaded(pending, unit) => format!("overloaded: {pending} {unit} pending"),
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
            Refusal::Disk(why) => why.clone(),
            Refusal::Unwritten => "the log on disk did not take the message in time".into(),
        }
    }

    pub(super) fn dispatch(&self, job: Job) {
        self.computing.add(&job.message);
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        job.message.topic.hash(&mut hasher);
        let shard = (hasher.finish() % self.workers.len() as u64) as usize;
        let _ = self.workers[shard].send(Task::Process(job));
    }

    /// The worker finished `index`: drop it from the log and tell the backup to CLEAR it.
    pub fn clear_delivered(&self, index: u64, epoch: Epoch) {
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
                    self.computing.get().0
                );
                warned = true;
            }
        }
        self.is_current(epoch)
    }

    /// REPLICATE from the primary we follow; answered here only when the sender is stale
    /// (the connection confirms what it held once per read batch).
    pub fn accept_replicate(&self, epoch: Epoch, index: u64, message: Message) -> Option<Reply> {
        self.as_follower(epoch, |log| {
            debug!("{} held at index {index} (epoch {epoch})", message.id);
            log.insert(index, Arc::new(message));
        })
    }

    /// CLEAR from the primary we follow; answered only when the sender is stale.
    pub fn accept_clear(&self, epoch: Epoch, index: u64) -> Option<Reply> {
        self.as_follower(epoch, |log| {
            if let Some(m) = log.remove(index) {
                debug!("{} cleared at index {index}", m.id);
            }
        })
    }

    /// SEEN from the primary we follow, during a sync.
    pub fn accept_seen(&self, epoch: Epoch, id: MsgId) -> Option<Reply> {
        self.as_follower(epoch, |log| log.note_seen(id, 0))
    }

    /// The journal thread's news: every index up to `durable` is on disk. Answers the ACKs
    /// that waited only for that: up to what the backup confirmed, or all of them while no
    /// backup is up (they are ACKed alone).
    pub fn answer_durable(&self, durable: u64) {
        let up_to = match self.safety.health() {
            BackupHealth::Up => Verdicts::confirmed(self),
            _ => durable,
        };
        self.acks.answer_confirmed(self, up_to);
    }

    /// A line from the primary of `epoch`: applied to our log under the role lock if we
    /// follow that primary, else refused (the refusal returned).
    fn as_follower(&self, epoch: Epoch, apply: impl FnOnce(&mut Log)) -> Option<Reply> {
        let mut s = self.state.lock();
        let refused = self.check_follower(&mut s, epoch);
        if refused.is_none() {
            apply(&mut s.log);
        }
        refused
    }
}

/// The ACK book asks the node through this: the verdict is `Node::await_safe_until`'s,
/// asked without waiting.
impl Verdicts for Node {
    fn acks(&self) -> &Acks {
        &self.acks
    }

    fn answer_now(&self, admitted: &Admitted, ack: &Reply, give_up: bool) -> Option<Reply> {
        match self.await_safe_until(admitted, Instant::now()) {
            Ok(()) => Some(ack.clone()),
            Err(Refusal::TimedOut | Refusal::Undelivered | Refusal::Unwritten) if !give_up => None,
            Err(refusal) => Some(Reply::Err(self.explain(&refusal))),
        }
    }

    /// How long a publish may wait for the backup's confirmation before it is refused.
    fn ack_timeout(&self) -> Duration {
        self.config.ping_interval + self.config.ping_timeout * 2
    }

    /// Confirmed by the backup and, with a log on disk, on disk.
    fn confirmed(&self) -> u64 {
        let on_disk = self.journal.as_ref().map_or(u64::MAX, |j| j.durable());
        self.safety.confirmed().min(on_disk)
    }

    fn stopping(&self) -> bool {
        Node::stopping(self)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::thread;

    use std::time::Instant;

    use super::super::node::Node;
    use super::super::safety::BackupHealth;
    use super::super::verdict::Refusal;
    use crate::config::BrokerConfig;
    use crate::protocol::{Message, MsgId};

    /// A lone primary whose one worker's channel nobody reads.
    fn primary() -> (Arc<Node>, crossbeam_channel::Receiver<super::Task>) {
        let (worker, jobs) = crossbeam_channel::unbounded();
        let node = Node::idle(vec![worker]);
        assert!(node.state.lock().take_over(None).is_ok());
        (Arc::new(node), jobs)
    }

    #[test]
    fn a_message_a_witnessed_primary_delivered_alone_is_acked_though_a_backup_synced_after() {
        let (worker, _jobs) = crossbeam_channel::unbounded();
        let config = BrokerConfig {
            witness: Some("127.0.0.1:9".into()),
            ..BrokerConfig::fast()
        };
        let node = Node::idle_with(config, vec![worker]);
        assert!(node.state.lock().take_over(None).is_ok());
        let epoch = node.state.lock().epoch;
        node.mandate.begin(epoch, true, None);
        let message = Message {
            id: MsgId {
                publisher: 7,
                seq: 1,
            },
            topic: "t".into(),
            payload: "p".into(),
        };
        let admitted = node.admit(message).unwrap();
        let now = Instant::now;
        // Alone with a witness, the ACK waits for the delivery.
        assert_eq!(
            node.await_safe_until(&admitted, now()),
            Err(Refusal::Undelivered)
        );
        node.clear_delivered(admitted.index, epoch);
        // A backup syncs after the clear: the log it is sent no longer holds the message, so
        // it never confirms it; the delivery still settles the ACK.
        node.safety.set_health(BackupHealth::Up);
        assert_eq!(node.await_safe_until(&admitted, now()), Ok(()));
    }

    #[test]
    fn seed_form_ids_rise_in_the_logs_order_so_none_is_taken_for_a_resend() {
        let (node, _jobs) = primary();
        let (threads, each) = (8, 2_000);
        let publishers: Vec<_> = (0..threads)
            .map(|t| {
                let node = Arc::clone(&node);
                thread::spawn(move || {
                    for i in 0..each {
                        let message = Message {
                            id: MsgId {
                                publisher: 0,
                                seq: 0,
                            },
                            topic: "t".into(),
                            payload: format!("{t}-{i}"),
                        };
                        node.admit_anonymous(message).unwrap();
                    }
                })
            })
            .collect();
        for publisher in publishers {
            publisher.join().unwrap();
        }
        let s = node.state.lock();
        let seqs: Vec<u64> = s.log.pending().map(|(_, m)| m.id.seq).collect();
        assert_eq!(
            seqs.len(),
            threads * each,
            "every publish is new, none a resend"
        );
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "ids rise in log order"
        );
    }
}
