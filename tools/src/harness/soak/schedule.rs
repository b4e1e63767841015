//! The faults of a soak: their kinds ([`FaultKind`]), which a run can inject, and the seeded
//! draw of each fault's kind, the pause before it and how long it is held.

use std::fmt;
use std::ops::RangeInclusive;
use std::time::Duration;

use edgebroker::error::Result;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use super::SoakConfig;
use crate::harness::failure;

/// A kind of fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FaultKind {
    /// SIGKILL the primary, start it again 1–3 s later.
    KillPrimary,
    /// SIGKILL the backup, start it again 1–3 s later.
    KillBackup,
    /// SIGSTOP the primary for 1–4 s, then SIGCONT.
    StopPrimary,
    /// Cut the link between the brokers for 2–5 s (both still reach every client).
    CutLink,
    /// Cut the primary's host off entirely for 2–5 s.
    IsolatePrimary,
    /// SIGKILL the witness, start it again 1–3 s later (it then grants nothing for a lease
    /// and a margin).
    KillWitness,
    /// Cut the link between the primary and the witness for 2–5 s.
    CutWitnessPrimary,
    /// Cut the link between the backup and the witness for 2–5 s.
    CutWitnessBackup,
    /// Cut the witness's host off entirely (from both brokers) for 2–5 s.
    IsolateWitness,
    /// SIGKILL both brokers at once (a power cut of the pair), start both again 1–3 s later
    /// with the same command lines; each reads its log on disk back, waits out its start-up
    /// grace, and the one with the newer log leads and replays what was ACKed and not yet
    /// delivered.
    KillBoth,
}

impl FaultKind {
    /// Every kind.
    pub const ALL: [FaultKind; 10] = [
        FaultKind::KillPrimary,
        FaultKind::KillBackup,
        FaultKind::StopPrimary,
        FaultKind::CutLink,
        FaultKind::IsolatePrimary,
        FaultKind::KillWitness,
        FaultKind::CutWitnessPrimary,
        FaultKind::CutWitnessBackup,
        FaultKind::IsolateWitness,
        FaultKind::KillBoth,
    ];

    /// Its name on the command line (`soak --only kill-both`).
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::KillPrimary => "kill-primary",
            FaultKind::KillBackup => "kill-backup",
            FaultKind::StopPrimary => "stop-primary",
            FaultKind::CutLink => "cut-link",
            FaultKind::IsolatePrimary => "isolate-primary",
            FaultKind::KillWitness => "kill-witness",
            FaultKind::CutWitnessPrimary => "cut-witness-primary",
            FaultKind::CutWitnessBackup => "cut-witness-backup",
            FaultKind::IsolateWitness => "isolate-witness",
            FaultKind::KillBoth => "kill-both",
        }
    }

    /// The kind with this [`FaultKind::name`].
    pub fn named(name: &str) -> Option<FaultKind> {
        FaultKind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// Whether it needs hosts in network namespaces.
    pub fn needs_network(self) -> bool {
        matches!(
            self,
            FaultKind::CutLink
                | FaultKind::IsolatePrimary
                | FaultKind::CutWitnessPrimary
                | FaultKind::CutWitnessBackup
                | FaultKind::IsolateWitness
        )
    }

    /// Whether it strikes the witness (and so needs a run with one).
    pub fn needs_witness(self) -> bool {
        matches!(
            self,
            FaultKind::KillWitness
                | FaultKind::CutWitnessPrimary
                | FaultKind::CutWitnessBackup
                | FaultKind::IsolateWitness
        )
    }

    /// How long the fault lasts before it is undone, in ms.
    fn hold_ms(self) -> RangeInclusive<u64> {
        match self {
            FaultKind::KillPrimary
            | FaultKind::KillBackup
            | FaultKind::KillWitness
            | FaultKind::KillBoth => 1_000..=3_000,
            FaultKind::StopPrimary => 1_000..=4_000,
            FaultKind::CutLink
            | FaultKind::IsolatePrimary
            | FaultKind::CutWitnessPrimary
            | FaultKind::CutWitnessBackup
            | FaultKind::IsolateWitness => 2_000..=5_000,
        }
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FaultKind::KillPrimary => "kill -9 primary, restart",
            FaultKind::KillBackup => "kill -9 backup, restart",
            FaultKind::StopPrimary => "SIGSTOP primary, SIGCONT",
            FaultKind::CutLink => "cut broker link, heal",
            FaultKind::IsolatePrimary => "cut primary host off, rejoin",
            FaultKind::KillWitness => "kill -9 witness, restart",
            FaultKind::CutWitnessPrimary => "cut primary-witness link, heal",
            FaultKind::CutWitnessBackup => "cut backup-witness link, heal",
            FaultKind::IsolateWitness => "cut witness host off, rejoin",
            FaultKind::KillBoth => "kill -9 both brokers, restart",
        })
    }
}

