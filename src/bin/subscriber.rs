//! `subscriber <topic> <primary-host:port> <backup-host:port>`: prints each message once,
//! labelled by the broker that delivered it.

use std::process::ExitCode;

use edgebroker::{Subscriber, SubscriberConfig, cli};

fn main() -> ExitCode {
    cli::run(&cli::SUBSCRIBER, |args| {
        let topic = args.positional(0).unwrap_or_default().to_string();
        let primary = cli::check_host_port(args.positional(1).unwrap_or_default())?;
        let backup = cli::check_host_port(args.positional(2).unwrap_or_default())?;
        let timestamps = args.switch("--timestamps");
        let config = SubscriberConfig {
            secret: cli::secret(&args, "--secret", cli::CLIENT_SECRET_ENV),
            ..SubscriberConfig::new(topic, primary, backup)
        };
        let mut subscriber = Subscriber::connect(config)?;
        cli::on_interrupt({
            let closer = subscriber.closer();
            move || closer.close()
        })?;
        while let Some(d) = subscriber.recv() {
            let label = d.source.label();
            let payload = &d.message.payload;
            if timestamps {
                cli::print_line(format_args!("{} {label} {payload}", cli::unix_millis()))?;
            } else {
                cli::print_line(format_args!("{label} {payload}"))?;
            }
        }
        Ok(())
    })
}
