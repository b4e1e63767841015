//! The brokers' command lines: the `primary` and `backup` tables, with the flags they share,
//! and [`broker_config`], which turns either into a [`BrokerConfig`].

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::parse::positive_millis;
use super::{Args, CLIENT_SECRET_ENV, Command, Flag, check_host_port, parse_positional, secret};
use crate::config::{BrokerConfig, ComputeStep};
use crate::error::{Error, Result};
use crate::protocol::{Message, ParseError};
use crate::witness::Pair;

/// The environment variable that holds the brokers' secret, for brokers and the witness.
pub(super) const BROKER_SECRET_ENV: &str = "BROKER_SECRET";

/// `--bind`, for the brokers and the witness.
pub(super) const BIND: Flag = Flag::value("--bind", "ADDR", "address to listen on [0.0.0.0]");

/// The flags `primary` and `backup` share.
const BROKER_FLAGS: &[Flag] = &[
    Flag::value(
        "--compute-ms",
        "MIN-MAX",
        "compute step per message, uniform in ms; 0 turns it off [50-150]",
    ),
    Flag::value(
        "--ping-interval-ms",
        "N",
        "how often the backup probes the primary [1000]",
    ),
    Flag::value(
        "--ping-timeout-ms",
        "N",
        "how long a probe waits for its answer [500]",
    ),
    Flag::value(
        "--startup-grace-ms",
        "N",
        "how long a fresh backup waits for its peer before it may take over [3000]",
    ),
    BIND,
    Flag::switch(
        "--require-backup",
        "refuse to ACK while the backup is silent (not while it is dead)",
    ),
    Flag::value(
        "--witness",
        "HOST:PORT",
        "the pair's witness, the same for both brokers: no takeover on silence without its grant, and a primary cut off from backup and witness stops [none]",
    ),
    Flag::value(
        "--pair",
        "NAME",
        "the pair's name at its witness, the same for both brokers; pairs that share a witness need different names [default]",
    ),
    Flag::value(
        "--workers",
        "N",
        "compute workers; topics are spread over them [1]",
    ),
    Flag::value(
        "--max-line-bytes",
        "N",
        "longest line accepted; a message's topic and payload may take this less 101 bytes (the fields brokers add) [65536]",
    ),
    Flag::value(
        "--max-connections",
        "N",
        "most client connections served at once; 4 more slots are kept for the peer broker [10000]",
    ),
    Flag::value(
        "--slow-consumer-limit",
        "N",
        "messages queued for a subscriber before it is cut off [10000]",
    ),
    Flag::value(
        "--slow-consumer-bytes",
        "N",
        "bytes queued for a subscriber before it is cut off [33554432]",
    ),
    Flag::value(
        "--slow-consumer-ms",
        "N",
        "how long a line may wait for a subscriber before it is cut off [10000]",
    ),
    Flag::value(
        "--max-queued-bytes",
        "N",
        "bytes of messages waiting for subscribers, each counted once; past it the one with the longest queue is cut off [268435456]",
    ),
    Flag::value(
        "--max-pending",
        "N",
        "messages waiting for the compute step before publishes are refused [100000]",
    ),
    Flag::value(
        "--max-pending-bytes",
        "N",
        "bytes waiting for the compute step before publishes are refused [268435456]",
    ),
    Flag::value(
        "--max-subscriptions",
        "N",
        "topics one connection may subscribe to [1000]",
    ),
    Flag::value(
        "--max-subscription-bytes",
        "N",
        "bytes one connection's subscriptions may take, each its topic name + 200 [65536]",
    ),
    Flag::value(
        "--auth-timeout-ms",
        "N",
        "how long a connection that must authenticate may take [10000]",
    ),
    Flag::value(
        "--data-dir",
        "DIR",
        "keep a log on disk in DIR, read back at start: an ACKed message survives losing both brokers [none: memory only]",
    ),
    Flag::value(
        "--fsync",
        "WHEN",
        "with --data-dir: always (sync before the ACK; survives a power cut), batch (every 100 ms; a power cut loses at most that) or never (the OS decides; survives a process crash) [always]",
    ),
    Flag::value(
        "--secret",
        "S",
        "broker-to-broker secret; peer verbs need it [$BROKER_SECRET]",
    ),
    Flag::value(
        "--client-secret",
        "S",
        "clients must authenticate with it [$BROKER_CLIENT_SECRET]",
    ),
];

