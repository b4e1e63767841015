//! Run analysis for the failover demo (`run_test.sh`, SPEC §6): what the subscriber received
//! compared with what `test_publisher` had ACKed, and a picture of the run.
//!
//! This module owns three things, none of which touch a socket or a file:
//! - **Parsing** the data streams the demo records: the subscriber's stdout
//!   (`<unix_ms> [PRIMARY] <seq>`, see [`parse_delivery`]), `test_publisher`'s stdout
//!   (`<unix_ms> ACK <seq>`, see [`parse_ack`]) and its publish log (`<unix_ms> PUBLISH <seq>`,
//!   see [`parse_publish`]). [`parse_log`] applies any of them to a whole file and counts the
//!   lines it could not read instead of failing on them.
//! - **Judging** a run: [`analyse`] turns deliveries and ACKs into a [`RunReport`] (missing
//!   ACKed messages, duplicates, order inversions, the longest silence around each fault —
//!   a kill or a stop of the primary), whose `Display` is the human report and whose
//!   [`RunReport::passed`] is the PASS/FAIL rule.
//! - **Drawing** the run: [`render_svg`] plots sequence number against time, one dot per
//!   delivery, coloured by the broker that delivered it, with each fault marked; under it a
//!   zoom around each fault, where the silence is measured, and the publish→delivery
//!   [`latencies`] of every message.
//!
//! The `report` program is a thin wrapper around [`program`], which reads the files, calls
//! these and prints; the program maps the verdict to exit 0/1.

pub mod program;

use std::collections::{BTreeSet, HashSet};
use std::fmt::{self, Write as _};

/// How far before a fault the silence search looks, in ms.
pub const SILENCE_WINDOW_BEFORE_MS: u64 = 5_000;
/// How far after a fault the silence search looks, in ms.
pub const SILENCE_WINDOW_AFTER_MS: u64 = 10_000;
/// The default limit on the silence around each fault for a run to pass, in ms.
pub const DEFAULT_MAX_SILENCE_MS: u64 = 1_000;
/// How the picture labels a fault unless told otherwise.
pub const DEFAULT_FAULT_LABEL: &str = "primary killed";
/// How many missing sequence numbers the report lists before shortening the list.
pub const MISSING_SHOWN: usize = 20;
/// How many unparsed lines [`parse_log`] keeps as examples.
pub const UNPARSED_EXAMPLES: usize = 3;

pub use crate::client::Source;

/// One line of subscriber output: a message delivered to the subscriber.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    /// When the subscriber printed it, in unix milliseconds (0 when the line had no timestamp).
    pub at_ms: u64,
    /// Which broker delivered it.
    pub source: Source,
    /// The payload, a `test_publisher` sequence number.
    pub seq: u64,
}

/// Splits an optional leading `<unix_ms> ` off a line: `(timestamp or 0, rest)`.
fn split_timestamp(line: &str) -> (u64, &str) {
    let line = line.trim();
    if let Some((first, rest)) = line.split_once(char::is_whitespace)
        && is_digits(first)
        && let Ok(at_ms) = first.parse()
    {
        return (at_ms, rest.trim_start());
    }
    (0, line)
}

fn is_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// Parses a decimal sequence number; unlike `str::parse` it refuses a sign.
fn parse_seq(s: &str) -> Option<u64> {
    if is_digits(s) { s.parse().ok() } else { None }
}

/// Parses `<word> <seq>` where the word is exactly `word` and the seq the whole remainder.
fn parse_tagged(rest: &str, word: &str) -> Option<u64> {
    let after = rest.strip_prefix(word)?;
    if !after.starts_with(char::is_whitespace) {
        return None;
    }
    parse_seq(after.trim())
}

/// Parses one line of subscriber output, `<unix_ms> [PRIMARY] <seq>` or
/// `<unix_ms> [BACKUP] <seq>`; the timestamp may be absent (`[PRIMARY] 17`, `at_ms` = 0).
///
/// Returns `None` for anything else, including a payload that is not a decimal number.
pub fn parse_delivery(line: &str) -> Option<Delivery> {
    let (at_ms, rest) = split_timestamp(line);
    [Source::Primary, Source::Backup]
        .into_iter()
        .find_map(|source| {
            parse_tagged(rest, source.label()).map(|seq| Delivery { at_ms, source, seq })
        })
}