/// A soak's faults, drawn at random from its seed. Every draw comes from one generator, in the
/// same order whatever the timing, so a seed always gives the same fault kinds, gaps and
/// durations.
pub(super) struct Schedule {
    rng: StdRng,
    /// The kinds this run can inject.
    kinds: Vec<FaultKind>,
    min_gap: Duration,
    max_gap: Duration,
}

impl Schedule {
    /// The faults `config` asks for, of the kinds the run can inject: those needing network
    /// namespaces only with `network_faults`, the witness's only with a witness, and only
    /// those of [`SoakConfig::only`] if it names any. An error if that leaves no kind.
    pub(super) fn new(config: &SoakConfig, network_faults: bool) -> Result<Schedule> {
        let witnessed = config.cluster.witness;
        let kinds: Vec<FaultKind> = FaultKind::ALL
            .into_iter()
            .filter(|k| network_faults || !k.needs_network())
            .filter(|k| witnessed || !k.needs_witness())
            .filter(|k| config.only.is_empty() || config.only.contains(k))
            .collect();
        if kinds.is_empty() {
            let only: Vec<&str> = config.only.iter().map(|k| k.name()).collect();
            return Err(failure(&format!(
                "no fault of the kinds asked for ({}) can be injected here",
                only.join(", ")
            )));
        }
        Ok(Schedule {
            rng: StdRng::seed_from_u64(config.seed),
            kinds,
            min_gap: config.min_gap,
            max_gap: config.max_gap,
        })
    }

    /// The next fault: the pause before it, its kind, and how long it is held.
    pub(super) fn next(&mut self) -> (Duration, FaultKind, Duration) {
        let gap = self
            .rng
            .random_range(self.min_gap.as_millis()..=self.max_gap.as_millis());
        let kind = self.kinds[self.rng.random_range(0..self.kinds.len())];
        let hold = Duration::from_millis(self.rng.random_range(kind.hold_ms()));
        let gap = Duration::from_millis(u64::try_from(gap).unwrap_or(u64::MAX));
        (gap, kind, hold)
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::*;
    use crate::harness::cluster::Programs;

    fn config(witness: bool) -> SoakConfig {
        let mut config = SoakConfig::new(Programs::in_dir(Path::new("bin")), PathBuf::new());
        config.cluster.witness = witness;
        config
    }

    /// The first 50 faults a schedule for `config` draws.
    fn draw(config: &SoakConfig, network: bool) -> Vec<(Duration, FaultKind, Duration)> {
        let mut schedule = Schedule::new(config, network).expect("a kind to draw");
        (0..50).map(|_| schedule.next()).collect()
    }

    #[test]
    fn witness_faults_are_drawn_only_with_a_witness() {
        assert!(FaultKind::ALL.iter().filter(|k| k.needs_witness()).count() == 4);
        assert!(!FaultKind::KillWitness.needs_network());
        assert!(FaultKind::IsolateWitness.needs_network());
        for k in FaultKind::ALL {
            assert!(!k.hold_ms().is_empty(), "{k}");
        }
    }

    #[test]
    fn a_seed_always_draws_the_same_faults_and_only_those_the_run_can_inject() {
        let plain = config(false);
        assert_eq!(draw(&plain, true), draw(&plain, true));
        for (gap, kind, hold) in draw(&plain, false) {
            assert!((plain.min_gap..=plain.max_gap).contains(&gap), "{gap:?}");
            assert!(!kind.needs_network() && !kind.needs_witness(), "{kind}");
            let ms = u64::try_from(hold.as_millis()).unwrap_or(u64::MAX);
            assert!(kind.hold_ms().contains(&ms), "{kind}: {ms} ms");
        }
        let witnessed = draw(&config(true), true);
        assert!(witnessed.iter().any(|(_, kind, _)| kind.needs_witness()));
    }

    #[test]
    fn killing_both_brokers_needs_neither_namespaces_nor_a_witness_and_is_drawn_on_loopback() {
        let both = FaultKind::KillBoth;
        assert!(!both.needs_network() && !both.needs_witness());
        assert_eq!(both.hold_ms(), FaultKind::KillPrimary.hold_ms());
        let local = draw(&config(false), false);
        assert!(local.iter().any(|&(_, kind, _)| kind == both), "{local:?}");
    }

    #[test]
    fn only_the_kinds_asked_for_are_drawn_and_none_that_cannot_be_injected() {
        for k in FaultKind::ALL {
            assert_eq!(FaultKind::named(k.name()), Some(k));
        }
        assert_eq!(FaultKind::named("kill -9 both brokers, restart"), None);
        let mut only = config(false);
        only.only = vec![FaultKind::KillBoth];
        assert!(
            draw(&only, false)
                .iter()
                .all(|&(_, kind, _)| kind == FaultKind::KillBoth)
        );
        only.only = vec![FaultKind::CutLink, FaultKind::KillWitness];
        assert!(Schedule::new(&only, false).is_err());
    }
}
