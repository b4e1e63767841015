//! Judging a run from what its programs wrote: the subscribers' stdout, `test_publisher`'s ACK
//! lines and the brokers' logs. Nothing here touches a process or a socket; the parsing of
//! single lines is [`edgebroker::report`]'s, shared with `run_test.sh`'s report.
//!
//! The rules:
//! - a subscriber that stayed up printed every ACKed message, none twice, in publish order;
//! - a subscriber that was restarted printed nothing twice and nothing out of order within
//!   each of its runs (what it missed while it was away is not its fault);
//! - no epoch was claimed by two takeovers (two brokers primary in the same epoch);
//! - with a witness, no broker ACKed a publish alone (no backup held it) after the witness
//!   had granted a newer epoch ([`acks_after_newer_grants`]);
//! - no program panicked.

use std::collections::{BTreeMap, HashSet};

use edgebroker::protocol::Epoch;
use edgebroker::report::{self, Delivery};

/// What one subscriber printed, run by run (a restarted subscriber has several runs).
#[derive(Clone, Debug, Default)]
pub struct SubscriberRun {
    /// Its name in the run.
    pub name: String,
    /// Whether it ran from start to end (and so must have printed every ACKed message).
    pub stays_up: bool,
    /// Each run's deliveries, in the order printed.
    pub incarnations: Vec<Vec<Delivery>>,
    /// Lines that were not deliveries (a subscriber prints nothing else on stdout).
    pub unparsed: usize,
}

impl SubscriberRun {
    /// Parses each run's stdout (`<unix_ms> [PRIMARY] <seq>` lines).
    pub fn parse(name: &str, stays_up: bool, outputs: &[String]) -> SubscriberRun {
        let mut run = SubscriberRun {
            name: name.to_string(),
            stays_up,
            ..SubscriberRun::default()
        };
        for text in outputs {
            let log = report::parse_log(text, report::parse_delivery);
            run.unparsed += log.unparsed;
            run.incarnations.push(log.items);
        }
        run
    }

    /// Whether every sequence number in `seqs` was printed (by any run).
    pub fn has_all(&self, seqs: &[u64]) -> bool {
        let printed: HashSet<u64> = self.incarnations.iter().flatten().map(|d| d.seq).collect();
        seqs.iter().all(|s| printed.contains(s))
    }
}

/// A gap between two consecutive deliveries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gap {
    /// The delivery before it, unix ms.
    pub from_ms: u64,
    /// The delivery after it, unix ms.
    pub to_ms: u64,
}

impl Gap {
    /// Its length in ms.
    pub fn ms(&self) -> u64 {
        self.to_ms.saturating_sub(self.from_ms)
    }
}

/// The verdict on one subscriber.
#[derive(Clone, Debug)]
pub struct SubscriberVerdict {
    /// Its name.
    pub name: String,
    /// Whether it had to print every ACKed message.
    pub stays_up: bool,
    /// How many runs it had.
    pub incarnations: usize,
    /// Delivery lines printed, over all runs.
    pub lines: usize,
    /// Distinct messages printed, over all runs.
    pub received: usize,
    /// ACKed messages it never printed (only judged for a subscriber that stayed up).
    pub missing: Vec<u64>,
    /// Lines whose message that run had printed before.
    pub duplicates: usize,
    /// Lines (not duplicates) whose message is older than one that run printed before.
    pub inversions: usize,
    /// The longest gap between two deliveries of one run.
    pub longest_silence: Option<Gap>,
    /// Lines that were not deliveries.
    pub unparsed: usize,
}

