//! `bench <primary-host:port> [<backup-host:port>] [flags]`: load-tests a broker in the spirit
//! of `redis-benchmark` and `nats bench` ([`edgebroker::bench`](mod@edgebroker::bench)).

use std::process::ExitCode;

use edgebroker::{bench, cli};

fn main() -> ExitCode {
    cli::run(&cli::BENCH, |args| {
        let options = bench::Options::from_args(&args)?;
        let report = bench::run(&options)?;
        report.print(&options)
    })
}
