//! The witness's rules, as a pure state machine, for each pair it serves: who holds the lease,
//! until when, and the highest epoch any broker has shown. Time comes in as an `Instant` argument, never from the
//! system clock, so the tests drive it with a fake clock and never sleep; the server passes
//! `Instant::now()` taken after it read the request.
//!
//! The rules ([`Leases::renew`], [`Leases::claim`]):
//!
//! 1. **At most one holder.** The lease belongs to one epoch (and so one broker: an epoch's node
//!    is the broker that started it) at a time. A claim or registration while another broker's
//!    lease is live gets `HELD` with the time it has left.
//! 2. **No grant before the lapse.** A new epoch is granted only once the holder's lease has
//!    lapsed on the witness's clock: `lease + margin` after the witness *received* the holder's
//!    last renewal. The holder counts its `lease` from when it *sent* that renewal, which was
//!    earlier, and without the margin, so its lease ends first (the arithmetic is in
//!    PROTOCOL.md, "Lease arithmetic").
//! 3. **Epochs only go up.** A grant is the next epoch after the highest the witness has seen,
//!    from any broker, in any request; a renewal from an older epoch is `FENCED` with the newer
//!    one. A line lifts the highest epoch past [`Epoch::CEILING`] by one term at most, and no
//!    epoch without a next is accepted or granted ([`Epoch::may_adopt`]), so a stranger's line
//!    never leaves the witness unable to grant, and nothing wraps.
//! 4. **Registration.** A broker that took over on certain death (its peer refused the
//!    connection) did so without the witness; it registers its epoch with `LEASE`. The witness
//!    raises its highest epoch to it at once, which fences the old holder's next renewal, but
//!    leases it only once the old holder's lease has lapsed.
//! 5. **A restarted witness knows nothing.** For `lease + margin` after it starts it grants and
//!    leases nothing (`RESTARTING`), so every lease it granted before it stopped has lapsed
//!    first; it still learns the epochs it is shown. Then the primary re-registers.
//!
//! One witness arbitrates for many pairs (as one quorum device serves many clusters):
//! `Pairs` keeps one set of these rules per pair name, so no pair's epochs or lease ever
//! touch another's. Every pair's rules count from the witness's start: a pair first heard of
//! long after it started has no restart wait, since the witness never granted it a lease it
//! forgot. The number of pairs is bounded; when the table is full, a pair that has been silent
//! for longer than a lease (so holds none) makes room, which is no worse for it than a restart
//! of the witness; a pair that still holds a lease is never forgotten.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use log::{debug, info, warn};

use super::protocol::{Held, Pair, Reply, ms_up};
use crate::protocol::{Epoch, Heard};

/// How often a primary renews its lease: every ping interval, and at least twice per lease,
/// so that one lost renewal (retried at once, within a ping timeout) never costs the lease.
///
/// ```
/// use std::time::Duration;
/// use edgebroker::witness::lease::renew_interval;
///
/// let ms = Duration::from_millis;
/// assert_eq!(renew_interval(ms(1000), ms(2000)), ms(1000)); // the defaults
/// assert_eq!(renew_interval(ms(1000), ms(600)), ms(300)); // a witness with short leases
/// ```
pub fn renew_interval(ping_interval: Duration, lease: Duration) -> Duration {
    ping_interval.min(lease / 2)
}

/// The broker holding the lease, and when its lease lapses on the witness's side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Holder {
    /// The epoch leased; its `node` is the holder.
    pub epoch: Epoch,
    /// When the lease lapses, as time since the witness started.
    lapses_at: Duration,
}

/// How many of each decision the witness made, for STATUS.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// New epochs granted (`GRANTED` with a new epoch).
    pub grants: u64,
    /// Renewals of the holder's lease (`LEASED` to the holder).
    pub renewals: u64,
    /// Epochs leased while nobody held the lease: a takeover on certain death, a primary after
    /// the witness restarted, a primary whose lease lapsed while the witness was out of reach.
    pub registrations: u64,
    /// Requests answered `HELD`: another broker holds the lease.
    pub held: u64,
    /// Renewals from a stale epoch (`FENCED`).
    pub fenced: u64,
}

