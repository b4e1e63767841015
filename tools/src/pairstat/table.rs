//! The frame as a text table: aligned columns, the recent events under them, every text from a
//! server made printable.

use std::fmt::Write as _;

use super::view::{Frame, MARK_MS, Row, backup_state, witness_state};

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
}

fn cell(n: Option<u64>) -> String {
    n.map_or("?".into(), |n| n.to_string())
}

fn rate_cell(rate: Option<f64>) -> String {
    rate.map_or("-".into(), |r| format!("{r:.1}"))
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::pairstat::View;
    use crate::pairstat::test_support::broker;

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
