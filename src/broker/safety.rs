//! What the primary knows about its backup's copy of the log: the highest index the backup
//! confirmed, and whether the backup is up, silent or down. The compute worker waits here until
//! a message is safe to process; the ACK's verdict is asked here too, without waiting by the
//! thread that writes a filed ACK (`super::acks`), or waiting by a connection thread that
//! could not file it. Every change of health or generation rings the `acks` thread's alarm.
//!
//! One mutex and one condition variable: every confirmation and every change of health or role
//! wakes every waiter (`notify_all`), and each checks its own condition again. (Waking only the
//! waiters a confirmation covers was measured against this and bought nothing beyond the
//! noise: BENCHMARKS.md, "Speed tricks, measured".)

use std::time::Instant;

use crossbeam_channel::Sender;
use parking_lot::{Condvar, Mutex, MutexGuard};

/// The primary's view of its backup.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BackupHealth {
    /// A replication session is live: messages are safe once confirmed.
    Up,
    /// The backup is not known dead but holds nothing new: it stopped answering (without
    /// `--require-backup` it is declared down after one ping timeout), or it answers and turns
    /// us away, as when strangers hold its slots (never declared down: it is alive, and could
    /// take over with what it holds). ACKs wait for it.
    Silent,
    /// No backup (none configured, refused, or declared dead): the primary runs degraded and
    /// ACKs without replication. A broker starts so.
    #[default]
    Down,
}

impl BackupHealth {
    /// The lower-case name used in STATUS.
    pub fn as_str(self) -> &'static str {
        match self {
            BackupHealth::Up => "up",
            BackupHealth::Silent => "silent",
            BackupHealth::Down => "down",
        }
    }
}

/// The answer to [`Safety::wait_to_ack`] and [`Safety::wait_replicated`].
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The backup holds the message.
    Replicated,
    /// There is no backup; the message is as safe as it will get.
    Degraded,
    /// The backup is silent and the waiter refuses to wait for it (`--require-backup`).
    BackupSilent,
    /// The broker changed role or epoch while waiting; the message is not ours to ACK.
    Interrupted,
    /// The deadline passed.
    TimedOut,
}

#[derive(Debug, Default)]
struct Inner {
    confirmed: u64,
    sent: u64,
    unconfirmed_since: Option<Instant>,
    health: BackupHealth,
    generation: u64,
    /// Rung (never blocking) at every change of health or generation: the thread that answers
    /// filed ACKs on such changes (`super::acks`).
    alarm: Option<Sender<()>>,
}

/// The confirmed watermark and backup health, and the threads waiting on them.
#[derive(Debug)]
pub struct Safety {
    inner: Mutex<Inner>,
    /// Signalled, to all, whenever anything a waiter checks changes.
    changed: Condvar,
    /// `--require-backup`: an ACK is refused while the backup is silent.
    require_backup: bool,
}

impl Safety {
    /// Starts with no backup; `require_backup` refuses ACKs while the backup is silent.
    pub fn new(require_backup: bool) -> Self {
        Safety {
            require_backup,
            inner: Mutex::default(),
            changed: Condvar::new(),
        }
    }

    /// What a backup we cannot hear counts as: `Silent` (ACKs wait for it) under
    /// `--require-backup`, `Down` (the primary ACKs alone) otherwise.
    pub fn unheard(&self) -> BackupHealth {
        if self.require_backup {
            BackupHealth::Silent
        } else {
            BackupHealth::Down
        }
    }

    /// A stamp that the waits compare to notice a role change.
    pub fn generation(&self) -> u64 {
        self.inner.lock().generation
    }

    /// Wakes every waiter and makes them return [`Verdict::Interrupted`] (role or epoch
    /// changed); the backup's state starts again as `health`.
    pub fn interrupt(&self, health: BackupHealth) {
        let mut inner = self.inner.lock();
        inner.generation += 1;
        self.change_health(inner, health);
    }

    /// Rings `alarm` at every later change of health or generation.
    pub fn watch(&self, alarm: Sender<()>) {
        self.inner.lock().alarm = Some(alarm);
    }

    /// A connection thread waits to ACK the message at `index`: until the backup holds it
    /// ([`Verdict::Replicated`]), is down ([`Verdict::Degraded`]) or, under
    /// `--require-backup`, silent ([`Verdict::BackupSilent`]); until the role changes
    /// (`generation` differs) or `deadline` passes.
    pub fn wait_to_ack(&self, index: u64, generation: u64, deadline: Instant) -> Verdict {
        self.wait(index, generation, Some(deadline), self.require_backup)
    }

    /// The compute worker waits until the message at `index` is replicated, or the backup is
    /// declared down, or the role changes: the message is processed only once it is safe.
    pub fn wait_replicated(&self, index: u64, generation: u64) -> Verdict {
        self.wait(index, generation, None, false)
    }

