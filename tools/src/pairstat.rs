//! The pair at a glance, for the `pairstat` program: every broker's `STATUS`
//! ([`edgebroker::client::status::query`]) turned into one table of roles, epochs and message
//! rates, with every role or epoch change kept as an [`Event`] ([`View`]).
//!
//! Only [`poll`] and [`watch`] touch a socket or the terminal. A [`View`] is fed the answers
//! and the times they came at, and its [`Frame`]s render as a table ([`Frame::table`]) or a
//! JSON line ([`Frame::json`]), so tests drive it without a broker.
//!
//! Each address is one row, whatever answers there: the brokers, and with `--witness` the
//! pair's witness, whose `STATUS` says `role=witness` and the lease it holds. The `witness`
//! column shows each broker's view of the witness (and a primary's lease left), and the
//! witness's own lease left.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::io::{self, IsTerminal, Write};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};

use edgebroker::auth::Secret;
use edgebroker::cli::{self, Args};
use edgebroker::client::status::{StatusFields, query};
use edgebroker::error::{Error, Result};

/// How often `pairstat` polls unless told otherwise.
pub const DEFAULT_INTERVAL: Duration = Duration::from_millis(500);
/// The longest a broker may take to answer one poll, however long the interval.
pub const MAX_ANSWER_TIME: Duration = Duration::from_secs(1);
/// How long a row stays marked (`*`) after its role or epoch changed, in ms.
pub const MARK_MS: u64 = 10_000;
/// How many recent events a [`View`] keeps, oldest dropped first.
pub const RECENT_EVENTS: usize = 8;

/// What one poll learnt about one address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reading {
    /// It answered `STATUS`.
    Up(StatusFields),
    /// It did not; the text says why (`connection refused`, `no answer in time`).
    Down(String),
}

impl Reading {
    /// A [`query`]'s outcome as a reading: any error means down, with a short reason.
    pub fn from_query(result: Result<StatusFields>) -> Reading {
        match result {
            Ok(fields) => Reading::Up(fields),
            Err(Error::Io(e)) if e.kind() == io::ErrorKind::ConnectionRefused => {
                Reading::Down(e.kind().to_string())
            }
            Err(Error::Closed) => Reading::Down("connection closed".into()),
            Err(Error::Timeout) => Reading::Down("no answer in time".into()),
            Err(e) => Reading::Down(e.to_string()),
        }
    }
}

/// Queries every address at once, one named thread each, so a hung broker delays the poll
/// by at most `timeout`; the readings come back in address order. The first `brokers`
/// addresses are asked with `secret`; the rest are witnesses, whose `STATUS` needs none.
pub fn poll(
    addrs: &[String],
    timeout: Duration,
    secret: Option<&Secret>,
    brokers: usize,
) -> Vec<Reading> {
    thread::scope(|scope| {
        let asks: Vec<_> = addrs
            .iter()
            .enumerate()
            .map(|(i, addr)| {
                thread::Builder::new()
                    .name(format!("status-{i}"))
                    .spawn_scoped(scope, move || {
                        let secret = if i < brokers { secret } else { None };
                        Reading::from_query(query(addr, timeout, secret))
                    })
            })
            .collect();
        asks.into_iter()
            .map(|ask| match ask {
                Ok(handle) => handle
                    .join()
                    .unwrap_or_else(|_| Reading::Down("the status thread panicked".into())),
                Err(e) => Reading::Down(format!("cannot start a status thread: {e}")),
            })
            .collect()
    })
}

/// A role or epoch change (or a broker going down or coming back), as the view shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// When the poll that saw it was taken, unix ms.
    pub at_ms: u64,
    /// The address it happened at.
    pub addr: String,
    /// What happened: `backup -> primary, epoch 1.7 -> 2.9`, `down (was primary): …`.
    pub what: String,
}

/// Messages per second over the last poll, from the difference of two counter readings;
/// `None` until there are two readings, or when a counter went back (a restarted broker).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Rates {
    /// New messages accepted per second.
    pub published: Option<f64>,
    /// Messages computed and forwarded per second.
    pub processed: Option<f64>,
    /// Deliveries queued to subscribers per second.
    pub delivered: Option<f64>,
}

/// The counters the rates are computed from, in [`Rates`] order.
const RATE_COUNTERS: [&str; 3] = ["published", "processed", "delivered"];

