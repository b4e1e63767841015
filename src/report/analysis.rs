//! Measuring a run: [`analyse`] counts what the subscriber received against what was ACKed
//! and finds the longest silence around each fault ([`RunReport`]); [`latencies`] times each
//! message from its publish to its first delivery.

use std::collections::{BTreeSet, HashMap, HashSet};

use super::{Delivery, Source};

/// How far before a fault the silence search looks, in ms.
pub const SILENCE_WINDOW_BEFORE_MS: u64 = 5_000;
/// How far after a fault the silence search looks, in ms.
pub const SILENCE_WINDOW_AFTER_MS: u64 = 10_000;
/// The default limit on the silence around each fault for a run to pass, in ms.
pub const DEFAULT_MAX_SILENCE_MS: u64 = 1_000;

/// The longest gap between consecutive deliveries around one fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Silence {
    /// Start of the gap (a delivery, or the fault moment if nothing was delivered before it),
    /// ms.
    pub from_ms: u64,
    /// End of the gap (a delivery, or the end of the search window if `open_ended`), ms.
    pub to_ms: u64,
    /// True when nothing was delivered after the fault: the gap has no end, and `to_ms` is
    /// only where the search stopped looking.
    pub open_ended: bool,
}

impl Silence {
    /// Length of the gap in ms (a lower bound when `open_ended`).
    pub fn ms(&self) -> u64 {
        self.to_ms.saturating_sub(self.from_ms)
    }
}

/// What the subscriber saw around one fault: a kill (or a stop) of the broker that was
/// primary at that moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FaultWindow {
    /// When the fault happened, unix ms.
    pub at_ms: u64,
    /// The last delivery at or before the fault.
    pub last_before: Option<Delivery>,
    /// The first delivery after the fault.
    pub first_after: Option<Delivery>,
    /// The longest silence around the fault (the rule is on [`analyse`]); `None` only when
    /// nothing was delivered at all.
    pub silence: Option<Silence>,
}

/// What a run did, computed by [`analyse`]; `Display` prints the human report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunReport {
    /// Messages the publisher sent (given, or the highest seq seen in ACKs or deliveries).
    pub sent: u64,
    /// Distinct sequence numbers the publisher had ACKed.
    pub acked: usize,
    /// Distinct sequence numbers delivered to the subscriber.
    pub received: usize,
    /// Delivery lines, duplicates included.
    pub delivered_lines: usize,
    /// Delivery lines from the primary.
    pub from_primary: usize,
    /// Delivery lines from the backup.
    pub from_backup: usize,
    /// ACKed sequence numbers never delivered, ascending.
    pub missing: Vec<u64>,
    /// Delivery lines whose seq had already been delivered (from either broker).
    pub duplicates: usize,
    /// Delivery lines (not duplicates) whose seq is lower than one delivered before them.
    pub inversions: usize,
    /// What the subscriber saw around each fault, in time order; empty for a run without one.
    pub faults: Vec<FaultWindow>,
    /// What the faults were (e.g. "primary stopped"), shown in the report. `None` means each
    /// was a kill of the primary, reported as such (`kill at:`).
    pub fault_label: Option<String>,
    /// The silence limit `Display` judges against (set by the caller; default
    /// [`DEFAULT_MAX_SILENCE_MS`]).
    pub max_silence_ms: u64,
    /// Subscriber lines that did not parse (set by whoever parsed the log; informational).
    pub unparsed_sub_lines: usize,
    /// Publisher lines that did not parse (set by whoever parsed the log; informational).
    pub unparsed_ack_lines: usize,
}