/// The witness's whole memory. Every method takes the time of the request.
#[derive(Clone, Debug)]
pub struct Leases {
    /// How long a primary may act after it sent a renewal (it counts on its own clock).
    lease: Duration,
    /// What the witness adds on its side, for clock drift (PROTOCOL.md, "Lease arithmetic").
    margin: Duration,
    /// When the witness started: every time below is counted from it, in `Duration`s, whose
    /// sums saturate instead of overflowing.
    origin: Instant,
    /// The highest epoch any broker has shown the witness, or that it granted.
    seen: Epoch,
    holder: Option<Holder>,
    counters: Counters,
}

/// What STATUS shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// The highest epoch the witness has seen or granted.
    pub epoch: Epoch,
    /// The epoch whose lease is live, if one is.
    pub holder: Option<Epoch>,
    /// How long the live lease has left on the witness's side, margin included.
    pub lease_left: Duration,
    /// How long a restarted witness still waits before it grants or leases anything.
    pub restart_wait: Duration,
    /// The lease a primary gets.
    pub lease: Duration,
    /// The witness's margin.
    pub margin: Duration,
    /// The decisions so far.
    pub counters: Counters,
}

impl Leases {
    /// A witness that starts at `now` knowing nothing, granting `lease` with `margin` on its
    /// side. It waits `lease + margin` before it grants or leases anything.
    pub fn new(lease: Duration, margin: Duration, now: Instant) -> Leases {
        Leases {
            lease,
            margin,
            origin: now,
            seen: Epoch::default(),
            holder: None,
            counters: Counters::default(),
        }
    }

    /// How long a lease lasts on the witness's side: what the primary got, plus the margin.
    pub fn held_for(&self) -> Duration {
        self.lease.saturating_add(self.margin)
    }