/// One row of the table: one address at one poll.
#[derive(Clone, Debug, PartialEq)]
pub enum Row {
    /// It answered.
    Up {
        /// Its address.
        addr: String,
        /// Its STATUS fields as sent.
        fields: StatusFields,
        /// Its message rates since the previous poll.
        rates: Rates,
        /// Its role or epoch changed within the last [`MARK_MS`].
        changed: bool,
    },
    /// It did not answer.
    Down {
        /// Its address.
        addr: String,
        /// Why not.
        reason: String,
    },
}

/// What one poll shows: the rows in address order and the recent events.
#[derive(Clone, Debug, PartialEq)]
pub struct Frame {
    /// When the poll was taken, unix ms.
    pub at_ms: u64,
    /// One row per address.
    pub rows: Vec<Row>,
    /// The latest events, oldest first (at most [`RECENT_EVENTS`]).
    pub events: Vec<Event>,
    /// How many of `events` (the last ones) this poll found.
    pub new_events: usize,
}

/// What the view remembers of one address between polls.
#[derive(Clone, Debug, Default)]
struct Seen {
    /// The last answer and when it came; `None` before the first answer.
    last: Option<(Instant, StatusFields)>,
    /// Whether the last poll got no answer.
    down: bool,
    /// When its role or epoch last changed, unix ms.
    changed_at_ms: Option<u64>,
}

/// Successive polls of a fixed list of addresses: rates from counter differences, changes
/// remembered as events.
#[derive(Debug)]
pub struct View {
    addrs: Vec<String>,
    seen: Vec<Seen>,
    events: VecDeque<Event>,
}

impl View {
    /// A view of `addrs`, in the order the table shows them.
    pub fn new(addrs: Vec<String>) -> View {
        View {
            seen: vec![Seen::default(); addrs.len()],
            addrs,
            events: VecDeque::new(),
        }
    }

    /// The addresses, in table order.
    pub fn addrs(&self) -> &[String] {
        &self.addrs
    }

    /// Takes one poll's readings (one per address, in order) taken at `at` (for rates) and
    /// `at_ms` (unix ms, for events) and returns what to show. A missing reading counts as
    /// down.
    pub fn update(&mut self, readings: Vec<Reading>, at: Instant, at_ms: u64) -> Frame {
        let mut readings = readings.into_iter();
        let before = self.events.len();
        let mut rows = Vec::with_capacity(self.addrs.len());
        for (addr, seen) in self.addrs.iter().zip(&mut self.seen) {
            let reading = readings
                .next()
                .unwrap_or_else(|| Reading::Down("not polled".into()));
            let (row, event) = seen.update(addr, reading, at, at_ms);
            if let Some(what) = event {
                self.events.push_back(Event {
                    at_ms,
                    addr: addr.clone(),
                    what,
                });
            }
            rows.push(row);
        }
        let found = self.events.len() - before;
        while self.events.len() > RECENT_EVENTS {
            self.events.pop_front();
        }
        Frame {
            at_ms,
            rows,
            new_events: found.min(self.events.len()),
            events: self.events.iter().cloned().collect(),
        }
    }
}

impl Seen {
    /// Records one reading; returns its row and, if something changed, the event's text.
    fn update(
        &mut self,
        addr: &str,
        reading: Reading,
        at: Instant,
        at_ms: u64,
    ) -> (Row, Option<String>) {
        let fields = match reading {
            Reading::Down(reason) => {
                let event = (!self.down && self.last.is_some()).then(|| {
                    let was = self.last.as_ref().and_then(|(_, f)| f.get("role"));
                    format!("down (was {}): {reason}", was.unwrap_or("?"))
                });
                self.down = true;
                let addr = addr.to_string();
                return (Row::Down { addr, reason }, event);
            }
            Reading::Up(fields) => fields,
        };
        let previous = self.last.as_ref().map(|(_, f)| f);
        let change = previous.and_then(|p| change(p, &fields));
        let event = match (&change, self.down && previous.is_some()) {
            (Some(c), true) => Some(format!("answers again: {c}")),
            (None, true) => Some(format!("answers again: {}", describe(&fields))),
            (Some(c), false) => Some(c.clone()),
            (None, false) => None,
        };
        if change.is_some() {
            self.changed_at_ms = Some(at_ms);
        }
        let rates = match &self.last {
            Some((then, before)) => rates(before, &fields, at.saturating_duration_since(*then)),
            None => Rates::default(),
        };
        let changed = self
            .changed_at_ms
            .is_some_and(|t| at_ms.saturating_sub(t) < MARK_MS);
        self.down = false;
        self.last = Some((at, fields.clone()));
        let addr = addr.to_string();
        let row = Row::Up {
            addr,
            fields,
            rates,
            changed,
        };
        (row, event)
    }
}

