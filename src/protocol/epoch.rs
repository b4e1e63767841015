//! The epoch and its rules: how epochs order, count up and are written, and which ones a
//! broker or the witness may adopt.

use std::fmt;
use std::str::FromStr;

use super::ParseError;
use super::fields::number;

/// A reign of one primary. Every takeover starts a new epoch with a higher `term`; the `node`
/// of the broker that started it breaks ties, so two brokers can never hold the same epoch.
/// Epochs order by term first, then node. Written `term.node` on the wire, e.g. `3.2718`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Epoch {
    /// Incremented by each takeover.
    pub term: u64,
    /// The node id of the broker that took over.
    pub node: u32,
}

impl Epoch {
    /// The highest term a line may carry: 2^48 takeovers, far beyond any that could happen (a
    /// takeover a millisecond for 8,900 years), and far from `u64::MAX`, so counting up can
    /// never wrap. A line carrying a higher term is refused.
    pub const MAX_TERM: u64 = 1 << 48;

    /// The terms kept above [`Epoch::CEILING`]: 2^47. A line anyone may have sent lifts an epoch
    /// at most to the ceiling in one go, and past it by one term at most, as a takeover does; so
    /// using up the headroom takes 2^47 lines or takeovers — over four years at a million a
    /// second — and no one line can leave a pair in an epoch no takeover could follow.
    pub const HEADROOM: u64 = 1 << 47;

    /// The highest term a line anyone may have sent can lift a broker or the witness to at
    /// once: [`Epoch::MAX_TERM`] less [`Epoch::HEADROOM`].
    pub const CEILING: u64 = Epoch::MAX_TERM - Epoch::HEADROOM;

    /// The epoch a broker that takes over after seeing `self` starts; `None` once the term
    /// reached [`Epoch::MAX_TERM`].
    pub fn next(self, node: u32) -> Option<Epoch> {
        let term = self.term.saturating_add(1);
        (term <= Epoch::MAX_TERM).then_some(Epoch { term, node })
    }

    /// Whether a broker or the witness, `known` the newest epoch it knows, may adopt `self`
    /// (step down into it, follow it, record it as seen), met as `heard`; `Err` says why not,
    /// in words that start with `epoch `. An epoch no takeover could follow is never adopted,
    /// and a line anyone may have sent ([`Heard::Told`]) lifts what one knows past
    /// [`Epoch::CEILING`] by one term at most.
    ///
    /// ```
    /// use edgebroker::protocol::{Epoch, Heard};
    ///
    /// let known = Epoch { term: 3, node: 1 };
    /// let at = |term| Epoch { term, node: 2 };
    /// assert!(at(Epoch::CEILING).may_adopt(known, Heard::Told).is_ok());
    /// assert!(at(Epoch::CEILING + 1).may_adopt(known, Heard::Told).is_err());
    /// assert!(at(Epoch::CEILING + 1).may_adopt(known, Heard::Answered).is_ok());
    /// assert!(at(Epoch::MAX_TERM).may_adopt(known, Heard::Answered).is_err());
    /// ```
    pub fn may_adopt(self, known: Epoch, heard: Heard) -> Result<(), String> {
        if self <= known {
            return Ok(());
        }
        if self.next(self.node).is_none() {
            return Err(format!(
                "epoch {self} is at the last term: no takeover could follow it"
            ));
        }
        if heard == Heard::Told
            && self.term > Epoch::CEILING
            && self.term > known.term.saturating_add(1)
        {
            return Err(format!(
                "epoch {self} is past term {} and more than one takeover past {known}",
                Epoch::CEILING
            ));
        }
        Ok(())
    }
}

/// Where an epoch was met, which bounds how far it may lift what a broker or the witness knows
/// ([`Epoch::may_adopt`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Heard {
    /// In a request: without `--secret`, anyone who can connect may have sent it.
    Told,
    /// In an answer from the peer or the witness we dialled: an epoch it holds, granted or
    /// knows, each adopted by these same rules or started by a takeover.
    Answered,
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.term, self.node)
    }
}

impl FromStr for Epoch {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, ParseError> {
        let (term, node) = s
            .split_once('.')
            .ok_or_else(|| format!("bad epoch '{s}' (want term.node)"))?;
        let term = number(term, "epoch term")?;
        if term > Epoch::MAX_TERM {
            return Err(format!("epoch term {term} is beyond any a broker can reach").into());
        }
        let node = number(node, "epoch node")?;
        Ok(Epoch { term, node })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_order_by_term_then_node() {
        let a = Epoch { term: 1, node: 9 };
        let b = Epoch { term: 2, node: 1 };
        assert!(a < b);
        assert!(Epoch { term: 2, node: 2 } > b);
        assert_eq!(a.next(5), Some(Epoch { term: 2, node: 5 }));
        let last = Epoch {
            term: Epoch::MAX_TERM,
            node: 1,
        };
        assert_eq!(
            last.next(5),
            None,
            "counting up past the limit is refused, never wrapped"
        );
        assert_eq!("2.1".parse::<Epoch>().unwrap(), b);
    }

    #[test]
    fn no_epoch_without_a_next_is_adopted_and_a_stranger_climbs_one_term_past_the_ceiling() {
        let at = |term| Epoch { term, node: 2 };
        let known = Epoch { term: 7, node: 1 };
        for heard in [Heard::Told, Heard::Answered] {
            assert!(at(Epoch::MAX_TERM).may_adopt(known, heard).is_err());
            assert!(at(Epoch::CEILING).may_adopt(known, heard).is_ok());
            assert!(
                at(3).may_adopt(known, heard).is_ok(),
                "an older epoch lifts nothing"
            );
        }
        let jump = at(Epoch::CEILING + 1).may_adopt(known, Heard::Told);
        assert_eq!(
            jump.unwrap_err(),
            format!(
                "epoch {}.2 is past term {} and more than one takeover past 7.1",
                Epoch::CEILING + 1,
                Epoch::CEILING
            )
        );
        // Past the ceiling a line lifts one term, as a takeover does, up to the last but one.
        for term in [
            Epoch::CEILING,
            Epoch::CEILING + 1,
            Epoch::MAX_TERM - 2,
            Epoch::MAX_TERM - 1,
        ] {
            let known = Epoch { term, node: 1 };
            for heard in [Heard::Told, Heard::Answered] {
                let next = known.next(2).expect("a known epoch has a next");
                let adopted = next.may_adopt(known, heard).is_ok();
                assert_eq!(adopted, next.next(2).is_some(), "{next} after {known}");
                assert!(at(term + 2).may_adopt(known, Heard::Told).is_err());
            }
        }
        assert!(
            at(Epoch::MAX_TERM)
                .may_adopt(at(Epoch::MAX_TERM - 1), Heard::Told)
                .unwrap_err()
                .starts_with("epoch ")
        );
    }
}
