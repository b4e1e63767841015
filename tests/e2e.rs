//! End to end with the real programs: a primary and a backup process, the `subscriber` and
//! `test_publisher` programs, and a real failure of the primary process — `SIGKILL` (a crash)
//! and `SIGSTOP`/`SIGCONT` (a hang, then a zombie primary that must be fenced) — or of both
//! brokers at once, restarted from their logs on disk (`--data-dir`). Each run is judged with
//! the same analysis as `run_test.sh` ([`edgebroker::report`]).
//!
//! Every process listens on loopback only. A guard kills every child in `Drop`, and on a
//! failure prints the tail of each program's stderr log (kept under `CARGO_TARGET_TMPDIR`).

mod common;

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use edgebroker::report::{self, RunReport};

const PRIMARY: &str = env!("CARGO_BIN_EXE_primary");
const BACKUP: &str = env!("CARGO_BIN_EXE_backup");
const SUBSCRIBER: &str = env!("CARGO_BIN_EXE_subscriber");
const TEST_PUBLISHER: &str = env!("CARGO_BIN_EXE_test_publisher");

/// Fast broker timings so a failover takes well under a second.
const BROKER_FLAGS: [&str; 8] = [
    "--bind",
    "127.0.0.1",
    "--compute-ms",
    "1-3",
    "--ping-interval-ms",
    "50",
    "--ping-timeout-ms",
    "200",
];

const TOPIC: &str = "topicC";

/// How long any one wait of these tests may take.
const WAIT: Duration = Duration::from_secs(8);

// ---- processes ----

/// The children of one test. `Drop` kills and reaps every one of them; if the test is failing
/// it first prints the tail of each child's stderr log.
struct Procs {
    dir: PathBuf,
    children: Vec<(&'static str, Child)>,
}

impl Procs {
    fn new(test: &str) -> Procs {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("e2e-{test}"));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("create the log folder");
        println!("logs in {}", dir.display());
        Procs {
            dir,
            children: Vec::new(),
        }
    }