/// `role, epoch E`, as an event names a broker's state.
fn describe(fields: &StatusFields) -> String {
    format!(
        "{}, epoch {}",
        fields.get("role").unwrap_or("?"),
        fields.get("epoch").unwrap_or("?")
    )
}

/// How the role and epoch changed from `before` to `now`, if they did: `backup -> primary,
/// epoch 1.7 -> 2.9`.
fn change(before: &StatusFields, now: &StatusFields) -> Option<String> {
    let parts: Vec<String> = ["role", "epoch"]
        .into_iter()
        .filter_map(|key| {
            let (was, is) = (before.get(key)?, now.get(key)?);
            let prefix = if key == "epoch" { "epoch " } else { "" };
            (was != is).then(|| format!("{prefix}{was} -> {is}"))
        })
        .collect();
    (!parts.is_empty()).then(|| parts.join(", "))
}

/// The rates between two readings `elapsed` apart.
fn rates(before: &StatusFields, now: &StatusFields, elapsed: Duration) -> Rates {
    let secs = elapsed.as_secs_f64();
    let rate = |key: &str| {
        let (was, is) = (before.number(key)?, now.number(key)?);
        (secs > 0.0 && is >= was).then(|| (is - was) as f64 / secs)
    };
    let [published, processed, delivered] = RATE_COUNTERS.map(rate);
    Rates {
        published,
        processed,
        delivered,
    }
}

/// `HH:MM:SS.mmm` of a unix time in ms, in UTC like the log lines' timestamps.
pub fn clock(at_ms: u64) -> String {
    let ms_of_day = at_ms % 86_400_000;
    let (h, m) = (ms_of_day / 3_600_000, ms_of_day / 60_000 % 60);
    let (s, ms) = (ms_of_day / 1000 % 60, ms_of_day % 1000);
    format!("{h:02}:{m:02}:{s:02}.{ms:03}")
}

/// The table's columns after the address: header and width. The first three hold words and
/// are aligned left, the rest numbers, aligned right.
const COLUMNS: [(&str, usize); 9] = [
    ("role", 9),
    ("epoch", 14),
    ("backup", 7),
    ("witness", 12),
    ("pending", 8),
    ("pub/s", 7),
    ("proc/s", 7),
    ("deliv/s", 8),
    ("takeovers", 10),
];
const WORD_COLUMNS: usize = 4;

