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
//! ([`check::acks_after_newer_grants`], from the brokers' debug logs and the witness's).
//!
//! "Primary" in a fault's name means the broker holding that role when the fault strikes, as
//! STATUS says — not the program that started it.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use edgebroker::error::Result;
use edgebroker::protocol::Epoch;
use log::{info, warn};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use super::check::{self, EpochClaim, SubscriberVerdict};
use super::cluster::{BrokerId, Cluster, ClusterConfig, Programs, Roles};
use super::netns::{Host, Network};
use super::site::Site;
use super::unix_ms;

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
}

impl SoakConfig {
    /// The defaults: 10 faults, gaps of 2–6 s, a healthy pair within 30 s, the third
    /// subscriber restarted every 15 s, brokers logging at debug level (the evidence of a
    /// failed run).
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
                ..ClusterConfig::default()
            },
            healthy_deadline: Duration::from_secs(30),
            restart_every: Duration::from_secs(15),
        }
    }
}

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
}

impl FaultKind {
    /// Every kind.
    pub const ALL: [FaultKind; 9] = [
        FaultKind::KillPrimary,
        FaultKind::KillBackup,
        FaultKind::StopPrimary,
        FaultKind::CutLink,
        FaultKind::IsolatePrimary,
        FaultKind::KillWitness,
        FaultKind::CutWitnessPrimary,
        FaultKind::CutWitnessBackup,
        FaultKind::IsolateWitness,
    ];

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
    fn hold_ms(self) -> std::ops::RangeInclusive<u64> {
        match self {
            FaultKind::KillPrimary | FaultKind::KillBackup | FaultKind::KillWitness => {
                1_000..=3_000
            }
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
        })
    }
}

/// One fault as it happened.
#[derive(Clone, Debug)]
pub struct FaultRecord {
    /// 1, 2, 3, …
    pub number: usize,
    /// What it was.
    pub kind: FaultKind,
    /// The broker it struck (for a cut link or a witness fault: the primary of the moment; for
    /// the backup-witness link, the backup).
    pub target: BrokerId,
    /// The epoch of the pair when it struck.
    pub epoch: String,
    /// When it struck, unix ms.
    pub at_ms: u64,
    /// How long it lasted before it was undone, ms.
    pub held_ms: u64,
    /// How long after it was undone the pair was healthy again, ms; `None` if it never was.
    pub healthy_after_ms: Option<u64>,
    /// The roles once healthy again.
    pub roles_after: Option<Roles>,
}

/// The witness rule's verdict ([`check::acks_after_newer_grants`]).
#[derive(Debug, Default)]
pub struct WitnessVerdict {
    /// ACKs the brokers logged (0 when they did not log at debug level: not judged then).
    pub acks_logged: usize,
    /// Of them, ACKs sent alone (no backup held the message).
    pub acks_alone: usize,
    /// Distinct epochs the witness granted.
    pub grants: usize,
    /// ACKs alone after a newer epoch's grant, one line each: violations.
    pub late_acks: Vec<String>,
}

impl WitnessVerdict {
    /// Judges the brokers' logs against the grants in theirs and the witness's.
    pub fn judge(broker_logs: &[(String, String)], witness_logs: &[(String, String)]) -> Self {
        let mut alone = Vec::new();
        let mut acks_logged = 0;
        let mut grants = Vec::new();
        for (name, log) in broker_logs {
            let (acks, all) = check::alone_acks(name, log);
            alone.extend(acks);
            acks_logged += all;
            grants.extend(check::grants(name, log));
        }
        for (name, log) in witness_logs {
            grants.extend(check::grants(name, log));
        }
        let mut epochs: Vec<Epoch> = grants.iter().map(|g| g.epoch).collect();
        epochs.sort_unstable();
        epochs.dedup();
        let late_acks = check::acks_after_newer_grants(&alone, &grants)
            .into_iter()
            .map(|(ack, grant)| {
                format!(
                    "{} ACKed alone in epoch {} at {} ({} ms after {} logged the grant of epoch {}): {}",
                    ack.broker,
                    ack.epoch,
                    clock(ack.at_ms),
                    ack.at_ms - grant.at_ms,
                    grant.logged_by,
                    grant.epoch,
                    ack.line
                )
            })
            .collect();
        WitnessVerdict {
            acks_logged,
            acks_alone: alone.len(),
            grants: epochs.len(),
            late_acks,
        }
    }
}

