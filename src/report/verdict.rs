//! The verdict on a run in words: why it fails ([`RunReport::failures`]), the PASS rule
//! ([`RunReport::passed`]) and the human report, `RunReport`'s `Display`.

use std::fmt;

use super::{Delivery, FaultWindow, RunReport};

/// How many missing sequence numbers the report lists before shortening the list.
pub const MISSING_SHOWN: usize = 20;

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

impl RunReport {
    /// The name of fault `i` (0-based) as a line key: `kill`, `fault`, or numbered (`kill 2`)
    /// when the run had several.
    fn fault_key(&self, i: usize) -> String {
        let noun = if self.fault_label.is_some() {
            "fault"
        } else {
            "kill"
        };
        if self.faults.len() > 1 {
            format!("{noun} {}", i + 1)
        } else {
            noun.to_string()
        }
    }

    /// The name of fault `i` (0-based) inside a sentence: `the kill`, `fault 2`.
    fn fault_ref(&self, i: usize) -> String {
        if self.faults.len() > 1 {
            self.fault_key(i)
        } else {
            format!("the {}", self.fault_key(i))
        }
    }

    /// Why the run fails with this silence limit, one phrase per reason; empty means PASS.
    pub fn failures(&self, max_silence_ms: u64) -> Vec<String> {
        let mut reasons = Vec::new();
        if self.received == 0 {
            reasons.push("nothing was delivered".to_string());
        }
        if !self.missing.is_empty() {
            reasons.push(format!(
                "{} never delivered",
                plural(self.missing.len(), "ACKed message", "ACKed messages")
            ));
        }
        if self.duplicates > 0 {
            reasons.push(plural(self.duplicates, "duplicate", "duplicates"));
        }
        if self.inversions > 0 {
            reasons.push(plural(
                self.inversions,
                "order inversion",
                "order inversions",
            ));
        }
        // "the kill 2600 ms" reads fine; "kill 2 2600 ms" needs a colon.
        let sep = if self.faults.len() > 1 { ":" } else { "" };
        for (i, fault) in self.faults.iter().enumerate() {
            let Some(s) = fault.silence else { continue };
            let name = self.fault_ref(i);
            if s.open_ended {
                reasons.push(format!("nothing delivered after {name}"));
            } else if s.ms() > max_silence_ms {
                reasons.push(format!(
                    "silence around {name}{sep} {} ms > {max_silence_ms} ms",
                    s.ms()
                ));
            }
        }
        reasons
    }

    /// The PASS rule: nothing ACKed is missing, no duplicates, no inversions, something was
    /// received, and the silence around every fault is at most `max_silence_ms`.
    pub fn passed(&self, max_silence_ms: u64) -> bool {
        self.failures(max_silence_ms).is_empty()
    }

    /// The report's `key: value` lines about fault `i` (0-based).
    fn fault_lines(&self, i: usize, fault: &FaultWindow) -> Vec<(String, String)> {
        let (key, name, at) = (self.fault_key(i), self.fault_ref(i), fault.at_ms);
        let relative = |at_ms: u64| {
            if at_ms <= at {
                format!("{} ms before {name}", at - at_ms)
            } else {
                format!("{} ms after {name}", at_ms - at)
            }
        };
        let describe = |d: Option<Delivery>| match d {
            Some(d) => format!("seq {} from {}, {}", d.seq, d.source, relative(d.at_ms)),
            None => "none".to_string(),
        };
        let mut at_value = format!("{at} (unix ms)");
        if let Some(label) = &self.fault_label {
            at_value = format!("{at_value}, {label}");
        }
        let silence = match fault.silence {
            None => "n/a (nothing delivered)".to_string(),
            Some(s) if s.open_ended => format!(
                ">= {} ms, nothing delivered after {name} (limit {} ms)",
                s.ms(),
                self.max_silence_ms
            ),
            Some(s) => format!(
                "{} ms, from {} to {} (limit {} ms)",
                s.ms(),
                relative(s.from_ms),
                relative(s.to_ms),
                self.max_silence_ms
            ),
        };
        let silence_key = if self.faults.len() > 1 {
            format!("silence at {key}")
        } else {
            "longest silence".to_string()
        };
        vec![
            (format!("{key} at"), at_value),
            (format!("last before {key}"), describe(fault.last_before)),
            (format!("first after {key}"), describe(fault.first_after)),
            (silence_key, silence),
        ]
    }
}