/// Analyses one run.
///
/// `deliveries` are in the order the subscriber printed them; `acked` are the seqs the
/// publisher got an ACK for (any order, repeats ignored); `sent` defaults to the highest seq
/// seen; `faults_at_ms` are the moments (unix ms) the primary of the day was killed or
/// stopped: none, one (`Some(ms)` will do) or several, in any order.
///
/// The silence around a fault is the longest gap between consecutive deliveries from
/// [`SILENCE_WINDOW_BEFORE_MS`] before it to [`SILENCE_WINDOW_AFTER_MS`] after it, always
/// counting the gap that spans the fault even when its ends lie outside that window.
pub fn analyse(
    deliveries: &[Delivery],
    acked: &[u64],
    sent: Option<u64>,
    faults_at_ms: impl IntoIterator<Item = u64>,
) -> RunReport {
    let acked_set: BTreeSet<u64> = acked.iter().copied().collect();

    let mut seen = HashSet::new();
    let mut highest: Option<u64> = None;
    let (mut duplicates, mut inversions) = (0, 0);
    let (mut from_primary, mut from_backup) = (0, 0);
    for d in deliveries {
        match d.source {
            Source::Primary => from_primary += 1,
            Source::Backup => from_backup += 1,
        }
        if !seen.insert(d.seq) {
            duplicates += 1;
            continue;
        }
        if highest.is_some_and(|h| d.seq < h) {
            inversions += 1;
        }
        highest = highest.max(Some(d.seq));
    }

    let missing = acked_set
        .iter()
        .copied()
        .filter(|seq| !seen.contains(seq))
        .collect();
    let highest_seen = acked_set.last().copied().max(highest).unwrap_or(0);

    let mut fault_times: Vec<u64> = faults_at_ms.into_iter().collect();
    fault_times.sort_unstable();
    let faults = fault_times
        .into_iter()
        .map(|at_ms| fault_window(deliveries, at_ms))
        .collect();

    RunReport {
        sent: sent.unwrap_or(highest_seen),
        acked: acked_set.len(),
        received: seen.len(),
        delivered_lines: deliveries.len(),
        from_primary,
        from_backup,
        missing,
        duplicates,
        inversions,
        faults,
        fault_label: None,
        max_silence_ms: DEFAULT_MAX_SILENCE_MS,
        unparsed_sub_lines: 0,
        unparsed_ack_lines: 0,
    }
}

impl RunReport {
    /// Sets the silence limit `Display` judges against.
    pub fn with_max_silence_ms(mut self, max_silence_ms: u64) -> Self {
        self.max_silence_ms = max_silence_ms;
        self
    }

    /// Records how many lines of each log did not parse (shown, never fatal).
    pub fn with_unparsed(mut self, sub_lines: usize, ack_lines: usize) -> Self {
        self.unparsed_sub_lines = sub_lines;
        self.unparsed_ack_lines = ack_lines;
        self
    }

    /// Says what the faults were (e.g. "primary stopped"); the report then speaks of
    /// "faults" and shows the label, instead of "kills".
    pub fn with_fault_label(mut self, label: impl Into<String>) -> Self {
        self.fault_label = Some(label.into());
        self
    }
}

/// The deliveries on either side of the fault at `at_ms`, and the silence around it.
pub(super) fn fault_window(deliveries: &[Delivery], at_ms: u64) -> FaultWindow {
    let last_before = deliveries
        .iter()
        .filter(|d| d.at_ms <= at_ms)
        .max_by_key(|d| d.at_ms)
        .copied();
    let first_after = deliveries
        .iter()
        .filter(|d| d.at_ms > at_ms)
        .min_by_key(|d| d.at_ms)
        .copied();
    FaultWindow {
        at_ms,
        last_before,
        first_after,
        silence: silence_around(deliveries, at_ms, last_before, first_after),
    }
}

