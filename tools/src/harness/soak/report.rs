//! What a soak found ([`SoakReport`]): the faults and the verdicts, its violations, the summary
//! table its `Display` prints, and the timeline of faults.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use edgebroker::protocol::Epoch;

use super::{FaultKind, FaultRecord, WitnessVerdict};
use crate::harness::check::{EpochClaim, SubscriberVerdict};

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
    /// How `test_publisher` ran: `10 Hz, window 1`.
    pub publisher: String,
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

/// Milliseconds as seconds with one decimal: `2.5 s`.
pub(super) fn secs(ms: u64) -> String {
    format!("{:.1} s", ms as f64 / 1000.0)
}

/// Unix ms as the time of day, UTC, as the programs' logs print it: `15:04:55.256Z`.
pub(super) fn clock(ms: u64) -> String {
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
        writeln!(f, "publisher: test_publisher at {}", self.publisher)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::check;
    use crate::harness::cluster::{BrokerId, Roles};

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
            publisher: "10 Hz, window 1".into(),
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
}