impl SubscriberVerdict {
    /// What is wrong, one phrase per rule broken; empty when all is well.
    pub fn violations(&self) -> Vec<String> {
        let mut v = Vec::new();
        if !self.missing.is_empty() {
            let shown: Vec<String> = self.missing.iter().take(20).map(u64::to_string).collect();
            let more = self.missing.len().saturating_sub(shown.len());
            v.push(format!(
                "{}: {} ACKed message(s) never printed: {}{}",
                self.name,
                self.missing.len(),
                shown.join(" "),
                if more > 0 {
                    format!(" (and {more} more)")
                } else {
                    String::new()
                }
            ));
        }
        if self.duplicates > 0 {
            v.push(format!(
                "{}: {} line(s) printed twice",
                self.name, self.duplicates
            ));
        }
        if self.inversions > 0 {
            v.push(format!(
                "{}: {} message(s) printed out of order",
                self.name, self.inversions
            ));
        }
        if self.unparsed > 0 {
            v.push(format!(
                "{}: {} stdout line(s) that are not deliveries",
                self.name, self.unparsed
            ));
        }
        if self.stays_up && self.received == 0 {
            v.push(format!("{}: printed nothing", self.name));
        }
        v
    }
}

/// Judges one subscriber against the ACKed sequence numbers.
pub fn judge_subscriber(run: &SubscriberRun, acked: &[u64]) -> SubscriberVerdict {
    let mut verdict = SubscriberVerdict {
        name: run.name.clone(),
        stays_up: run.stays_up,
        incarnations: run.incarnations.len(),
        lines: 0,
        received: 0,
        missing: Vec::new(),
        duplicates: 0,
        inversions: 0,
        longest_silence: None,
        unparsed: run.unparsed,
    };
    let mut printed = HashSet::new();
    for deliveries in &run.incarnations {
        let r = report::analyse(deliveries, &[], None, None);
        verdict.lines += r.delivered_lines;
        verdict.duplicates += r.duplicates;
        verdict.inversions += r.inversions;
        printed.extend(deliveries.iter().map(|d| d.seq));
        let longest = deliveries
            .windows(2)
            .map(|w| Gap {
                from_ms: w[0].at_ms,
                to_ms: w[1].at_ms,
            })
            .max_by_key(Gap::ms);
        if longest.is_some_and(|g| verdict.longest_silence.is_none_or(|l| g.ms() > l.ms())) {
            verdict.longest_silence = longest;
        }
    }
    verdict.received = printed.len();
    if run.stays_up {
        let mut missing: Vec<u64> = acked
            .iter()
            .copied()
            .filter(|s| !printed.contains(s))
            .collect();
        missing.sort_unstable();
        missing.dedup();
        verdict.missing = missing;
    }
    verdict
}

/// `test_publisher`'s stdout: `(unix_ms, seq)` per ACK line, and how many lines were not ACKs.
pub fn parse_acks(stdout: &str) -> (Vec<(u64, u64)>, usize) {
    let log = report::parse_log(stdout, report::parse_ack);
    (log.items, log.unparsed)
}

/// `test_publisher`'s closing log line, `summary: sent=N acked=M`, as `(N, M)`.
pub fn publisher_summary(stderr: &str) -> Option<(u64, u64)> {
    let line = stderr
        .lines()
        .rev()
        .find(|l| l.contains("summary: sent="))?;
    let rest = &line[line.find("summary: sent=")? + "summary: sent=".len()..];
    let (sent, rest) = rest.split_once(' ')?;
    let acked = rest.trim().strip_prefix("acked=")?;
    Some((sent.parse().ok()?, acked.trim().parse().ok()?))
}

/// The ACKs printed from `from_ms` to `to_ms` (inclusive).
pub fn acks_between(acks: &[(u64, u64)], from_ms: u64, to_ms: u64) -> Vec<(u64, u64)> {
    acks.iter()
        .copied()
        .filter(|&(at, _)| (from_ms..=to_ms).contains(&at))
        .collect()
}

/// One takeover, as a broker logged it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EpochClaim {
    /// The epoch it started.
    pub epoch: Epoch,
    /// Which broker process (name and run) logged it.
    pub broker: String,
    /// The log line.
    pub line: String,
}

/// What a broker's log says it claimed: every `taking over as primary in epoch <e> (…)` line.
pub fn epoch_claims(broker: &str, log: &str) -> Vec<EpochClaim> {
    const MARK: &str = "taking over as primary in epoch ";
    log.lines()
        .filter_map(|line| {
            let rest = &line[line.find(MARK)? + MARK.len()..];
            let epoch = rest.split_whitespace().next()?.parse().ok()?;
            Some(EpochClaim {
                epoch,
                broker: broker.to_string(),
                line: line.to_string(),
            })
        })
        .collect()
}

