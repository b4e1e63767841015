//! `bench <primary-host:port> [<backup-host:port>] [flags]`: load-tests a broker in the spirit
//! of `redis-benchmark` and `nats bench`
//! ([`edgebroker_tools::bench`](mod@edgebroker_tools::bench)).

use std::process::ExitCode;

use edgebroker::cli;
use edgebroker_tools::bench;

fn main() -> ExitCode {
    cli::run(&cli::BENCH, |args| {
        let options = bench::Options::from_args(&args)?;
        let report = bench::run(&options)?;
        report.print(&options)
    })
}