/// `text` with every control character (C0, DEL, C1 such as the 8-bit CSI) replaced by `?`,
/// one for one. What a server sends reaches the terminal as text, never as a command (clear
/// the screen, set the title, write the clipboard), and widths counted in characters hold.
pub fn printable(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// Writes one table cell: a space, then `text`, made [`printable`], in column `i`'s width
/// and alignment (counted in characters).
fn write_cell(out: &mut String, i: usize, text: &str) {
    let w = COLUMNS[i].1;
    let text = printable(text);
    let _ = if i < WORD_COLUMNS {
        write!(out, " {text:<w$}")
    } else {
        write!(out, " {text:>w$}")
    };
}

impl Frame {
    /// The frame as a text table: a heading line, one row per address, then the recent
    /// events. Every line ends with `\n`. Every text that came from a server (fields, a
    /// refusal's reason, the events made of them) is shown [`printable`].
    pub fn table(&self) -> String {
        let addr_w = self
            .rows
            .iter()
            .map(|r| r.addr().chars().count())
            .max()
            .unwrap_or(0)
            .max("address".len())
            + 1;
        let mut out = String::new();
        // `write!` to a String cannot fail; the results are ignored on purpose.
        let _ = writeln!(out, "pairstat at {} UTC", clock(self.at_ms));
        let _ = write!(out, "{:<addr_w$}", "address");
        for (i, (name, _)) in COLUMNS.iter().enumerate() {
            write_cell(&mut out, i, name);
        }
        let _ = writeln!(out);
        for row in &self.rows {
            let _ = write!(out, "{:<addr_w$}", printable(row.addr()));
            match row {
                Row::Down { reason, .. } => {
                    write_cell(&mut out, 0, "down");
                    let _ = write!(out, " {}", printable(reason));
                }
                Row::Up {
                    fields,
                    rates,
                    changed,
                    ..
                } => {
                    let role = fields.get("role").unwrap_or("?");
                    let mark = if *changed { "*" } else { "" };
                    let broker = role != "witness";
                    let number = |key: &str| match broker {
                        true => cell(fields.number(key)),
                        false => "-".into(),
                    };
                    let cells = [
                        format!("{role}{mark}"),
                        fields.get("epoch").unwrap_or("?").to_string(),
                        backup_state(fields).to_string(),
                        witness_state(fields),
                        number("pending"),
                        rate_cell(rates.published),
                        rate_cell(rates.processed),
                        rate_cell(rates.delivered),
                        number("takeovers"),
                    ];
                    for (i, text) in cells.iter().enumerate() {
                        write_cell(&mut out, i, text);
                    }
                }
            }
            let _ = writeln!(out);
        }
        let _ = writeln!(out);
        if self.events.is_empty() {
            let _ = writeln!(out, "no role or epoch change seen yet");
        } else {
            let _ = writeln!(
                out,
                "changes (* = role or epoch changed in the last {} s):",
                MARK_MS / 1000
            );
            for e in &self.events {
                let (addr, what) = (printable(&e.addr), printable(&e.what));
                let _ = writeln!(out, "  {} UTC  {addr}  {what}", clock(e.at_ms));
            }
        }
        out
    }

    /// The frame as one line of JSON (no trailing newline): the poll's time, one object per
    /// address, and the events this poll found.
    ///
    /// ```text
    /// {"at_ms":1764424800000,"brokers":[{"addr":"127.0.0.1:8080","state":"down",
    ///  "reason":"connection refused"},{"addr":"127.0.0.1:8081","state":"up","role":"primary",
    ///  "epoch":"2.90211","changed":true,"backup":"down","pending":0,"published_per_s":10.0,
    ///  "processed_per_s":10.0,"delivered_per_s":10.0,"takeovers":1}],
    ///  "events":[{"at_ms":1764424800000,"addr":"127.0.0.1:8081","what":"backup -> primary"}]}
    /// ```
    pub fn json(&self) -> String {
        let mut out = format!("{{\"at_ms\":{},\"brokers\":[", self.at_ms);
        for (i, row) in self.rows.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "{{\"addr\":{}", json_string(row.addr()));
            match row {
                Row::Down { reason, .. } => {
                    let _ = write!(
                        out,
                        ",\"state\":\"down\",\"reason\":{}",
                        json_string(reason)
                    );
                }
                Row::Up {
                    fields,
                    rates,
                    changed,
                    ..
                } => {
                    let text = |key: &str| json_string(fields.get(key).unwrap_or(""));
                    let number =
                        |key: &str| fields.number(key).map_or("null".into(), |n| n.to_string());
                    let _ = write!(
                        out,
                        ",\"state\":\"up\",\"role\":{},\"epoch\":{},\"changed\":{changed},\
                         \"backup\":{},\"witness\":{},\"pending\":{}",
                        text("role"),
                        text("epoch"),
                        json_string(backup_state(fields)),
                        json_string(&witness_state(fields)),
                        number("pending"),
                    );
                    let rates = [rates.published, rates.processed, rates.delivered];
                    for (key, rate) in RATE_COUNTERS.iter().zip(rates) {
                        let value = rate.map_or("null".into(), |r| format!("{r:.1}"));
                        let _ = write!(out, ",\"{key}_per_s\":{value}");
                    }
                    let _ = write!(out, ",\"takeovers\":{}", number("takeovers"));
                }
            }
            out.push('}');
        }
        out.push_str("],\"events\":[");
        let new = &self.events[self.events.len() - self.new_events..];
        for (i, e) in new.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(
                out,
                "{{\"at_ms\":{},\"addr\":{},\"what\":{}}}",
                e.at_ms,
                json_string(&e.addr),
                json_string(&e.what)
            );
        }
        out.push_str("]}");
        out
    }
}