    /// `now` as time since the start (zero for an instant before it).
    fn at(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.origin)
    }

    /// What every `LEASE` and `CLAIM` goes through first, at `t`: `epoch`, shown by `node`,
    /// is refused if the witness may not take it as seen ([`Epoch::may_adopt`]; every line it
    /// reads is one anyone may have sent), else taken as seen; then a restarted witness says
    /// how long it still waits. `None`: go on.
    fn refuses(&mut self, epoch: Epoch, node: u32, t: Duration) -> Option<Reply> {
        if let Err(why) = epoch.may_adopt(self.seen, Heard::Told) {
            warn!("{why} (shown by node {node}); refused");
            return Some(Reply::Err(why));
        }
        self.seen = self.seen.max(epoch);
        let wait = self.held_for().saturating_sub(t);
        (!wait.is_zero()).then_some(Reply::Restarting(wait))
    }

    /// The holder whose lease is live at `t`. A lapsed one is forgotten (and logged).
    fn live_holder(&mut self, t: Duration) -> Option<Holder> {
        let Holder { epoch, lapses_at } = self.holder?;
        if lapses_at <= t {
            info!("the lease of epoch {epoch} (node {}) lapsed", epoch.node);
            self.holder = None;
        }
        self.holder
    }

    fn held(&mut self, h: Holder, t: Duration) -> Reply {
        self.counters.held += 1;
        Reply::Held(Held {
            epoch: h.epoch,
            holder: h.epoch.node,
            left: h.lapses_at.saturating_sub(t),
        })
    }

    /// Makes `epoch` the holder from `t` on.
    fn hold(&mut self, epoch: Epoch, t: Duration) {
        self.holder = Some(Holder {
            epoch,
            lapses_at: t.saturating_add(self.held_for()),
        });
        self.seen = self.seen.max(epoch);
    }

    /// `LEASE|<epoch>|<node>`: renews the lease of `epoch`, or registers it.
    pub fn renew(&mut self, epoch: Epoch, node: u32, now: Instant) -> Reply {
        let t = self.at(now);
        if epoch.node != node {
            return Reply::Err(format!(
                "epoch {epoch} was started by node {}, not by node {node}",
                epoch.node
            ));
        }
        let newer = epoch > self.seen;
        if let Some(refused) = self.refuses(epoch, node, t) {
            return refused;
        }
        if epoch < self.seen {
            self.counters.fenced += 1;
            warn!(
                "node {node} renews epoch {epoch}, older than {}: fenced",
                self.seen
            );
            return Reply::Fenced(self.seen);
        }
        match self.live_holder(t) {
            Some(h) if h.epoch == epoch => {
                self.counters.renewals += 1;
                debug!("renewed the lease of epoch {epoch}");
            }
            Some(h) => {
                // A newer epoch, taken over on certain death: it is the highest epoch now,
                // which fences the holder's next renewal, and it gets the lease once the
                // holder's has lapsed.
                if newer {
                    info!(
                        "node {node} registers epoch {epoch} while epoch {} holds the lease; \
                         fencing it",
                        h.epoch
                    );
                }
                return self.held(h, t);
            }
            None => {
                self.counters.registrations += 1;
                info!("node {node} registered epoch {epoch}; it holds the lease");
            }
        }
        self.hold(epoch, t);
        Reply::Leased {
            epoch,
            lease: self.lease,
        }
    }

    /// `CLAIM|<seen>|<node>`: grants `node` the next epoch once nobody else holds the lease.
    /// A claim from the holder itself (its `GRANTED` was lost) gets its grant again.
    pub fn claim(&mut self, seen: Epoch, node: u32, now: Instant) -> Reply {
        let t = self.at(now);
        if let Some(refused) = self.refuses(seen, node, t) {
            return refused;
        }
        let epoch = match self.live_holder(t) {
            Some(h) if h.epoch.node != node => {
                debug!(
                    "node {node} claims, but epoch {} holds the lease; not yet",
                    h.epoch
                );
                return self.held(h, t);
            }
            Some(h) if h.epoch == self.seen => {
                self.counters.renewals += 1;
                debug!("node {node} claims again the epoch {} it holds", h.epoch);
                h.epoch
            }
            // Nobody holds the lease, or only the claimant in an epoch since outdone.
            _ => {
                // The grant must leave a takeover after it, as every epoch a broker adopts does.
                let Some(next) = self.seen.next(node).filter(|e| e.next(node).is_some()) else {
                    return Reply::Err(format!(
                        "epoch term {} is at its limit; no epoch granted after {} could be followed",
                        Epoch::MAX_TERM,
                        self.seen
                    ));
                };
                self.counters.grants += 1;
                info!("granted epoch {next} to node {node}");
                next
            }
        };
        self.hold(epoch, t);
        Reply::Granted {
            epoch,
            lease: self.lease,
        }
    }

    /// The witness's view at `now`.
    pub fn snapshot(&self, now: Instant) -> Snapshot {
        let t = self.at(now);
        let live = self.holder.filter(|h| h.lapses_at > t);
        Snapshot {
            epoch: self.seen,
            holder: live.map(|h| h.epoch),
            lease_left: live.map_or(Duration::ZERO, |h| h.lapses_at.saturating_sub(t)),
            restart_wait: self.held_for().saturating_sub(t),
            lease: self.lease,
            margin: self.margin,
            counters: self.counters,
        }
    }
}

