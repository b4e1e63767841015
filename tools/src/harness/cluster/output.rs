//! What the cluster's processes wrote, read back for [`crate::harness::check`]: the ACKs
//! `test_publisher` printed, the subscribers' lines, the brokers' and the witness's logs,
//! the takeovers and panics in them; and waiting until the subscribers printed what was ACKed.

use std::collections::HashSet;
use std::fs;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::{Cluster, ServerSlot, tail};
use crate::harness::POLL;
use crate::harness::check::{self, EpochClaim, SubscriberRun};

impl Cluster {
    /// The ACKs `test_publisher` printed so far, `(unix_ms, seq)`.
    pub fn acks(&self) -> Vec<(u64, u64)> {
        self.publisher
            .as_ref()
            .map(|p| check::parse_acks(&p.stdout()).0)
            .unwrap_or_default()
    }

    /// `test_publisher`'s stdout and stderr so far.
    pub fn publisher_output(&self) -> (String, String) {
        self.publisher
            .as_ref()
            .map(|p| (p.stdout(), p.stderr()))
            .unwrap_or_default()
    }

    /// What each subscriber printed so far.
    pub fn subscriber_runs(&self) -> Vec<SubscriberRun> {
        self.subscribers
            .iter()
            .map(|s| {
                let outputs: Vec<String> = s
                    .outputs
                    .iter()
                    .map(|p| fs::read_to_string(p).unwrap_or_default())
                    .collect();
                SubscriberRun::parse(&s.name, s.stays_up, &outputs)
            })
            .collect()
    }

    /// Waits until every subscriber that stays up printed all of `seqs`, for as long as they
    /// make progress towards it: it gives up once `stall` passed without one more of `seqs`
    /// printed (a broker with a backlog may take a while, but it must keep delivering).
    /// Returns whether they printed everything.
    pub fn wait_delivered(&self, seqs: &[u64], stall: Duration) -> bool {
        let wanted: HashSet<u64> = seqs.iter().copied().collect();
        let mut best = 0;
        let mut last_progress = Instant::now();
        loop {
            let runs = self.subscriber_runs();
            let printed: usize = runs
                .iter()
                .filter(|r| r.stays_up)
                .map(|r| {
                    let mut got: Vec<u64> = r
                        .incarnations
                        .iter()
                        .flatten()
                        .map(|d| d.seq)
                        .filter(|s| wanted.contains(s))
                        .collect();
                    got.sort_unstable();
                    got.dedup();
                    got.len()
                })
                .sum();
            let want = wanted.len() * runs.iter().filter(|r| r.stays_up).count();
            if printed >= want {
                return true;
            }
            if printed > best {
                best = printed;
                last_progress = Instant::now();
            } else if last_progress.elapsed() > stall {
                return false;
            }
            std::thread::sleep(POLL);
        }
    }

    /// Every broker run's stderr log, as `(name.run, text)`.
    pub fn broker_logs(&self) -> Vec<(String, String)> {
        self.brokers
            .iter()
            .flat_map(ServerSlot::read_logs)
            .collect()
    }

    /// Every witness run's stderr log, as `(name.run, text)`.
    pub fn witness_logs(&self) -> Vec<(String, String)> {
        self.witness
            .iter()
            .flat_map(ServerSlot::read_logs)
            .collect()
    }

    /// Every takeover the brokers logged, over all their runs.
    pub fn epoch_claims(&self) -> Vec<EpochClaim> {
        self.broker_logs()
            .iter()
            .flat_map(|(name, log)| check::epoch_claims(name, log))
            .collect()
    }

    /// Lines of any program's stderr that say it panicked, prefixed with the file's name.
    pub fn panics(&self) -> Vec<String> {
        let mut found = Vec::new();
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return found;
        };
        let mut paths: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "err"))
            .collect();
        paths.sort();
        for path in paths {
            let text = fs::read_to_string(&path).unwrap_or_default();
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
            for line in check::panics(&text) {
                found.push(format!("{}: {line}", name.clone().unwrap_or_default()));
            }
        }
        found
    }

    /// The last `n` lines of each broker's current log, for a failure message.
    pub fn broker_log_tails(&self, n: usize) -> String {
        self.broker_logs()
            .iter()
            .map(|(name, log)| format!("---- {name} ----\n{}", tail(log, n)))
            .collect::<Vec<_>>()
            .join("\n")
    }
}
