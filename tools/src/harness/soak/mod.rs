//! The chaos soak: a broker pair, a 10 Hz `test_publisher` and three subscribers (the third
//! restarted every [`SoakConfig::restart_every`]), and N faults drawn at random — seeded, so a
//! run can be repeated — at random moments, each undone after a random while (dead brokers are
//! started again). Between faults the soak waits until the pair is healthy again: one primary
//! with a synced backup, both counting every subscriber.
//!
//! At the end it stops the publisher, lets the subscribers drain, and judges the run
//! ([`super::check`]): every ACKed message printed by every subscriber that stayed up, none
//! twice, in order; the restarted subscriber nothing twice and in order within each run; no
//! epoch claimed by two takeovers (the brokers' logs) and no moment when both brokers said they
//! were primary in one epoch (STATUS, sampled all along); a pair that never became healthy
//! again, and any panic, are violations too. [`SoakReport`]'s `Display` is the summary table.
//!
//! With [`SoakConfig::cluster`]'s `witness` (the `soak --witness` flag), the pair runs with its
//! witness on a fifth host, a healthy pair also means both brokers reach the witness and the
//! primary holds its lease, the faults include the witness's ([`FaultKind::needs_witness`]):
//! killed and restarted, cut off from one broker or from both — and the verdict adds one
//! rule: no broker ACKed a publish alone after the witness had granted a newer epoch
//! ([`super::check::acks_after_newer_grants`], from the brokers' debug logs and the
//! witness's).
//!
//! Every broker keeps a log on disk, synced before each ACK (`--data-dir`, `--fsync always`):
//! a folder per broker in the run's folder, `primary-data/` and `backup-data/`, kept across
//! its restarts. So a restarted broker reads back what it held, and the faults include a
//! power cut of the pair ([`FaultKind::KillBoth`]): both brokers killed at one moment and
//! started again, each waiting out its start-up grace (longer than the subscribers' longest
//! redial backoff, so they are back) before the one with the newer log leads and replays what
//! was ACKed and not yet delivered. The verdict is the same: nothing ACKed may be lost.
//!
//! `soak --only` ([`SoakConfig::only`]) injects only the kinds it names.
//!
//! "Primary" in a fault's name means the broker holding that role when the fault strikes, as
//! STATUS says — not the program that started it.
//!
//! ## Layout
//!
//! | file | its one job |
//! |---|---|
//! | `soak/mod.rs` | what a soak does ([`SoakConfig`]), and the state of one in progress |
//! | `soak/schedule.rs` | the faults: their kinds ([`FaultKind`]) and names (`--only`), and the seeded draw of kind, gap and hold |
//! | `soak/run_loop.rs` | the run: hosts chosen, the cluster started, pauses and faults until the end ([`run`]) |
//! | `soak/inject.rs` | one fault: struck at the role it names, held, undone, the pair healthy again ([`FaultRecord`]) |
//! | `soak/verdict.rs` | the end: the publisher stopped, the subscribers drained, every rule judged ([`WitnessVerdict`]) |
//! | `soak/report.rs` | what a soak found ([`SoakReport`]): its violations, the summary table, the timeline |

mod inject;
mod report;
mod run_loop;
mod schedule;
mod verdict;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;

use super::cluster::{Cluster, ClusterConfig, Programs};

pub use inject::FaultRecord;
pub use report::SoakReport;
pub use run_loop::run;
pub use schedule::FaultKind;
pub use verdict::WitnessVerdict;

/// Where the soak's hosts are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Network namespaces if they can be made here, loopback otherwise.
    Auto,
    /// Network namespaces, or fail.
    Netns,
    /// Loopback ports: only process faults (kill, stop).
    Local,
}

/// What a soak does.
#[derive(Clone, Debug)]
pub struct SoakConfig {
    /// How many faults to inject.
    pub faults: usize,
    /// The seed of every random choice (fault kinds, gaps, durations).
    pub seed: u64,
    /// The shortest pause between a healthy pair and the next fault.
    pub min_gap: Duration,
    /// The longest such pause.
    pub max_gap: Duration,
    /// Where the hosts are.
    pub mode: Mode,
    /// The run's folder, for every program's output and a copy of the programs (`bin/`); it
    /// must exist.
    pub dir: PathBuf,
    /// The programs to run.
    pub programs: Programs,
    /// How the programs run.
    pub cluster: ClusterConfig,
    /// How long the pair may take to be healthy again after a fault.
    pub healthy_deadline: Duration,
    /// How often the third subscriber is restarted.
    pub restart_every: Duration,
    /// The only fault kinds to inject (`soak --only`); empty: every kind the run can inject.
    pub only: Vec<FaultKind>,
}

impl SoakConfig {
    /// The defaults: 10 faults, gaps of 2–6 s, a healthy pair within 30 s, the third
    /// subscriber restarted every 15 s, brokers logging at debug level (the evidence of a
    /// failed run) and keeping a log on disk synced before each ACK (`--fsync always`: what
    /// [`FaultKind::KillBoth`] needs to lose nothing).
    pub fn new(programs: Programs, dir: PathBuf) -> SoakConfig {
        SoakConfig {
            faults: 10,
            seed: 1,
            min_gap: Duration::from_secs(2),
            max_gap: Duration::from_secs(6),
            mode: Mode::Auto,
            dir,
            programs,
            cluster: ClusterConfig {
                topic: "soak".into(),
                log_level: "debug".into(),
                fsync: Some("always".into()),
                ..ClusterConfig::default()
            },
            healthy_deadline: Duration::from_secs(30),
            restart_every: Duration::from_secs(15),
            only: Vec::new(),
        }
    }
}

/// How many subscribers the soak runs; the last one is restarted now and then.
const SUBSCRIBERS: usize = 3;

/// A soak in progress.
struct Soak<'a> {
    cluster: Cluster,
    config: &'a SoakConfig,
    interrupts: &'a Receiver<()>,
    interrupted: bool,
    last_restart: Instant,
    faults: Vec<FaultRecord>,
    /// Violations found while running (the rest are found in the output at the end).
    problems: Vec<String>,
}
