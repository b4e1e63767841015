//! The command lines of the programs that judge and measure the pair rather than serve it:
//! `report` (its options are read by [`crate::report::program`]) and the tools' `bench`,
//! `pairstat` and `soak`.

use super::clients::CLIENT_SECRET;
use super::{Command, Flag};

/// The `bench` program.
pub const BENCH: Command = Command {
    name: "bench",
    synopsis: "<primary-host:port> [<backup-host:port>] [flags]",
    about: "\
Measures the broker: publishers send their share of the messages, each waiting for its ACK
before the next publish (with --window N, up to N messages wait for their ACKs at once, the
ACKs matched in order); subscribers on the primary count what they receive. Reports
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
        Flag::value(
            "--window",
            "N",
            "messages each publisher may have waiting for their ACKs at once, 1 to 1024 (1: no pipelining) [1]",
        ),
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
Runs a primary and a backup broker, a test_publisher (10 Hz, --rate-hz; with --window N a
pipelining one) and three subscribers (the third restarted every 15 s), and injects N faults at random moments, each undone after a while:
  kill -9 the primary, restart it 1-3 s later     kill -9 the backup, restart it 1-3 s later
  SIGSTOP the primary for 1-4 s, then SIGCONT     cut the link between the brokers for 2-5 s
  cut the primary's host off for 2-5 s             kill -9 both brokers, restart both 1-3 s later
(primary and backup mean the brokers holding those roles at the time). Every broker keeps a
log on disk in the run's folder (--data-dir, --fsync always), so killing both loses nothing.
--only KINDS limits the faults to the kinds named. Before each fault it
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
        Flag::value("--rate-hz", "N", "test_publisher's rate, messages per second [10]"),
        Flag::value(
            "--window",
            "N",
            "test_publisher's --window: how many messages may wait for their ACKs at once, 1 to 1024; above 1 the publisher pipelines and a failover resends every unACKed message [1]",
        ),
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
Examples: cargo run --release --bin soak -- --faults 10
          cargo run --release --bin soak -- --faults 20 --window 16  (a pipelining publisher)",
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
