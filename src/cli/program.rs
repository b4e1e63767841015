//! Running a program: the exit codes ([`run`]), logging, Ctrl-C and SIGTERM, a server's life
//! until interrupted, and data lines on stdout.

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;

use crossbeam_channel::Receiver;

use super::{Args, Command, Parsed, parse};
use crate::error::{Error, Result};

/// Runs a program: sets up logging (stderr, `RUST_LOG`, default `info`), parses the command
/// line, calls `body`, and maps the outcome to an exit code.
pub fn run(cmd: &Command, body: impl FnOnce(Args) -> Result<()>) -> ExitCode {
    init_logging();
    let usage_error = |msg: &str| {
        eprintln!("{}: {msg}\n\n{}", cmd.name, cmd.usage());
        ExitCode::from(2)
    };
    match parse(cmd, std::env::args().skip(1)) {
        Ok(Parsed::Help) => {
            println!("{}", cmd.usage());
            ExitCode::SUCCESS
        }
        Ok(Parsed::Run(args)) => match body(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(Error::Usage(msg)) => usage_error(&msg),
            Err(e) => {
                eprintln!("{}: {e}", cmd.name);
                ExitCode::FAILURE
            }
        },
        Err(e) => usage_error(&e.to_string()),
    }
}

/// Logs to stderr as `time LEVEL [thread] message`, so a student can follow one message from
/// thread to thread.
pub fn init_logging() {
    let env = env_logger::Env::default().default_filter_or("info");
    let _ = env_logger::Builder::from_env(env)
        .format(|buf, record| {
            let thread = std::thread::current();
            writeln!(
                buf,
                "{} {:5} [{}] {}",
                buf.timestamp_millis(),
                record.level(),
                thread.name().unwrap_or("?"),
                record.args()
            )
        })
        .try_init();
}

/// A channel that receives once per Ctrl-C or SIGTERM.
pub fn interrupts() -> Result<Receiver<()>> {
    let (tx, rx) = crossbeam_channel::bounded(1);
    on_interrupt(move || {
        let _ = tx.try_send(());
    })?;
    Ok(rx)
}

/// Runs `f` on Ctrl-C or SIGTERM (on the signal-handling thread).
pub fn on_interrupt(f: impl FnMut() + Send + 'static) -> Result<()> {
    ctrlc::set_handler(f).map_err(|e| Error::Io(std::io::Error::other(e)))
}

/// Runs a server program's body: starts it, prints `listening on <addr>` as the first
/// stdout line, waits for Ctrl-C or SIGTERM, then stops it. [`crate::Broker::serve`] and
/// [`crate::witness::Witness::serve`] are this with their own start and stop.
pub fn serve_until_interrupted<S>(
    start: impl FnOnce() -> Result<S>,
    addr: impl FnOnce(&S) -> SocketAddr,
    stop: impl FnOnce(S),
) -> Result<()> {
    let interrupts = interrupts()?;
    let server = start()?;
    print_line(format_args!("listening on {}", addr(&server)))?;
    let _ = interrupts.recv();
    stop(server);
    Ok(())
}

/// Prints one line on stdout and flushes it: data lines must reach a pipe at once.
pub fn print_line(line: std::fmt::Arguments<'_>) -> Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_fmt(line)?;
    out.write_all(b"\n")?;
    out.flush()?;
    Ok(())
}

/// Milliseconds since the Unix epoch, for `--timestamps`.
pub fn unix_millis() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}
