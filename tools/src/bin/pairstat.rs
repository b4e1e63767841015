//! `pairstat <host:port> [<host:port>] [--interval-ms 500] [--once] [--json]`: a live view of
//! the pair, in the spirit of `redis-cli --stat` ([`edgebroker_tools::pairstat`]).

use std::process::ExitCode;

use edgebroker::cli;
use edgebroker_tools::pairstat::{self, Options};

fn main() -> ExitCode {
    cli::run(&cli::PAIRSTAT, |args| {
        let options = Options::from_args(&args)?;
        let interrupts = cli::interrupts()?;
        pairstat::watch(&options, &interrupts)
    })
}
