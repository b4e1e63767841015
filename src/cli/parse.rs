//! Reading a command line against its [`Command`] table: [`parse`] into [`Args`], whose
//! values come out typed, and the checks of values several programs share (addresses,
//! positive durations, secrets).

use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use super::Command;
use crate::auth::Secret;
use crate::error::{Error, Result};

/// A parsed command line.
#[derive(Debug)]
pub struct Args {
    positionals: Vec<String>,
    /// Every value each flag was given, in command-line order (a switch gets one empty value).
    values: HashMap<&'static str, Vec<String>>,
}

impl Args {
    /// The `i`-th positional argument, if given.
    pub fn positional(&self, i: usize) -> Option<&str> {
        self.positionals.get(i).map(String::as_str)
    }

    /// Whether a switch was given.
    pub fn switch(&self, name: &str) -> bool {
        self.values.contains_key(name)
    }

    /// A flag's value, parsed; `None` if the flag was not given. Given twice, the last wins.
    pub fn value<T: FromStr>(&self, name: &str) -> Result<Option<T>> {
        self.raw(name)
            .map(|v| {
                v.parse()
                    .map_err(|_| Error::Usage(format!("{name}: bad value '{v}'")))
            })
            .transpose()
    }

    /// A flag's value in milliseconds, as a `Duration`.
    pub fn millis(&self, name: &str) -> Result<Option<Duration>> {
        Ok(self.value::<u64>(name)?.map(Duration::from_millis))
    }

    /// Every value of a flag that may be repeated (`--kill-ms 1 --kill-ms 2`), in
    /// command-line order; empty if it was not given.
    pub fn all(&self, name: &str) -> &[String] {
        self.values.get(name).map_or(&[], Vec::as_slice)
    }

    /// A flag's last value, unparsed.
    pub(super) fn raw(&self, name: &str) -> Option<&str> {
        self.values.get(name)?.last().map(String::as_str)
    }
}

/// What the command line asked for.
#[derive(Debug)]
pub enum Parsed {
    /// `--help` or `-h`.
    Help,
    /// Run with these arguments.
    Run(Args),
}

/// Parses `argv` (without the program name) against `cmd`.
pub fn parse(cmd: &Command, argv: impl IntoIterator<Item = String>) -> Result<Parsed> {
    let mut argv = argv.into_iter();
    let mut args = Args {
        positionals: Vec::new(),
        values: HashMap::new(),
    };
    while let Some(arg) = argv.next() {
        if arg == "-h" || arg == "--help" {
            return Ok(Parsed::Help);
        }
        if !arg.starts_with("--") {
            if args.positionals.len() == cmd.max_positionals {
                return Err(Error::Usage(format!("unexpected argument '{arg}'")));
            }
            args.positionals.push(arg);
            continue;
        }
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) => (n.to_string(), Some(v.to_string())),
            None => (arg, None),
        };
        let flag = cmd
            .flags
            .iter()
            .find(|f| f.name == name)
            .ok_or_else(|| Error::Usage(format!("unknown flag '{name}'")))?;
        let value = match (flag.value.is_some(), inline) {
            (true, Some(v)) => v,
            (true, None) => argv
                .next()
                .ok_or_else(|| Error::Usage(format!("{name} needs a value")))?,
            (false, None) => String::new(),
            (false, Some(_)) => return Err(Error::Usage(format!("{name} takes no value"))),
        };
        args.values.entry(flag.name).or_default().push(value);
    }
    if args.positionals.len() < cmd.required {
        return Err(Error::Usage("missing arguments".into()));
    }
    Ok(Parsed::Run(args))
}

/// The environment variable that holds the client secret, for brokers and clients alike.
pub const CLIENT_SECRET_ENV: &str = "BROKER_CLIENT_SECRET";

/// A secret from its flag, or else from the environment.
pub fn secret(args: &Args, flag: &str, env: &str) -> Option<Secret> {
    match args.raw(flag) {
        Some(s) => Secret::new(s),
        None => std::env::var(env).ok().as_deref().and_then(Secret::new),
    }
}

/// A positional argument parsed as `T`.
pub fn parse_positional<T: FromStr>(args: &Args, i: usize, what: &str) -> Result<T> {
    let text = args.positional(i).unwrap_or_default();
    text.parse()
        .map_err(|_| Error::Usage(format!("bad {what} '{text}'")))
}

/// Checks that an address looks like `host:port`; name resolution happens when dialling.
pub fn check_host_port(addr: &str) -> Result<String> {
    match addr.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
            Ok(addr.to_string())
        }
        _ => Err(Error::Usage(format!(
            "bad address '{addr}' (want host:port)"
        ))),
    }
}

/// A flag's value in milliseconds, which must not be 0; `None` if the flag was not given.
pub(super) fn positive_millis(args: &Args, name: &str) -> Result<Option<Duration>> {
    match args.millis(name)? {
        Some(d) if d.is_zero() => Err(Error::Usage(format!("{name} must be at least 1"))),
        d => Ok(d),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::args_of as args;
    use crate::cli::{BACKUP, SUBSCRIBER, broker_config};

    #[test]
    fn bad_arguments_are_usage_errors() {
        let usage = |r: Result<Args>| match r {
            Err(Error::Usage(m)) => m,
            other => panic!("{other:?}"),
        };
        assert_eq!(usage(args(&BACKUP, "8081")), "missing arguments");
        assert_eq!(
            usage(args(&BACKUP, "1 a:1 extra")),
            "unexpected argument 'extra'"
        );
        assert_eq!(
            usage(args(&BACKUP, "1 a:1 --nope")),
            "unknown flag '--nope'"
        );
        assert_eq!(
            usage(args(&BACKUP, "1 a:1 --workers")),
            "--workers needs a value"
        );
        let cfg = |line: &str| broker_config(&args(&BACKUP, line).unwrap(), false);
        assert!(matches!(cfg("x a:1"), Err(Error::Usage(m)) if m == "bad port 'x'"));
        assert!(matches!(cfg("1 nocolon"), Err(Error::Usage(_))));
        assert!(matches!(
            cfg("1 a:1 --compute-ms 9-3"),
            Err(Error::Usage(_))
        ));
        assert!(matches!(cfg("1 a:1 --workers 0"), Err(Error::Usage(_))));
    }

    #[test]
    fn help_is_recognised_anywhere() {
        assert!(matches!(
            parse(&SUBSCRIBER, ["t".to_string(), "--help".to_string()]),
            Ok(Parsed::Help)
        ));
    }
}
