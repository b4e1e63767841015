//! `test_publisher <topic> <primary> <backup> [--rate-hz 10] [--count N] [--window 1]`:
//! publishes 1, 2, 3, … at a fixed rate and prints `ACK <seq>` per ACKed message, in order.

use std::collections::VecDeque;
use std::fs::File;
use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use crossbeam_channel::{RecvTimeoutError, TryRecvError};
use edgebroker::{Error, Publisher, Result, cli};

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
        let mut sent = 0u64;
        let mut acks = Acks {
            timestamps,
            labels: VecDeque::new(),
            acked: 0,
        };
        let mut next = Instant::now();
        log::info!(
            "publishing to '{topic}' at {rate} Hz as publisher {}",
            publisher.id()
        );
        'publishing: while count.is_none_or(|c| sent < c) {
            let seq = sent + 1;
            sent = seq;
            if let Some(log) = &mut publish_log {
                writeln!(log, "{} PUBLISH {seq}", cli::unix_millis())?;
            }
            // With a window of 1 this returns once the message is ACKed (or given up); with
            // more, once fewer than the window wait.
            match publisher.submit(topic, &seq.to_string()) {
                Ok(_) => acks.labels.push_back(seq),
                Err(e) => log::error!("message {seq} not sent: {e}"),
            }
            acks.print(&mut publisher)?;
            next += period;
            // Until the next send: the ACKs of what waits, as they come, and Ctrl-C.
            loop {
                let wait = next.saturating_duration_since(Instant::now());
                if publisher.in_flight() > 0 && !wait.is_zero() {
                    publisher.wait_for_acks(Instant::now() + wait.min(POLL));
                    acks.print(&mut publisher)?;
                    match interrupts.try_recv() {
                        Ok(()) | Err(TryRecvError::Disconnected) => break 'publishing,
                        Err(TryRecvError::Empty) => continue,
                    }
                }
                match interrupts.recv_timeout(wait) {
                    Ok(()) | Err(RecvTimeoutError::Disconnected) => break 'publishing,
                    Err(RecvTimeoutError::Timeout) => break,
                }
            }
            // Behind schedule (a failover took a while): catch up without a burst.
            next = next.max(Instant::now() - period);
        }
        // The messages still waiting get their ACKs (or are given up) before the summary.
        publisher.flush();
        acks.print(&mut publisher)?;
        log::info!("summary: sent={sent} acked={}", acks.acked);
        Ok(())
    })
}

/// How often the wait between two sends looks for Ctrl-C while ACKs are due.
const POLL: Duration = Duration::from_millis(20);

/// The `ACK <seq>` lines, printed in publish order as the messages settle.
struct Acks {
    timestamps: bool,
    /// The sequence numbers of the messages submitted and not yet settled, oldest first: the
    /// publisher settles them in this order, one outcome each.
    labels: VecDeque<u64>,
    acked: u64,
}

impl Acks {
    /// Prints an `ACK <seq>` line per message ACKed since the last call, and logs the others.
    fn print(&mut self, publisher: &mut Publisher) -> Result<()> {
        for outcome in publisher.take_outcomes() {
            let seq = self.labels.pop_front().unwrap_or(outcome.seq);
            match outcome.result {
                Ok(()) => {
                    self.acked += 1;
                    if self.timestamps {
                        cli::print_line(format_args!("{} ACK {seq}", cli::unix_millis()))?;
                    } else {
                        cli::print_line(format_args!("ACK {seq}"))?;
                    }
                }
                Err(e) => log::error!("message {seq} not ACKed: {e}"),
            }
        }
        Ok(())
    }
}
