//! `witness <port> [flags]`: the pair's third, data-less voter ([`edgebroker::witness`]).

use std::process::ExitCode;

use edgebroker::cli;
use edgebroker::witness::Witness;

fn main() -> ExitCode {
    cli::run(&cli::WITNESS, |args| {
        Witness::serve(cli::witness_config(&args)?)
    })
}
