//! Who may hold a listener's connection slots: the rules, with no sockets and no clock, so
//! that they can be tested alone. The broker and the witness each keep one [`Slots`] under a
//! mutex and ask it at every accept.
//!
//! A listener has `open` slots for anyone and `reserved` slots for the one kind of caller it
//! must never lose (the peer broker, or the brokers at a witness). A connection that still has
//! something to prove (authentication, or a peer verb in a reserved slot) is *unproven*. The
//! rules:
//!
//! 1. A newcomer takes a free open slot; when none is free, a free reserved slot, where it must
//!    prove itself.
//! 2. When every slot is taken, the newcomer takes the slot of an unproven holder, who is hung
//!    up on: the oldest holder of the *source* (an IPv4 address, or an IPv6 /64) that holds the
//!    most unproven slots, the newcomer counted with its own source. A stranger who keeps
//!    dialling only ever pushes out its own connections, and a peer dialling from another
//!    address is never pushed out by it; from the same address, the peer has until as many
//!    newcomers arrive as there are unproven slots to prove itself.
//! 3. With no unproven holder, the newcomer is refused.
//!
//! A proven holder is never pushed out, so unproven connections can never keep out a caller
//! that can prove itself for longer than its handshake takes.

use std::collections::HashMap;
use std::net::IpAddr;

/// The kind of slot a connection holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slot {
    /// One of the slots anyone may take (`--max-connections`).
    Open,
    /// One of the slots kept for the peer: its holder must prove itself.
    Reserved,
}

/// What a newcomer gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// A slot; `evicted` is the holder it was taken from, to hang up on.
    Granted { slot: Slot, evicted: Option<u64> },
    /// Every slot is held by a connection that proved itself.
    Refused,
}

/// Where a connection comes from, as far as fairness goes: IPv4 addresses one by one, IPv6
/// by /64 (one host usually has a whole /64).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Source(IpAddr);

impl Source {
    pub fn of(ip: IpAddr) -> Source {
        Source(match ip.to_canonical() {
            IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) & u128::MAX << 64).into()),
            v4 => v4,
        })
    }
}

/// The slots of one listener and who holds them.
#[derive(Debug)]
pub struct Slots {
    open: usize,
    reserved: usize,
    /// Every holder's slot, by connection key.
    held: HashMap<u64, Slot>,
    open_held: usize,
    /// The holders that have yet to prove themselves, oldest first.
    unproven: Vec<(u64, Source)>,
}

impl Slots {
    pub fn new(open: usize, reserved: usize) -> Slots {
        Slots {
            open,
            reserved,
            held: HashMap::new(),
            open_held: 0,
            unproven: Vec::new(),
        }
    }

    /// A newcomer `key` from `source`; `prove_open` says whether a holder of an open slot
    /// has something to prove too (a client secret is set).
    pub fn admit(&mut self, key: u64, source: Source, prove_open: bool) -> Admission {
        let (slot, evicted) = if self.open_held < self.open {
            self.open_held += 1;
            (Slot::Open, None)
        } else if self.held.len() - self.open_held < self.reserved {
            (Slot::Reserved, None)
        } else if let Some(victim) = self.victim(source) {
            let (victim, _) = self.unproven.remove(victim);
            let slot = self.held.remove(&victim).unwrap_or(Slot::Reserved);
            (slot, Some(victim))
        } else {
            return Admission::Refused;
        };
        self.held.insert(key, slot);
        if slot == Slot::Reserved || prove_open {
            self.unproven.push((key, source));
        }
        Admission::Granted { slot, evicted }
    }

    /// `key` proved itself: it keeps its slot for as long as it stays.
    pub fn prove(&mut self, key: u64) {
        self.unproven.retain(|&(k, _)| k != key);
    }

    /// `key` closed (or was hung up on): its slot is free, unless a newcomer has it already.
    pub fn leave(&mut self, key: u64) {
        if self.held.remove(&key) == Some(Slot::Open) {
            self.open_held -= 1;
        }
        self.prove(key);
    }

    /// Whether `key` still holds its slot (a newcomer may have taken it).
    pub fn holds(&self, key: u64) -> bool {
        self.held.contains_key(&key)
    }