impl Snapshot {
    /// The `key=value` fields of the witness's `STATUS` line.
    pub fn fields(&self) -> Vec<(String, String)> {
        let c = &self.counters;
        let ms = |d: Duration| ms_up(d).to_string();
        let holder = |show: fn(Epoch) -> String| self.holder.map_or("none".into(), show);
        let fields = [
            ("role", "witness".to_string()),
            ("epoch", self.epoch.to_string()),
            ("holder", holder(|e| e.node.to_string())),
            ("holder_epoch", holder(|e| e.to_string())),
            ("lease_left_ms", ms(self.lease_left)),
            ("restart_wait_ms", ms(self.restart_wait)),
            ("lease_ms", ms(self.lease)),
            ("margin_ms", ms(self.margin)),
            ("grants", c.grants.to_string()),
            ("renewals", c.renewals.to_string()),
            ("registrations", c.registrations.to_string()),
            ("held", c.held.to_string()),
            ("fenced", c.fenced.to_string()),
        ];
        fields.map(|(k, v)| (k.to_string(), v)).into()
    }
}

/// One pair's rules, and when it was last heard from.
struct Entry {
    leases: Leases,
    heard: Instant,
}

/// Every pair's rules, by name.
pub(crate) struct Pairs {
    /// The rules of a pair not heard of yet: they count from the witness's start.
    fresh: Leases,
    /// The most pairs remembered at once.
    max: usize,
    pairs: HashMap<Pair, Entry>,
}

impl Pairs {
    /// A witness that starts at `now`, remembering at most `max` pairs.
    pub(crate) fn new(lease: Duration, margin: Duration, now: Instant, max: usize) -> Pairs {
        Pairs {
            fresh: Leases::new(lease, margin, now),
            max: max.max(1),
            pairs: HashMap::new(),
        }
    }

    /// `LEASE` for `pair` ([`Leases::renew`]).
    pub(crate) fn renew(&mut self, pair: &Pair, epoch: Epoch, node: u32, now: Instant) -> Reply {
        self.entry(pair, now)
            .map_or_else(|full| full, |rules| rules.renew(epoch, node, now))
    }

    /// `CLAIM` for `pair` ([`Leases::claim`]).
    pub(crate) fn claim(&mut self, pair: &Pair, seen: Epoch, node: u32, now: Instant) -> Reply {
        self.entry(pair, now)
            .map_or_else(|full| full, |rules| rules.claim(seen, node, now))
    }

    /// `pair`'s view at `now`; a pair never heard of shows what a fresh one would.
    pub(crate) fn snapshot(&self, pair: &Pair, now: Instant) -> Snapshot {
        self.pairs
            .get(pair)
            .map_or(&self.fresh, |e| &e.leases)
            .snapshot(now)
    }

    /// How many pairs the witness remembers.
    pub(crate) fn len(&self) -> usize {
        self.pairs.len()
    }

    /// `pair`'s rules, marked heard at `now`; made (room first, if need be) for a new pair.
    fn entry(&mut self, pair: &Pair, now: Instant) -> Result<&mut Leases, Reply> {
        if !self.pairs.contains_key(pair) {
            if self.pairs.len() >= self.max {
                self.make_room(now)?;
            }
            info!("serving pair '{pair}'");
        }
        let fresh = &self.fresh;
        let entry = self.pairs.entry(pair.clone()).or_insert_with(|| Entry {
            leases: fresh.clone(),
            heard: now,
        });
        entry.heard = entry.heard.max(now);
        Ok(&mut entry.leases)
    }

