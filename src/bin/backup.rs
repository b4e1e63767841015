//! `backup <port> <primary-host:port> [flags]`: the backup broker.

use std::process::ExitCode;

use edgebroker::cli;

fn main() -> ExitCode {
    cli::run(&cli::BACKUP, |args| {
        cli::serve_broker(cli::broker_config(&args, false)?)
    })
}