/// What a soak found; `Display` prints the summary.
#[derive(Debug)]
pub struct SoakReport {
    /// The seed.
    pub seed: u64,
    /// Where the hosts were, and why, in words.
    pub site: String,
    /// Fault kinds that could not be injected here, and why.
    pub skipped_kinds: Option<String>,
    /// Faults asked for.
    pub planned: usize,
    /// The faults, in order.
    pub faults: Vec<FaultRecord>,
    /// When the soak started, unix ms (the origin of the `+s` times).
    pub started_ms: u64,
    /// How long it took.
    pub elapsed: Duration,
    /// Messages `test_publisher` sent (from its summary line, else the highest ACK).
    pub sent: u64,
    /// Messages it got an ACK for.
    pub acked: usize,
    /// The verdict on each subscriber.
    pub subscribers: Vec<SubscriberVerdict>,
    /// Every takeover the brokers logged.
    pub claims: Vec<EpochClaim>,
    /// Epochs claimed more than once.
    pub claimed_twice: Vec<(Epoch, Vec<EpochClaim>)>,
    /// STATUS samples with two primaries in one epoch.
    pub double_primaries: Vec<String>,
    /// With a witness: what the brokers' and the witness's logs say about ACKs and grants.
    pub witness: Option<WitnessVerdict>,
    /// Panics in any program's log.
    pub panics: Vec<String>,
    /// Everything else that went wrong: a pair that never became healthy again, a publisher
    /// that would not stop, subscribers that did not drain.
    pub problems: Vec<String>,
    /// Whether Ctrl-C cut the soak short.
    pub interrupted: bool,
    /// The run's folder.
    pub dir: PathBuf,
}

impl SoakReport {
    /// Every violation, one line each; empty means PASS.
    pub fn violations(&self) -> Vec<String> {
        let mut v = self.problems.clone();
        for s in &self.subscribers {
            v.extend(s.violations());
        }
        for (epoch, claims) in &self.claimed_twice {
            let who: Vec<&str> = claims.iter().map(|c| c.broker.as_str()).collect();
            v.push(format!(
                "epoch {epoch} claimed {} times: {}",
                claims.len(),
                who.join(", ")
            ));
        }
        v.extend(self.double_primaries.iter().cloned());
        if let Some(w) = &self.witness {
            v.extend(w.late_acks.iter().cloned());
        }
        v.extend(self.panics.iter().map(|p| format!("panic: {p}")));
        if self.acked == 0 {
            v.push("no message was ACKed".into());
        }
        v
    }

    /// Whether the run broke no rule.
    pub fn passed(&self) -> bool {
        self.violations().is_empty()
    }

    fn rel(&self, at_ms: u64) -> f64 {
        at_ms.saturating_sub(self.started_ms) as f64 / 1000.0
    }

    /// The last fault that struck at or before `at_ms`.
    fn fault_before(&self, at_ms: u64) -> Option<&FaultRecord> {
        self.faults.iter().rev().find(|f| f.at_ms <= at_ms)
    }
}

fn secs(ms: u64) -> String {
    format!("{:.1} s", ms as f64 / 1000.0)
}

/// Unix ms as the time of day, UTC, as the programs' logs print it: `15:04:55.256Z`.
fn clock(ms: u64) -> String {
    let day_ms = ms % 86_400_000;
    format!(
        "{:02}:{:02}:{:02}.{:03}Z",
        day_ms / 3_600_000,
        day_ms / 60_000 % 60,
        day_ms / 1000 % 60,
        day_ms % 1000
    )
}

