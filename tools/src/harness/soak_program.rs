//! The `soak` program's work around [`soak::run`]: its command line ([`COMMAND`]), its flags
//! turned into a [`SoakConfig`], the other programs built under `cargo run`, the log folder
//! made, kept or removed, the summary printed, and the [`Outcome`] its exit code comes from.

use std::path::{Path, PathBuf};

use edgebroker::cli::{self, Args, Command, Flag};
use edgebroker::error::{Error, Result};

use crate::harness::cluster::Programs;
use crate::harness::netns::Network;
use crate::harness::soak::{self, FaultKind, Mode, SoakConfig};

/// The `soak` command line: [`cli::SOAK`]'s table with the tools' own `--only` after its
/// flags.
pub const COMMAND: Command = Command {
    flags: &FLAGS,
    ..cli::SOAK
};

/// [`cli::SOAK`]'s flags, then [`ONLY`].
const FLAGS: [Flag; cli::SOAK.flags.len() + 1] = with_flag(cli::SOAK.flags, ONLY);

/// `--only`: the fault kinds to inject, by [`FaultKind::name`].
const ONLY: Flag = Flag::value(
    "--only",
    "KINDS",
    "inject only these kinds, comma-separated: kill-primary, kill-backup, stop-primary, kill-both (both brokers killed at once, restarted 1-3 s later from their logs on disk); with namespaces cut-link, isolate-primary; with --witness kill-witness, cut-witness-primary, cut-witness-backup, isolate-witness [all]",
);

/// `flags`, then `extra`: a table's flags with one more.
const fn with_flag<const N: usize>(flags: &[Flag], extra: Flag) -> [Flag; N] {
    let mut all = [extra; N];
    let mut i = 0;
    while i < flags.len() {
        all[i] = flags[i];
        i += 1;
    }
    all
}

/// How a soak that ran to its end came out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing was violated.
    Passed,
    /// The verdict found a violation.
    Violated,
    /// Ctrl-C ended it early; what ran was judged and passed.
    Interrupted,
}