    /// Forgets the pair silent longest, if it has been silent for longer than a lease and
    /// its margin (so no lease of its is live).
    fn make_room(&mut self, now: Instant) -> Result<(), Reply> {
        let held_for = self.fresh.held_for();
        let quiet = self
            .pairs
            .iter()
            .filter(|(_, e)| now.saturating_duration_since(e.heard) > held_for)
            .filter(|(_, e)| e.leases.snapshot(now).holder.is_none())
            .min_by_key(|(_, e)| e.heard)
            .map(|(pair, _)| pair.clone());
        let Some(pair) = quiet else {
            return Err(Reply::Err(format!(
                "this witness serves {} pairs already, each heard within a lease",
                self.max
            )));
        };
        info!("forgetting pair '{pair}', silent for longer than a lease, to make room");
        self.pairs.remove(&pair);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: Duration = Duration::from_millis(2000);
    const MARGIN: Duration = Duration::from_millis(250);
    const A: u32 = 41277;
    const B: u32 = 90211;

    /// A fake clock: the witness's instants are `start + ms`.
    struct Clock(Instant);

    impl Clock {
        fn at(&self, ms: u64) -> Instant {
            self.0 + Duration::from_millis(ms)
        }
    }

    /// A witness that started at 0 and has waited out its restart (2250 ms).
    fn ready() -> (Leases, Clock) {
        let clock = Clock(Instant::now());
        (Leases::new(LEASE, MARGIN, clock.at(0)), clock)
    }

    /// The first moment the restarted witness answers.
    const READY: u64 = 2250;

    fn epoch(term: u64, node: u32) -> Epoch {
        Epoch { term, node }
    }

    fn granted(reply: Reply) -> Epoch {
        match reply {
            Reply::Granted { epoch, lease } => {
                assert_eq!(lease, LEASE);
                epoch
            }
            other => panic!("expected GRANTED, got {other:?}"),
        }
    }

    fn held_left(reply: Reply) -> (Epoch, u64) {
        match reply {
            Reply::Held(Held {
                epoch,
                holder,
                left,
            }) => {
                assert_eq!(holder, epoch.node);
                (epoch, left.as_millis() as u64)
            }
            other => panic!("expected HELD, got {other:?}"),
        }
    }

    #[test]
    fn a_restarted_witness_waits_a_full_lease_and_margin() {
        let (mut w, clock) = ready();
        for ms in [0, 1000, READY - 1] {
            assert_eq!(
                w.claim(epoch(3, A), B, clock.at(ms)),
                Reply::Restarting(Duration::from_millis(READY - ms)),
                "claim at {ms} ms"
            );
            assert!(matches!(
                w.renew(epoch(3, A), A, clock.at(ms)),
                Reply::Restarting(_)
            ));
        }
        assert_eq!(w.snapshot(clock.at(READY - 1)).holder, None);
        // It learned the epoch meanwhile: the first grant comes after it.
        assert_eq!(
            granted(w.claim(epoch(1, A), B, clock.at(READY))),
            epoch(4, B)
        );
    }

    #[test]
    fn what_a_restarted_witness_learned_fences_a_stale_primary() {
        let (mut w, clock) = ready();
        // The current primary renews during the wait; a stale one comes after it.
        let _ = w.renew(epoch(5, B), B, clock.at(100));
        assert_eq!(
            w.renew(epoch(4, A), A, clock.at(READY)),
            Reply::Fenced(epoch(5, B))
        );
        assert!(matches!(
            w.renew(epoch(5, B), B, clock.at(READY + 1)),
            Reply::Leased { .. }
        ));
        assert_eq!(w.snapshot(clock.at(READY + 1)).counters.registrations, 1);
    }

    #[test]
    fn at_most_one_holder() {
        let (mut w, clock) = ready();
        let first = granted(w.claim(epoch(0, 0), A, clock.at(READY)));
        assert_eq!(first, epoch(1, A));
        // Every other claim while the lease is live is HELD, whatever epoch it has seen.
        for (seen, ms) in [(epoch(0, 0), 1), (epoch(1, A), 500), (epoch(9, B), 2249)] {
            let (holder, _) = held_left(w.claim(seen, B, clock.at(READY + ms)));
            assert_eq!(holder, first, "claim at +{ms} ms");
        }
        assert_eq!(w.snapshot(clock.at(READY + 2249)).holder, Some(first));
    }

    #[test]
    fn no_grant_before_the_lease_lapses_on_the_witness_side() {
        let (mut w, clock) = ready();
        let t0 = READY;
        let a = granted(w.claim(epoch(0, 0), A, clock.at(t0)));
        // A renews 1000 ms later: its lease now lapses at +1000 + 2000 + 250.
        assert!(matches!(
            w.renew(a, A, clock.at(t0 + 1000)),
            Reply::Leased { .. }
        ));
        let (_, left) = held_left(w.claim(a, B, clock.at(t0 + 1500)));
        assert_eq!(left, 1750, "lease + margin after the renewal");
        // Past A's own end (+3000, counted from an earlier send) but inside the margin.
        assert!(matches!(w.claim(a, B, clock.at(t0 + 3249)), Reply::Held(_)));
        let b = granted(w.claim(a, B, clock.at(t0 + 3250)));
        assert_eq!(b, epoch(2, B));
        assert_eq!(w.snapshot(clock.at(t0 + 3250)).counters.grants, 2);
    }

    #[test]
    fn epochs_only_go_up() {
        let (mut w, clock) = ready();
        let mut t = READY;
        let mut last = Epoch::default();
        for (i, seen) in [epoch(0, 0), epoch(7, A), epoch(2, B), epoch(7, B)]
            .into_iter()
            .enumerate()
        {
            let node = if i % 2 == 0 { A } else { B };
            let got = granted(w.claim(seen, node, clock.at(t)));
            assert!(got > last && got > seen, "{got} after {last}, seen {seen}");
            assert_eq!(got.node, node);
            last = got;
            t += 2250; // the lease lapses
        }
        assert_eq!(last, epoch(10, B));
    }

    #[test]
    fn a_renewal_from_a_stale_epoch_is_fenced() {
        let (mut w, clock) = ready();
        let a = granted(w.claim(epoch(0, 0), A, clock.at(READY)));
        let t = READY + 2250;
        let b = granted(w.claim(a, B, clock.at(t)));
        // A comes back from a freeze and renews its old epoch: fenced, even with no live lease.
        assert_eq!(w.renew(a, A, clock.at(t + 1)), Reply::Fenced(b));
        assert_eq!(w.renew(a, A, clock.at(t + 99_999)), Reply::Fenced(b));
        assert_eq!(w.snapshot(clock.at(t + 1)).counters.fenced, 2);
    }

    #[test]
    fn a_renewal_keeps_the_lease_and_lets_it_lapse_without_one() {
        let (mut w, clock) = ready();
        let a = granted(w.claim(epoch(0, 0), A, clock.at(READY)));
        for i in 1..=10 {
            assert_eq!(
                w.renew(a, A, clock.at(READY + i * 1000)),
                Reply::Leased {
                    epoch: a,
                    lease: LEASE
                }
            );
        }
        let last = READY + 10_000;
        let (_, left) = held_left(w.claim(a, B, clock.at(last + 2000)));
        assert_eq!(left, 250);
        // A renewal after the lapse, with nobody else in between, registers again.
        assert!(matches!(
            w.renew(a, A, clock.at(last + 5000)),
            Reply::Leased { .. }
        ));
        assert_eq!(w.snapshot(clock.at(last + 5000)).counters.registrations, 1);
    }

    #[test]
    fn a_takeover_on_certain_death_registers_once_the_old_lease_lapses() {
        let (mut w, clock) = ready();
        let a = granted(w.claim(epoch(0, 0), A, clock.at(READY)));
        // A's process died at once; B saw a refused connection and took over without the
        // witness, in the epoch after A's.
        let b = a.next(B).expect("room for a next epoch");
        let (holder, left) = held_left(w.renew(b, B, clock.at(READY + 10)));
        assert_eq!((holder, left), (a, 2240), "A's lease is still live here");
        // B's registration fenced A: were A alive after all, its next renewal stops it.
        assert_eq!(w.renew(a, A, clock.at(READY + 20)), Reply::Fenced(b));
        assert_eq!(w.snapshot(clock.at(READY + 20)).epoch, b);
        assert!(matches!(
            w.renew(b, B, clock.at(READY + 2250)),
            Reply::Leased { .. }
        ));
        // And the next claim follows B's epoch, never A's.
        let c = granted(w.claim(a, A, clock.at(READY + 4500)));
        assert_eq!(c, epoch(3, A));
    }

    #[test]
    fn a_lost_grant_is_granted_again_to_the_same_claimant() {
        let (mut w, clock) = ready();
        let b = granted(w.claim(epoch(4, A), B, clock.at(READY)));
        assert_eq!(granted(w.claim(epoch(4, A), B, clock.at(READY + 100))), b);
        // The retry renewed the lease.
        let (_, left) = held_left(w.claim(b, A, clock.at(READY + 200)));
        assert_eq!(left, 2150);
    }

    #[test]
    fn a_broker_cannot_lease_an_epoch_another_started() {
        let (mut w, clock) = ready();
        assert!(matches!(
            w.renew(epoch(3, A), B, clock.at(READY)),
            Reply::Err(_)
        ));
        assert_eq!(w.snapshot(clock.at(READY)).holder, None);
    }

    #[test]
    fn nothing_is_granted_or_taken_as_seen_that_no_takeover_could_follow() {
        let (mut w, clock) = ready();
        // A stranger's CLAIM or LEASE at the last term is refused and teaches nothing.
        let last = epoch(Epoch::MAX_TERM, A);
        assert!(matches!(w.claim(last, B, clock.at(READY)), Reply::Err(_)));
        assert!(matches!(w.renew(last, A, clock.at(READY)), Reply::Err(_)));
        assert_eq!(w.snapshot(clock.at(READY)).epoch, Epoch::default());
        assert_eq!(
            granted(w.claim(epoch(0, 0), B, clock.at(READY))),
            epoch(1, B)
        );
        // At the last term but one, a grant would leave no takeover after it: none is made.
        w.seen = epoch(Epoch::MAX_TERM - 1, A);
        let t = READY + 2250;
        assert!(matches!(w.claim(w.seen, B, clock.at(t)), Reply::Err(_)));
        assert_eq!(w.snapshot(clock.at(t)).holder, None);
    }

    #[test]
    fn a_line_lifts_the_highest_epoch_past_the_ceiling_by_one_term_at_most() {
        let (mut w, clock) = ready();
        let jump = epoch(Epoch::CEILING + 1, A);
        assert!(matches!(w.claim(jump, B, clock.at(READY)), Reply::Err(_)));
        assert!(matches!(w.renew(jump, A, clock.at(READY)), Reply::Err(_)));
        assert_eq!(w.snapshot(clock.at(READY)).epoch, Epoch::default());
        // Up to the ceiling a line is believed, as without a secret it must be; the witness
        // grants on from there, and a takeover on certain death registers one term past it.
        let b = granted(w.claim(epoch(Epoch::CEILING, A), B, clock.at(READY)));
        assert_eq!(b, epoch(Epoch::CEILING + 1, B));
        let c = b.next(A).expect("a granted epoch has a next");
        assert!(matches!(
            w.renew(c, A, clock.at(READY + 2250)),
            Reply::Leased { .. }
        ));
        assert!(matches!(
            w.renew(epoch(c.term + 2, A), A, clock.at(READY + 2251)),
            Reply::Err(_)
        ));
        assert_eq!(w.snapshot(clock.at(READY + 2251)).epoch, c);
    }

    #[test]
    fn status_fields_show_the_holder_and_the_time_left() {
        let (mut w, clock) = ready();
        let a = granted(w.claim(epoch(0, 0), A, clock.at(READY)));
        let fields = w.snapshot(clock.at(READY + 750)).fields();
        let get = |k: &str| {
            fields
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("role"), Some("witness"));
        assert_eq!(get("epoch"), Some(a.to_string().as_str()));
        assert_eq!(get("holder"), Some(A.to_string().as_str()));
        assert_eq!(get("lease_left_ms"), Some("1500"));
        assert_eq!(get("restart_wait_ms"), Some("0"));
        assert_eq!(get("grants"), Some("1"));
        let lapsed = w.snapshot(clock.at(READY + 2250)).fields();
        assert!(lapsed.contains(&("holder".into(), "none".into())));
    }
}

#[cfg(test)]
mod pairs_tests {
    use super::*;

