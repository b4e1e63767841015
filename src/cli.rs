//! Command-line parsing shared by every program: the seed's positional arguments, optional
//! `--flag value` (or `--flag=value`) flags, `--help`, and the exit codes (0 done, 1 failed,
//! 2 bad argument). Each program is one [`Command`] table, which drives both the parser and
//! the usage text ([`Command::usage`]), and a closure given to [`run`].

use std::collections::HashMap;
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::str::FromStr;
use std::time::Duration;

use crossbeam_channel::Receiver;

use crate::auth::Secret;
use crate::config::{BrokerConfig, ComputeStep, PublisherConfig, WitnessConfig};
use crate::error::{Error, Result};
use crate::protocol::{Message, ParseError};
use crate::witness::Pair;

/// A flag a program accepts, with its line of help.
#[derive(Clone, Copy, Debug)]
pub struct Flag {
    /// Its name, with the dashes: `--rate-hz`.
    pub name: &'static str,
    /// What its value is called in the help (`N`, `FILE`), or `None` for a switch.
    pub value: Option<&'static str>,
    /// What it does, and its default in brackets.
    pub help: &'static str,
}

impl Flag {
    /// A flag that takes a value: `--rate-hz N`.
    pub const fn value(name: &'static str, value: &'static str, help: &'static str) -> Flag {
        Flag {
            name,
            value: Some(value),
            help,
        }
    }

    /// A switch: `--timestamps`.
    pub const fn switch(name: &'static str, help: &'static str) -> Flag {
        Flag {
            name,
            value: None,
            help,
        }
    }

    /// `--rate-hz N`, as the help shows it.
    fn shown(&self) -> String {
        match self.value {
            Some(v) => format!("{} {v}", self.name),
            None => self.name.to_string(),
        }
    }
}

/// A program's command line: its positional arguments, its flags and its help, in one table.
#[derive(Debug)]
pub struct Command {
    /// The program's name, for the usage line and error messages.
    pub name: &'static str,
    /// What follows the name on the usage line: `<port> [<backup-host:port>] [flags]`.
    pub synopsis: &'static str,
    /// What the program does, under the usage line.
    pub about: &'static str,
    /// The flags it accepts, in the order the help lists them.
    pub flags: &'static [Flag],
    /// What the help says after the flags (exit codes, an example); may be empty.
    pub notes: &'static str,
    /// How many positional arguments are required.
    pub required: usize,
    /// How many positional arguments there may be.
    pub max_positionals: usize,
}

/// The help lines' width.
const HELP_WIDTH: usize = 92;

