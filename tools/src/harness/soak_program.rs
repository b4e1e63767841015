//! The `soak` program's work around [`soak::run`]: its flags turned into a [`SoakConfig`], the
//! other programs built under `cargo run`, the log folder made, kept or removed, the summary
//! printed, and the [`Outcome`] its exit code comes from.

use std::path::{Path, PathBuf};

use edgebroker::cli::{self, Args};
use edgebroker::error::{Error, Result};

use crate::harness::cluster::Programs;
use crate::harness::netns::Network;
use crate::harness::soak::{self, Mode, SoakConfig};

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

/// Runs the soak the `soak` command line ([`cli::SOAK`]) asks for: checks the flags, builds the
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