const BROKER_NOTES: &str = "\
Logs go to stderr (RUST_LOG=debug follows every message). The first stdout line is
`listening on <addr>`. Ctrl-C or SIGTERM stops the broker.";

/// The `primary` program.
pub const PRIMARY: Command = Command {
    name: "primary",
    synopsis: "<port> [<backup-host:port>] [flags]",
    about: "\
Starts the primary broker on <port> (0 picks a free port), replicating to the backup at
<backup-host:port>. Without a backup address it runs alone. If the other broker is already
the active primary, this one joins it as backup.",
    flags: BROKER_FLAGS,
    notes: BROKER_NOTES,
    required: 1,
    max_positionals: 2,
};

/// The `backup` program.
pub const BACKUP: Command = Command {
    name: "backup",
    synopsis: "<port> <primary-host:port> [flags]",
    about: "\
Starts the backup broker on <port> (0 picks a free port). It holds the primary's messages,
probes the primary every ping interval and takes over when it fails.",
    flags: BROKER_FLAGS,
    notes: BROKER_NOTES,
    required: 2,
    max_positionals: 2,
};

/// Builds a broker's configuration from `primary`'s or `backup`'s command line.
pub fn broker_config(args: &Args, preferred_primary: bool) -> Result<BrokerConfig> {
    let defaults = BrokerConfig::default();
    let listen = listen(args, defaults.listen.ip())?;
    let peer = args.positional(1).map(check_host_port).transpose()?;
    let compute = match args.raw("--compute-ms") {
        Some(spec) => parse_compute(spec)?,
        None => defaults.compute.clone(),
    };
    // A count that must be at least 1, and a duration of at least 1 ms, or the default.
    let count = |name: &str, default: usize| -> Result<usize> {
        match args.value(name)? {
            Some(0) => Err(Error::Usage(format!("{name} must be at least 1"))),
            v => Ok(v.unwrap_or(default)),
        }
    };
    let millis = |name: &str, default: Duration| -> Result<Duration> {
        Ok(positive_millis(args, name)?.unwrap_or(default))
    };
    let data_dir = args.raw("--data-dir").map(std::path::PathBuf::from);
    let fsync = match args.raw("--fsync") {
        Some(_) if data_dir.is_none() => {
            return Err(Error::Usage("--fsync needs --data-dir".into()));
        }
        Some(when) => when.parse().map_err(Error::Usage)?,
        None => defaults.fsync,
    };
    Ok(BrokerConfig {
        listen,
        peer,
        witness: args.raw("--witness").map(check_host_port).transpose()?,
        pair: match args.raw("--pair") {
            Some(name) => name
                .parse()
                .map_err(|e: ParseError| Error::Usage(format!("--pair: {e}")))?,
            None => Pair::default(),
        },
        preferred_primary,
        compute,
        workers: count("--workers", defaults.workers)?,
        ping_interval: millis("--ping-interval-ms", defaults.ping_interval)?,
        ping_timeout: millis("--ping-timeout-ms", defaults.ping_timeout)?,
        startup_grace: args
            .millis("--startup-grace-ms")?
            .unwrap_or(defaults.startup_grace),
        require_backup: args.switch("--require-backup"),
        max_line_bytes: line_limit(args.value("--max-line-bytes")?)?
            .unwrap_or(defaults.max_line_bytes),
        max_connections: count("--max-connections", defaults.max_connections)?,
        slow_consumer_limit: count("--slow-consumer-limit", defaults.slow_consumer_limit)?,
        slow_consumer_bytes: count("--slow-consumer-bytes", defaults.slow_consumer_bytes)?,
        slow_consumer_age: millis("--slow-consumer-ms", defaults.slow_consumer_age)?,
        max_queued_bytes: count("--max-queued-bytes", defaults.max_queued_bytes)?,
        max_pending: count("--max-pending", defaults.max_pending)?,
        max_pending_bytes: count("--max-pending-bytes", defaults.max_pending_bytes)?,
        max_subscriptions: count("--max-subscriptions", defaults.max_subscriptions)?,
        max_subscription_bytes: count("--max-subscription-bytes", defaults.max_subscription_bytes)?,
        auth_timeout: millis("--auth-timeout-ms", defaults.auth_timeout)?,
        dedup_publishers: defaults.dedup_publishers,
        data_dir,
        fsync,
        secret: secret(args, "--secret", BROKER_SECRET_ENV),
        client_secret: secret(args, "--client-secret", CLIENT_SECRET_ENV),
    })
}

