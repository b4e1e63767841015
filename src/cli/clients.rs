//! The clients' command lines: the `publisher`, `test_publisher` and `subscriber` tables, the
//! flags clients share, [`publisher_config`] and [`window`].

use super::parse::positive_millis;
use super::{Args, CLIENT_SECRET_ENV, Command, Flag, check_host_port, secret};
use crate::client::MAX_WINDOW;
use crate::config::PublisherConfig;
use crate::error::{Error, Result};

const ACK_TIMEOUT: Flag = Flag::value(
    "--ack-timeout-ms",
    "N",
    "how long to wait for an ACK before failing over [500]",
);
const RESEND: Flag = Flag::value(
    "--resend",
    "N",
    "how many of the latest messages to resend after a failover [5]",
);
/// `--window` of the publishers: `publisher`, `test_publisher`, and the tools' `bench` and
/// `soak` (for the `test_publisher` it runs).
pub(super) const WINDOW: Flag = Flag::value(
    "--window",
    "N",
    "how many messages may wait for their ACKs at once, 1 to 1024: 1 waits for each ACK before the next send; more sends ahead (pipelining), matches the ACKs in order and, on a failover, resends every unACKed message in order [1]",
);
/// `--secret` of every client, the tools' included.
pub(super) const CLIENT_SECRET: Flag = Flag::value(
    "--secret",
    "S",
    "the brokers' client secret [$BROKER_CLIENT_SECRET]",
);

/// The `publisher` program.
pub const PUBLISHER: Command = Command {
    name: "publisher",
    synopsis: "<topic> <message> <primary-host:port> <backup-host:port> [flags]",
    about: "\
Publishes one message and exits once a broker ACKed it (exit 1 if none did).",
    flags: &[ACK_TIMEOUT, RESEND, WINDOW, CLIENT_SECRET],
    notes: "",
    required: 4,
    max_positionals: 4,
};

/// The `test_publisher` program.
pub const TEST_PUBLISHER: Command = Command {
    name: "test_publisher",
    synopsis: "<topic> <primary-host:port> <backup-host:port> [flags]",
    about: "\
Publishes the sequence numbers 1, 2, 3, ... at a fixed rate and prints `ACK <seq>` on stdout
for each ACKed message. Ctrl-C stops it and logs `summary: sent=N acked=M`.",
    flags: &[
        Flag::value("--rate-hz", "N", "messages per second [10]"),
        Flag::value("--count", "N", "stop after N messages [run until Ctrl-C]"),
        Flag::switch(
            "--timestamps",
            "prefix each stdout line with the time in ms since the Unix epoch",
        ),
        Flag::value(
            "--publish-log",
            "FILE",
            "write `<unix_ms> PUBLISH <seq>` to FILE as each message is first sent (report --published reads it for the latency picture)",
        ),
        ACK_TIMEOUT,
        RESEND,
        WINDOW,
        CLIENT_SECRET,
    ],
    notes: "\
With --window N above 1, messages go out at the rate without waiting for the ACKs of the
ones before (at most N wait at once); the `ACK <seq>` lines still come in publish order.",
    required: 3,
    max_positionals: 3,
};

/// The `subscriber` program.
pub const SUBSCRIBER: Command = Command {
    name: "subscriber",
    synopsis: "<topic> <primary-host:port> <backup-host:port> [flags]",
    about: "\
Subscribes on both brokers and prints each message once, as `[PRIMARY] <payload>` or
`[BACKUP] <payload>` after the broker that delivered it. Ctrl-C stops it.",
    flags: &[
        Flag::switch(
            "--timestamps",
            "prefix each line with the time in ms since the Unix epoch",
        ),
        CLIENT_SECRET,
    ],
    notes: "",
    required: 3,
    max_positionals: 3,
};

/// Builds a publisher's configuration; the broker addresses are positionals `first` and
/// `first + 1`.
pub fn publisher_config(args: &Args, first: usize) -> Result<PublisherConfig> {
    let primary = check_host_port(args.positional(first).unwrap_or_default())?;
    let backup = check_host_port(args.positional(first + 1).unwrap_or_default())?;
    let mut config = PublisherConfig::new(primary, backup);
    if let Some(t) = positive_millis(args, "--ack-timeout-ms")? {
        config.ack_timeout = t;
    }
    if let Some(n) = args.value("--resend")? {
        config.resend = n;
    }
    if let Some(n) = window(args)? {
        config.window = n;
    }
    config.secret = secret(args, "--secret", CLIENT_SECRET_ENV);
    Ok(config)
}

/// `--window N`, checked: 1 to [`MAX_WINDOW`].
pub fn window(args: &Args) -> Result<Option<usize>> {
    match args.value::<usize>("--window")? {
        Some(n) if !(1..=MAX_WINDOW).contains(&n) => Err(Error::Usage(format!(
            "--window must be 1 to {MAX_WINDOW}, not {n}"
        ))),
        n => Ok(n),
    }
}
