//! The primary's mandate: whether it may act alone — ACK a publish no backup holds, forward a
//! message to subscribers — when a witness watches the pair (`--witness`). Without a witness a
//! primary always may, as the seed's brokers did.
//!
//! A primary may act while someone vouches that no other broker can be primary:
//!
//! - **the witness**: its lease is live (the witness grants no new epoch before it lapses);
//! - **the backup**: it answered one of our heartbeats lately. A backup takes over on silence
//!   only once it has heard nothing from us for a ping timeout, and only with the witness's
//!   grant; so a heartbeat it answered, *sent* at `t`, vouches for us until `t` plus seven
//!   eighths of a ping timeout (the eighth allows for the two clocks' drift, as the witness's
//!   margin does, PROTOCOL.md "Lease arithmetic");
//! - **certain death**: we took over because the old primary's host refused the connection
//!   (or it handed over, or both were backups and we ranked higher). Nobody else is primary,
//!   so we act until the backup or the witness vouches for us instead.
//!
//! When none does, the primary is cut off: it refuses publishes with `ERR|cut off…` and its
//! workers hold their messages until a voucher returns or a newer epoch makes it step down.
//!
//! ```text
//!   [pinger] LEASE ──▶ witness ── LEASED ──▶ leased(epoch, until) ─┐
//!   [repl-reader] PONG to a heartbeat sent at t ──▶ vouched(t) ────┼─▶ Mandate ──▶ may_act()
//!   take_over on certain death ──▶ begin(epoch, alone) ────────────┘     [conn-N] ACK alone?
//!                                                                          [worker-N] forward?
//! ```

use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::protocol::Epoch;

/// What this broker last heard from the witness, for STATUS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WitnessView {
    /// No `--witness`.
    None,
    /// The witness answered the last request.
    Up,
    /// The last request failed or timed out.
    Down,
}

impl WitnessView {
    /// The lower-case name used in STATUS.
    pub fn as_str(self) -> &'static str {
        match self {
            WitnessView::None => "none",
            WitnessView::Up => "up",
            WitnessView::Down => "down",
        }
    }
}

/// A fresh broker's: no reign, no voucher, the witness not heard yet.
#[derive(Debug, Default)]
struct Inner {
    /// The reign the vouchers below are for.
    epoch: Epoch,
    /// Took over on certain death: act until the backup or the witness vouches.
    alone: bool,
    /// The witness's lease ends here, on our clock.
    lease: Option<Instant>,
    /// The backup's last answered heartbeat vouches until here.
    backup: Option<Instant>,
    /// Whether the witness answered the last request.
    witness_up: bool,
}

/// The vouchers of the present reign, and the workers waiting for one.
#[derive(Debug)]
pub struct Mandate {
    witnessed: bool,
    /// How long an answered heartbeat vouches, from its sending.
    heartbeat_term: Duration,
    inner: Mutex<Inner>,
    changed: Condvar,
}

impl Mandate {
    /// With `witnessed` false every check passes. `ping_timeout` is the backup's.
    pub fn new(witnessed: bool, ping_timeout: Duration) -> Mandate {
        Mandate {
            witnessed,
            heartbeat_term: ping_timeout - ping_timeout / 8,
            inner: Mutex::default(),
            changed: Condvar::new(),
        }
    }

    /// A new reign in `epoch`: with `alone` (certain death) it may act at once; with a lease
    /// granted for it, until the lease's end.
    pub fn begin(&self, epoch: Epoch, alone: bool, lease: Option<Instant>) {
        let mut inner = self.inner.lock();
        inner.epoch = epoch;
        inner.alone = alone;
        inner.lease = lease;
        inner.backup = None;
        self.changed.notify_all();
    }

    /// The reign ended (we stepped down): nothing vouches any more.
    pub fn end(&self) {
        self.begin(Epoch::default(), false, None);
    }

    /// The witness leased `epoch` until `until`.
    pub fn leased(&self, epoch: Epoch, until: Instant) {
        self.vouch(epoch, |inner| &mut inner.lease, until);
    }

    /// The backup of `epoch` answered a heartbeat we sent at `sent`.
    pub fn vouched(&self, epoch: Epoch, sent: Instant) {
        self.vouch(epoch, |inner| &mut inner.backup, sent + self.heartbeat_term);
    }