    /// Which unproven holder a newcomer from `newcomer` pushes out (rule 2), as an index into
    /// `unproven`: the oldest of the source that holds the most, counting the newcomer.
    fn victim(&self, newcomer: Source) -> Option<usize> {
        let mut counts: HashMap<Source, usize> = HashMap::from([(newcomer, 1)]);
        for (_, source) in &self.unproven {
            *counts.entry(*source).or_default() += 1;
        }
        let most = self.unproven.iter().map(|(_, s)| counts[s]).max()?;
        // `unproven` is oldest first, so the first of a source with the most is the oldest
        // of the sources that tie.
        self.unproven
            .iter()
            .position(|(_, source)| counts[source] == most)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from(last: u8) -> Source {
        Source::of(IpAddr::from([10, 0, 0, last]))
    }

    fn granted(slot: Slot, evicted: Option<u64>) -> Admission {
        Admission::Granted { slot, evicted }
    }

    #[test]
    fn open_slots_first_then_reserved_then_refused_when_all_are_proven() {
        let mut slots = Slots::new(2, 1);
        assert_eq!(slots.admit(1, from(1), false), granted(Slot::Open, None));
        assert_eq!(slots.admit(2, from(1), false), granted(Slot::Open, None));
        assert_eq!(
            slots.admit(3, from(2), false),
            granted(Slot::Reserved, None)
        );
        slots.prove(3);
        assert_eq!(slots.admit(4, from(1), false), Admission::Refused);
        assert_eq!(slots.held.len(), 3);
        // A slot that is left is free again, of its own kind.
        slots.leave(1);
        assert_eq!(slots.admit(5, from(1), false), granted(Slot::Open, None));
        slots.leave(3);
        assert_eq!(
            slots.admit(6, from(1), false),
            granted(Slot::Reserved, None)
        );
    }

    #[test]
    fn a_squatter_only_pushes_out_its_own_connections() {
        // No open slot; four reserved, as the broker keeps for its peer.
        let mut slots = Slots::new(0, 4);
        for key in 1..=3 {
            slots.admit(key, from(9), false);
        }
        // The peer's dial arrives while the squatter holds three.
        assert_eq!(
            slots.admit(5000, from(1), false),
            granted(Slot::Reserved, None)
        );
        // However often the squatter redials, it takes its own oldest slot, never the peer's.
        for key in 4..1000 {
            assert_eq!(
                slots.admit(key, from(9), false),
                granted(Slot::Reserved, Some(key - 3))
            );
        }
        slots.prove(5000);
        assert!(slots.holds(5000) && !slots.holds(1));
        assert_eq!(slots.held.len(), 4);
        assert_eq!(slots.unproven.len(), 3);
    }

    #[test]
    fn the_peer_gets_in_when_squatters_hold_every_slot() {
        let mut slots = Slots::new(2, 2);
        for key in 1..=4 {
            slots.admit(key, from(9), false);
        }
        // Open slots need no proof here, so only the reserved ones can be taken back.
        assert_eq!(
            slots.admit(100, from(1), false),
            granted(Slot::Reserved, Some(3))
        );
        // The squatter's next dial takes its own remaining reserved slot, not the peer's.
        assert_eq!(
            slots.admit(5, from(9), false),
            granted(Slot::Reserved, Some(4))
        );
        // One each now: the squatter's own count, with its newcomer, is the higher.
        assert_eq!(
            slots.admit(6, from(9), false),
            granted(Slot::Reserved, Some(5))
        );
        slots.prove(100);
        assert_eq!(
            slots.admit(7, from(9), false),
            granted(Slot::Reserved, Some(6))
        );
    }

    #[test]
    fn with_a_client_secret_unproven_open_slots_can_be_taken_back() {
        let mut slots = Slots::new(2, 1);
        slots.admit(1, from(9), true);
        slots.admit(2, from(9), true);
        slots.admit(3, from(9), true);
        // A client from elsewhere takes the squatter's oldest slot: an open one.
        assert_eq!(slots.admit(4, from(1), true), granted(Slot::Open, Some(1)));
        slots.prove(4);
        // The one hung up on leaves later: that frees nothing the newcomer holds.
        slots.leave(1);
        assert_eq!(slots.held.len(), 3);
        assert_eq!(slots.admit(5, from(9), true), granted(Slot::Open, Some(2)));
    }

    #[test]
    fn a_source_at_the_same_address_has_until_that_many_newcomers_arrive() {
        let mut slots = Slots::new(0, 4);
        slots.admit(100, from(1), false);
        for key in 1..=3 {
            assert_eq!(
                slots.admit(key, from(1), false),
                granted(Slot::Reserved, None)
            );
        }
        // Oldest first: the fourth newcomer from the same address pushes out the first.
        assert_eq!(
            slots.admit(4, from(1), false),
            granted(Slot::Reserved, Some(100))
        );
    }

    #[test]
    fn ties_between_sources_go_against_the_oldest_holder() {
        let mut slots = Slots::new(0, 3);
        slots.admit(1, from(1), false);
        slots.admit(2, from(2), false);
        slots.admit(3, from(2), false);
        // Source 2 holds the most.
        assert_eq!(
            slots.admit(4, from(3), false),
            granted(Slot::Reserved, Some(2))
        );
        // Now 1, 2 and 3 hold one each: the oldest goes.
        assert_eq!(
            slots.admit(5, from(4), false),
            granted(Slot::Reserved, Some(1))
        );
    }

    #[test]
    fn ipv6_sources_are_counted_by_their_64_bit_prefix() {
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(Source::of(a), Source::of(b));
        assert_ne!(Source::of(a), Source::of(c));
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(Source::of(mapped), from(1));
    }
}