    const LEASE: Duration = Duration::from_millis(2000);
    const MARGIN: Duration = Duration::from_millis(250);
    const WAIT: Duration = Duration::from_millis(2250);
    const A: u32 = 41277;
    const B: u32 = 90211;

    fn pair(name: &str) -> Pair {
        name.parse().unwrap()
    }

    fn epoch(term: u64, node: u32) -> Epoch {
        Epoch { term, node }
    }

    /// A witness past its restart wait.
    fn ready(max: usize) -> (Pairs, Instant) {
        let start = Instant::now();
        (Pairs::new(LEASE, MARGIN, start, max), start + WAIT)
    }

    #[test]
    fn two_pairs_hold_their_own_leases_and_epochs() {
        let (mut w, t) = ready(8);
        let (north, south) = (pair("north"), pair("south"));
        assert!(matches!(
            w.renew(&north, epoch(7, A), A, t),
            Reply::Leased { .. }
        ));
        // South's primary, in an older epoch than north's, is not fenced by it, nor held.
        assert!(matches!(
            w.renew(&south, epoch(2, B), B, t),
            Reply::Leased { .. }
        ));
        // South's backup claims once south's lease lapsed, whatever north holds.
        let later = t + WAIT + Duration::from_millis(1);
        assert!(matches!(
            w.renew(&north, epoch(7, A), A, later),
            Reply::Leased { .. }
        ));
        assert_eq!(
            w.claim(&south, epoch(2, B), 5, later),
            Reply::Granted {
                epoch: epoch(3, 5),
                lease: LEASE
            }
        );
        assert_eq!(w.snapshot(&north, later).holder, Some(epoch(7, A)));
        assert_eq!(w.snapshot(&south, later).holder, Some(epoch(3, 5)));
        assert_eq!(w.len(), 2);
    }