/// Parses one line of `test_publisher` output, `<unix_ms> ACK <seq>`, into `(at_ms, seq)`;
/// the timestamp may be absent (`ACK 17`, `at_ms` = 0).
pub fn parse_ack(line: &str) -> Option<(u64, u64)> {
    let (at_ms, rest) = split_timestamp(line);
    parse_tagged(rest, "ACK").map(|seq| (at_ms, seq))
}

/// Parses one line of `test_publisher`'s publish log (`--publish-log`),
/// `<unix_ms> PUBLISH <seq>`: when the message was first sent, before any ACK or resend.
pub fn parse_publish(line: &str) -> Option<(u64, u64)> {
    let (at_ms, rest) = split_timestamp(line);
    parse_tagged(rest, "PUBLISH").map(|seq| (at_ms, seq))
}

/// The result of parsing a whole log with [`parse_log`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedLog<T> {
    /// The parsed lines, in file order.
    pub items: Vec<T>,
    /// How many non-blank lines did not parse.
    pub unparsed: usize,
    /// The first few lines that did not parse, as `(1-based line number, line)`.
    pub unparsed_examples: Vec<(usize, String)>,
}

/// Parses every line of `text` with `parse` (e.g. [`parse_delivery`] or [`parse_ack`]).
///
/// Blank lines are skipped; other lines that do not parse are counted, not fatal, so one
/// stray line in a log does not hide the rest of the run.
pub fn parse_log<T>(text: &str, parse: impl Fn(&str) -> Option<T>) -> ParsedLog<T> {
    let mut log = ParsedLog {
        items: Vec::new(),
        unparsed: 0,
        unparsed_examples: Vec::new(),
    };
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match parse(line) {
            Some(item) => log.items.push(item),
            None => {
                log.unparsed += 1;
                if log.unparsed_examples.len() < UNPARSED_EXAMPLES {
                    log.unparsed_examples.push((i + 1, line.to_string()));
                }
            }
        }
    }
    log
}

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

/// The deliveries on either side of the fault at `at_ms`, and the silence around it.
fn fault_window(deliveries: &[Delivery], at_ms: u64) -> FaultWindow {
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

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
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

/// Escapes text for use inside SVG/XML text and attribute values.
fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Control characters other than tab/newline are not allowed in XML 1.0.
            c if c.is_control() && c != '\t' && c != '\n' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// A "nice" tick step (1, 2 or 5 times a power of ten) giving about `target` ticks over `span`.
fn nice_step(span: f64, target: f64) -> f64 {
    let raw = (span / target).max(f64::MIN_POSITIVE);
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * magnitude)
        .find(|&s| s >= raw)
        .unwrap_or(10.0 * magnitude);
    step.max(f64::MIN_POSITIVE)
}

/// Formats a tick value with as many decimals as the step needs.
fn tick_label(value: f64, step: f64) -> String {
    let decimals = if step >= 1.0 {
        0
    } else {
        (-step.log10().floor()) as usize
    };
    let s = format!("{value:.decimals$}");
    // Avoid "-0".
    if s.trim_start_matches('-')
        .chars()
        .all(|c| c == '0' || c == '.')
    {
        s.trim_start_matches('-').to_string()
    } else {
        s
    }
}

/// The tick values from `lo` to `hi` (inclusive, with a little slack) at multiples of `step`.
fn ticks(lo: f64, hi: f64, step: f64) -> Vec<f64> {
    let first = (lo / step).ceil() as i64;
    let last = (hi / step + 1e-9).floor() as i64;
    (first..=last).map(|i| i as f64 * step).collect()
}

/// Picture width and the side margins of every panel, in SVG user units (pixels at 100 %).
const SVG_W: f64 = 900.0;
const MARGIN_LEFT: f64 = 75.0;
const MARGIN_RIGHT: f64 = 25.0;
/// Heights of the three bands: the whole run, the zooms around the faults (drawn only when
/// there is a fault), and the latency of each message.
const OVERVIEW_H: f64 = 500.0;
const ZOOM_H: f64 = 230.0;
const LATENCY_H: f64 = 260.0;
/// How much a zoomed panel shows before its fault, and at least after it, in ms.
pub const ZOOM_MS: u64 = 1_500;
/// How much a zoomed panel shows after the first delivery that ends the silence, in ms.
const ZOOM_AFTER_SILENCE_MS: u64 = 1_000;
/// The furthest a zoomed panel reaches after its fault, in ms.
const ZOOM_MAX_AFTER_MS: u64 = 10_000;
const PRIMARY_COLOUR: &str = "#1f77b4";
const BACKUP_COLOUR: &str = "#ff7f0e";
const KILL_COLOUR: &str = "#d62728";
const SILENCE_COLOUR: &str = "#fcdcdc";

