//! `backup <port> <primary-host:port> [flags]`: the backup broker.

use std::process::ExitCode;

use edgebroker::{Broker, cli};

fn main() -> ExitCode {
    cli::run(&cli::BACKUP, |args| {
        Broker::serve(cli::broker_config(&args, false)?)
    })
}