impl Row {
    /// The address the row is about.
    pub fn addr(&self) -> &str {
        match self {
            Row::Up { addr, .. } | Row::Down { addr, .. } => addr,
        }
    }
}

/// A broker's view of the witness (`up`, `down`, `none`), with a primary's lease left;
/// the witness's own lease left, margin included.
fn witness_state(fields: &StatusFields) -> String {
    let left = |key: &str| fields.number(key).filter(|&ms| ms > 0);
    match fields.get("role") {
        Some("witness") => {
            left("lease_left_ms").map_or("no lease".into(), |ms| format!("lease {ms}ms"))
        }
        _ => {
            let view = fields.get("witness").unwrap_or("-");
            left("lease_ms").map_or(view.to_string(), |ms| format!("{view} {ms}ms"))
        }
    }
}

/// The primary's view of its backup; a backup has none to show.
fn backup_state(fields: &StatusFields) -> &str {
    match fields.get("role") {
        Some("primary") => fields.get("backup").unwrap_or("?"),
        _ => "-",
    }
}

fn cell(n: Option<u64>) -> String {
    n.map_or("?".into(), |n| n.to_string())
}

fn rate_cell(rate: Option<f64>) -> String {
    rate.map_or("-".into(), |r| format!("{r:.1}"))
}

/// `s` as a JSON string literal, quotes included.
pub fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// What the `pairstat` command line asked for.
#[derive(Clone, Debug)]
pub struct Options {
    /// The addresses to poll, in table order.
    pub addrs: Vec<String>,
    /// How often to poll.
    pub interval: Duration,
    /// Print one frame and exit.
    pub once: bool,
    /// JSON lines instead of the table.
    pub json: bool,
    /// The brokers' client secret.
    pub secret: Option<Secret>,
    /// How many of `addrs` are brokers; the rest (with `--witness`) is the witness.
    pub brokers: usize,
}

impl Options {
    /// Reads `pairstat`'s command line ([`cli::PAIRSTAT`]).
    pub fn from_args(args: &Args) -> Result<Options> {
        let mut addrs = (0..2)
            .filter_map(|i| args.positional(i))
            .map(cli::check_host_port)
            .collect::<Result<Vec<_>>>()?;
        let brokers = addrs.len();
        if let Some(witness) = args.value::<String>("--witness")? {
            addrs.push(cli::check_host_port(&witness)?);
        }
        let interval = args.millis("--interval-ms")?.unwrap_or(DEFAULT_INTERVAL);
        if interval.is_zero() {
            return Err(Error::Usage("--interval-ms must be at least 1".into()));
        }
        Ok(Options {
            addrs,
            interval,
            once: args.switch("--once"),
            json: args.switch("--json"),
            secret: cli::secret(args, "--secret", cli::CLIENT_SECRET_ENV),
            brokers,
        })
    }

    /// How long one broker may take to answer a poll: the interval, at most
    /// [`MAX_ANSWER_TIME`].
    pub fn answer_time(&self) -> Duration {
        self.interval.min(MAX_ANSWER_TIME)
    }
}

/// Cursor home and clear screen: redraws the table in place on a terminal.
const REDRAW: &str = "\x1b[H\x1b[2J";

/// Polls until `stop` receives (or is dropped), writing each frame to stdout: redrawn in
/// place on a terminal, appended otherwise, one JSON line per poll with `--json`; once with
/// `--once`. Only a failure to write ends it early; a broker that does not answer is a row.
pub fn watch(options: &Options, stop: &Receiver<()>) -> Result<()> {
    let redraw = io::stdout().is_terminal() && !options.json && !options.once;
    let mut view = View::new(options.addrs.clone());
    let mut next = Instant::now();
    loop {
        let readings = poll(
            view.addrs(),
            options.answer_time(),
            options.secret.as_ref(),
            options.brokers,
        );
        let frame = view.update(readings, Instant::now(), now_ms());
        let mut text = if options.json {
            frame.json() + "\n"
        } else {
            frame.table()
        };
        if redraw {
            text.insert_str(0, REDRAW);
        } else if !options.json && !options.once {
            text.push('\n');
        }
        let mut out = io::stdout().lock();
        out.write_all(text.as_bytes())?;
        out.flush()?;
        drop(out);
        if options.once {
            return Ok(());
        }
        next += options.interval;
        // Behind (a slow answer): poll again at once, but never twice in a burst.
        next = next.max(Instant::now());
        match stop.recv_timeout(next.saturating_duration_since(Instant::now())) {
            Ok(()) | Err(RecvTimeoutError::Disconnected) => return Ok(()),
            Err(RecvTimeoutError::Timeout) => {}
        }
    }
}