/// Epochs claimed more than once, with every claim of each: two brokers (or two runs of one)
/// primary in the same epoch.
pub fn claimed_twice(claims: &[EpochClaim]) -> Vec<(Epoch, Vec<EpochClaim>)> {
    let mut by_epoch: BTreeMap<Epoch, Vec<EpochClaim>> = BTreeMap::new();
    for c in claims {
        by_epoch.entry(c.epoch).or_default().push(c.clone());
    }
    by_epoch.into_iter().filter(|(_, c)| c.len() > 1).collect()
}

/// The time of a log line, unix ms, from its leading RFC 3339 stamp as the programs print it
/// (`2025-01-01T00:00:00.000Z INFO  [pinger] …`, UTC, milliseconds); `None` for a line without
/// one.
pub fn log_time_ms(line: &str) -> Option<u64> {
    let stamp = line.split_whitespace().next()?.strip_suffix('Z')?;
    let (date, time) = stamp.split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
    let (year, month, day) = (d.next()??, d.next()??, d.next()??);
    let (hms, millis) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.split(':').map(|p| p.parse::<i64>().ok());
    let (h, m, sec) = (t.next()??, t.next()??, t.next()??);
    let millis: i64 = format!("{millis:0<3}").get(..3)?.parse().ok()?;
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || h > 23 || m > 59 || sec > 60 {
        return None;
    }
    // Days from the civil date (Howard Hinnant's algorithm), proleptic Gregorian calendar.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let ms = ((days * 86_400 + h * 3600 + m * 60 + sec) * 1000) + millis;
    u64::try_from(ms).ok()
}

/// A new epoch the witness granted, as the witness (`granted epoch E to node N`) or the
/// broker it went to (`taking over as primary in epoch E (…; the witness granted epoch E)`)
/// logged it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    /// The epoch granted.
    pub epoch: Epoch,
    /// When the log line was written, unix ms.
    pub at_ms: u64,
    /// Which process (name and run) logged it.
    pub logged_by: String,
}

/// The grants a witness's or a broker's log tells of.
pub fn grants(logged_by: &str, log: &str) -> Vec<Grant> {
    const WITNESS: &str = "granted epoch ";
    const BROKER: &str = "the witness granted epoch ";
    log.lines()
        .filter_map(|line| {
            let rest = match line.find(BROKER) {
                Some(i) => &line[i + BROKER.len()..],
                None => &line[line.find(WITNESS)? + WITNESS.len()..],
            };
            let epoch = rest
                .split(|c: char| c.is_whitespace() || c == ')' || c == ';')
                .next()?
                .parse()
                .ok()?;
            Some(Grant {
                epoch,
                at_ms: log_time_ms(line)?,
                logged_by: logged_by.to_string(),
            })
        })
        .collect()
}

/// A publish a broker ACKed alone — no backup held the message — as its debug log tells
/// (`<id> ACKed without a backup (degraded)`), with the epoch it was primary in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AloneAck {
    /// The broker's epoch then: the last one its log named before the ACK (`accepted at index
    /// <i> in epoch <e>`, `taking over as primary in epoch <e>`).
    pub epoch: Epoch,
    /// When the ACK was logged, unix ms.
    pub at_ms: u64,
    /// Which broker process (name and run) ACKed.
    pub broker: String,
    /// The log line.
    pub line: String,
}

/// What a broker's log at debug level says about its ACKs: the ACKs it sent alone, and how
/// many ACKs it logged at all (alone or confirmed by the backup) — 0 for a log at info level,
/// where the check cannot be made.
pub fn alone_acks(broker: &str, log: &str) -> (Vec<AloneAck>, usize) {
    let mut epoch: Option<Epoch> = None;
    let mut alone = Vec::new();
    let mut all = 0;
    for line in log.lines() {
        if line.contains("accepted at index ") || line.contains("taking over as primary in epoch") {
            if let Some(e) = line
                .split(" in epoch ")
                .nth(1)
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|e| e.parse().ok())
            {
                epoch = Some(e);
            }
        } else if line.contains(" confirmed by the backup; ACKing") {
            all += 1;
        } else if line.contains(" ACKed without a backup (degraded)") {
            all += 1;
            if let (Some(epoch), Some(at_ms)) = (epoch, log_time_ms(line)) {
                alone.push(AloneAck {
                    epoch,
                    at_ms,
                    broker: broker.to_string(),
                    line: line.to_string(),
                });
            }
        }
    }
    (alone, all)
}

