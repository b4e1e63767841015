//! `witness <port> [flags]`: the pair's third, data-less voter ([`edgebroker::witness`]).

use std::process::ExitCode;

use edgebroker::cli;

fn main() -> ExitCode {
    cli::run(&cli::WITNESS, |args| {
        cli::serve_witness(cli::witness_config(&args)?)
    })
}