impl Command {
    /// The help text printed by `--help` and after an error, made from the table.
    pub fn usage(&self) -> String {
        let help = Flag::switch("-h, --help", "print this help");
        let flags: Vec<&Flag> = self.flags.iter().chain([&help]).collect();
        let column = flags.iter().map(|f| f.shown().len()).max().unwrap_or(0) + 5;
        let mut out = format!("usage: {} {}\n", self.name, self.synopsis);
        if !self.about.is_empty() {
            out.push_str(&format!("\n{}\n", self.about));
        }
        out.push_str("\nflags:\n");
        for flag in flags {
            let mut line = format!("  {}", flag.shown());
            for word in flag.help.split(' ') {
                if line.len() < column {
                    line.push_str(&" ".repeat(column - line.len()));
                } else if line.len() + 1 + word.len() > HELP_WIDTH {
                    out.push_str(&line);
                    out.push('\n');
                    line = " ".repeat(column);
                } else {
                    line.push(' ');
                }
                line.push_str(word);
            }
            out.push_str(&line);
            out.push('\n');
        }
        if !self.notes.is_empty() {
            out.push_str(&format!("\n{}\n", self.notes));
        }
        out.truncate(out.trim_end().len());
        out
    }
}

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
    fn raw(&self, name: &str) -> Option<&str> {
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

// ---- the programs ----

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
    Flag::value("--bind", "ADDR", "address to listen on [0.0.0.0]"),
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
const CLIENT_SECRET: Flag = Flag::value(
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
    flags: &[ACK_TIMEOUT, RESEND, CLIENT_SECRET],
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
        CLIENT_SECRET,
    ],
    notes: "",
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
        Flag::value("--bind", "ADDR", "address to listen on [0.0.0.0]"),
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

/// The `bench` program.
pub const BENCH: Command = Command {
    name: "bench",
    synopsis: "<primary-host:port> [<backup-host:port>] [flags]",
    about: "\
Measures the broker: publishers send their share of the messages, each waiting for its ACK
before the next publish; subscribers on the primary count what they receive. Reports
publish->ACK and publish->delivery latency, throughput, and delivered/lost/duplicate counts.
The backup address is only shown; the primary's STATUS says whether replication is on.",
    flags: &[
        Flag::value(
            "--publishers",
            "N",
            "publisher connections, each with its share of the messages [1]",
        ),
        Flag::value(
            "--subscribers",
            "N",
            "subscriber connections on the primary (0: publish only) [1]",
        ),
        Flag::value("--messages", "N", "messages in all [10000]"),
        Flag::value(
            "--payload-bytes",
            "N",
            "payload size; it starts with a timing header of ~20-40 bytes [100]",
        ),
        Flag::value("--topic", "T", "topic to publish and subscribe to [bench]"),
        Flag::switch(
            "--json",
            "also print the results as one JSON object, the last stdout line",
        ),
        CLIENT_SECRET,
    ],
    notes: "\
A progress line goes to stderr once a second for runs longer than 2 s. Exit status: 0 done,
1 a connection failed or a broker refused a message, 2 bad arguments.",
    required: 1,
    max_positionals: 2,
};

/// The `pairstat` program.
pub const PAIRSTAT: Command = Command {
    name: "pairstat",
    synopsis: "<host:port> [<host:port>] [flags]",
    about: "\
A live view of the pair: asks each broker (and the witness) for its STATUS every interval
and shows one table of role, epoch, backup and witness state, pending messages, messages per second published,
processed and delivered, and takeovers. A role or epoch change is marked (*) and listed
with its time (UTC, as in the logs); a broker that does not answer is shown as down. On a
terminal the table is redrawn in place; into a pipe or a file each poll is appended.
Ctrl-C stops it.",
    flags: &[
        Flag::value(
            "--interval-ms",
            "N",
            "how often to poll; a broker that takes longer than this (or 1 s) to answer is shown as down until it answers again [500]",
        ),
        Flag::value(
            "--witness",
            "HOST:PORT",
            "the pair's witness: one more row, with the lease it holds",
        ),
        Flag::switch("--once", "print one table (or one JSON object) and exit"),
        Flag::switch(
            "--json",
            "one JSON object per poll, one line each, instead of the table",
        ),
        CLIENT_SECRET,
    ],
    notes: "",
    required: 1,
    max_positionals: 2,
};

/// The `soak` program.
pub const SOAK: Command = Command {
    name: "soak",
    synopsis: "[flags]",
    about: "\
Runs a primary and a backup broker, a 10 Hz test_publisher and three subscribers (the third
restarted every 15 s), and injects N faults at random moments, each undone after a while:
  kill -9 the primary, restart it 1-3 s later     kill -9 the backup, restart it 1-3 s later
  SIGSTOP the primary for 1-4 s, then SIGCONT     cut the link between the brokers for 2-5 s
  cut the primary's host off for 2-5 s
(primary and backup mean the brokers holding those roles at the time). Before each fault it
waits until the pair is healthy again (one primary with a synced backup). At the end it checks
that every subscriber that stayed up printed every ACKed message once and in order, that the
restarted one printed nothing twice, and that no two brokers were primary in one epoch; it
prints a summary table and exits 0 if nothing was violated, 1 otherwise.

With --witness the pair runs with its witness (both brokers get --witness), a healthy pair
also holds the witness's lease, and the faults include the witness's: kill -9 and restart
(1-3 s), its link to the primary or to the backup cut, its host cut off (2-5 s); the verdict
adds that no broker ACKed a publish alone after the witness granted a newer epoch.

Hosts are network namespaces (198.18.0.0/15 on a bridge; needs root and iproute2) when they
can be made; otherwise loopback ports, where links cannot be cut and only kills and stops are
injected. The logs of a failed run are kept (its folder is printed); a passing run's are
deleted unless --keep-logs is given. Under `cargo run`, the other programs are built first.",
    flags: &[
        Flag::value("--faults", "N", "faults to inject [10]"),
        Flag::value(
            "--seed",
            "S",
            "seed of every random choice [random, printed]",
        ),
        Flag::value(
            "--min-gap-ms",
            "N",
            "shortest pause between a healthy pair and the next fault [2000]",
        ),
        Flag::value("--max-gap-ms", "N", "longest such pause [6000]"),
        Flag::value(
            "--compute-ms",
            "SPEC",
            "the brokers' compute step, MIN-MAX or 0 [50-150]",
        ),
        Flag::value(
            "--keep-logs",
            "DIR",
            "write the run's logs to DIR and keep them",
        ),
        Flag::switch("--netns", "use network namespaces or fail"),
        Flag::switch(
            "--local",
            "use loopback ports (no link cuts, no host cut-offs)",
        ),
        Flag::value(
            "--bin-dir",
            "DIR",
            "where primary, backup, subscriber, test_publisher and witness are [the folder of this program]",
        ),
        Flag::value("--log-level", "LEVEL", "RUST_LOG of the programs [debug]"),
        Flag::switch(
            "--witness",
            "run the pair's witness too (a fifth host), with its faults: kill -9 and restart, cut off from one broker or both",
        ),
        Flag::value(
            "--lease-ms",
            "N",
            "the witness's lease, with --witness [1000]",
        ),
    ],
    notes: "\
Exit status: 0 no violation, 1 a violation (or the soak could not run), 2 bad arguments,
130 interrupted by Ctrl-C (after undoing the fault in hand and judging what ran).
Example: cargo run --release --bin soak -- --faults 10",
    required: 0,
    max_positionals: 0,
};