    #[test]
    fn a_pair_first_heard_after_the_restart_wait_does_not_wait_again() {
        let (mut w, t) = ready(8);
        let late = pair("late");
        assert_eq!(w.snapshot(&late, t).restart_wait, Duration::ZERO);
        assert!(matches!(
            w.claim(&late, Epoch::default(), A, t),
            Reply::Granted { .. }
        ));
        // While the witness itself is fresh, every pair waits.
        let start = Instant::now();
        let mut fresh = Pairs::new(LEASE, MARGIN, start, 8);
        assert!(matches!(
            fresh.claim(&late, Epoch::default(), A, start),
            Reply::Restarting(_)
        ));
    }

    #[test]
    fn a_full_table_forgets_only_a_pair_silent_for_longer_than_a_lease() {
        let (mut w, t) = ready(2);
        let (a, b, c) = (pair("a"), pair("b"), pair("c"));
        w.renew(&a, epoch(1, A), A, t);
        w.renew(&b, epoch(1, B), B, t + Duration::from_millis(10));
        // Both heard within a lease: no room.
        let soon = t + Duration::from_millis(100);
        let full = w.claim(&c, Epoch::default(), 9, soon);
        assert!(
            matches!(&full, Reply::Err(why) if why.contains("serves 2 pairs")),
            "{full:?}"
        );
        // B keeps renewing; A falls silent: once A's lease lapsed, A makes room, not B.
        let mut now = soon;
        while now < t + WAIT + Duration::from_millis(20) {
            now += Duration::from_millis(500);
            assert!(matches!(
                w.renew(&b, epoch(1, B), B, now),
                Reply::Leased { .. }
            ));
        }
        assert!(matches!(
            w.claim(&c, Epoch::default(), 9, now),
            Reply::Granted { .. }
        ));
        assert_eq!(w.snapshot(&b, now).holder, Some(epoch(1, B)));
        assert_eq!(w.snapshot(&a, now).holder, None, "forgotten");
        assert_eq!(w.len(), 2);
    }
}