    /// Starts `bin` with stdout read line by line into a [`Lines`] and stderr logged to a file.
    fn spawn(&mut self, name: &'static str, bin: &str, args: &[String]) -> (u32, Lines) {
        // Appended to: a restarted program logs after its first life.
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("{name}.log")))
            .expect("create a log file");
        let mut child = Command::new(bin)
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let pid = child.id();
        self.children.push((name, child));
        (pid, Lines::read(name, stdout))
    }

    /// Starts a broker as `(name, program, arguments)` says and waits for its `listening on`
    /// line; returns its pid.
    fn start_broker(&mut self, (name, bin, args): &(&'static str, &str, Vec<String>)) -> u32 {
        let (pid, mut out) = self.spawn(name, bin, args);
        out.wait("`listening on`", |l| {
            l.first().is_some_and(|l| l.starts_with("listening on "))
        });
        pid
    }

    /// The latest child started as `name`.
    fn child(&mut self, name: &str) -> &mut Child {
        self.children
            .iter_mut()
            .rev()
            .find(|(n, _)| *n == name)
            .map(|(_, c)| c)
            .unwrap_or_else(|| panic!("no child named {name}"))
    }

    /// SIGKILLs a child and reaps it; returns when it happened, in unix ms.
    fn sigkill(&mut self, name: &str) -> u64 {
        let child = self.child(name);
        let at = unix_ms();
        child.kill().expect("SIGKILL");
        child.wait().expect("reap");
        at
    }

    /// Waits (with a deadline) for a child to exit and returns its exit code.
    fn wait_exit(&mut self, name: &str) -> Option<i32> {
        let child = self.child(name);
        common::wait_for(&format!("{name} to exit"), || {
            child.try_wait().expect("try_wait")
        })
        .code()
    }

    fn tail_logs(&self) {
        for (name, _) in &self.children {
            let path = self.dir.join(format!("{name}.log"));
            let text = fs::read_to_string(&path).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let from = lines.len().saturating_sub(40);
            eprintln!("---- last lines of {} ----", path.display());
            for line in &lines[from..] {
                eprintln!("{line}");
            }
        }
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.tail_logs();
        }
        for (_, child) in &mut self.children {
            // SIGKILL also ends a SIGSTOPped process.
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Sends a signal with the `kill` program (no libc in the tests).
fn signal(pid: u32, sig: &str) {
    let status = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill {sig} {pid} failed");
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as u64
}

/// A child's stdout lines, read on a thread, collected as they are waited for.
struct Lines {
    name: &'static str,
    rx: Receiver<String>,
    got: Vec<String>,
    eof: bool,
}

impl Lines {
    fn read(name: &'static str, stdout: ChildStdout) -> Lines {
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name(format!("{name}-stdout"))
            .spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            })
            .expect("spawn a reader thread");
        Lines {
            name,
            rx,
            got: Vec::new(),
            eof: false,
        }
    }

    /// Collects lines until `done` holds for what was collected, failing after [`WAIT`].
    fn wait(&mut self, what: &str, done: impl Fn(&[String]) -> bool) {
        let deadline = Instant::now() + WAIT;
        while !done(&self.got) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(line) => self.got.push(line),
                Err(RecvTimeoutError::Timeout) => panic!(
                    "timed out waiting for {what} on {}'s stdout ({} lines so far, last {:?})",
                    self.name,
                    self.got.len(),
                    self.got.last()
                ),
                Err(RecvTimeoutError::Disconnected) => panic!(
                    "{} closed its stdout before {what} ({} lines, last {:?})",
                    self.name,
                    self.got.len(),
                    self.got.last()
                ),
            }
        }
    }

    /// Collects lines until the child closes its stdout, failing after [`WAIT`].
    fn until_eof(&mut self) {
        let deadline = Instant::now() + WAIT;
        while !self.eof {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(line) => self.got.push(line),
                Err(RecvTimeoutError::Disconnected) => self.eof = true,
                Err(RecvTimeoutError::Timeout) => {
                    panic!("timed out waiting for {} to close its stdout", self.name)
                }
            }
        }
    }

    fn count(&self, label: &str) -> usize {
        self.got.iter().filter(|l| l.contains(label)).count()
    }
}

// ---- brokers ----

/// Two distinct free loopback ports: bind both, then let them go.
fn two_free_ports() -> (u16, u16) {
    let a = TcpListener::bind("127.0.0.1:0").expect("bind");
    let b = TcpListener::bind("127.0.0.1:0").expect("bind");
    let ports = (
        a.local_addr().expect("addr").port(),
        b.local_addr().expect("addr").port(),
    );
    drop((a, b));
    ports
}