/// Runs the soak the `soak` command line ([`COMMAND`]) asks for: checks the flags, builds the
/// other programs under `cargo run` ([`Programs::of_this_build`]), makes the log folder, runs
/// [`soak::run`], prints the timeline and summary (also written to `summary.txt`) and keeps or
/// removes the logs.
/// A bad flag is an [`Error::Usage`]; a soak that could not run is an error too, after a
/// stderr line saying where its logs are.
pub fn run(args: &Args) -> Result<Outcome> {
    let mode = match (args.switch("--netns"), args.switch("--local")) {
        (true, true) => {
            return Err(Error::Usage(
                "--netns and --local exclude each other".into(),
            ));
        }
        (true, false) => Mode::Netns,
        (false, true) => Mode::Local,
        (false, false) => Mode::Auto,
    };
    if mode == Mode::Netns
        && let Err(why) = Network::available()
    {
        return Err(Error::Io(std::io::Error::other(format!(
            "--netns: network namespaces are not available: {why}"
        ))));
    }
    let programs = match args.value::<PathBuf>("--bin-dir")? {
        Some(dir) => Programs::in_dir(&dir),
        None => Programs::of_this_build()?,
    };
    let seed = args
        .value("--seed")?
        .unwrap_or_else(|| rand::random_range(1..=999_999_999u64));
    let keep = args.value::<PathBuf>("--keep-logs")?;
    let dir = match &keep {
        Some(dir) => dir.clone(),
        None => {
            // Under cargo, in the workspace's `run-logs/` (this crate is one folder below the
            // workspace root); elsewhere in the current folder's.
            let base = std::env::var_os("CARGO_MANIFEST_DIR")
                .and_then(|dir| Path::new(&dir).parent().map(Path::to_path_buf))
                .unwrap_or_default();
            let secs = super::unix_ms() / 1000;
            base.join("run-logs")
                .join(format!("soak-{secs}-seed{seed}"))
        }
    };
    std::fs::create_dir_all(&dir)?;

    let mut config = SoakConfig::new(programs, dir.clone());
    config.seed = seed;
    config.mode = mode;
    if let Some(n) = args.value("--faults")? {
        config.faults = n;
    }
    if let Some(ms) = args.millis("--min-gap-ms")? {
        config.min_gap = ms;
    }
    if let Some(ms) = args.millis("--max-gap-ms")? {
        config.max_gap = ms;
    }
    if config.max_gap < config.min_gap {
        return Err(Error::Usage(
            "--max-gap-ms must not be below --min-gap-ms".into(),
        ));
    }
    if let Some(spec) = args.value::<String>("--compute-ms")? {
        cli::parse_compute(&spec)?; // refuse a bad spec here, not in every broker
        config.cluster.compute = spec;
    }
    if let Some(n) = cli::window(args)? {
        config.cluster.window = n;
    }
    if let Some(rate) = args.value::<u32>("--rate-hz")? {
        if rate == 0 {
            return Err(Error::Usage("--rate-hz must be at least 1".into()));
        }
        config.cluster.rate_hz = rate;
    }
    if let Some(level) = args.value("--log-level")? {
        config.cluster.log_level = level;
    }
    config.cluster.witness = args.switch("--witness");
    config.only = only(args, mode, config.cluster.witness)?;
    if let Some(ms) = args.value::<u64>("--lease-ms")? {
        if !config.cluster.witness {
            return Err(Error::Usage("--lease-ms needs --witness".into()));
        }
        // The lease must outlast a lost renewal and its retry (PROTOCOL.md, "Default timings").
        let floor = config.cluster.ping_interval_ms * 5 / 4 + config.cluster.ping_timeout_ms;
        if ms <= floor {
            return Err(Error::Usage(format!(
                "--lease-ms must be above {floor} (a lost renewal and its retry at the soak's \
                 pings every {} ms, {} ms timeout)",
                config.cluster.ping_interval_ms, config.cluster.ping_timeout_ms
            )));
        }
        config.cluster.lease_ms = ms;
    }

    let interrupts = cli::interrupts()?;
    eprintln!(
        "soak: {} faults, seed {seed}, logs in {}",
        config.faults,
        dir.display()
    );
    let report = soak::run(&config, &interrupts);
    let report = match report {
        Ok(report) => report,
        Err(e) => {
            eprintln!(
                "soak: the run failed: {e}\nsoak: its logs are kept in {}",
                dir.display()
            );
            return Err(e);
        }
    };
    let text = format!("{}\n\n{report}\n", report.timeline());
    let _ = std::fs::write(dir.join("summary.txt"), &text);
    println!("{text}");
    let outcome = if !report.passed() {
        Outcome::Violated
    } else if report.interrupted {
        Outcome::Interrupted
    } else {
        Outcome::Passed
    };
    if outcome != Outcome::Passed {
        println!("logs kept in {}", dir.display());
    } else if keep.is_some() {
        println!("logs in {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(outcome)
}

/// The kinds `--only` names (empty without it); a usage error for a name that is no kind, or
/// for a kind the run cannot inject: a witness's without `--witness`, a network fault with
/// `--local`.
fn only(args: &Args, mode: Mode, witness: bool) -> Result<Vec<FaultKind>> {
    let Some(list) = args.value::<String>("--only")? else {
        return Ok(Vec::new());
    };
    list.split(',')
        .map(|name| {
            let kind = FaultKind::named(name.trim()).ok_or_else(|| {
                let names: Vec<&str> = FaultKind::ALL.iter().map(|k| k.name()).collect();
                Error::Usage(format!(
                    "--only: no fault kind '{name}' (the kinds: {})",
                    names.join(", ")
                ))
            })?;
            if kind.needs_witness() && !witness {
                return Err(Error::Usage(format!("--only {name} needs --witness")));
            }
            if kind.needs_network() && mode == Mode::Local {
                return Err(Error::Usage(format!(
                    "--only {name} needs network namespaces, not --local"
                )));
            }
            Ok(kind)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Args {
        match cli::parse(&COMMAND, line.split_whitespace().map(String::from)) {
            Ok(cli::Parsed::Run(args)) => args,
            other => panic!("{line}: {other:?}"),
        }
    }

    #[test]
    fn the_command_line_is_the_soak_table_with_only() {
        assert_eq!(COMMAND.flags.len(), cli::SOAK.flags.len() + 1);
        assert!(
            cli::SOAK
                .flags
                .iter()
                .all(|f| COMMAND.flags.iter().any(|g| g.name == f.name))
        );
        let usage = COMMAND.usage();
        assert!(usage.contains("  --only KINDS "), "{usage}");
        assert!(
            usage
                .lines()
                .all(|l| l.len() <= 92 || !l.starts_with("  --")),
            "{usage}"
        );
    }

    #[test]
    fn only_names_kinds_the_run_can_inject() {
        let kinds = |line: &str, mode, witness| only(&args(line), mode, witness);
        assert_eq!(kinds("", Mode::Local, false).unwrap(), Vec::new());
        assert_eq!(
            kinds("--only kill-both,kill-primary", Mode::Local, false).unwrap(),
            vec![FaultKind::KillBoth, FaultKind::KillPrimary]
        );
        assert!(kinds("--only kill-all", Mode::Local, false).is_err());
        assert!(kinds("--only kill-witness", Mode::Local, false).is_err());
        assert!(kinds("--only kill-witness", Mode::Local, true).is_ok());
        assert!(kinds("--only cut-link", Mode::Local, false).is_err());
        assert!(kinds("--only cut-link", Mode::Auto, false).is_ok());
    }
}
