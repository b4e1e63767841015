//! The end of a soak and its verdict: the publisher stopped, the subscribers drained, every
//! process stopped, and the output judged by [`crate::harness::check`]'s rules — the witness's
//! rule, no ACK alone after a newer grant, in [`WitnessVerdict`].

use std::time::{Duration, Instant};

use edgebroker::protocol::Epoch;
use log::{info, warn};

use super::report::clock;
use super::{Soak, SoakReport};
use crate::harness::check;

/// How long the publisher may take to exit after SIGINT (it finishes the publish in hand,
/// which may retry for up to 30 s while no broker ACKs).
const PUBLISHER_EXIT: Duration = Duration::from_secs(40);
/// The subscribers' drain ends when every ACKed message was printed, or when nothing new was
/// printed for this long.
const DRAIN_STALL: Duration = Duration::from_secs(20);

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

impl Soak<'_> {
    /// The end: stop the publisher, let the subscribers drain, stop everything, and judge.
    /// The arguments are for the report's header.
    pub(super) fn finish(
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
            publisher: format!(
                "{} Hz, window {}",
                self.config.cluster.rate_hz, self.config.cluster.window
            ),
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
