//! Reading the lines the demo records: the subscriber's deliveries, `test_publisher`'s ACKs and
//! its publish log, one line at a time ([`parse_delivery`], [`parse_ack`], [`parse_publish`])
//! or a whole file ([`parse_log`]), counting the lines that do not parse instead of failing.

use super::Source;

/// How many unparsed lines [`parse_log`] keeps as examples.
pub const UNPARSED_EXAMPLES: usize = 3;

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

/// Parses `<unix_ms> <word> <seq>` into `(at_ms, seq)`; the timestamp may be absent
/// (`at_ms` = 0).
fn parse_timed(line: &str, word: &str) -> Option<(u64, u64)> {
    let (at_ms, rest) = split_timestamp(line);
    parse_tagged(rest, word).map(|seq| (at_ms, seq))
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
    parse_timed(line, "ACK")
}

/// Parses one line of `test_publisher`'s publish log (`--publish-log`),
/// `<unix_ms> PUBLISH <seq>`: when the message was first sent, before any ACK or resend.
pub fn parse_publish(line: &str) -> Option<(u64, u64)> {
    parse_timed(line, "PUBLISH")
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::fixtures::d;

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
    fn parses_publish_lines() {
        assert_eq!(
            parse_publish("1764424800123 PUBLISH 17"),
            Some((1764424800123, 17))
        );
        assert_eq!(parse_publish("PUBLISH 3"), Some((0, 3)));
        for line in ["PUBLISH", "PUBLISHED 1", "1 ACK 1", "1 PUBLISH -1"] {
            assert_eq!(parse_publish(line), None, "{line:?}");
        }
    }

    #[test]
    fn parse_log_counts_unparsed_and_skips_blank_lines() {
        let log = parse_log("1 ACK 1\n\ngarbage\n2 ACK 2\n  \nmore garbage\n", parse_ack);
        assert_eq!(log.items, vec![(1, 1), (2, 2)]);
        assert_eq!(log.unparsed, 2);
        assert_eq!(log.unparsed_examples[0], (3, "garbage".to_string()));
    }
}
