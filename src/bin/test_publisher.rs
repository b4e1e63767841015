//! `test_publisher <topic> <primary> <backup> [--rate-hz 10] [--count N]`: publishes 1, 2, 3, …
//! at a fixed rate and prints `ACK <seq>` per ACKed message.

use std::fs::File;
use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use crossbeam_channel::RecvTimeoutError;
use edgebroker::{Error, Publisher, cli};

fn main() -> ExitCode {
    cli::run(&cli::TEST_PUBLISHER, |args| {
        let topic = args.positional(0).unwrap_or_default();
        let rate: f64 = args.value("--rate-hz")?.unwrap_or(10.0);
        if !(rate > 0.0 && rate <= 1_000_000.0) {
            return Err(Error::Usage("--rate-hz must be above 0".into()));
        }
        let count: Option<u64> = args.value("--count")?;
        let timestamps = args.switch("--timestamps");
        // When each message was first sent, for the report's latency picture; stdout keeps
        // its one ACK line per message.
        let mut publish_log = args
            .all("--publish-log")
            .last()
            .map(|path| {
                File::create(path)
                    .map_err(|e| Error::Usage(format!("--publish-log: cannot create {path}: {e}")))
            })
            .transpose()?;
        let mut publisher = Publisher::new(cli::publisher_config(&args, 1)?);
        let interrupts = cli::interrupts()?;
        let period = Duration::from_secs_f64(1.0 / rate);
        let (mut sent, mut acked) = (0u64, 0u64);
        let mut next = Instant::now();
        log::info!(
            "publishing to '{topic}' at {rate} Hz as publisher {}",
            publisher.id()
        );
        while count.is_none_or(|c| sent < c) {
            let seq = sent + 1;
            sent = seq;
            if let Some(log) = &mut publish_log {
                writeln!(log, "{} PUBLISH {seq}", cli::unix_millis())?;
            }
            match publisher.publish(topic, &seq.to_string()) {
                Ok(_) => {
                    acked += 1;
                    if timestamps {
                        cli::print_line(format_args!("{} ACK {seq}", cli::unix_millis()))?;
                    } else {
                        cli::print_line(format_args!("ACK {seq}"))?;
                    }
                }
                Err(e) => log::error!("message {seq} not ACKed: {e}"),
            }
            next += period;
            let wait = next.saturating_duration_since(Instant::now());
            match interrupts.recv_timeout(wait) {
                Ok(()) | Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {}
            }
            // Behind schedule (a failover took a while): catch up without a burst.
            next = next.max(Instant::now() - period);
        }
        log::info!("summary: sent={sent} acked={acked}");
        Ok(())
    })
}
