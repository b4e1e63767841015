//! The frame as one line of JSON, for scripts (`pairstat --json`).

use std::fmt::Write as _;

use super::view::{Frame, RATE_COUNTERS, Row, backup_state, witness_state};

impl Frame {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(json_string("a\"b\\c\nd\u{1}"), r#""a\"b\\c\nd\u0001""#);
        assert_eq!(json_string("\x1b\x7f\u{9b}é"), r#""\u001b\u007f\u009bé""#);
    }
}