impl fmt::Display for SoakReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let elapsed = self.elapsed.as_secs();
        writeln!(
            f,
            "soak: {} of {} faults, seed {}, {}, {}m{:02}s{}",
            self.faults.len(),
            self.planned,
            self.seed,
            self.site,
            elapsed / 60,
            elapsed % 60,
            if self.interrupted {
                " (interrupted)"
            } else {
                ""
            }
        )?;
        if let Some(why) = &self.skipped_kinds {
            writeln!(f, "not injected: {why}")?;
        }
        writeln!(f)?;
        writeln!(
            f,
            "{:<32} {:>5} {:>10} {:>22}",
            "fault", "count", "held avg", "healthy after avg/max"
        )?;
        let mut by_kind: BTreeMap<FaultKind, Vec<&FaultRecord>> = BTreeMap::new();
        for r in &self.faults {
            by_kind.entry(r.kind).or_default().push(r);
        }
        for (kind, records) in &by_kind {
            let n = records.len() as u64;
            let held = records.iter().map(|r| r.held_ms).sum::<u64>() / n;
            let healed: Vec<u64> = records.iter().filter_map(|r| r.healthy_after_ms).collect();
            let healed = match (healed.iter().max(), healed.len() as u64) {
                (Some(max), k) => {
                    format!("{} / {}", secs(healed.iter().sum::<u64>() / k), secs(*max))
                }
                (None, _) => "never".into(),
            };
            writeln!(
                f,
                "{:<32} {:>5} {:>10} {:>22}",
                kind.to_string(),
                n,
                secs(held),
                healed
            )?;
        }
        writeln!(f, "{:<32} {:>5}", "total", self.faults.len())?;
        writeln!(f)?;
        writeln!(
            f,
            "messages: sent {}, ACKed {}, not ACKed {}",
            self.sent,
            self.acked,
            self.sent.saturating_sub(self.acked as u64)
        )?;
        writeln!(
            f,
            "{:<18} {:>4} {:>6} {:>8} {:>7} {:>10} {:>10}  longest silence",
            "subscriber", "runs", "lines", "received", "missing", "duplicates", "inversions"
        )?;
        for s in &self.subscribers {
            let silence = match s.longest_silence {
                Some(g) => {
                    let near = self
                        .fault_before(g.to_ms)
                        .filter(|r| r.at_ms + r.held_ms + 10_000 >= g.from_ms)
                        .map(|r| format!(" (fault {}: {})", r.number, r.kind))
                        .unwrap_or_default();
                    format!(
                        "{} at +{:.1} s ({}){near}",
                        secs(g.ms()),
                        self.rel(g.from_ms),
                        clock(g.from_ms)
                    )
                }
                None => "-".into(),
            };
            let name = if s.stays_up {
                s.name.clone()
            } else {
                format!("{} (restarted)", s.name)
            };
            let missing = if s.stays_up {
                s.missing.len().to_string()
            } else {
                "n/a".into()
            };
            writeln!(
                f,
                "{:<18} {:>4} {:>6} {:>8} {:>7} {:>10} {:>10}  {silence}",
                name, s.incarnations, s.lines, s.received, missing, s.duplicates, s.inversions
            )?;
        }
        writeln!(f)?;
        let mut by_broker: BTreeMap<&str, usize> = BTreeMap::new();
        for c in &self.claims {
            let program = c.broker.split('.').next().unwrap_or_default();
            *by_broker.entry(program).or_default() += 1;
        }
        let by_broker: Vec<String> = by_broker.iter().map(|(b, n)| format!("{b} {n}")).collect();
        writeln!(
            f,
            "epochs claimed: {} ({}); claimed twice: {}; two primaries in one epoch (STATUS): {}",
            self.claims.len(),
            by_broker.join(", "),
            self.claimed_twice.len(),
            self.double_primaries.len()
        )?;
        if let Some(w) = &self.witness {
            if w.acks_logged == 0 {
                writeln!(
                    f,
                    "witness: {} epoch(s) granted; ACKs alone after a newer grant: not judged \
                     (the brokers did not log their ACKs: --log-level debug)",
                    w.grants
                )?;
            } else {
                writeln!(
                    f,
                    "witness: {} epoch(s) granted; ACKs logged {}, alone {}; alone after a newer \
                     epoch's grant: {}",
                    w.grants,
                    w.acks_logged,
                    w.acks_alone,
                    w.late_acks.len()
                )?;
            }
        }
        writeln!(f, "panics: {}", self.panics.len())?;
        let violations = self.violations();
        if violations.is_empty() {
            writeln!(f, "violations: none")?;
        } else {
            writeln!(f, "violations: {}", violations.len())?;
            for v in &violations {
                writeln!(f, "  - {v}")?;
            }
        }
        let result = match (violations.is_empty(), self.interrupted) {
            (false, _) => "FAIL",
            (true, false) => "PASS",
            (true, true) => "PASS so far (interrupted)",
        };
        write!(f, "RESULT: {result}")
    }
}