/// The longest gap between consecutive delivery times within the window around the fault,
/// always counting the gap that spans the fault even if its ends lie outside the window.
fn silence_around(
    deliveries: &[Delivery],
    fault: u64,
    last_before: Option<Delivery>,
    first_after: Option<Delivery>,
) -> Option<Silence> {
    if deliveries.is_empty() {
        return None;
    }
    let window_start = fault.saturating_sub(SILENCE_WINDOW_BEFORE_MS);
    let window_end = fault.saturating_add(SILENCE_WINDOW_AFTER_MS);
    let mut times: Vec<u64> = deliveries
        .iter()
        .map(|d| d.at_ms)
        .filter(|&t| (window_start..=window_end).contains(&t))
        .collect();
    // The gap across the fault starts at the last delivery before it, or at the fault itself
    // if nothing came before (the subscriber cannot have been silent before it existed).
    times.push(last_before.map_or(fault, |d| d.at_ms));
    if let Some(d) = first_after {
        times.push(d.at_ms);
    }
    times.sort_unstable();
    times.dedup();

    let mut longest = times
        .windows(2)
        .map(|w| Silence {
            from_ms: w[0],
            to_ms: w[1],
            open_ended: false,
        })
        .max_by_key(Silence::ms);
    if first_after.is_none() {
        // Nothing after the fault: the silence never ended; measure it to the window's end.
        let from_ms = times.last().copied().unwrap_or(fault);
        let open = Silence {
            from_ms,
            to_ms: window_end.max(from_ms),
            open_ended: true,
        };
        if longest.is_none_or(|l| open.ms() >= l.ms()) {
            longest = Some(open);
        }
    }
    longest.or(Some(Silence {
        from_ms: fault,
        to_ms: fault,
        open_ended: false,
    }))
}

/// One message's way through the pair: published at one moment, first printed at another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Latency {
    /// The message's sequence number.
    pub seq: u64,
    /// When test_publisher first sent it, unix ms.
    pub published_ms: u64,
    /// Its first delivery (duplicates after it do not count).
    pub delivery: Delivery,
}

impl Latency {
    /// Publish to delivery, in ms.
    pub fn ms(&self) -> u64 {
        self.delivery.at_ms.saturating_sub(self.published_ms)
    }
}

