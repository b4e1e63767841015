//! `primary <port> [<backup-host:port>] [flags]`: the primary broker.

use std::process::ExitCode;

use edgebroker::{Broker, cli};

fn main() -> ExitCode {
    cli::run(&cli::PRIMARY, |args| {
        Broker::serve(cli::broker_config(&args, true)?)
    })
}