/// The `report` program. Its errors differ from the others': `report: error: <why>`, exit 2
/// also for an unreadable file, since exit 1 is the verdict FAIL.
pub const REPORT: Command = Command {
    name: "report",
    synopsis: "--sub FILE --acks FILE [flags]",
    about: "",
    flags: &[
        Flag::value(
            "--sub",
            "FILE",
            "subscriber output (`<unix_ms> [PRIMARY|BACKUP] <seq>` per line)",
        ),
        Flag::value(
            "--acks",
            "FILE",
            "test_publisher output (`<unix_ms> ACK <seq>` per line)",
        ),
        Flag::value(
            "--published",
            "FILE",
            "test_publisher's --publish-log (`<unix_ms> PUBLISH <seq>` per line), for the picture's publish->delivery latency panel",
        ),
        Flag::value(
            "--sent",
            "N",
            "messages sent (default: the highest seq ACKed or delivered)",
        ),
        Flag::value(
            "--kill-ms",
            "MS",
            "when the primary was killed (or stopped), unix ms; repeat it for each fault of the run (default: no fault)",
        ),
        Flag::value(
            "--fault-label",
            "TEXT",
            "what the faults were, for the report and the picture; without it they are reported as kills [primary killed]",
        ),
        Flag::value(
            "--max-silence-ms",
            "MS",
            "longest silence around each fault that still passes [1000]",
        ),
        Flag::value(
            "--svg",
            "FILE",
            "also write a picture of the run (SVG) to FILE",
        ),
        Flag::value("--title", "T", "title of the picture"),
    ],
    notes: "\
Prints the report on stdout. Exit code: 0 PASS, 1 FAIL, 2 bad argument or unreadable file.",
    required: 0,
    max_positionals: 0,
};

