//! The pairs a witness serves: one set of lease rules ([`Leases`]) per pair name, so that one
//! witness arbitrates for many pairs (as one quorum device serves many clusters) and no
//! pair's epochs or lease ever touch another's. Pure, on an injected clock, like the rules.
//!
//! Every pair's rules count from the witness's start: a pair first heard of long after it
//! started has no restart wait, since the witness never granted it a lease it forgot. The
//! number of pairs is bounded; when the table is full, a pair that has been silent for longer
//! than a lease (so holds none) makes room, which is no worse for it than a restart of the
//! witness; a pair that still holds a lease is never forgotten.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use log::info;

use super::lease::{Leases, Snapshot};
use super::protocol::{Pair, Reply};
use crate::protocol::Epoch;

/// One pair's rules, and when it was last heard from.
struct Entry {
    leases: Leases,
    heard: Instant,
}

/// Every pair's rules, by name.
pub struct Pairs {
    /// The rules of a pair not heard of yet: they count from the witness's start.
    fresh: Leases,
    /// The most pairs remembered at once.
    max: usize,
    pairs: HashMap<Pair, Entry>,
}

impl Pairs {
    /// A witness that starts at `now`, remembering at most `max` pairs.
    pub fn new(lease: Duration, margin: Duration, now: Instant, max: usize) -> Pairs {
        Pairs {
            fresh: Leases::new(lease, margin, now),
            max: max.max(1),
            pairs: HashMap::new(),
        }
    }

    /// `LEASE` for `pair` ([`Leases::renew`]).
    pub fn renew(&mut self, pair: &Pair, epoch: Epoch, node: u32, now: Instant) -> Reply {
        self.entry(pair, now)
            .map_or_else(|full| full, |rules| rules.renew(epoch, node, now))
    }

    /// `CLAIM` for `pair` ([`Leases::claim`]).
    pub fn claim(&mut self, pair: &Pair, seen: Epoch, node: u32, now: Instant) -> Reply {
        self.entry(pair, now)
            .map_or_else(|full| full, |rules| rules.claim(seen, node, now))
    }

    /// `pair`'s view at `now`; a pair never heard of shows what a fresh one would.
    pub fn snapshot(&self, pair: &Pair, now: Instant) -> Snapshot {
        self.pairs
            .get(pair)
            .map_or(&self.fresh, |e| &e.leases)
            .snapshot(now)
    }

    /// How many pairs the witness remembers.
    pub fn len(&self) -> usize {
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
