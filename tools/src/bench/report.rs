//! The results of a run: the numbers, the text table and the JSON line.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{self, Write};
use std::time::Duration;

use edgebroker::error::Result;
use log::debug;

use super::Options;

/// The results of a run, as [`run`](super::run) measured them.
#[derive(Debug)]
pub struct Report {
    /// The primary's STATUS before the run (`role`, `epoch`, `backup`, ...).
    pub(super) status: HashMap<String, String>,
    /// Messages ACKed.
    pub(super) acked: u64,
    /// From the first publish to the last ACK.
    pub(super) publish_time: Duration,
    /// Publish->ACK times in nanoseconds, sorted.
    pub(super) ack_ns: Vec<u64>,
    /// Publish->delivery times in nanoseconds, sorted.
    pub(super) deliver_ns: Vec<u64>,
    /// Deliveries expected: every ACKed message to every subscriber.
    pub(super) expected: u64,
    /// Distinct deliveries counted.
    pub(super) delivered: u64,
    /// Extra copies delivered.
    pub(super) duplicates: u64,
    /// Messages on the topic that were not this run's.
    pub(super) foreign: u64,
    /// How long the wait for deliveries after the last ACK took.
    pub(super) drain_time: Duration,
    /// The primary's `pending` after the drain: messages it still had to compute or deliver.
    pub(super) pending_after: Option<u64>,
}

/// The `p`-th percentile (nearest rank, exact) of sorted nanoseconds, in whole microseconds.
fn percentile_us(sorted: &[u64], p: usize) -> Option<u64> {
    let n = sorted.len();
    if n == 0 {
        return None;
    }
    let rank = (p * n).div_ceil(100);
    Some(sorted[rank.clamp(1, n) - 1] / 1_000)
}

impl Report {
    /// Expected deliveries that did not arrive within the drain.
    pub fn lost(&self) -> u64 {
        self.expected.saturating_sub(self.delivered)
    }

    /// ACKed messages per second of publishing.
    pub fn throughput(&self) -> f64 {
        self.acked as f64 / self.publish_time.as_secs_f64().max(1e-9)
    }

    /// The results table, `====== PUB ... ======` and one `  name  value` line per row, with
    /// notes when other messages were on the topic or some were still unprocessed.
    pub fn text(&self, o: &Options) -> String {
        // "p50 38 us  p90 93 us ..." in microseconds, or "none" without samples.
        let latency = |sorted: &[u64], ps: &[(&str, usize)]| {
            if sorted.is_empty() {
                return "none".to_string();
            }
            ps.iter()
                .filter_map(|&(name, p)| Some(format!("{name} {} us", percentile_us(sorted, p)?)))
                .collect::<Vec<_>>()
                .join("  ")
        };
        let (ack, del) = (&self.ack_ns, &self.deliver_ns);
        let mut out = String::new();
        let waits = match o.window {
            1 => "wait for each ACK".to_string(),
            n => format!("up to {n} waiting for their ACKs"),
        };
        let _ = writeln!(out, "====== PUB ({waits}; backup={}) ======", {
            self.status.get("backup").map_or("?", String::as_str)
        });
        let rows = [
            ("messages", format!("{} ({} ACKed)", o.messages, self.acked)),
            ("publishers", o.publishers.to_string()),
            ("window", o.window.to_string()),
            ("subscribers", o.subscribers.to_string()),
            ("payload", format!("{} bytes", o.payload_bytes)),
            (
                "duration",
                format!("{:.3} s", self.publish_time.as_secs_f64()),
            ),
            ("throughput", format!("{:.0} messages/s", self.throughput())),
            (
                "publish->ACK",
                latency(ack, &[("p50", 50), ("p90", 90), ("p99", 99), ("max", 100)]),
            ),
            (
                "publish->deliver",
                latency(del, &[("p50", 50), ("p99", 99), ("max", 100)]),
            ),
            (
                "delivered",
                format!(
                    "{} of {} expected (drained in {:.3} s)",
                    self.delivered,
                    self.expected,
                    self.drain_time.as_secs_f64()
                ),
            ),
            ("lost", self.lost().to_string()),
            ("duplicates", self.duplicates.to_string()),
        ];
        for (name, value) in rows {
            let _ = writeln!(out, "  {name:<17} {value}");
        }
        if self.foreign > 0 {
            let _ = writeln!(
                out,
                "  note: {} messages on '{}' were not this run's (another publisher?)",
                self.foreign, o.topic
            );
        }
        if self.lost() > 0 {
            match self.pending_after {
                Some(n) if n > 0 => {
                    let _ = writeln!(
                        out,
                        "  note: the primary still holds {n} unprocessed messages (compute step?); \
                         'lost' counts what did not arrive within the drain"
                    );
                }
                _ => {}
            }
        }
        out
    }

    /// The results as one flat JSON object on one line, without a newline: what `--json`
    /// prints last, for scripts (`scripts/bench_suite.sh`). Missing latencies are `null`.
    pub fn json(&self, o: &Options) -> String {
        let (ack, del) = (&self.ack_ns, &self.deliver_ns);
        let num = |v: Option<u64>| v.map_or("null".to_string(), |v| v.to_string());
        format!(
            "{{\"messages\":{},\"acked\":{},\"publishers\":{},\"window\":{},\"subscribers\":{},\
             \"payload_bytes\":{},\"duration_s\":{:.6},\"throughput_msgs_per_s\":{:.1},\
             \"ack_p50_us\":{},\"ack_p90_us\":{},\"ack_p99_us\":{},\"ack_max_us\":{},\
             \"deliver_p50_us\":{},\"deliver_p99_us\":{},\"deliver_max_us\":{},\
             \"expected\":{},\"delivered\":{},\"lost\":{},\"duplicates\":{},\
             \"backup\":\"{}\"}}",
            o.messages,
            self.acked,
            o.publishers,
            o.window,
            o.subscribers,
            o.payload_bytes,
            self.publish_time.as_secs_f64(),
            self.throughput(),
            num(percentile_us(ack, 50)),
            num(percentile_us(ack, 90)),
            num(percentile_us(ack, 99)),
            num(percentile_us(ack, 100)),
            num(percentile_us(del, 50)),
            num(percentile_us(del, 99)),
            num(percentile_us(del, 100)),
            self.expected,
            self.delivered,
            self.lost(),
            self.duplicates,
            json_safe(self.status.get("backup").map_or("?", String::as_str)),
        )
    }

    /// Prints [`Report::text`] on stdout, and [`Report::json`] as the last line if `o.json`.
    pub fn print(&self, o: &Options) -> Result<()> {
        let mut out = self.text(o);
        if o.json {
            out.push_str(&self.json(o));
            out.push('\n');
        }
        let mut stdout = io::stdout().lock();
        stdout.write_all(out.as_bytes())?;
        stdout.flush()?;
        debug!("done: {} ACKed, {} delivered", self.acked, self.delivered);
        Ok(())
    }
}

/// A STATUS value made safe inside a JSON string (it is a plain word in practice).
fn json_safe(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let ns: Vec<u64> = (1..=100).map(|v| v * 1_000).collect();
        assert_eq!(percentile_us(&ns, 50), Some(50));
        assert_eq!(percentile_us(&ns, 99), Some(99));
        assert_eq!(percentile_us(&ns, 100), Some(100));
        assert_eq!(percentile_us(&[7_000], 50), Some(7));
        assert_eq!(percentile_us(&[], 50), None);
    }
}