    /// A voucher for `epoch` until `until`; it replaces the licence of certain death.
    fn vouch(&self, epoch: Epoch, voucher: fn(&mut Inner) -> &mut Option<Instant>, until: Instant) {
        let mut inner = self.inner.lock();
        if inner.epoch == epoch {
            let voucher = voucher(&mut inner);
            *voucher = (*voucher).max(Some(until));
            inner.alone = false;
            self.changed.notify_all();
        }
    }

    /// Whether a witness watches the pair (`--witness`).
    pub fn witnessed(&self) -> bool {
        self.witnessed
    }

    /// Whether the primary may act alone now.
    pub fn may_act(&self) -> bool {
        self.live(&self.inner.lock())
    }

    /// Waits at most `timeout` for a voucher to come; whether one vouches now.
    pub fn wait(&self, timeout: Duration) -> bool {
        let mut inner = self.inner.lock();
        if !self.live(&inner) {
            let _ = self.changed.wait_for(&mut inner, timeout);
        }
        self.live(&inner)
    }

    fn live(&self, inner: &Inner) -> bool {
        let now = Some(Instant::now());
        !self.witnessed || inner.alone || inner.lease > now || inner.backup > now
    }

    /// Records whether the witness answered.
    pub fn set_witness(&self, up: bool) {
        self.inner.lock().witness_up = up;
    }

    /// The witness as last heard, and how long the witness's lease has left.
    pub fn witness(&self) -> (WitnessView, Duration) {
        let inner = self.inner.lock();
        let now = Instant::now();
        let left = inner.lease.unwrap_or(now).saturating_duration_since(now);
        let view = match (self.witnessed, inner.witness_up) {
            (false, _) => WitnessView::None,
            (true, true) => WitnessView::Up,
            (true, false) => WitnessView::Down,
        };
        (view, left)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const E1: Epoch = Epoch { term: 1, node: 7 };
    const E2: Epoch = Epoch { term: 2, node: 9 };
    const PING_TIMEOUT: Duration = Duration::from_millis(800);

    #[test]
    fn without_a_witness_a_primary_always_may_act() {
        let m = Mandate::new(false, PING_TIMEOUT);
        assert!(m.may_act());
        assert_eq!(m.witness().0, WitnessView::None);
    }

    #[test]
    fn certain_death_vouches_until_the_backup_or_the_witness_does() {
        let m = Mandate::new(true, PING_TIMEOUT);
        assert!(!m.may_act(), "a fresh broker has no mandate");
        m.begin(E1, true, None);
        assert!(m.may_act());
        // The backup vouches for a heartbeat sent long ago: its word has run out, and it
        // replaced the licence of certain death.
        m.vouched(E1, Instant::now() - PING_TIMEOUT);
        assert!(!m.may_act());
    }

    #[test]
    fn a_heartbeat_vouches_for_seven_eighths_of_a_ping_timeout_from_its_sending() {
        let m = Mandate::new(true, PING_TIMEOUT);
        m.begin(E1, false, None);
        let now = Instant::now();
        m.vouched(E1, now - Duration::from_millis(650));
        assert!(m.may_act(), "650 ms ago is within 700 ms");
        m.vouched(E1, now - Duration::from_millis(710));
        assert!(m.may_act(), "an older voucher never shortens a newer one");
        let m = Mandate::new(true, PING_TIMEOUT);
        m.begin(E1, false, None);
        m.vouched(E1, now - Duration::from_millis(710));
        assert!(!m.may_act());
    }

    #[test]
    fn a_lease_vouches_until_its_end_and_only_for_its_epoch() {
        let m = Mandate::new(true, PING_TIMEOUT);
        m.begin(E2, false, None);
        m.leased(E1, Instant::now() + Duration::from_secs(5));
        assert!(!m.may_act(), "a late answer for an older reign");
        m.leased(E2, Instant::now() + Duration::from_secs(5));
        assert!(m.may_act());
        assert!(m.witness().1 > Duration::from_secs(4));
        m.end();
        assert!(!m.may_act());
    }

    #[test]
    fn a_waiting_worker_wakes_when_a_voucher_comes() {
        let m = std::sync::Arc::new(Mandate::new(true, PING_TIMEOUT));
        m.begin(E1, false, None);
        let waiter = {
            let m = std::sync::Arc::clone(&m);
            std::thread::spawn(move || m.wait(Duration::from_secs(10)))
        };
        while !waiter.is_finished() {
            m.leased(E1, Instant::now() + Duration::from_secs(5));
            std::thread::yield_now();
        }
        assert!(waiter.join().unwrap());
    }
}
