//! The `report` program's work around the analysis: its flags ([`crate::cli::REPORT`]) as
//! [`Options`], reading the subscriber's and test_publisher's output files (and its publish
//! log, if given), printing the report and writing the picture. The analysis itself, which
//! touches no file, is the parent module's.

use std::fs;
use std::io;

use crate::cli::Args;
use crate::error::{Error, Result};

use super::{DEFAULT_FAULT_LABEL, DEFAULT_MAX_SILENCE_MS, ParsedLog};

/// What the `report` command line asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// The subscriber's output file.
    pub sub: String,
    /// The test_publisher's output file.
    pub acks: String,
    /// The test_publisher's publish log (`--publish-log`), for the latency panel.
    pub published: Option<String>,
    /// Messages sent; `None`: the highest seq ACKed or delivered.
    pub sent: Option<u64>,
    /// Each fault's moment, unix ms, in command-line order.
    pub kill_ms: Vec<u64>,
    /// What the faults were; `None`: [`DEFAULT_FAULT_LABEL`].
    pub fault_label: Option<String>,
    /// The longest silence around each fault that still passes.
    pub max_silence_ms: u64,
    /// Where to write the picture, if anywhere.
    pub svg: Option<String>,
    /// The picture's title.
    pub title: String,
}

impl Options {
    /// Reads `report`'s command line; a missing or bad value is an [`Error::Usage`].
    pub fn from_args(args: &Args) -> Result<Options> {
        let number = |flag: &str, v: &str| {
            v.parse::<u64>().map_err(|_| {
                Error::Usage(format!("{flag} expects a non-negative integer, got {v:?}"))
            })
        };
        let text = |flag: &str| args.all(flag).last().cloned();
        let required =
            |flag: &str| text(flag).ok_or_else(|| Error::Usage(format!("{flag} FILE is required")));
        let sent = text("--sent").map(|v| number("--sent", &v)).transpose()?;
        let kill_ms = args
            .all("--kill-ms")
            .iter()
            .map(|v| number("--kill-ms", v))
            .collect::<Result<Vec<_>>>()?;
        let fault_label = text("--fault-label");
        if fault_label.as_ref().is_some_and(|l| l.trim().is_empty()) {
            return Err(Error::Usage("--fault-label needs a non-empty text".into()));
        }
        let max_silence_ms = match text("--max-silence-ms") {
            Some(v) => number("--max-silence-ms", &v)?,
            None => DEFAULT_MAX_SILENCE_MS,
        };
        Ok(Options {
            sub: required("--sub")?,
            acks: required("--acks")?,
            published: text("--published"),
            sent,
            kill_ms,
            fault_label,
            max_silence_ms,
            svg: text("--svg"),
            title: text("--title").unwrap_or_else(|| "edgebroker failover run".to_string()),
        })
    }
}

/// Judges the run: reads both files (warning on stderr about lines it could not parse),
/// prints the report on stdout, writes the picture if asked, and says whether the run passed.
/// An unreadable input or an unwritable picture is an error.
pub fn run(o: &Options) -> Result<bool> {
    let sub = super::parse_log(&read(&o.sub)?, super::parse_delivery);
    let acks = super::parse_log(&read(&o.acks)?, super::parse_ack);
    warn_unparsed("subscriber", &o.sub, &sub);
    warn_unparsed("publisher", &o.acks, &acks);
    let published = match &o.published {
        Some(path) => {
            let log = super::parse_log(&read(path)?, super::parse_publish);
            warn_unparsed("publish log", path, &log);
            log.items
        }
        None => Vec::new(),
    };

    let acked: Vec<u64> = acks.items.iter().map(|&(_, seq)| seq).collect();
    let mut report = super::analyse(&sub.items, &acked, o.sent, o.kill_ms.iter().copied())
        .with_max_silence_ms(o.max_silence_ms)
        .with_unparsed(sub.unparsed, acks.unparsed);
    if let Some(label) = &o.fault_label {
        report = report.with_fault_label(label);
    }
    print!("{report}");

    if let Some(path) = &o.svg {
        let label = o.fault_label.as_deref().unwrap_or(DEFAULT_FAULT_LABEL);
        let svg = super::render_svg(&sub.items, &published, &o.kill_ms, label, &o.title);
        fs::write(path, svg).map_err(|e| naming(e, "write", path))?;
    }
    Ok(report.passed(o.max_silence_ms))
}

fn read(path: &str) -> Result<String> {
    fs::read_to_string(path).map_err(|e| naming(e, "read", path))
}

/// The error `e` met when trying to `verb` the file at `path`, saying so.
fn naming(e: io::Error, verb: &str, path: &str) -> Error {
    Error::Io(io::Error::new(
        e.kind(),
        format!("cannot {verb} {path}: {e}"),
    ))
}

/// Warns on stderr about lines that did not parse, so a format drift is noticed.
fn warn_unparsed<T>(what: &str, path: &str, log: &ParsedLog<T>) {
    if log.unparsed == 0 {
        return;
    }
    eprintln!(
        "report: warning: {} unparsed line(s) in {what} output {path}",
        log.unparsed
    );
    for (line_no, line) in &log.unparsed_examples {
        eprintln!("report:   line {line_no}: {line:?}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli;

    fn options(line: &str) -> Result<Options> {
        match cli::parse(&cli::REPORT, line.split_whitespace().map(String::from))? {
            cli::Parsed::Run(args) => Options::from_args(&args),
            cli::Parsed::Help => panic!("help"),
        }
    }

    #[test]
    fn repeated_faults_keep_their_order_and_defaults_apply() {
        let o = options("--sub s --acks a --kill-ms 20 --kill-ms=10").unwrap();
        assert_eq!(o.kill_ms, vec![20, 10]);
        assert_eq!(o.max_silence_ms, DEFAULT_MAX_SILENCE_MS);
        assert_eq!((o.sent, o.svg, o.fault_label), (None, None, None));
        assert_eq!(o.title, "edgebroker failover run");
    }

    #[test]
    fn bad_values_name_the_flag() {
        let usage = |line: &str| match options(line) {
            Err(Error::Usage(m)) => m,
            other => panic!("{other:?}"),
        };
        assert_eq!(usage("--acks a"), "--sub FILE is required");
        assert_eq!(
            usage("--sub s --acks a --sent many"),
            "--sent expects a non-negative integer, got \"many\""
        );
        assert_eq!(
            usage("--sub s --acks a --fault-label= "),
            "--fault-label needs a non-empty text"
        );
    }
}