impl SoakReport {
    /// One line per fault: when, what, to whom, for how long, and how the pair recovered.
    pub fn timeline(&self) -> String {
        self.faults
            .iter()
            .map(|r| {
                let after = match (r.healthy_after_ms, r.roles_after) {
                    (Some(ms), Some(roles)) => format!(
                        "healthy {} later, primary={} backup={}",
                        secs(ms),
                        roles.primary,
                        roles.backup
                    ),
                    _ => "never healthy again".into(),
                };
                format!(
                    "fault {:>3} at +{:>6.1} s ({}): {:<30} target {:<7} epoch {:<12} held {}; {after}",
                    r.number,
                    self.rel(r.at_ms),
                    clock(r.at_ms),
                    r.kind.to_string(),
                    r.target.name(),
                    r.epoch,
                    secs(r.held_ms)
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// How many subscribers the soak runs; the last one is restarted now and then.
const SUBSCRIBERS: usize = 3;
/// How long the publisher may take to exit after SIGINT (it finishes the publish in hand,
/// which may retry for up to 30 s while no broker ACKs).
const PUBLISHER_EXIT: Duration = Duration::from_secs(40);
/// The subscribers' drain ends when every ACKed message was printed, or when nothing new was
/// printed for this long.
const DRAIN_STALL: Duration = Duration::from_secs(20);
/// How often STATUS is sampled while the soak waits.
const SAMPLE_EVERY: Duration = Duration::from_millis(300);

/// Runs a soak, logging each step (`info!`). `interrupts` receives on Ctrl-C: the soak then
/// undoes the fault in hand, stops injecting, and judges what ran.
pub fn run(config: &SoakConfig, interrupts: &Receiver<()>) -> Result<SoakReport> {
    let started = Instant::now();
    let started_ms = unix_ms();
    let (site, mut site_text, skipped_kinds) = choose_site(config.mode)?;
    if config.cluster.witness {
        site_text.push_str(&format!(
            ", with a witness (lease {} ms)",
            config.cluster.lease_ms
        ));
    }
    info!("seed {}; hosts: {site_text}", config.seed);
    if let Some(why) = &skipped_kinds {
        info!("not injected: {why}");
    }
    let witnessed = config.cluster.witness;
    let kinds: Vec<FaultKind> = FaultKind::ALL
        .into_iter()
        .filter(|k| site.has_network_faults() || !k.needs_network())
        .filter(|k| witnessed || !k.needs_witness())
        .collect();
    let programs = config.programs.snapshot(&config.dir.join("bin"))?;
    let mut cluster = Cluster::start(site, programs, config.cluster.clone(), &config.dir)?;
    for i in 0..SUBSCRIBERS {
        cluster.add_subscriber(i + 1 < SUBSCRIBERS)?;
    }
    cluster.wait_subscribed(SUBSCRIBERS as u64, Duration::from_secs(10))?;
    cluster.start_publisher()?;
    info!(
        "pair up (primary {}, backup {}), {SUBSCRIBERS} subscribers, publishing at {} Hz",
        cluster.addr(BrokerId::Primary),
        cluster.addr(BrokerId::Backup),
        config.cluster.rate_hz
    );

    let mut soak = Soak {
        cluster,
        config,
        interrupts,
        interrupted: false,
        last_restart: Instant::now(),
        faults: Vec::new(),
        problems: Vec::new(),
    };
    if super::wait_for(Duration::from_secs(10), || {
        (!soak.cluster.acks().is_empty()).then_some(())
    })
    .is_none()
    {
        soak.problems
            .push("no ACK within 10 s of the publisher's start".into());
    }
    // Every random draw comes from this generator, in the same order whatever the timing, so
    // a seed always gives the same fault kinds, gaps and durations.
    let mut rng = StdRng::seed_from_u64(config.seed);
    for number in 1..=config.faults {
        if soak.interrupted || !soak.problems.is_empty() {
            break;
        }
        let gap = rng.random_range(config.min_gap.as_millis()..=config.max_gap.as_millis());
        let kind = kinds[rng.random_range(0..kinds.len())];
        let hold = Duration::from_millis(rng.random_range(kind.hold_ms()));
        soak.pause(Duration::from_millis(
            u64::try_from(gap).unwrap_or(u64::MAX),
        ));
        if !soak.interrupted {
            soak.fault(number, kind, hold);
        }
    }
    if soak.problems.is_empty() && !soak.interrupted {
        // A little more traffic on the healed pair before the end.
        soak.pause(Duration::from_secs(2));
    }
    Ok(soak.finish(site_text, skipped_kinds, started, started_ms))
}

/// The hosts for `mode`, a description, and which fault kinds cannot be injected there.
fn choose_site(mode: Mode) -> Result<(Site, String, Option<String>)> {
    let local = |why: &str| {
        (
            Site::Loopback,
            format!("loopback ({why})"),
            Some(format!(
                "link cuts and host cut-offs need network namespaces ({why})"
            )),
        )
    };
    Ok(match mode {
        Mode::Local => local("--local"),
        Mode::Netns | Mode::Auto => match Network::available() {
            Ok(()) => {
                let net = Network::create("soak")?;
                let text = format!("network namespaces {}-*", net.tag());
                (Site::Netns(net), text, None)
            }
            Err(why) if mode == Mode::Netns => {
                return Err(edgebroker::Error::Io(std::io::Error::other(format!(
                    "network namespaces are not available: {why}"
                ))));
            }
            Err(why) => {
                warn!("network namespaces are not available ({why}); running on loopback");
                local(&why)
            }
        },
    })
}

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

impl Soak<'_> {
    /// Waits `d`, sampling STATUS (for two primaries in one epoch) and restarting the third
    /// subscriber when its time has come. Returns early on Ctrl-C.
    fn pause(&mut self, d: Duration) {
        let until = Instant::now() + d;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() || self.interrupted {
                return;
            }
            match self.interrupts.recv_timeout(left.min(SAMPLE_EVERY)) {
                Ok(()) | Err(RecvTimeoutError::Disconnected) => {
                    warn!("interrupted: undoing the fault in hand, then judging the run");
                    self.interrupted = true;
                    return;
                }
                Err(RecvTimeoutError::Timeout) => {}
            }
            self.cluster.statuses();
            if self.last_restart.elapsed() >= self.config.restart_every {
                self.last_restart = Instant::now();
                let last = self.cluster.subscriber_count() - 1;
                if let Err(e) = self.cluster.restart_subscriber(last) {
                    warn!("could not restart subscriber {}: {e}", last + 1);
                }
            }
        }
    }

    /// One fault: wait for a healthy pair, strike whichever broker holds the role `kind`
    /// names, hold the fault, undo it, and wait for a healthy pair again. What goes wrong is
    /// recorded in `problems`.
    fn fault(&mut self, number: usize, kind: FaultKind, hold: Duration) {
        let deadline = self.config.healthy_deadline;
        let of = self.config.faults;
        let roles = match self.cluster.wait_healthy(deadline, SUBSCRIBERS as u64) {
            Ok(roles) => roles,
            Err(why) => {
                self.problems.push(format!(
                    "before fault {number}: the pair was not healthy within {} s: {why}",
                    deadline.as_secs()
                ));
                return;
            }
        };
        let epoch = self
            .cluster
            .status(roles.primary)
            .map(|s| s.epoch)
            .unwrap_or_default();
        let target = match kind {
            FaultKind::KillBackup | FaultKind::CutWitnessBackup => roles.backup,
            _ => roles.primary,
        };
        let at_ms = unix_ms();
        info!(
            "fault {number}/{of}: {kind} (target {target}, epoch {epoch}) for {} ms",
            hold.as_millis()
        );
        if let Err(e) = self.inject(kind, target, hold) {
            self.problems.push(format!(
                "fault {number} ({kind}) could not be injected or undone: {e}"
            ));
            return;
        }
        let undone = Instant::now();
        let healthy = self.cluster.wait_healthy(deadline, SUBSCRIBERS as u64);
        let healthy_after_ms = healthy
            .as_ref()
            .ok()
            .map(|_| u64::try_from(undone.elapsed().as_millis()).unwrap_or(u64::MAX));
        match &healthy {
            Ok(roles) => info!(
                "fault {number}/{of} undone: healthy {} later, primary={}",
                secs(healthy_after_ms.unwrap_or(0)),
                roles.primary
            ),
            Err(why) => {
                warn!("fault {number}/{of} undone: the pair is not healthy: {why}");
                self.problems.push(format!(
                    "after fault {number} ({kind}): the pair was not healthy within {} s: {why}",
                    deadline.as_secs()
                ));
            }
        }
        self.faults.push(FaultRecord {
            number,
            kind,
            target,
            epoch,
            at_ms,
            held_ms: u64::try_from(hold.as_millis()).unwrap_or(u64::MAX),
            healthy_after_ms,
            roles_after: healthy.ok(),
        });
    }

    /// Injects one fault, holds it for `hold` (a Ctrl-C shortens the hold; a fault is always
    /// undone), and undoes it.
    fn inject(&mut self, kind: FaultKind, target: BrokerId, hold: Duration) -> Result<()> {
        match kind {
            FaultKind::KillPrimary | FaultKind::KillBackup => {
                self.cluster.kill_broker(target);
                self.pause(hold);
                self.cluster.start_broker(target)
            }
            FaultKind::StopPrimary => {
                self.cluster.stop_broker(target)?;
                self.pause(hold);
                self.cluster.resume_broker(target)
            }
            FaultKind::CutLink => {
                self.cluster.cut_broker_link()?;
                self.pause(hold);
                self.cluster.heal_broker_link()
            }
            FaultKind::IsolatePrimary => {
                self.cluster.isolate_broker(target)?;
                self.pause(hold);
                self.cluster.rejoin_broker(target)
            }
            FaultKind::KillWitness => {
                self.cluster.kill_witness();
                self.pause(hold);
                self.cluster.start_witness()
            }
            FaultKind::CutWitnessPrimary | FaultKind::CutWitnessBackup => {
                self.cluster.cut_link(target.host(), Host::Witness)?;
                self.pause(hold);
                self.cluster.heal_link(target.host(), Host::Witness)
            }
            FaultKind::IsolateWitness => {
                self.cluster.isolate(Host::Witness)?;
                self.pause(hold);
                self.cluster.rejoin(Host::Witness)
            }
        }
    }

    /// The end: stop the publisher, let the subscribers drain, stop everything, and judge.
    /// The arguments are for the report's header.
    fn finish(
        mut self,
        site: String,
        skipped_kinds: Option<String>,
        started: Instant,
        started_ms: u64,
    ) -> SoakReport {
        info!("stopping the publisher and draining the subscribers");
        if self.cluster.stop_publisher(PUBLISHER_EXIT).is_none() {
            self.problems.push(format!(
                "test_publisher did not exit within {} s of SIGINT",
                PUBLISHER_EXIT.as_secs()
            ));
        }
        let (stdout, stderr) = self.cluster.publisher_output();
        let (acks, unparsed) = check::parse_acks(&stdout);
        if unparsed > 0 {
            self.problems.push(format!(
                "test_publisher printed {unparsed} line(s) that are not ACKs"
            ));
        }
        let mut acked: Vec<u64> = acks.iter().map(|&(_, s)| s).collect();
        acked.sort_unstable();
        acked.dedup();
        let sent = check::publisher_summary(&stderr)
            .map(|(sent, _)| sent)
            .unwrap_or_else(|| acked.last().copied().unwrap_or(0));
        if !self.cluster.wait_delivered(&acked, DRAIN_STALL) {
            warn!(
                "the subscribers printed nothing new for {} s; judging what they have",
                DRAIN_STALL.as_secs()
            );
        }
        self.cluster.stop_subscribers(Duration::from_secs(5));
        self.cluster.stop_brokers();

        let subscribers = self
            .cluster
            .subscriber_runs()
            .iter()
            .map(|r| check::judge_subscriber(r, &acked))
            .collect();
        let claims = self.cluster.epoch_claims();
        let witness = self.config.cluster.witness.then(|| {
            WitnessVerdict::judge(&self.cluster.broker_logs(), &self.cluster.witness_logs())
        });
        SoakReport {
            seed: self.config.seed,
            site,
            skipped_kinds,
            planned: self.config.faults,
            faults: self.faults,
            started_ms,
            elapsed: started.elapsed(),
            sent,
            acked: acked.len(),
            subscribers,
            claimed_twice: check::claimed_twice(&claims),
            claims,
            double_primaries: self.cluster.double_primaries().to_vec(),
            witness,
            panics: self.cluster.panics(),
            problems: self.problems,
            interrupted: self.interrupted,
            dir: self.config.dir.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> SoakReport {
        SoakReport {
            seed: 7,
            site: "loopback (test)".into(),
            skipped_kinds: None,
            planned: 1,
            faults: vec![FaultRecord {
                number: 1,
                kind: FaultKind::KillPrimary,
                target: BrokerId::Primary,
                epoch: "1.5".into(),
                at_ms: 1_000,
                held_ms: 2_000,
                healthy_after_ms: Some(500),
                roles_after: Some(Roles {
                    primary: BrokerId::Backup,
                    backup: BrokerId::Primary,
                }),
            }],
            started_ms: 0,
            elapsed: Duration::from_secs(9),
            sent: 3,
            acked: 3,
            subscribers: Vec::new(),
            claims: Vec::new(),
            claimed_twice: Vec::new(),
            double_primaries: Vec::new(),
            witness: None,
            panics: Vec::new(),
            problems: Vec::new(),
            interrupted: false,
            dir: PathBuf::new(),
        }
    }

    #[test]
    fn a_clean_run_passes_and_any_violation_fails_it() {
        let clean = report();
        assert!(clean.passed());
        let text = clean.to_string();
        assert!(text.contains("kill -9 primary, restart"), "{text}");
        assert!(text.ends_with("RESULT: PASS"), "{text}");

        let mut broken = report();
        let run = check::SubscriberRun {
            name: "sub-1".into(),
            stays_up: true,
            incarnations: vec![Vec::new()],
            unparsed: 0,
        };
        broken.subscribers = vec![check::judge_subscriber(&run, &[1, 2, 3])];
        assert!(!broken.passed());
        assert!(broken.to_string().ends_with("RESULT: FAIL"));
        assert!(broken.timeline().contains("primary=backup backup=primary"));

        let mut late = report();
        late.witness = Some(WitnessVerdict {
            acks_logged: 3,
            acks_alone: 1,
            grants: 1,
            late_acks: vec!["primary.1 ACKed alone in epoch 1.5 after the grant of 2.7".into()],
        });
        assert!(!late.passed());
        let text = late.to_string();
        assert!(
            text.contains("alone after a newer epoch's grant: 1"),
            "{text}"
        );
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
}