/// Asks a broker for its STATUS on a fresh connection; `None` if it does not answer in time.
fn status(addr: SocketAddr) -> Option<HashMap<String, String>> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_millis(500)))
        .ok()?;
    stream.write_all(b"STATUS\n").ok()?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).ok()?;
    let pairs = line.trim_end().strip_prefix("STATUS|")?;
    Some(
        pairs
            .split('|')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

/// Waits until a broker's STATUS satisfies `cond`.
fn wait_status(addr: SocketAddr, what: &str, cond: impl Fn(&HashMap<String, String>) -> bool) {
    common::wait_until(what, || status(addr).is_some_and(|s| cond(&s)));
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// A running demo: both brokers, the subscriber and the test publisher.
struct Demo {
    procs: Procs,
    primary_addr: SocketAddr,
    primary_pid: u32,
    publisher_pid: u32,
    /// How each broker was started: its name, program and arguments.
    brokers: [(&'static str, &'static str, Vec<String>); 2],
    sub: Lines,
    acks: Lines,
}

impl Demo {
    /// Starts the pair, waits until replication is up, starts the subscriber, waits until it
    /// is subscribed on both brokers, then starts the publisher at 50 Hz. With `fsync`, each
    /// broker keeps a log on disk in a folder of its own (`--data-dir`, `--fsync`).
    fn start(test: &str, fsync: Option<&str>) -> Demo {
        let mut procs = Procs::new(test);
        let (p, b) = two_free_ports();
        let primary_addr: SocketAddr = ([127, 0, 0, 1], p).into();
        let backup_addr: SocketAddr = ([127, 0, 0, 1], b).into();
        let (pa, ba) = (primary_addr.to_string(), backup_addr.to_string());
        let broker_args = |name: &str, port: u16, peer: &str| {
            let mut list = args(&[&port.to_string(), peer]);
            list.extend(args(&BROKER_FLAGS));
            if let Some(fsync) = fsync {
                let dir = procs.dir.join(format!("{name}-data"));
                list.extend(args(&[
                    "--data-dir",
                    &dir.to_string_lossy(),
                    "--fsync",
                    fsync,
                ]));
                // Slower than the publisher's 20 ms, so ACKed messages pile up to be replayed.
                list.extend(args(&[
                    "--compute-ms",
                    "35-45",
                    "--startup-grace-ms",
                    "500",
                ]));
            }
            list
        };
        let brokers = [
            ("primary", PRIMARY, broker_args("primary", p, &ba)),
            ("backup", BACKUP, broker_args("backup", b, &pa)),
        ];
        let primary_pid = procs.start_broker(&brokers[0]);
        procs.start_broker(&brokers[1]);
        wait_status(
            primary_addr,
            "the primary to replicate to the backup",
            |s| {
                s.get("role").is_some_and(|r| r == "primary")
                    && s.get("backup").is_some_and(|h| h == "up")
            },
        );
        wait_status(backup_addr, "the backup to follow", |s| {
            s.get("role").is_some_and(|r| r == "backup")
        });

        let (_, sub) = procs.spawn(
            "subscriber",
            SUBSCRIBER,
            &args(&[TOPIC, &pa, &ba, "--timestamps"]),
        );
        for addr in [primary_addr, backup_addr] {
            wait_status(addr, "the subscriber to subscribe", |s| {
                s.get("subscriptions")
                    .and_then(|n| n.parse::<usize>().ok())
                    .is_some_and(|n| n >= 1)
            });
        }
        let (publisher_pid, acks) = procs.spawn(
            "test_publisher",
            TEST_PUBLISHER,
            &args(&[TOPIC, &pa, &ba, "--rate-hz", "50", "--timestamps"]),
        );
        Demo {
            procs,
            primary_addr,
            primary_pid,
            publisher_pid,
            brokers,
            sub,
            acks,
        }
    }

    /// SIGKILLs both brokers, one right after the other (a power cut), and starts them again
    /// with the same command lines; returns when the first was killed, in unix ms.
    fn kill_and_restart_both(&mut self) -> u64 {
        let at = self.procs.sigkill("primary");
        self.procs.sigkill("backup");
        for broker in &self.brokers {
            self.procs.start_broker(broker);
        }
        at
    }

    /// Waits until the subscriber printed `n` more lines (from either broker).
    fn wait_lines(&mut self, n: usize) {
        let want = self.sub.got.len() + n;
        self.sub
            .wait(&format!("{want} deliveries"), |l| l.len() >= want);
    }

    /// Waits until the subscriber printed `n` more lines from the backup.
    fn wait_backup_lines(&mut self, n: usize) {
        let want = self.sub.count("[BACKUP]") + n;
        self.sub
            .wait(&format!("{want} deliveries from [BACKUP]"), |l| {
                l.iter().filter(|l| l.contains("[BACKUP]")).count() >= want
            });
    }

    /// Stops the publisher with SIGINT, collects its ACKs, waits until the subscriber printed
    /// the last ACKed message, and analyses the run.
    fn finish(mut self, kill_ms: u64) -> RunReport {
        signal(self.publisher_pid, "-INT");
        self.acks.until_eof();
        assert_eq!(
            self.procs.wait_exit("test_publisher"),
            Some(0),
            "test_publisher exits 0 on Ctrl-C"
        );
        let acks = report::parse_log(&self.acks.got.join("\n"), report::parse_ack);
        assert_eq!(
            acks.unparsed, 0,
            "test_publisher prints only ACK lines: {:?}",
            acks.unparsed_examples
        );
        let acked: Vec<u64> = acks.items.iter().map(|&(_, seq)| seq).collect();
        let last = acked.iter().copied().max().expect("some message was ACKed");
        self.sub.wait(&format!("the last ACKed seq {last}"), |l| {
            l.iter()
                .filter_map(|l| report::parse_delivery(l))
                .any(|d| d.seq == last)
        });
        let deliveries = report::parse_log(&self.sub.got.join("\n"), report::parse_delivery);
        assert_eq!(
            deliveries.unparsed, 0,
            "the subscriber prints only delivery lines: {:?}",
            deliveries.unparsed_examples
        );
        let report = report::analyse(&deliveries.items, &acked, None, Some(kill_ms));
        println!("{report}");
        report
    }
}

/// The verdict both failures must meet: every ACKed message delivered, once, in order, by
/// both brokers.
fn assert_clean(report: &RunReport) {
    assert_exactly_once_in_order(report);
    assert!(report.from_primary > 0, "the primary delivered\n{report}");
    assert!(report.from_backup > 0, "the backup delivered\n{report}");
}

/// Every ACKed message delivered, once, in order.
fn assert_exactly_once_in_order(report: &RunReport) {
    assert!(
        report.missing.is_empty(),
        "ACKed messages never delivered: {:?}\n{report}",
        report.missing
    );
    assert_eq!(report.duplicates, 0, "duplicates printed\n{report}");
    assert_eq!(report.inversions, 0, "order inversions\n{report}");
}

// ---- the tests ----

#[test]
fn sigkill_of_the_primary_loses_nothing_and_duplicates_nothing() {
    let mut demo = Demo::start("sigkill", None);
    demo.wait_lines(40);
    assert_eq!(
        demo.sub.count("[BACKUP]"),
        0,
        "the backup only holds messages"
    );

    let kill_ms = demo.procs.sigkill("primary");
    demo.wait_backup_lines(40);

    let report = demo.finish(kill_ms);
    assert_clean(&report);
}

#[test]
fn a_stopped_primary_is_fenced_when_it_resumes() {
    let mut demo = Demo::start("sigstop", None);
    demo.wait_lines(30);

    let stop_ms = unix_ms();
    signal(demo.primary_pid, "-STOP");
    demo.wait_backup_lines(30);

    signal(demo.primary_pid, "-CONT");
    wait_status(
        demo.primary_addr,
        "the resumed primary to step down to backup",
        |s| s.get("role").is_some_and(|r| r == "backup"),
    );
    let primary_lines = demo.sub.count("[PRIMARY]");
    demo.wait_lines(20);
    assert_eq!(
        demo.sub.count("[PRIMARY]"),
        primary_lines,
        "the fenced broker forwards nothing"
    );

    let report = demo.finish(stop_ms);
    assert_clean(&report);
}

/// Both brokers killed at once mid-stream and restarted from their logs on disk: every message
/// either ACKed is delivered, once, in order. The compute step is slower than the publisher,
/// so dozens of ACKed messages wait in the logs when the brokers die.
fn both_killed_and_restarted(test: &str, fsync: &str) {
    let mut demo = Demo::start(test, Some(fsync));
    demo.wait_lines(30);
    let backlog = demo.sub.got.len() + 20;
    demo.acks
        .wait("20 more ACKs than deliveries", |l| l.len() >= backlog);
    let kill_ms = demo.kill_and_restart_both();
    demo.wait_lines(40);
    let report = demo.finish(kill_ms);
    assert_exactly_once_in_order(&report);
}

#[test]
fn sigkill_of_both_brokers_loses_nothing_acked_with_fsync_always() {
    both_killed_and_restarted("both-always", "always");
}

/// `--fsync never` leaves the lines to the OS: a process crash (not a power cut) loses none.
#[test]
fn sigkill_of_both_brokers_loses_nothing_acked_with_fsync_never() {
    both_killed_and_restarted("both-never", "never");
}