/// ACKs sent alone after the witness had granted a newer epoch than the ACKing broker's —
/// each with the earliest log line of that grant. There must be none.
///
/// Why this is the rule: a broker may ACK a message no backup holds only while someone vouches
/// that no other broker can be primary — its lease, which ends on its own clock before the
/// witness counts it lapsed (by the margin, L/8), or its backup's answered heartbeats, which
/// end before that backup may claim. The witness grants a newer epoch only after the lapse, so
/// every ACK alone in an older epoch happens before the grant; one after it is a second
/// primary acting, whose ACKed message the new primary may never have seen. (An ACK of a
/// message the backup *confirmed* is safe whenever it is sent — the backup holds it — so only
/// ACKs alone are judged. Certain-death takeovers are no grants: the dead do not ACK.)
///
/// Resolution: every program runs on this machine and stamps its log lines from the same
/// realtime clock, in milliseconds, so lines of different processes compare directly (network
/// namespaces do not virtualise the clock). The grant's time is the witness's own log line
/// (earlier than the broker's `taking over`, which is the fallback), the ACK's the broker's
/// debug line written right after its mandate check; a correct pair leaves at least the margin
/// (125 ms at a 1 s lease) between the two, so an ACK logged even 1 ms after the grant is
/// flagged. A flagged ACK within a few ms of the grant may be a thread stalled between its
/// check and its log line — still an ACK sent after the grant, which the loss check then
/// judges.
pub fn acks_after_newer_grants(acks: &[AloneAck], grants: &[Grant]) -> Vec<(AloneAck, Grant)> {
    // The earliest line of each granted epoch.
    let mut first: BTreeMap<Epoch, &Grant> = BTreeMap::new();
    for g in grants {
        let e = first.entry(g.epoch).or_insert(g);
        if g.at_ms < e.at_ms {
            *e = g;
        }
    }
    acks.iter()
        .filter_map(|a| {
            first
                .range(a.epoch..)
                .map(|(_, g)| *g)
                .filter(|g| g.epoch > a.epoch && g.at_ms < a.at_ms)
                .min_by_key(|g| g.at_ms)
                .map(|g| (a.clone(), g.clone()))
        })
        .collect()
}