    /// With `refuse_silent` a silent backup ends the wait at once; without it the wait goes on
    /// until the backup answers or is declared down.
    fn wait(
        &self,
        index: u64,
        generation: u64,
        deadline: Option<Instant>,
        refuse_silent: bool,
    ) -> Verdict {
        let mut inner = self.inner.lock();
        loop {
            if inner.generation != generation {
                return Verdict::Interrupted;
            }
            match inner.health {
                BackupHealth::Down => return Verdict::Degraded,
                BackupHealth::Silent if refuse_silent => return Verdict::BackupSilent,
                _ if inner.confirmed >= index => return Verdict::Replicated,
                _ => {}
            }
            match deadline {
                Some(d) if Instant::now() >= d => return Verdict::TimedOut,
                Some(d) => {
                    self.changed.wait_until(&mut inner, d);
                }
                None => self.changed.wait(&mut inner),
            }
        }
    }

    /// The backup's state.
    pub fn health(&self) -> BackupHealth {
        self.inner.lock().health
    }

    /// Records a change of the backup's state and wakes waiters.
    pub fn set_health(&self, health: BackupHealth) {
        self.change_health(self.inner.lock(), health);
    }

    /// The backup's state is `health` from now on, under the lock `inner`: wakes the waiters
    /// and rings the alarm.
    fn change_health(&self, mut inner: MutexGuard<'_, Inner>, health: BackupHealth) {
        inner.health = health;
        // A new state starts a new session: nothing it sent is outstanding yet. (After a role
        // change no session is live; the next one starts with `Up`, set here too.)
        inner.sent = inner.confirmed;
        inner.unconfirmed_since = None;
        if let Some(alarm) = &inner.alarm {
            let _ = alarm.try_send(());
        }
        self.changed.notify_all();
    }

    /// Records that REPLICATE lines up to `index` went out.
    pub fn note_sent(&self, index: u64) {
        let mut inner = self.inner.lock();
        inner.sent = inner.sent.max(index);
        if inner.sent > inner.confirmed && inner.unconfirmed_since.is_none() {
            inner.unconfirmed_since = Some(Instant::now());
        }
    }

    /// Records the backup's `REPLICATED|index` and wakes waiters.
    pub fn confirm(&self, index: u64) {
        let mut inner = self.inner.lock();
        inner.confirmed = inner.confirmed.max(index);
        inner.unconfirmed_since = (inner.confirmed < inner.sent).then(Instant::now);
        self.changed.notify_all();
    }

    /// Since when something sent has waited for its confirmation, if anything has.
    pub fn unconfirmed_since(&self) -> Option<Instant> {
        self.inner.lock().unconfirmed_since
    }

    /// The highest index the backup confirmed.
    pub fn confirmed(&self) -> u64 {
        self.inner.lock().confirmed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn waits_for_the_confirmation_while_up() {
        let safety = Arc::new(Safety::new(false));
        safety.set_health(BackupHealth::Up);
        let g = safety.generation();
        let soon = Instant::now() + Duration::from_millis(20);
        assert_eq!(safety.wait_to_ack(1, g, soon), Verdict::TimedOut);
        let s = Arc::clone(&safety);
        let confirmer = std::thread::spawn(move || s.confirm(1));
        assert_eq!(safety.wait_replicated(1, g), Verdict::Replicated);
        confirmer.join().unwrap();
    }

    #[test]
    fn a_confirmation_releases_the_waiters_it_covers_and_keeps_the_others() {
        let safety = Arc::new(Safety::new(false));
        safety.set_health(BackupHealth::Up);
        let g = safety.generation();
        let waiter = |index: u64| {
            let s = Arc::clone(&safety);
            let deadline = Instant::now() + Duration::from_secs(5);
            std::thread::spawn(move || s.wait_to_ack(index, g, deadline))
        };
        let (first, second) = (waiter(1), waiter(2));
        safety.confirm(1);
        assert_eq!(first.join().unwrap(), Verdict::Replicated);
        assert!(!second.is_finished(), "index 2 still waits");
        safety.confirm(2);
        assert_eq!(second.join().unwrap(), Verdict::Replicated);
    }

    #[test]
    fn down_is_degraded_and_strict_refuses_silence() {
        let safety = Arc::new(Safety::new(true));
        let later = Instant::now() + Duration::from_secs(5);
        assert_eq!(safety.wait_to_ack(5, 0, later), Verdict::Degraded);
        safety.set_health(BackupHealth::Silent);
        assert_eq!(safety.wait_to_ack(5, 0, later), Verdict::BackupSilent);
        // The worker does not refuse silence: it waits until the backup is declared down.
        let s = Arc::clone(&safety);
        let waiter = std::thread::spawn(move || s.wait_replicated(5, 0));
        safety.set_health(BackupHealth::Down);
        assert_eq!(waiter.join().unwrap(), Verdict::Degraded);
    }

    #[test]
    fn a_role_change_interrupts_waiters() {
        let safety = Arc::new(Safety::new(false));
        safety.set_health(BackupHealth::Up);
        let g = safety.generation();
        let s = Arc::clone(&safety);
        let waiter = std::thread::spawn(move || s.wait_replicated(9, g));
        safety.interrupt(BackupHealth::Down);
        assert_eq!(waiter.join().unwrap(), Verdict::Interrupted);
    }

    #[test]
    fn tracks_how_long_sends_wait_unconfirmed() {
        let safety = Safety::new(false);
        safety.set_health(BackupHealth::Up);
        assert!(safety.unconfirmed_since().is_none());
        safety.note_sent(3);
        assert!(safety.unconfirmed_since().is_some());
        safety.confirm(3);
        assert!(safety.unconfirmed_since().is_none());
    }
}
