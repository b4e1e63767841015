//! Successive polls as frames: one row per address, message rates from counter differences,
//! every role or epoch change kept as an event.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use edgebroker::client::status::StatusFields;

use super::Reading;

/// How long a row stays marked (`*`) after its role or epoch changed, in ms.
pub const MARK_MS: u64 = 10_000;
/// How many recent events a [`View`] keeps, oldest dropped first.
pub const RECENT_EVENTS: usize = 8;

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
pub(super) const RATE_COUNTERS: [&str; 3] = ["published", "processed", "delivered"];

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
pub(super) fn witness_state(fields: &StatusFields) -> String {
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
pub(super) fn backup_state(fields: &StatusFields) -> &str {
    match fields.get("role") {
        Some("primary") => fields.get("backup").unwrap_or("?"),
        _ => "-",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pairstat::test_support::{broker, fields, view};

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
}