/// Lines of a program's log that say it panicked.
pub fn panics(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains("panicked at"))
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgebroker::report::Source;

    fn d(at_ms: u64, seq: u64) -> Delivery {
        Delivery {
            at_ms,
            source: Source::Primary,
            seq,
        }
    }

    #[test]
    fn a_subscriber_that_stayed_up_must_print_every_ack_once_in_order() {
        let run = SubscriberRun {
            name: "sub-1".into(),
            stays_up: true,
            incarnations: vec![vec![d(10, 1), d(20, 3), d(25, 2), d(900, 3)]],
            unparsed: 0,
        };
        let v = judge_subscriber(&run, &[1, 2, 3, 4]);
        assert_eq!(v.missing, vec![4]);
        assert_eq!(
            (v.duplicates, v.inversions, v.received, v.lines),
            (1, 1, 3, 4)
        );
        assert_eq!(v.longest_silence.map(|g| g.ms()), Some(875));
        assert_eq!(v.violations().len(), 3);
    }

    #[test]
    fn a_restarted_subscriber_is_judged_per_run_and_not_for_completeness() {
        let run = SubscriberRun {
            name: "sub-3".into(),
            stays_up: false,
            // The second run starts over at an older message: not an inversion.
            incarnations: vec![vec![d(1, 5), d(2, 6)], vec![d(10, 6), d(11, 7)]],
            unparsed: 0,
        };
        let v = judge_subscriber(&run, &[1, 2, 3, 4, 5, 6, 7]);
        assert!(v.violations().is_empty(), "{:?}", v.violations());
        assert_eq!(v.received, 3);
    }

    #[test]
    fn epochs_claimed_twice_are_found() {
        let a = "2025-01-01T00:00:00.000Z INFO  [pinger] taking over as primary in epoch 2.17 \
                 (the primary refused the connection); replaying 3 buffered message(s)";
        let b = "x INFO  [pinger] taking over as primary in epoch 3.99 (silent)";
        let mut claims = epoch_claims("backup.1", a);
        claims.extend(epoch_claims("backup.1", b));
        claims.extend(epoch_claims("primary.2", a));
        let twice = claimed_twice(&claims);
        assert_eq!(twice.len(), 1);
        assert_eq!(twice[0].0.to_string(), "2.17");
        assert_eq!(twice[0].1.len(), 2);
    }

    #[test]
    fn log_times_are_unix_ms() {
        assert_eq!(log_time_ms("1970-01-01T00:00:00.000Z INFO  [x] y"), Some(0));
        assert_eq!(
            log_time_ms("2025-03-01T12:34:56.789Z DEBUG [conn-3] x"),
            Some(1_740_832_496_789)
        );
        assert_eq!(
            log_time_ms("2024-02-29T00:00:00.5Z x"),
            Some(1_709_164_800_500)
        );
        assert_eq!(log_time_ms("thread 'main' panicked at"), None);
        assert_eq!(log_time_ms(""), None);
    }

    #[test]
    fn an_ack_alone_after_a_newer_grant_is_found() {
        let primary = "\
2025-01-01T00:00:01.000Z DEBUG [conn-1] 5:1 accepted at index 1 in epoch 1.5
2025-01-01T00:00:01.100Z DEBUG [conn-1] 5:1 confirmed by the backup; ACKing
2025-01-01T00:00:02.000Z DEBUG [conn-1] 5:2 accepted at index 2 in epoch 1.5
2025-01-01T00:00:02.500Z DEBUG [conn-1] 5:2 ACKed without a backup (degraded)
2025-01-01T00:00:04.000Z DEBUG [conn-1] 5:3 ACKed without a backup (degraded)
2025-01-01T00:00:09.000Z INFO  [pinger] taking over as primary in epoch 3.5 (x); replaying 0
2025-01-01T00:00:09.500Z DEBUG [conn-1] 5:4 ACKed without a backup (degraded)";
        let (acks, all) = alone_acks("primary.1", primary);
        assert_eq!((acks.len(), all), (3, 4));
        assert_eq!(acks[0].epoch.to_string(), "1.5");
        assert_eq!(acks[2].epoch.to_string(), "3.5");
        let mut g = grants(
            "witness.1",
            "2025-01-01T00:00:03.000Z INFO  [witness-conn-2] granted epoch 2.7 to node 7",
        );
        g.extend(grants(
            "backup.1",
            "2025-01-01T00:00:03.010Z INFO  [pinger] taking over as primary in epoch 2.7 \
             (the primary is silent; the witness granted epoch 2.7); replaying 1",
        ));
        assert_eq!(g.len(), 2);
        let found = acks_after_newer_grants(&acks, &g);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].0.line, primary.lines().nth(4).unwrap());
        assert_eq!(
            (found[0].1.logged_by.as_str(), found[0].1.at_ms % 10_000),
            ("witness.1", 3_000)
        );
    }

    #[test]
    fn publisher_lines() {
        assert_eq!(
            publisher_summary("a\n2025 INFO  [main] summary: sent=12 acked=11\n"),
            Some((12, 11))
        );
        let (acks, unparsed) = parse_acks("100 ACK 1\n200 ACK 2\nnoise\n");
        assert_eq!((acks, unparsed), (vec![(100, 1), (200, 2)], 1));
        assert_eq!(
            acks_between(&[(100, 1), (200, 2)], 150, 250),
            vec![(200, 2)]
        );
    }
}
