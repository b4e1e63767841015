//! The `pairstat` program's loop: its command line read into [`Options`], then poll, draw and
//! wait until told to stop.

use std::io::{self, IsTerminal, Write};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};

use edgebroker::auth::Secret;
use edgebroker::cli::{self, Args};
use edgebroker::error::{Error, Result};

use super::{View, poll};

/// How often `pairstat` polls unless told otherwise.
pub const DEFAULT_INTERVAL: Duration = Duration::from_millis(500);
/// The longest a broker may take to answer one poll, however long the interval.
pub const MAX_ANSWER_TIME: Duration = Duration::from_secs(1);

/// What the `pairstat` command line asked for.
#[derive(Clone, Debug)]
pub struct Options {
    /// The addresses to poll, in table order.
    pub addrs: Vec<String>,
    /// How often to poll.
    pub interval: Duration,
    /// Print one frame and exit.
    pub once: bool,
    /// JSON lines instead of the table.
    pub json: bool,
    /// The brokers' client secret.
    pub secret: Option<Secret>,
    /// How many of `addrs` are brokers; the rest (with `--witness`) is the witness.
    pub brokers: usize,
}

impl Options {
    /// Reads `pairstat`'s command line ([`cli::PAIRSTAT`]).
    pub fn from_args(args: &Args) -> Result<Options> {
        let mut addrs = (0..2)
            .filter_map(|i| args.positional(i))
            .map(cli::check_host_port)
            .collect::<Result<Vec<_>>>()?;
        let brokers = addrs.len();
        if let Some(witness) = args.value::<String>("--witness")? {
            addrs.push(cli::check_host_port(&witness)?);
        }
        let interval = args.millis("--interval-ms")?.unwrap_or(DEFAULT_INTERVAL);
        if interval.is_zero() {
            return Err(Error::Usage("--interval-ms must be at least 1".into()));
        }
        Ok(Options {
            addrs,
            interval,
            once: args.switch("--once"),
            json: args.switch("--json"),
            secret: cli::secret(args, "--secret", cli::CLIENT_SECRET_ENV),
            brokers,
        })
    }

    /// How long one broker may take to answer a poll: the interval, at most
    /// [`MAX_ANSWER_TIME`].
    pub fn answer_time(&self) -> Duration {
        self.interval.min(MAX_ANSWER_TIME)
    }
}

/// Cursor home and clear screen: redraws the table in place on a terminal.
const REDRAW: &str = "\x1b[H\x1b[2J";

/// Polls until `stop` receives (or is dropped), writing each frame to stdout: redrawn in
/// place on a terminal, appended otherwise, one JSON line per poll with `--json`; once with
/// `--once`. Only a failure to write ends it early; a broker that does not answer is a row.
pub fn watch(options: &Options, stop: &Receiver<()>) -> Result<()> {
    let redraw = io::stdout().is_terminal() && !options.json && !options.once;
    let mut view = View::new(options.addrs.clone());
    let mut next = Instant::now();
    loop {
        let readings = poll(
            view.addrs(),
            options.answer_time(),
            options.secret.as_ref(),
            options.brokers,
        );
        let frame = view.update(readings, Instant::now(), now_ms());
        let mut text = if options.json {
            frame.json() + "\n"
        } else {
            frame.table()
        };
        if redraw {
            text.insert_str(0, REDRAW);
        } else if !options.json && !options.once {
            text.push('\n');
        }
        let mut out = io::stdout().lock();
        out.write_all(text.as_bytes())?;
        out.flush()?;
        drop(out);
        if options.once {
            return Ok(());
        }
        next += options.interval;
        // Behind (a slow answer): poll again at once, but never twice in a burst.
        next = next.max(Instant::now());
        match stop.recv_timeout(next.saturating_duration_since(Instant::now())) {
            Ok(()) | Err(RecvTimeoutError::Disconnected) => return Ok(()),
            Err(RecvTimeoutError::Timeout) => {}
        }
    }
}

fn now_ms() -> u64 {
    u64::try_from(cli::unix_millis()).unwrap_or(u64::MAX)
}
