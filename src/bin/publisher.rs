//! `publisher <topic> <message> <primary-host:port> <backup-host:port>`: publishes one message.

use std::process::ExitCode;

use edgebroker::{Publisher, cli};

fn main() -> ExitCode {
    cli::run(&cli::PUBLISHER, |args| {
        let topic = args.positional(0).unwrap_or_default();
        let message = args.positional(1).unwrap_or_default();
        let mut publisher = Publisher::new(cli::publisher_config(&args, 2)?);
        publisher.publish(topic, message)?;
        log::info!("'{message}' on '{topic}' ACKed by {}", publisher.broker());
        Ok(())
    })
}