/// The latency of every delivered message whose publish time is known, in delivery order.
/// `published` holds `(unix_ms, seq)` pairs (see [`parse_publish`](super::parse_publish));
/// the first one of a seq counts.
pub fn latencies(deliveries: &[Delivery], published: &[(u64, u64)]) -> Vec<Latency> {
    let mut sent_at = HashMap::new();
    for &(at_ms, seq) in published {
        sent_at.entry(seq).or_insert(at_ms);
    }
    let mut seen = HashSet::new();
    deliveries
        .iter()
        .filter(|d| seen.insert(d.seq))
        .filter_map(|&delivery| {
            let published_ms = *sent_at.get(&delivery.seq)?;
            Some(Latency {
                seq: delivery.seq,
                published_ms,
                delivery,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::fixtures::{d, one_failover, steady};

    /// The length of the silence around each fault, in ms.
    fn silences(r: &RunReport) -> Vec<u64> {
        r.faults
            .iter()
            .map(|f| f.silence.expect("deliveries give a silence").ms())
            .collect()
    }

    #[test]
    fn clean_run_passes() {
        let r = analyse(&steady(1..=10), &(1..=10).collect::<Vec<_>>(), None, []);
        assert_eq!(r.sent, 10);
        assert_eq!(r.acked, 10);
        assert_eq!(r.received, 10);
        assert!(r.missing.is_empty());
        assert_eq!((r.duplicates, r.inversions), (0, 0));
        assert!(r.faults.is_empty());
        assert!(r.passed(DEFAULT_MAX_SILENCE_MS));
        assert!(r.to_string().ends_with("RESULT: PASS\n"), "{r}");
    }

    #[test]
    fn missing_lists_acked_seqs_never_delivered() {
        let got = steady([1, 2, 4, 6]);
        let r = analyse(&got, &[1, 2, 3, 4, 5], Some(7), []);
        assert_eq!(r.missing, vec![3, 5]);
        assert_eq!(r.sent, 7);
        assert!(!r.passed(DEFAULT_MAX_SILENCE_MS));
        let text = r.to_string();
        assert!(text.contains("(seq 3, 5)"), "{text}");
        assert!(
            text.contains("RESULT: FAIL (2 ACKed messages never delivered)"),
            "{text}"
        );
    }

    #[test]
    fn unacked_loss_is_not_missing() {
        // seq 3 was sent but never ACKed: losing it is allowed.
        let r = analyse(&steady([1, 2]), &[1, 2], Some(3), []);
        assert!(r.missing.is_empty());
        assert!(r.passed(DEFAULT_MAX_SILENCE_MS));
    }

    #[test]
    fn duplicates_count_repeat_lines_from_either_source() {
        let got = vec![
            d(1, Source::Primary, 1),
            d(2, Source::Primary, 2),
            d(3, Source::Backup, 2),
            d(4, Source::Backup, 2),
            d(5, Source::Backup, 3),
        ];
        let r = analyse(&got, &[1, 2, 3], None, []);
        assert_eq!(r.duplicates, 2);
        assert_eq!(r.inversions, 0, "a duplicate is not an inversion");
        assert_eq!(r.received, 3);
        assert_eq!(r.delivered_lines, 5);
        assert_eq!((r.from_primary, r.from_backup), (2, 3));
        assert!(!r.passed(DEFAULT_MAX_SILENCE_MS));
    }

    #[test]
    fn inversions_count_each_late_line_once() {
        // 4 and 3 arrive after 5; 6 after them is fine; the repeat of 3 is a duplicate.
        let r = analyse(&steady([1, 2, 5, 4, 3, 6, 3]), &[], None, []);
        assert_eq!(r.inversions, 2);
        assert_eq!(r.duplicates, 1);
        assert_eq!(r.sent, 6);
        assert!(!r.passed(DEFAULT_MAX_SILENCE_MS));
        assert!(r.to_string().contains("2 order inversions"));
    }

    #[test]
    fn silence_includes_the_gap_spanning_the_kill() {
        // Every 100 ms until 1500, kill at 1550, backup resumes at 2750.
        let r = analyse(&one_failover(), &(1..=10).collect::<Vec<_>>(), None, [1550]);
        let [fault] = r.faults[..] else {
            panic!("one fault: {:?}", r.faults)
        };
        let s = fault.silence.expect("a kill gives a silence");
        assert_eq!((s.from_ms, s.to_ms, s.ms()), (1500, 2750, 1250));
        assert!(!s.open_ended);
        assert_eq!(fault.last_before, Some(d(1500, Source::Primary, 6)));
        assert_eq!(fault.first_after, Some(d(2750, Source::Backup, 7)));
        assert!(!r.passed(1000));
        assert!(r.passed(1250));
        let text = r.with_max_silence_ms(1000).to_string();
        assert!(
            text.contains("1250 ms, from 50 ms before the kill to 1200 ms after the kill"),
            "{text}"
        );
        assert!(
            text.contains("silence around the kill 1250 ms > 1000 ms"),
            "{text}"
        );
    }

    #[test]
    fn spanning_gap_counts_even_when_its_ends_are_outside_the_window() {
        let got = vec![d(0, Source::Primary, 1), d(60_000, Source::Backup, 2)];
        let r = analyse(&got, &[1, 2], None, [30_000]);
        assert_eq!(silences(&r), vec![60_000]);
    }

    #[test]
    fn gaps_outside_the_window_are_ignored() {
        // A long pause 20 s before the kill does not count; the failover itself was quick.
        let mut got = vec![d(0, Source::Primary, 1)];
        got.extend((2..=100).map(|seq| d(20_000 + 100 * seq, Source::Primary, seq)));
        got.push(d(30_200, Source::Backup, 101));
        let r = analyse(&got, &[], None, [30_000]);
        assert_eq!(silences(&r), vec![200]);
        assert!(r.passed(1000));
    }

    #[test]
    fn nothing_after_the_kill_fails() {
        let r = analyse(&steady(1..=5), &[1, 2, 3, 4, 5], None, [1450]);
        let s = r.faults[0].silence.expect("silence");
        assert!(s.open_ended);
        assert_eq!(r.faults[0].first_after, None);
        assert!(!r.passed(u64::MAX));
        assert!(r.to_string().contains("nothing delivered after the kill"));
    }

    #[test]
    fn nothing_received_fails() {
        let r = analyse(&[], &[], None, []);
        assert_eq!(r.sent, 0);
        assert!(!r.passed(DEFAULT_MAX_SILENCE_MS));
        assert!(r.to_string().contains("nothing was delivered"));
    }

    /// Kill, restart, kill: the primary delivers 1..=10 until 1900 and is killed at 1950; the
    /// backup delivers 11..=190 from 2500 to 20400 and is killed at 20450; the restarted
    /// broker delivers 191..=200 from 21200.
    fn two_failovers() -> Vec<Delivery> {
        let mut got: Vec<Delivery> = (1..=10)
            .map(|seq| d(1000 + 100 * (seq - 1), Source::Primary, seq))
            .collect();
        got.extend((11..=190).map(|seq| d(2500 + 100 * (seq - 11), Source::Backup, seq)));
        got.extend((191..=200).map(|seq| d(21_200 + 100 * (seq - 191), Source::Primary, seq)));
        got
    }

    #[test]
    fn each_fault_gets_its_own_silence() {
        let acked: Vec<u64> = (1..=200).collect();
        // Given in any order, reported in time order.
        let r = analyse(&two_failovers(), &acked, None, [20_450, 1950]);
        assert_eq!(r.faults.len(), 2);
        assert_eq!((r.faults[0].at_ms, r.faults[1].at_ms), (1950, 20_450));
        assert_eq!(silences(&r), vec![600, 800]);
        assert_eq!(
            r.faults[1].last_before,
            Some(d(20_400, Source::Backup, 190))
        );
        assert_eq!(
            r.faults[1].first_after,
            Some(d(21_200, Source::Primary, 191))
        );
        assert!(r.passed(800));
        assert!(!r.passed(799), "every fault must be within the limit");

        let text = r.with_max_silence_ms(700).to_string();
        for want in [
            "sent:               200\n",
            "kill 1 at:          1950 (unix ms)\n",
            "last before kill 1: seq 10 from PRIMARY, 50 ms before kill 1\n",
            "first after kill 1: seq 11 from BACKUP, 550 ms after kill 1\n",
            "silence at kill 1:  600 ms, from 50 ms before kill 1 to 550 ms after kill 1 (limit 700 ms)\n",
            "kill 2 at:          20450 (unix ms)\n",
            "silence at kill 2:  800 ms, from 50 ms before kill 2 to 750 ms after kill 2 (limit 700 ms)\n",
            "RESULT: FAIL (silence around kill 2: 800 ms > 700 ms)\n",
        ] {
            assert!(text.contains(want), "{want:?} in\n{text}");
        }
    }

    #[test]
    fn a_later_fault_inside_the_window_counts_for_the_earlier_one() {
        // As `two_failovers`, but the second kill comes 8.4 s after the first: its 800 ms gap
        // lies within 10 s after the first kill, so it is the longest silence around both.
        let mut got: Vec<Delivery> = (1..=10)
            .map(|seq| d(1000 + 100 * (seq - 1), Source::Primary, seq))
            .collect();
        got.extend((11..=89).map(|seq| d(2500 + 100 * (seq - 11), Source::Backup, seq)));
        got.extend((90..=99).map(|seq| d(11_100 + 100 * (seq - 90), Source::Primary, seq)));
        let r = analyse(&got, &[], None, [1950, 10_350]);
        assert_eq!(silences(&r), vec![800, 800]);
        assert!(r.passed(800));
    }

    #[test]
    fn latency_is_from_the_first_publish_to_the_first_delivery() {
        let got = vec![
            d(1100, Source::Primary, 1),
            d(1900, Source::Backup, 2),
            d(1950, Source::Backup, 2),
            d(2000, Source::Backup, 3),
        ];
        // seq 2 was resent after the failover (a second PUBLISH line); seq 3 never logged.
        let published = [(1000, 1), (1100, 2), (1800, 2)];
        let l = latencies(&got, &published);
        let ms: Vec<(u64, u64)> = l.iter().map(|l| (l.seq, l.ms())).collect();
        assert_eq!(ms, vec![(1, 100), (2, 800)]);
        assert_eq!(l[1].delivery.source, Source::Backup);
    }
}
