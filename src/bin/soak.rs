//! `soak [--faults N] [--seed S] [--netns|--local] …`: the chaos soak — a broker pair under N
//! random faults, judged at the end ([`edgebroker::harness::soak`]).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use edgebroker::cli::{self, Args, Command, Flag};
use edgebroker::harness::cluster::Programs;
use edgebroker::harness::netns::Network;
use edgebroker::harness::soak::{self, Mode, SoakConfig};
use edgebroker::{Error, Result};

/// The `soak` program's command line.
const SOAK: Command = Command {
    name: "soak",
    usage: "\
usage: soak [flags]

Runs a primary and a backup broker, a 10 Hz test_publisher and three subscribers (the third
restarted every 15 s), and injects N faults at random moments, each undone after a while:
  kill -9 the primary, restart it 1-3 s later     kill -9 the backup, restart it 1-3 s later
  SIGSTOP the primary for 1-4 s, then SIGCONT     cut the link between the brokers for 2-5 s
  cut the primary's host off for 2-5 s
(primary and backup mean the brokers holding those roles at the time). Before each fault it
waits until the pair is healthy again (one primary with a synced backup). At the end it checks
that every subscriber that stayed up printed every ACKed message once and in order, that the
restarted one printed nothing twice, and that no two brokers were primary in one epoch; it
prints a summary table and exits 0 if nothing was violated, 1 otherwise.

Hosts are network namespaces (198.18.0.0/15 on a bridge; needs root and iproute2) when they
can be made; otherwise loopback ports, where links cannot be cut and only kills and stops are
injected. The logs of a failed run are kept (its folder is printed); a passing run's are
deleted unless --keep-logs is given. Under `cargo run`, the other programs are built first.

flags:
  --faults N          faults to inject [10]
  --seed S            seed of every random choice [random, printed]
  --min-gap-ms N      shortest pause between a healthy pair and the next fault [2000]
  --max-gap-ms N      longest such pause [6000]
  --compute-ms SPEC   the brokers' compute step, MIN-MAX or 0 [50-150]
  --keep-logs DIR     write the run's logs to DIR and keep them
  --netns             use network namespaces or fail
  --local             use loopback ports (no link cuts, no host cut-offs)
  --bin-dir DIR       where primary, backup, subscriber and test_publisher are
                      [the folder of this program]
  --log-level LEVEL   RUST_LOG of the programs [debug]
  -h, --help          print this help

Exit status: 0 no violation, 1 a violation (or the soak could not run), 2 bad arguments,
130 interrupted by Ctrl-C (after undoing the fault in hand and judging what ran).
Example: cargo run --release --bin soak -- --faults 10",
    required: 0,
    max_positionals: 0,
    flags: &[
        Flag::value("--faults"),
        Flag::value("--seed"),
        Flag::value("--min-gap-ms"),
        Flag::value("--max-gap-ms"),
        Flag::value("--compute-ms"),
        Flag::value("--keep-logs"),
        Flag::switch("--netns"),
        Flag::switch("--local"),
        Flag::value("--bin-dir"),
        Flag::value("--log-level"),
    ],
};

/// How a soak that ran to its end came out.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Passed,
    Violated,
    Interrupted,
}

fn main() -> ExitCode {
    let mut outcome = Outcome::Passed;
    let code = cli::run(&SOAK, |args| {
        outcome = soak_main(&args)?;
        Ok(())
    });
    match outcome {
        _ if code != ExitCode::SUCCESS => code,
        Outcome::Passed => ExitCode::SUCCESS,
        Outcome::Violated => ExitCode::FAILURE,
        // The shell's convention for a program ended by SIGINT.
        Outcome::Interrupted => ExitCode::from(130),
    }
}

/// Runs the soak and says how it came out.
fn soak_main(args: &Args) -> Result<Outcome> {
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
    let bin_dir = match args.value::<PathBuf>("--bin-dir")? {
        Some(dir) => dir,
        None => {
            let exe = std::env::current_exe()?;
            let dir = exe.parent().unwrap_or(Path::new(".")).to_path_buf();
            build_under_cargo(&dir)?;
            dir
        }
    };
    let seed = args
        .value("--seed")?
        .unwrap_or_else(|| rand::random_range(1..=999_999_999u64));
    let keep = args.value::<PathBuf>("--keep-logs")?;
    let dir = match &keep {
        Some(dir) => dir.clone(),
        None => {
            let base = std::env::var_os("CARGO_MANIFEST_DIR")
                .map(PathBuf::from)
                .unwrap_or_default();
            let secs = edgebroker::harness::unix_ms() / 1000;
            base.join("run-logs")
                .join(format!("soak-{secs}-seed{seed}"))
        }
    };
    std::fs::create_dir_all(&dir)?;

    let mut config = SoakConfig::new(Programs::in_dir(&bin_dir), dir.clone());
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
    if let Some(level) = args.value("--log-level")? {
        config.cluster.log_level = level;
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

/// Under `cargo run` (which sets `CARGO` and `CARGO_MANIFEST_DIR`), builds the other programs
/// with this program's profile, so the soak never runs stale or missing binaries: `cargo run
/// --bin soak` builds only the soak itself.
fn build_under_cargo(exe_dir: &Path) -> Result<()> {
    let (Some(cargo), Some(manifest)) = (
        std::env::var_os("CARGO"),
        std::env::var_os("CARGO_MANIFEST_DIR"),
    ) else {
        return Ok(());
    };
    let profile = exe_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut build = std::process::Command::new(cargo);
    build
        .arg("build")
        .arg("--manifest-path")
        .arg(Path::new(&manifest).join("Cargo.toml"))
        .args(["--bins", "--quiet"]);
    match profile.as_str() {
        "debug" => {}
        "release" => {
            build.arg("--release");
        }
        other => {
            build.args(["--profile", other]);
        }
    }
    eprintln!("soak: building the programs ({profile})");
    let status = build.status()?;
    if status.success() {
        Ok(())
    } else {
        Err(Error::Io(std::io::Error::other(format!(
            "building the programs failed ({status})"
        ))))
    }
}