/// Builds a broker's configuration from `primary`'s or `backup`'s command line.
pub fn broker_config(args: &Args, preferred_primary: bool) -> Result<BrokerConfig> {
    let defaults = BrokerConfig::default();
    let port: u16 = parse_positional(args, 0, "port")?;
    let bind: IpAddr = args.value("--bind")?.unwrap_or(defaults.listen.ip());
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
        Ok(nonzero(name, args.millis(name)?)?.unwrap_or(default))
    };
    Ok(BrokerConfig {
        listen: SocketAddr::new(bind, port),
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
        secret: secret(args, "--secret", "BROKER_SECRET"),
        client_secret: secret(args, "--client-secret", CLIENT_SECRET_ENV),
    })
}

/// Builds a witness's configuration from `witness`'s command line.
pub fn witness_config(args: &Args) -> Result<WitnessConfig> {
    let defaults = WitnessConfig::default();
    let port: u16 = parse_positional(args, 0, "port")?;
    let bind: IpAddr = args.value("--bind")?.unwrap_or(defaults.listen.ip());
    let lease = match nonzero("--lease-ms", args.millis("--lease-ms")?)? {
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
        listen: SocketAddr::new(bind, port),
        lease,
        margin: WitnessConfig::margin_for(lease),
        secret: secret(args, "--secret", "BROKER_SECRET"),
        ..defaults
    })
}

/// Builds a publisher's configuration; the broker addresses are positionals `first` and
/// `first + 1`.
pub fn publisher_config(args: &Args, first: usize) -> Result<PublisherConfig> {
    let primary = check_host_port(args.positional(first).unwrap_or_default())?;
    let backup = check_host_port(args.positional(first + 1).unwrap_or_default())?;
    let mut config = PublisherConfig::new(primary, backup);
    if let Some(t) = nonzero("--ack-timeout-ms", args.millis("--ack-timeout-ms")?)? {
        config.ack_timeout = t;
    }
    if let Some(n) = args.value("--resend")? {
        config.resend = n;
    }
    config.secret = secret(args, "--secret", CLIENT_SECRET_ENV);
    Ok(config)
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

fn nonzero(name: &str, d: Option<Duration>) -> Result<Option<Duration>> {
    match d {
        Some(d) if d.is_zero() => Err(Error::Usage(format!("{name} must be at least 1"))),
        _ => Ok(d),
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
    use super::*;

    fn args(cmd: &Command, line: &str) -> Result<Args> {
        match parse(cmd, line.split_whitespace().map(String::from))? {
            Parsed::Run(a) => Ok(a),
            Parsed::Help => panic!("help"),
        }
    }

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
    fn each_table_drives_its_usage_text() {
        for cmd in [
            &PRIMARY,
            &BACKUP,
            &PUBLISHER,
            &TEST_PUBLISHER,
            &SUBSCRIBER,
            &REPORT,
            &BENCH,
            &PAIRSTAT,
            &SOAK,
        ] {
            let usage = cmd.usage();
            assert!(
                usage.starts_with(&format!("usage: {} ", cmd.name)),
                "{usage}"
            );
            for flag in cmd.flags.iter() {
                let shown = format!("  {} ", flag.shown());
                assert!(
                    usage.contains(&shown),
                    "{}: {shown:?} not in\n{usage}",
                    cmd.name
                );
            }
            assert!(usage.contains("-h, --help"), "{usage}");
            for line in usage.lines().filter(|l| l.starts_with("  --")) {
                assert!(line.len() <= HELP_WIDTH, "{}: too wide: {line}", cmd.name);
            }
        }
    }

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

    #[test]
    fn help_is_recognised_anywhere() {
        assert!(matches!(
            parse(&SUBSCRIBER, ["t".to_string(), "--help".to_string()]),
            Ok(Parsed::Help)
        ));
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
