//! `report`: judges one demo run from the subscriber's and test_publisher's output files and
//! draws it. Exit 0 on PASS, 1 on FAIL, 2 on a bad argument or an unreadable file.
//!
//! The analysis lives in [`edgebroker::report`]; this program only reads files and maps the
//! verdict to an exit code.

use std::fs;
use std::process::ExitCode;

use edgebroker::report::{self, DEFAULT_FAULT_LABEL, DEFAULT_MAX_SILENCE_MS};

const USAGE: &str = "\
usage: report --sub FILE --acks FILE [--sent N] [--kill-ms MS]... [--fault-label TEXT]
              [--max-silence-ms MS] [--svg FILE] [--title T]

  --sub FILE            subscriber output (`<unix_ms> [PRIMARY|BACKUP] <seq>` per line)
  --acks FILE           test_publisher output (`<unix_ms> ACK <seq>` per line)
  --sent N              messages sent (default: the highest seq ACKed or delivered)
  --kill-ms MS          when the primary was killed (or stopped), unix ms; repeat it for
                        each fault of the run (default: no fault)
  --fault-label TEXT    what the faults were, for the report and the picture; without it
                        they are reported as kills [primary killed]
  --max-silence-ms MS   longest silence around each fault that still passes [1000]
  --svg FILE            also write a picture of the run (SVG) to FILE
  --title T             title of the picture
  -h, --help            print this help

Prints the report on stdout. Exit code: 0 PASS, 1 FAIL, 2 bad argument or unreadable file.";

/// What the command line asked for.
struct Args {
    sub: String,
    acks: String,
    sent: Option<u64>,
    /// Each fault's moment, unix ms, in command-line order.
    kill_ms: Vec<u64>,
    fault_label: Option<String>,
    max_silence_ms: u64,
    svg: Option<String>,
    title: String,
}

/// Parses the command line; `Ok(None)` means `--help` was asked for.
fn parse_args(mut argv: impl Iterator<Item = String>) -> Result<Option<Args>, String> {
    let (mut sub, mut acks, mut sent, mut fault_label, mut svg, mut title) =
        (None, None, None, None, None, None);
    let mut kill_ms = Vec::new();
    let mut max_silence_ms = DEFAULT_MAX_SILENCE_MS;
    while let Some(arg) = argv.next() {
        if arg == "-h" || arg == "--help" {
            return Ok(None);
        }
        // Accept both `--flag value` and `--flag=value`.
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg, None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| argv.next())
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        let number = |v: String| {
            v.parse::<u64>()
                .map_err(|_| format!("{flag} expects a non-negative integer, got {v:?}"))
        };
        match flag.as_str() {
            "--sub" => sub = Some(value()?),
            "--acks" => acks = Some(value()?),
            "--sent" => sent = Some(number(value()?)?),
            "--kill-ms" => kill_ms.push(number(value()?)?),
            "--fault-label" => {
                let label = value()?;
                if label.trim().is_empty() {
                    return Err(format!("{flag} needs a non-empty text"));
                }
                fault_label = Some(label);
            }
            "--max-silence-ms" => max_silence_ms = number(value()?)?,
            "--svg" => svg = Some(value()?),
            "--title" => title = Some(value()?),
            other => return Err(format!("unexpected argument {other:?}")),
        }
    }
    Ok(Some(Args {
        sub: sub.ok_or("--sub FILE is required")?,
        acks: acks.ok_or("--acks FILE is required")?,
        sent,
        kill_ms,
        fault_label,
        max_silence_ms,
        svg,
        title: title.unwrap_or_else(|| "edgebroker failover run".to_string()),
    }))
}

fn read(path: &str) -> Result<String, String> {
    fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))
}

/// Warns on stderr about lines that did not parse, so a format drift is noticed.
fn warn_unparsed<T>(what: &str, path: &str, log: &report::ParsedLog<T>) {
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

fn run(args: Args) -> Result<bool, String> {
    let sub = report::parse_log(&read(&args.sub)?, report::parse_delivery);
    let acks = report::parse_log(&read(&args.acks)?, report::parse_ack);
    warn_unparsed("subscriber", &args.sub, &sub);
    warn_unparsed("publisher", &args.acks, &acks);

    let acked: Vec<u64> = acks.items.iter().map(|&(_, seq)| seq).collect();
    let mut report = report::analyse(&sub.items, &acked, args.sent, args.kill_ms.iter().copied())
        .with_max_silence_ms(args.max_silence_ms)
        .with_unparsed(sub.unparsed, acks.unparsed);
    if let Some(label) = &args.fault_label {
        report = report.with_fault_label(label);
    }
    print!("{report}");

    if let Some(path) = &args.svg {
        let label = args.fault_label.as_deref().unwrap_or(DEFAULT_FAULT_LABEL);
        let svg = report::render_svg(&sub.items, &args.kill_ms, label, &args.title);
        fs::write(path, svg).map_err(|e| format!("cannot write {path}: {e}"))?;
    }
    Ok(report.passed(args.max_silence_ms))
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(Some(args)) => args,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("report: error: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("report: error: {e}");
            ExitCode::from(2)
        }
    }
}