fn colour(source: Source) -> &'static str {
    match source {
        Source::Primary => PRIMARY_COLOUR,
        Source::Backup => BACKUP_COLOUR,
    }
}

/// One panel's plotting area: where it sits on the picture (pixels) and the data ranges it
/// shows (`x` and `y`, each `(low, high)` with `low < high`).
struct Plot {
    left: f64,
    right: f64,
    top: f64,
    bottom: f64,
    x: (f64, f64),
    y: (f64, f64),
}

impl Plot {
    fn px(&self, x: f64) -> f64 {
        self.left + (x - self.x.0) / (self.x.1 - self.x.0) * (self.right - self.left)
    }

    fn py(&self, y: f64) -> f64 {
        self.bottom - (y - self.y.0) / (self.y.1 - self.y.0) * (self.bottom - self.top)
    }

    /// Draws the grid, tick labels, frame and the x axis's name; with `y` (its tick step
    /// and name) the y axis too.
    fn axes(&self, svg: &mut String, x_step: f64, x_name: &str, y: Option<(f64, &str)>) {
        let x_ticks = ticks(self.x.0, self.x.1, x_step);
        let y_ticks = y.map_or(Vec::new(), |(step, _)| ticks(self.y.0, self.y.1, step));
        let (left, right, top, bottom) = (self.left, self.right, self.top, self.bottom);
        let _ = writeln!(svg, r##"<g stroke="#e0e0e0" stroke-width="1">"##);
        for &x in &x_ticks {
            let _ = writeln!(
                svg,
                r#"<line x1="{0:.1}" y1="{top:.1}" x2="{0:.1}" y2="{bottom:.1}"/>"#,
                self.px(x)
            );
        }
        for &y in &y_ticks {
            let _ = writeln!(
                svg,
                r#"<line x1="{left:.1}" y1="{0:.1}" x2="{right:.1}" y2="{0:.1}"/>"#,
                self.py(y)
            );
        }
        let _ = writeln!(svg, "</g>");
        let _ = writeln!(svg, r##"<g fill="#333">"##);
        for &x in &x_ticks {
            let _ = writeln!(
                svg,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
                self.px(x),
                bottom + 17.0,
                tick_label(x, x_step)
            );
        }
        if let Some((step, _)) = y {
            for &y in &y_ticks {
                let _ = writeln!(
                    svg,
                    r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
                    left - 6.0,
                    self.py(y) + 4.0,
                    tick_label(y, step)
                );
            }
        }
        let _ = writeln!(svg, "</g>");
        let _ = writeln!(
            svg,
            r##"<rect x="{left:.1}" y="{top:.1}" width="{:.1}" height="{:.1}" fill="none" stroke="#333"/>"##,
            right - left,
            bottom - top
        );
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            (left + right) / 2.0,
            bottom + 36.0,
            xml_escape(x_name)
        );
        if let Some((_, name)) = y {
            let _ = writeln!(
                svg,
                r#"<text x="20" y="{0:.1}" text-anchor="middle" transform="rotate(-90 20 {0:.1})">{1}</text>"#,
                (top + bottom) / 2.0,
                xml_escape(name)
            );
        }
    }

    /// A solid red vertical line at `x`: a fault, in the panels under the overview.
    fn fault_line(&self, svg: &mut String, x: f64) {
        let _ = writeln!(
            svg,
            r#"<line x1="{0:.1}" y1="{1:.1}" x2="{0:.1}" y2="{2:.1}" stroke="{KILL_COLOUR}" stroke-width="1.5"/>"#,
            self.px(x),
            self.top,
            self.bottom
        );
    }
}

/// A panel's heading, left-aligned above its plot.
fn heading(svg: &mut String, x: f64, y: f64, text: &str) {
    let _ = writeln!(
        svg,
        r#"<text x="{x:.1}" y="{y:.1}" font-weight="bold">{}</text>"#,
        xml_escape(text)
    );
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
/// `published` holds `(unix_ms, seq)` pairs (see [`parse_publish`]); the first one of a seq
/// counts.
pub fn latencies(deliveries: &[Delivery], published: &[(u64, u64)]) -> Vec<Latency> {
    let mut sent_at = std::collections::HashMap::new();
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

/// Renders a self-contained SVG of a run, 900 wide, in three bands:
/// - the whole run: sequence number (y) against seconds since the first delivery (x), one
///   dot per delivery coloured by source (primary blue, backup orange), a legend, and each
///   fault (unix ms) as a red dashed vertical line labelled `fault_label` (numbered when
///   there are several);
/// - when there are faults, one zoomed panel per fault ([`ZOOM_MS`] before it, and until a
///   second after the silence ends): each delivery a tick at its time, in a lane for each
///   broker, and the silence across the fault shaded and labelled in ms;
/// - the publish→delivery latency of each message (`published`: `(unix_ms, seq)` pairs from
///   test_publisher's publish log) against the same time axis as the whole run, so the
///   backlog the backup works off after a takeover shows as a spike.
pub fn render_svg(
    deliveries: &[Delivery],
    published: &[(u64, u64)],
    faults_at_ms: &[u64],
    fault_label: &str,
    title: &str,
) -> String {
    let mut faults = faults_at_ms.to_vec();
    faults.sort_unstable();
    if deliveries.is_empty() {
        faults.clear();
    }
    let zoom_h = if faults.is_empty() { 0.0 } else { ZOOM_H };
    let height = OVERVIEW_H + zoom_h + LATENCY_H;

    let mut svg = String::new();
    // `write!` to a String cannot fail; the results are ignored on purpose.
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{SVG_W}" height="{height}" viewBox="0 0 {SVG_W} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        svg,
        r#"<rect x="0" y="0" width="{SVG_W}" height="{height}" fill="white"/>"#
    );
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="25" text-anchor="middle" font-size="16" font-weight="bold">{}</text>"#,
        SVG_W / 2.0,
        xml_escape(title)
    );
    let t0 = deliveries.iter().map(|d| d.at_ms).min().unwrap_or(0);
    let time = TimeAxis::new(deliveries, &faults, t0);

    let _ = writeln!(svg, r#"<g id="overview">"#);
    overview(&mut svg, deliveries, &faults, &time, fault_label);
    let _ = writeln!(svg, "</g>");
    let n = faults.len() as f64;
    let width = (SVG_W - MARGIN_LEFT - MARGIN_RIGHT - 30.0 * (n - 1.0)) / n;
    for (i, &at_ms) in faults.iter().enumerate() {
        let left = MARGIN_LEFT + i as f64 * (width + 30.0);
        let name = if faults.len() > 1 {
            format!("{fault_label} ({})", i + 1)
        } else {
            fault_label.to_string()
        };
        let _ = writeln!(svg, r#"<g id="zoom-{}">"#, i + 1);
        zoom(&mut svg, deliveries, at_ms, &name, (left, left + width));
        let _ = writeln!(svg, "</g>");
    }
    let _ = writeln!(svg, r#"<g id="latency">"#);
    latency(
        &mut svg,
        &latencies(deliveries, published),
        &faults,
        &time,
        OVERVIEW_H + zoom_h,
    );
    let _ = writeln!(svg, "</g>");
    let _ = writeln!(svg, "</svg>");
    svg
}

/// The time axis the overview and the latency panel share: seconds since the first delivery
/// (`t0`, unix ms), rounded out to whole ticks.
struct TimeAxis {
    t0: u64,
    range: (f64, f64),
    step: f64,
}

impl TimeAxis {
    fn new(deliveries: &[Delivery], faults: &[u64], t0: u64) -> TimeAxis {
        let secs = |at_ms: u64| (at_ms as f64 - t0 as f64) / 1000.0;
        let mut lo: f64 = 0.0;
        let mut hi: f64 = deliveries.iter().map(|d| secs(d.at_ms)).fold(0.0, f64::max);
        for &k in faults {
            lo = lo.min(secs(k));
            hi = hi.max(secs(k));
        }
        if hi - lo < 1.0 {
            hi = lo + 1.0;
        }
        let step = nice_step(hi - lo, 10.0);
        // A little headroom so the last dot does not sit on the frame.
        let lo = (lo / step).floor() * step;
        let hi = ((hi + 0.01 * (hi - lo)) / step).ceil() * step;
        TimeAxis {
            t0,
            range: (lo, hi),
            step,
        }
    }

    fn secs(&self, at_ms: u64) -> f64 {
        (at_ms as f64 - self.t0 as f64) / 1000.0
    }
}

/// The whole run: sequence number against time, the faults dashed, a legend.
fn overview(
    svg: &mut String,
    deliveries: &[Delivery],
    faults: &[u64],
    time: &TimeAxis,
    fault_label: &str,
) {
    let y_hi = deliveries.iter().map(|d| d.seq).max().unwrap_or(0).max(1) as f64;
    let y_step = nice_step(y_hi, 8.0).max(1.0);
    let plot = Plot {
        left: MARGIN_LEFT,
        right: SVG_W - MARGIN_RIGHT,
        top: 45.0,
        bottom: OVERVIEW_H - 55.0,
        x: time.range,
        y: (0.0, (y_hi * 1.02 / y_step).ceil() * y_step),
    };
    plot.axes(
        svg,
        time.step,
        "time since first delivery (s)",
        Some((y_step, "sequence number")),
    );

    // The faults, under the dots so they never hide one.
    let label = xml_escape(fault_label);
    // Rough width of the label (12 px sans-serif), to keep it inside the plot and the legend.
    let label_w = 6.5 * fault_label.chars().count() as f64;
    for (i, &at_ms) in faults.iter().enumerate() {
        let x = plot.px(time.secs(at_ms));
        let _ = writeln!(
            svg,
            r#"<line x1="{x:.1}" y1="{:.1}" x2="{x:.1}" y2="{:.1}" stroke="{KILL_COLOUR}" stroke-width="1.5" stroke-dasharray="6 4"/>"#,
            plot.top, plot.bottom
        );
        // Label to the left of the line when it sits near the right edge.
        let (lx, anchor) = if x > plot.right - (label_w + 19.0) {
            (x - 4.0, "end")
        } else {
            (x + 4.0, "start")
        };
        let text = if faults.len() > 1 {
            format!("{label} ({})", i + 1)
        } else {
            label.clone()
        };
        // Each label one row lower than the one before, so close faults stay readable.
        let _ = writeln!(
            svg,
            r#"<text x="{lx:.1}" y="{:.1}" fill="{KILL_COLOUR}" text-anchor="{anchor}">{text}</text>"#,
            plot.top + 14.0 * (i + 1) as f64
        );
    }

    // One dot per delivery; backup drawn last so a late takeover is visible on top.
    for source in [Source::Primary, Source::Backup] {
        let _ = writeln!(svg, r#"<g fill="{}" fill-opacity="0.8">"#, colour(source));
        for d in deliveries.iter().filter(|d| d.source == source) {
            let _ = writeln!(
                svg,
                r#"<circle cx="{:.1}" cy="{:.1}" r="2.5"/>"#,
                plot.px(time.secs(d.at_ms)),
                plot.py(d.seq as f64)
            );
        }
        let _ = writeln!(svg, "</g>");
    }

    if deliveries.is_empty() {
        let _ = writeln!(
            svg,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" fill="#888" font-size="16">no deliveries</text>"##,
            (plot.left + plot.right) / 2.0,
            (plot.top + plot.bottom) / 2.0
        );
    }

    // Legend, top left inside the plot (the dots rise to the right, so that corner is free).
    let count = |s: Source| deliveries.iter().filter(|d| d.source == s).count();
    let (lx, ly) = (plot.left + 10.0, plot.top + 10.0);
    let has_faults = !faults.is_empty();
    let legend_w = if has_faults {
        (label_w + 36.0).max(150.0)
    } else {
        150.0
    };
    let _ = writeln!(
        svg,
        r##"<rect x="{lx:.1}" y="{ly:.1}" width="{legend_w:.0}" height="{}" fill="white" fill-opacity="0.9" stroke="#999"/>"##,
        if has_faults { 66 } else { 46 }
    );
    let mut row = ly + 16.0;
    for (source, name) in [(Source::Primary, "primary"), (Source::Backup, "backup")] {
        let _ = writeln!(
            svg,
            r#"<circle cx="{:.1}" cy="{:.1}" r="4" fill="{}"/><text x="{:.1}" y="{:.1}">{name} ({})</text>"#,
            lx + 12.0,
            row - 4.0,
            colour(source),
            lx + 24.0,
            row,
            count(source)
        );
        row += 20.0;
    }
    if has_faults {
        let _ = writeln!(
            svg,
            r#"<line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="{KILL_COLOUR}" stroke-width="1.5" stroke-dasharray="6 4"/><text x="{:.1}" y="{:.1}">{label}</text>"#,
            lx + 6.0,
            row - 4.0,
            lx + 18.0,
            row - 4.0,
            lx + 24.0,
            row
        );
    }
}

/// The moments around one fault, between `left` and `right` on the picture: ms relative to
/// the fault on x, one tick per delivery in its broker's lane, the silence across the fault
/// shaded and labelled.
fn zoom(
    svg: &mut String,
    deliveries: &[Delivery],
    at_ms: u64,
    name: &str,
    (left, right): (f64, f64),
) {
    let window = fault_window(deliveries, at_ms);
    let rel = |t: u64| t as f64 - at_ms as f64;
    let after = window.first_after.map_or(ZOOM_MAX_AFTER_MS, |d| {
        (d.at_ms - at_ms + ZOOM_AFTER_SILENCE_MS).clamp(ZOOM_MS, ZOOM_MAX_AFTER_MS)
    });
    let top = OVERVIEW_H + 30.0;
    let plot = Plot {
        left,
        right,
        top,
        bottom: OVERVIEW_H + ZOOM_H - 45.0,
        x: (-(ZOOM_MS as f64), after as f64),
        y: (0.0, 2.0),
    };
    heading(svg, left, OVERVIEW_H + 18.0, &format!("zoom: {name}"));

    // The silence first, so the ticks and the fault are drawn over it.
    let from = window.last_before.map_or(at_ms, |d| d.at_ms);
    let gap_from = rel(from).max(plot.x.0);
    let (gap_to, label) = match window.first_after {
        Some(d) => (
            rel(d.at_ms).min(plot.x.1),
            format!("{} ms without a delivery", d.at_ms - from),
        ),
        None => (plot.x.1, "nothing delivered after it".to_string()),
    };
    let _ = writeln!(
        svg,
        r#"<rect class="silence" x="{:.1}" y="{top:.1}" width="{:.1}" height="{:.1}" fill="{SILENCE_COLOUR}"/>"#,
        plot.px(gap_from),
        (plot.px(gap_to) - plot.px(gap_from)).max(1.0),
        plot.bottom - top
    );
    plot.axes(
        svg,
        nice_step(plot.x.1 - plot.x.0, 6.0),
        "ms from the fault",
        None,
    );
    plot.fault_line(svg, 0.0);

    // Two lanes: the primary's deliveries in the upper one, the backup's in the lower.
    for (source, lane, lane_name) in [
        (Source::Primary, 1.0, "primary"),
        (Source::Backup, 0.0, "backup"),
    ] {
        let (y1, y2) = (plot.py(lane + 0.85), plot.py(lane + 0.15));
        let _ = writeln!(svg, r#"<g stroke="{}" stroke-width="2">"#, colour(source));
        for d in deliveries.iter().filter(|d| d.source == source) {
            let x = rel(d.at_ms);
            if (plot.x.0..=plot.x.1).contains(&x) {
                let _ = writeln!(
                    svg,
                    r#"<line class="tick" x1="{0:.1}" y1="{y1:.1}" x2="{0:.1}" y2="{y2:.1}"/>"#,
                    plot.px(x)
                );
            }
        }
        let _ = writeln!(svg, "</g>");
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end" fill="{}">{lane_name}</text>"#,
            left - 6.0,
            plot.py(lane + 0.5) + 4.0,
            colour(source)
        );
    }

    // The silence's length above it, kept inside the panel.
    let half = 3.5 * label.chars().count() as f64;
    let centre = ((plot.px(gap_from) + plot.px(gap_to)) / 2.0).clamp(left + half, right - half);
    let _ = writeln!(
        svg,
        r#"<text class="silence" x="{centre:.1}" y="{:.1}" text-anchor="middle" fill="{KILL_COLOUR}" font-weight="bold">{label}</text>"#,
        top - 4.0
    );
}

/// Publish→delivery latency per message against the run's time axis, under the zooms
/// (`top` is where this band starts).
fn latency(svg: &mut String, lat: &[Latency], faults: &[u64], time: &TimeAxis, top: f64) {
    let mut sorted: Vec<u64> = lat.iter().map(Latency::ms).collect();
    sorted.sort_unstable();
    let worst = lat.iter().max_by_key(|l| l.ms());
    let title = match (worst, sorted.get(sorted.len() / 2)) {
        (Some(w), Some(median)) => format!(
            "publish → delivery latency per message: median {median} ms, max {} ms (seq {})",
            w.ms(),
            w.seq
        ),
        _ => "publish → delivery latency per message".to_string(),
    };
    heading(svg, MARGIN_LEFT, top + 18.0, &title);
    let y_hi = worst.map_or(1, |w| w.ms()).max(1) as f64;
    let y_step = nice_step(y_hi, 5.0).max(1.0);
    let plot = Plot {
        left: MARGIN_LEFT,
        right: SVG_W - MARGIN_RIGHT,
        top: top + 30.0,
        bottom: top + LATENCY_H - 45.0,
        x: time.range,
        y: (0.0, (y_hi * 1.05 / y_step).ceil() * y_step),
    };
    plot.axes(
        svg,
        time.step,
        "time since first delivery (s)",
        Some((y_step, "latency (ms)")),
    );
    for &at_ms in faults {
        plot.fault_line(svg, time.secs(at_ms));
    }
    for l in lat {
        let _ = writeln!(
            svg,
            r#"<rect class="latency" x="{:.1}" y="{:.1}" width="3" height="3" fill="{}"/>"#,
            plot.px(time.secs(l.delivery.at_ms)) - 1.5,
            plot.py(l.ms() as f64) - 1.5,
            colour(l.delivery.source)
        );
    }
    if lat.is_empty() {
        let _ = writeln!(
            svg,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" fill="#888">no publish times: run test_publisher with --publish-log FILE and give report --published FILE</text>"##,
            (plot.left + plot.right) / 2.0,
            (plot.top + plot.bottom) / 2.0
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(at_ms: u64, source: Source, seq: u64) -> Delivery {
        Delivery { at_ms, source, seq }
    }

    /// The length of the silence around each fault, in ms.
    fn silences(r: &RunReport) -> Vec<u64> {
        r.faults
            .iter()
            .map(|f| f.silence.expect("deliveries give a silence").ms())
            .collect()
    }

    /// Deliveries of `seqs` from the primary, 100 ms apart starting at t = 1000.
    fn steady(seqs: impl IntoIterator<Item = u64>) -> Vec<Delivery> {
        seqs.into_iter()
            .enumerate()
            .map(|(i, seq)| d(1000 + 100 * i as u64, Source::Primary, seq))
            .collect()
    }

    #[test]
    fn parses_timestamped_and_bare_deliveries() {
        assert_eq!(
            parse_delivery("1764424800123 [PRIMARY] 17"),
            Some(d(1764424800123, Source::Primary, 17))
        );
        assert_eq!(
            parse_delivery("5 [BACKUP] 42\r"),
            Some(d(5, Source::Backup, 42))
        );
        assert_eq!(parse_delivery("[BACKUP] 3"), Some(d(0, Source::Backup, 3)));
        assert_eq!(
            parse_delivery("  [PRIMARY]   9  "),
            Some(d(0, Source::Primary, 9))
        );
    }

    #[test]
    fn rejects_malformed_deliveries() {
        for line in [
            "",
            "17",
            "[PRIMARY]",
            "[PRIMARY]17",
            "[PRIMARY] hello",
            "[PRIMARY] 1 2",
            "[PRIMARY] -1",
            "[PRIMARY] +1",
            "[OTHER] 1",
            "12 [PRIMARY]",
            "x12 [PRIMARY] 1",
            "ACK 1",
            "[PRIMARY] 99999999999999999999999",
        ] {
            assert_eq!(parse_delivery(line), None, "{line:?}");
        }
    }

    #[test]
    fn parses_acks() {
        assert_eq!(parse_ack("1764424800123 ACK 17"), Some((1764424800123, 17)));
        assert_eq!(parse_ack("ACK 17"), Some((0, 17)));
        assert_eq!(parse_ack("ACK 17\r"), Some((0, 17)));
        for line in [
            "ACK",
            "ACK17",
            "ACK x",
            "12 ACK",
            "ERR|nope",
            "ACKS 1",
            "1 ACK 2 3",
        ] {
            assert_eq!(parse_ack(line), None, "{line:?}");
        }
    }

    #[test]
    fn parse_log_counts_unparsed_and_skips_blank_lines() {
        let log = parse_log("1 ACK 1\n\ngarbage\n2 ACK 2\n  \nmore garbage\n", parse_ack);
        assert_eq!(log.items, vec![(1, 1), (2, 2)]);
        assert_eq!(log.unparsed, 2);
        assert_eq!(log.unparsed_examples[0], (3, "garbage".to_string()));
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
        let mut got = steady(1..=6);
        got.extend((7..=10).map(|seq| d(2750 + 100 * (seq - 7), Source::Backup, seq)));
        let r = analyse(&got, &(1..=10).collect::<Vec<_>>(), None, [1550]);
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

    #[test]
    fn long_missing_list_is_shortened() {
        let acked: Vec<u64> = (1..=50).collect();
        let r = analyse(&steady([50]), &acked, None, []);
        let text = r.to_string();
        assert!(text.contains("missing:           49 (seq 1, 2,"), "{text}");
        assert!(text.contains("19, 20, … 29 more)"), "{text}");
        assert!(!text.contains(" 21,"), "{text}");
    }

    /// Primary until 1500, a kill at 1550, the backup from 2750: a 1250 ms silence.
    fn one_failover() -> Vec<Delivery> {
        let mut got = steady(1..=6);
        got.extend((7..=10).map(|seq| d(2750 + 100 * (seq - 7), Source::Backup, seq)));
        got
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

    #[test]
    fn svg_marks_every_fault_with_its_label() {
        let svg = render_svg(
            &one_failover(),
            &[],
            &[3000, 1550],
            "primary <stopped>",
            "two",
        );
        assert_eq!(
            svg.matches("stroke-dasharray").count(),
            2 + 1,
            "2 markers + 1 legend line"
        );
        assert!(svg.contains("primary &lt;stopped&gt; (1)</text>"), "{svg}");
        assert!(svg.contains("primary &lt;stopped&gt; (2)</text>"), "{svg}");
        assert!(
            svg.contains(">primary &lt;stopped&gt;</text>"),
            "legend: {svg}"
        );
        assert!(!svg.contains("primary killed"));
        assert!(!svg.contains("NaN") && !svg.contains("inf"), "{svg}");
    }

    #[test]
    fn svg_is_self_contained_and_marks_the_kill() {
        let mut got = steady(1..=6);
        got.push(d(2750, Source::Backup, 7));
        let svg = render_svg(
            &got,
            &[],
            &[1550],
            DEFAULT_FAULT_LABEL,
            "run <1> & \"more\"",
        );
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert_eq!(
            svg.matches("<circle").count(),
            7 + 2,
            "7 dots + 2 legend dots"
        );
        assert!(svg.contains(PRIMARY_COLOUR) && svg.contains(BACKUP_COLOUR));
        assert!(svg.contains("primary killed"));
        assert!(svg.contains("stroke-dasharray"));
        assert!(svg.contains("run &lt;1&gt; &amp; &quot;more&quot;"));
        assert!(!svg.contains("<1>"));
        assert!(!svg.contains("NaN") && !svg.contains("inf"), "{svg}");
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

    #[test]
    fn svg_zooms_on_the_silence_around_each_fault() {
        // Primary until 1500, kill at 1550, backup from 2750: a 1250 ms silence.
        let svg = render_svg(&one_failover(), &[], &[1550], DEFAULT_FAULT_LABEL, "zoom");
        assert!(svg.contains(r#"<g id="zoom-1">"#), "{svg}");
        assert!(!svg.contains(r#"<g id="zoom-2">"#));
        assert!(svg.contains(">1250 ms without a delivery</text>"), "{svg}");
        assert_eq!(
            svg.matches(r#"class="tick""#).count(),
            10,
            "every delivery is in the zoom"
        );
        // No fault, no zoom: the picture is the overview and the latency panel.
        let svg = render_svg(
            &steady(1..=3),
            &[(950, 1)],
            &[],
            DEFAULT_FAULT_LABEL,
            "calm",
        );
        assert!(!svg.contains("zoom"), "{svg}");
        assert_eq!(svg.matches(r#"class="latency""#).count(), 1);
        assert!(svg.contains(r#"height="760""#), "{svg}");
    }

    #[test]
    fn svg_copes_with_no_data() {
        let svg = render_svg(&[], &[], &[], DEFAULT_FAULT_LABEL, "empty");
        assert!(svg.contains("no deliveries"));
        assert!(!svg.contains("NaN") && !svg.contains("inf"));
        let svg = render_svg(
            &[d(0, Source::Primary, 1)],
            &[],
            &[0],
            DEFAULT_FAULT_LABEL,
            "one",
        );
        assert!(!svg.contains("NaN") && !svg.contains("inf"));
    }

    #[test]
    fn tick_helpers() {
        assert_eq!(nice_step(40.0, 10.0), 5.0);
        assert_eq!(nice_step(400.0, 8.0), 50.0);
        assert_eq!(nice_step(1.0, 10.0), 0.1);
        assert_eq!(tick_label(2.5, 0.5), "2.5");
        assert_eq!(tick_label(-0.0, 0.5), "0.0");
        assert_eq!(tick_label(30.0, 5.0), "30");
        assert_eq!(ticks(0.0, 10.0, 5.0), vec![0.0, 5.0, 10.0]);
    }
}
