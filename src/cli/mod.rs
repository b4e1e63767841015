//! Command-line parsing shared by every program: the seed's positional arguments, optional
//! `--flag value` (or `--flag=value`) flags, `--help`, and the exit codes (0 done, 1 failed,
//! 2 bad argument). Each program is one [`Command`] table, which drives both the parser and
//! the usage text ([`Command::usage`]), and a closure given to [`run`].
//!
//! The parts: the table and its help (`table.rs`), the parser and the value checks programs
//! share (`parse.rs`), running a program (`program.rs`), and each program's table with what
//! builds its configuration: the brokers (`broker.rs`), the witness (`witness.rs`), the
//! clients (`clients.rs`), and the programs that judge and measure the pair (`tools.rs`).

mod broker;
mod clients;
mod parse;
mod program;
mod table;
mod tools;
mod witness;

pub use broker::{BACKUP, PRIMARY, broker_config, parse_compute};
pub use clients::{PUBLISHER, SUBSCRIBER, TEST_PUBLISHER, publisher_config, window};
pub use parse::{
    Args, CLIENT_SECRET_ENV, Parsed, check_host_port, parse, parse_positional, secret,
};
pub use program::{
    init_logging, interrupts, on_interrupt, print_line, run, serve_until_interrupted, unix_millis,
};
pub use table::{Command, Flag};
pub use tools::{BENCH, PAIRSTAT, REPORT, SOAK};
pub use witness::{MAX_LEASE, WITNESS, witness_config};

/// Parses `line` (split at spaces) against `cmd`, for the tests.
#[cfg(test)]
fn args_of(cmd: &Command, line: &str) -> crate::error::Result<Args> {
    match parse(cmd, line.split_whitespace().map(String::from))? {
        Parsed::Run(a) => Ok(a),
        Parsed::Help => panic!("help"),
    }
}