impl fmt::Display for RunReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut lines: Vec<(String, String)> = Vec::new();
        let mut line = |key: &str, value: String| lines.push((key.to_string(), value));
        line("sent", self.sent.to_string());
        line("acked", self.acked.to_string());
        line("received", format!("{} distinct", self.received));
        line(
            "delivered lines",
            format!(
                "{} ({} from PRIMARY, {} from BACKUP)",
                self.delivered_lines, self.from_primary, self.from_backup
            ),
        );
        if self.unparsed_sub_lines > 0 || self.unparsed_ack_lines > 0 {
            line(
                "unparsed lines",
                format!(
                    "{} in subscriber output, {} in publisher output",
                    self.unparsed_sub_lines, self.unparsed_ack_lines
                ),
            );
        }
        let mut missing = self.missing.len().to_string();
        if !self.missing.is_empty() {
            let shown: Vec<String> = self
                .missing
                .iter()
                .take(MISSING_SHOWN)
                .map(u64::to_string)
                .collect();
            let rest = self.missing.len().saturating_sub(MISSING_SHOWN);
            let more = if rest > 0 {
                format!(", … {rest} more")
            } else {
                String::new()
            };
            missing = format!("{missing} (seq {}{more})", shown.join(", "));
        }
        line("missing", missing);
        line("duplicates", self.duplicates.to_string());
        line("order inversions", self.inversions.to_string());
        if self.faults.is_empty() {
            line("kill", "none (no failover in this run)".to_string());
        }
        for (i, fault) in self.faults.iter().enumerate() {
            lines.extend(self.fault_lines(i, fault));
        }

        // Values line up one space after the longest key (at least column 19).
        let width = lines
            .iter()
            .map(|(key, _)| key.chars().count() + 1)
            .max()
            .unwrap_or(0)
            .max(18);
        for (key, value) in &lines {
            writeln!(f, "{:<width$} {value}", format!("{key}:"))?;
        }
        let reasons = self.failures(self.max_silence_ms);
        if reasons.is_empty() {
            writeln!(f, "RESULT: PASS")
        } else {
            writeln!(f, "RESULT: FAIL ({})", reasons.join("; "))
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::report::analyse;
    use crate::report::fixtures::{one_failover, steady};

    #[test]
    fn long_missing_list_is_shortened() {
        let acked: Vec<u64> = (1..=50).collect();
        let r = analyse(&steady([50]), &acked, None, []);
        let text = r.to_string();
        assert!(text.contains("missing:           49 (seq 1, 2,"), "{text}");
        assert!(text.contains("19, 20, … 29 more)"), "{text}");
        assert!(!text.contains(" 21,"), "{text}");
    }

    #[test]
    fn a_single_kill_reads_as_it_always_did() {
        let r = analyse(&one_failover(), &(1..=10).collect::<Vec<_>>(), None, [1550]);
        assert_eq!(
            r.with_max_silence_ms(1500).to_string(),
            "\
sent:              10
acked:             10
received:          10 distinct
delivered lines:   10 (6 from PRIMARY, 4 from BACKUP)
missing:           0
duplicates:        0
order inversions:  0
kill at:           1550 (unix ms)
last before kill:  seq 6 from PRIMARY, 50 ms before the kill
first after kill:  seq 7 from BACKUP, 1200 ms after the kill
longest silence:   1250 ms, from 50 ms before the kill to 1200 ms after the kill (limit 1500 ms)
RESULT: PASS
"
        );
    }

    #[test]
    fn a_fault_label_names_the_fault() {
        let r = analyse(&one_failover(), &(1..=10).collect::<Vec<_>>(), None, [1550])
            .with_fault_label("primary stopped");
        let text = r.to_string();
        for want in [
            "fault at:          1550 (unix ms), primary stopped\n",
            "last before fault: seq 6 from PRIMARY, 50 ms before the fault\n",
            "first after fault: seq 7 from BACKUP, 1200 ms after the fault\n",
            "longest silence:   1250 ms, from 50 ms before the fault to 1200 ms after the fault",
            "RESULT: FAIL (silence around the fault 1250 ms > 1000 ms)",
        ] {
            assert!(text.contains(want), "{want:?} in\n{text}");
        }
        assert!(!text.contains("kill"), "{text}");
    }

    #[test]
    fn nothing_after_the_last_fault_fails() {
        let mut got = one_failover();
        got.truncate(8);
        let r = analyse(&got, &[], None, [1550, 3000]);
        assert_eq!(r.faults[0].silence.map(|s| s.open_ended), Some(false));
        assert_eq!(r.faults[1].silence.map(|s| s.open_ended), Some(true));
        assert_eq!(
            r.failures(u64::MAX),
            vec!["nothing delivered after kill 2".to_string()]
        );
    }
}
