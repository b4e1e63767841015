//! The witness's command line: the `witness` table and [`witness_config`], which turns it
//! into a [`WitnessConfig`].

use std::time::Duration;

use super::broker::{BIND, BROKER_SECRET_ENV, listen};
use super::parse::positive_millis;
use super::{Args, Command, Flag, secret};
use crate::config::WitnessConfig;
use crate::error::{Error, Result};

/// The `witness` program.
pub const WITNESS: Command = Command {
    name: "witness",
    synopsis: "<port> [flags]",
    about: "\
Starts a witness on <port> (0 picks a free port): a third process, storing no messages,
that leases a pair's primary its right to act and grants a new epoch to a backup only
once that lease has lapsed, so a cut-off primary is never replaced while it may still ACK.
One witness serves many pairs, told apart by their brokers' --pair names. A fresh witness
grants nothing for one lease and margin: it may have granted one before.",
    flags: &[
        Flag::value(
            "--lease-ms",
            "N",
            "how long a primary may act after it renews; the witness waits an eighth more before it counts the lease lapsed [2000]",
        ),
        BIND,
        Flag::value(
            "--secret",
            "S",
            "the brokers' secret; LEASE and CLAIM need it [$BROKER_SECRET]",
        ),
    ],
    notes: "\
Logs go to stderr (RUST_LOG=debug shows every renewal). The first stdout line is
`listening on <addr>`. Ctrl-C or SIGTERM stops the witness.",
    required: 1,
    max_positionals: 1,
};

/// The longest lease `--lease-ms` takes: an hour. A lease is a failover delay; anything
/// longer is a typo, and the bound keeps every sum of instants far from overflow.
pub const MAX_LEASE: Duration = Duration::from_secs(3600);

/// Builds a witness's configuration from `witness`'s command line.
pub fn witness_config(args: &Args) -> Result<WitnessConfig> {
    let defaults = WitnessConfig::default();
    let listen = listen(args, defaults.listen.ip())?;
    let lease = match positive_millis(args, "--lease-ms")? {
        Some(lease) if lease > MAX_LEASE => {
            return Err(Error::Usage(format!(
                "--lease-ms may be at most {}",
                MAX_LEASE.as_millis()
            )));
        }
        Some(lease) => lease,
        None => defaults.lease,
    };
    Ok(WitnessConfig {
        listen,
        lease,
        margin: WitnessConfig::margin_for(lease),
        secret: secret(args, "--secret", BROKER_SECRET_ENV),
        ..defaults
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::args_of as args;

    #[test]
    fn witness_flags() {
        let c = witness_config(&args(&WITNESS, "7000 --lease-ms 800 --bind 127.0.0.1").unwrap())
            .unwrap();
        assert_eq!(c.listen, "127.0.0.1:7000".parse().unwrap());
        assert_eq!(c.lease, Duration::from_millis(800));
        assert_eq!(c.margin, Duration::from_millis(100));
        let plain = witness_config(&args(&WITNESS, "0").unwrap()).unwrap();
        assert_eq!(plain.lease, Duration::from_millis(2000));
        assert_eq!(plain.margin, Duration::from_millis(250));
        let bad = |line: &str| match witness_config(&args(&WITNESS, line).unwrap()) {
            Err(Error::Usage(m)) => m,
            other => panic!("{line}: {other:?}"),
        };
        assert_eq!(bad("0 --lease-ms 0"), "--lease-ms must be at least 1");
        assert_eq!(
            bad("0 --lease-ms 3600001"),
            "--lease-ms may be at most 3600000"
        );
        assert_eq!(bad("0 --lease-ms -1"), "--lease-ms: bad value '-1'");
        assert_eq!(bad("x"), "bad port 'x'");
        assert!(matches!(args(&WITNESS, "1 2"), Err(Error::Usage(_))));
    }
}
