//! A harness for whole-system runs: the real programs (`primary`, `backup`, `subscriber`,
//! `test_publisher`, and `witness` when a run has one) as child processes, on separate hosts
//! when it can make them, with faults injected from outside — the way an operator would meet
//! them.
//!
//! The hosts are Linux network namespaces joined by a bridge ([`netns::Network`]): `primary`,
//! `backup`, `publisher`, `subscriber` and `witness`, each with its own address in
//! 198.18.0.0/15 (the range set aside for benchmarking networks). That needs root and iproute2
//! (`ip`); where namespaces cannot be made, [`netns::Network::available`] says why, and a run
//! falls back to loopback ports ([`site::Site::Loopback`]) where only process faults are
//! possible.
//!
//! The faults: `kill -9` and restart of a broker, of both brokers at once or of the witness,
//! SIGSTOP/SIGCONT, cutting and healing the link between any two hosts (the brokers', a
//! broker's and the witness's; both still reach every other host), and cutting a host off
//! entirely. Everything a run creates — processes, namespaces, links — is removed when the
//! value that made it is dropped, also when a test fails.
//!
//! ## Layout
//!
//! | module | its one job |
//! |---|---|
//! | [`netns`] | hosts as network namespaces on a bridge; cutting links and hosts off |
//! | [`process`] | one child process: its log files, signals, and a kill in `Drop` |
//! | [`site`] | where the hosts are (namespaces or loopback): running a program there, sending a broker a line (STATUS) |
//! | [`cluster`] | a broker pair and its clients as processes: start, fault, restart, wait until healthy |
//! | [`check`] | judging a run from its output files: losses, duplicates, order, epochs claimed twice, ACKs alone after a newer grant |
//! | [`soak`] | the chaos soak: random faults, then the verdict and a summary table |
//! | [`soak_program`] | the `soak` program's work: its command line, flags to a soak, building the programs, logs, outcome |
//!
//! The tests in `tools/tests/netns.rs` use [`cluster`] for the separate-host scenarios; the `soak`
//! program is a thin wrapper around [`soak_program::run`], which calls [`soak::run`].

pub mod check;
pub mod cluster;
pub mod netns;
pub mod process;
pub mod site;
pub mod soak;
pub mod soak_program;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use edgebroker::error::Error;

/// Milliseconds since the Unix epoch: the clock every program's `--timestamps` uses, so the
/// harness's fault times and the programs' output lines can be compared.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// How often the harness polls while it waits (files, STATUS).
pub const POLL: Duration = Duration::from_millis(100);

/// Polls `f` every [`POLL`] until it returns `Some` or `within` has passed.
pub fn wait_for<T>(within: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(POLL.min(deadline.saturating_duration_since(Instant::now())));
    }
}

/// The harness's own failure, saying `what` went wrong.
pub(crate) fn failure(what: &str) -> Error {
    Error::Io(std::io::Error::other(what.to_string()))
}