fn now_ms() -> u64 {
    u64::try_from(cli::unix_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(pairs: &[(&str, &str)]) -> StatusFields {
        StatusFields(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    fn broker(role: &str, epoch: &str, published: u64) -> Reading {
        let published = published.to_string();
        Reading::Up(fields(&[
            ("role", role),
            ("epoch", epoch),
            ("backup", "up"),
            ("pending", "2"),
            ("published", &published),
            ("processed", &published),
            ("delivered", "0"),
            ("takeovers", "0"),
        ]))
    }

    fn view() -> View {
        View::new(vec!["a:1".into(), "b:2".into()])
    }

    #[test]
    fn rates_are_counter_differences_over_the_time_between_polls() {
        let (mut v, t0) = (view(), Instant::now());
        let first = v.update(vec![broker("primary", "1.1", 100)], t0, 0);
        let Row::Up { rates, .. } = &first.rows[0] else {
            panic!("{first:?}")
        };
        assert_eq!(rates, &Rates::default(), "no rate from one reading");

        let second = v.update(
            vec![broker("primary", "1.1", 150)],
            t0 + Duration::from_millis(500),
            500,
        );
        let Row::Up { rates, .. } = &second.rows[0] else {
            panic!("{second:?}")
        };
        assert_eq!(rates.published, Some(100.0));
        assert_eq!(rates.processed, Some(100.0));
        assert_eq!(rates.delivered, Some(0.0));

        // A restarted broker's counters start again from zero: no rate, not a negative one.
        let third = v.update(
            vec![broker("backup", "2.5", 3)],
            t0 + Duration::from_secs(1),
            1000,
        );
        let Row::Up { rates, .. } = &third.rows[0] else {
            panic!("{third:?}")
        };
        assert_eq!(rates.published, None);
    }

    #[test]
    fn an_unreachable_broker_is_a_row_and_its_fall_an_event() {
        let (mut v, t0) = (view(), Instant::now());
        let never = v.update(
            vec![
                broker("primary", "1.1", 0),
                Reading::Down("connection refused".into()),
            ],
            t0,
            0,
        );
        assert!(never.events.is_empty(), "never up is no event");
        assert_eq!(
            never.rows[1],
            Row::Down {
                addr: "b:2".into(),
                reason: "connection refused".into()
            }
        );
        let table = never.table();
        assert!(
            table.contains("b:2      down      connection refused"),
            "{table}"
        );
        assert!(
            never
                .json()
                .contains(r#"{"addr":"b:2","state":"down","reason":"connection refused"}"#)
        );

        let fell = v.update(
            vec![
                Reading::Down("no answer in time".into()),
                Reading::Down("x".into()),
            ],
            t0 + Duration::from_secs(1),
            1000,
        );
        assert_eq!(fell.new_events, 1);
        assert_eq!(fell.events[0].addr, "a:1");
        assert_eq!(fell.events[0].what, "down (was primary): no answer in time");
        // Still down: no new event.
        let still = v.update(
            vec![Reading::Down("x".into())],
            t0 + Duration::from_secs(2),
            2000,
        );
        assert_eq!((still.new_events, still.events.len()), (0, 1));
    }

    #[test]
    fn a_takeover_is_marked_and_stays_listed() {
        let (mut v, t0) = (view(), Instant::now());
        v.update(
            vec![broker("primary", "1.1", 10), broker("backup", "1.1", 0)],
            t0,
            0,
        );
        let after = v.update(
            vec![
                Reading::Down("connection refused".into()),
                broker("primary", "2.7", 0),
            ],
            t0 + Duration::from_millis(500),
            3_723_456,
        );
        let whats: Vec<&str> = after.events.iter().map(|e| e.what.as_str()).collect();
        assert_eq!(
            whats,
            [
                "down (was primary): connection refused",
                "backup -> primary, epoch 1.1 -> 2.7"
            ]
        );
        let Row::Up { changed, .. } = &after.rows[1] else {
            panic!("{after:?}")
        };
        assert!(changed);
        let table = after.table();
        assert!(table.contains("primary*"), "{table}");
        assert!(
            table.contains("01:02:03.456 UTC  b:2  backup -> primary, epoch 1.1 -> 2.7"),
            "{table}"
        );
        let json = after.json();
        assert!(
            json.contains(r#""role":"primary","epoch":"2.7","changed":true"#),
            "{json}"
        );
        assert!(
            json.contains(r#""what":"backup -> primary, epoch 1.1 -> 2.7""#),
            "{json}"
        );

        // Ten seconds on, the mark is gone but the event is still listed.
        let later = v.update(
            vec![
                Reading::Down("connection refused".into()),
                broker("primary", "2.7", 0),
            ],
            t0 + Duration::from_secs(11),
            3_723_456 + MARK_MS,
        );
        assert!(!later.table().contains("primary*"));
        assert_eq!((later.events.len(), later.new_events), (2, 0));
        assert!(later.json().ends_with(r#""events":[]}"#));

        // It comes back, as the other's backup.
        let back = v.update(
            vec![broker("backup", "2.7", 0), broker("primary", "2.7", 5)],
            t0 + Duration::from_secs(12),
            3_723_456 + MARK_MS + 1000,
        );
        assert_eq!(
            back.events.last().map(|e| e.what.as_str()),
            Some("answers again: primary -> backup, epoch 1.1 -> 2.7")
        );
    }

    #[test]
    fn old_events_make_room_for_new_ones() {
        let (mut v, t0) = (View::new(vec!["a:1".into()]), Instant::now());
        for i in 0..=(RECENT_EVENTS as u64 + 2) {
            let epoch = format!("{i}.1");
            v.update(
                vec![broker("primary", &epoch, 0)],
                t0 + Duration::from_secs(i),
                i,
            );
        }
        let last = v.update(
            vec![broker("primary", "99.1", 0)],
            t0 + Duration::from_secs(99),
            99,
        );
        assert_eq!((last.events.len(), last.new_events), (RECENT_EVENTS, 1));
        assert_eq!(last.events[RECENT_EVENTS - 1].what, "epoch 10.1 -> 99.1");
    }

    #[test]
    fn backup_state_is_shown_for_a_primary_only() {
        let f = |role| fields(&[("role", role), ("backup", "down")]);
        assert_eq!(backup_state(&f("primary")), "down");
        assert_eq!(backup_state(&f("backup")), "-");
    }

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(json_string("a\"b\\c\nd\u{1}"), r#""a\"b\\c\nd\u0001""#);
        assert_eq!(json_string("\x1b\x7f\u{9b}é"), r#""\u001b\u007f\u009bé""#);
    }

    #[test]
    fn an_event_made_of_a_servers_bytes_is_shown_printable_and_aligned() {
        let (mut v, t0) = (View::new(vec!["a:1".into(), "b:2".into()]), Instant::now());
        v.update(vec![broker("primary", "1.1", 0)], t0, 0);
        let dirty = "2.\x1b]52;c;\x07\u{9b}";
        let frame = v.update(
            vec![broker("primary", dirty, 0), broker("backup", "é.1", 0)],
            t0 + Duration::from_secs(1),
            1000,
        );
        let table = frame.table();
        assert!(
            !table.chars().any(|c| c.is_control() && c != '\n'),
            "{table:?}"
        );
        assert!(table.contains("a:1  epoch 1.1 -> 2.?]52;c;??"), "{table}");
        // Widths count characters: a row with a two-byte character is as wide as another.
        let width = |addr: &str| {
            table
                .lines()
                .find(|l| l.starts_with(addr))
                .map(|l| l.chars().count())
        };
        assert_eq!(width("a:1"), width("b:2"), "{table}");
        assert!(
            frame
                .json()
                .contains(r#""epoch":"2.\u001b]52;c;\u0007\u009b""#)
        );
    }

    #[test]
    fn clock_is_the_time_of_day_in_utc() {
        assert_eq!(clock(0), "00:00:00.000");
        assert_eq!(clock(86_400_000 + 3_723_456), "01:02:03.456");
    }
}