/// The address a server program listens on: the port from its first positional, the address
/// from `--bind` (or `default`).
pub(super) fn listen(args: &Args, default: IpAddr) -> Result<SocketAddr> {
    let port: u16 = parse_positional(args, 0, "port")?;
    let bind: IpAddr = args.value("--bind")?.unwrap_or(default);
    Ok(SocketAddr::new(bind, port))
}

/// `--max-line-bytes` must leave room for a message beside the fields brokers add to it.
fn line_limit(v: Option<usize>) -> Result<Option<usize>> {
    let least = Message::ENVELOPE_BYTES + 2;
    match v {
        Some(n) if n < least => Err(Error::Usage(format!(
            "--max-line-bytes must be at least {least}"
        ))),
        _ => Ok(v),
    }
}

/// Parses `--compute-ms`: `MIN-MAX`, a single `N` (always N ms), or `0` (off).
pub fn parse_compute(spec: &str) -> Result<ComputeStep> {
    let bad = || {
        Error::Usage(format!(
            "--compute-ms: bad value '{spec}' (want MIN-MAX or 0)"
        ))
    };
    let (min, max) = match spec.split_once('-') {
        Some((a, b)) => (
            a.parse::<u64>().map_err(|_| bad())?,
            b.parse::<u64>().map_err(|_| bad())?,
        ),
        None => {
            let n = spec.parse::<u64>().map_err(|_| bad())?;
            (n, n)
        }
    };
    match (min, max) {
        (0, 0) => Ok(ComputeStep::Off),
        (min, max) if min <= max => Ok(ComputeStep::BusyLoop(min..=max)),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::cli::PRIMARY;
    use crate::cli::args_of as args;
    use crate::config::Fsync;

    #[test]
    fn seed_positionals_and_flags() {
        let a = args(
            &PRIMARY,
            "8080 localhost:8081 --compute-ms=0 --ping-timeout-ms 50",
        )
        .unwrap();
        let c = broker_config(&a, true).unwrap();
        assert_eq!(c.listen.port(), 8080);
        assert_eq!(c.peer.as_deref(), Some("localhost:8081"));
        assert!(matches!(c.compute, ComputeStep::Off));
        assert_eq!(c.ping_timeout, Duration::from_millis(50));
        assert_eq!(c.ping_interval, Duration::from_millis(1000));
        let alone = broker_config(&args(&PRIMARY, "0").unwrap(), true).unwrap();
        assert_eq!(alone.peer, None);
    }

    #[test]
    fn the_pair_name_defaults_and_is_checked() {
        let config = |line: &str| broker_config(&args(&PRIMARY, line).unwrap(), true);
        assert_eq!(config("0").unwrap().pair.as_str(), "default");
        assert_eq!(config("0 --pair site-3").unwrap().pair.as_str(), "site-3");
        match config("0 --pair a|b") {
            Err(Error::Usage(why)) => assert!(why.starts_with("--pair: bad pair name"), "{why}"),
            other => panic!("expected a usage error, got {other:?}"),
        }
    }

    #[test]
    fn the_log_on_disk_is_off_by_default_and_fsync_needs_it() {
        let config = |line: &str| broker_config(&args(&PRIMARY, line).unwrap(), true);
        let memory = config("0").unwrap();
        assert_eq!((memory.data_dir, memory.fsync), (None, Fsync::Always));
        let disk = config("0 --data-dir /var/lib/edge --fsync batch").unwrap();
        assert_eq!(disk.data_dir.as_deref(), Some(Path::new("/var/lib/edge")));
        assert_eq!(disk.fsync, Fsync::Batch);
        for (line, wanted) in [
            ("0 --fsync never", "--fsync needs --data-dir"),
            (
                "0 --data-dir d --fsync sometimes",
                "--fsync: bad value 'sometimes' (want always, batch or never)",
            ),
        ] {
            match config(line) {
                Err(Error::Usage(why)) => assert_eq!(why, wanted),
                other => panic!("expected a usage error, got {other:?}"),
            }
        }
    }

    #[test]
    fn compute_spec_forms() {
        assert!(matches!(parse_compute("0").unwrap(), ComputeStep::Off));
        assert!(matches!(parse_compute("5").unwrap(), ComputeStep::BusyLoop(r) if r == (5..=5)));
        assert!(
            matches!(parse_compute("50-150").unwrap(), ComputeStep::BusyLoop(r) if r == (50..=150))
        );
        assert!(parse_compute("a-b").is_err());
    }
}
