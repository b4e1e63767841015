//! `primary <port> [<backup-host:port>] [flags]`: the primary broker.

use std::process::ExitCode;

use edgebroker::cli;

fn main() -> ExitCode {
    cli::run(&cli::PRIMARY, |args| {
        cli::serve_broker(cli::broker_config(&args, true)?)
    })
}
