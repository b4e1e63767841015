//! `bench <primary-host:port> [<backup-host:port>] [flags]`: load-tests a broker in the spirit
//! of `redis-benchmark` and `nats bench`.
//!
//! Publishers each send their share of the messages on their own connection with the
//! idempotent `PUB` verb and wait for each ACK before the next publish (no pipelining), so the
//! ACK latency includes the synchronous replication to the backup. Subscribers (`SUB`, on the
//! primary only: the measured path is the primary's fan-out) count what they receive per
//! message id, which finds duplicates and, at the end, losses.
//!
//! Every payload starts with `<publisher-idx>:<seq>:<send-ns>:` (nanoseconds since the bench
//! started, on one `Instant` shared by every thread of this process) and is padded with `x`,
//! so a subscriber measures publish→delivery latency on receipt without shared state.
//!
//! The program lives in one file because other files were out of bounds when it was written;
//! the [`Command`] below belongs in `src/cli.rs` next to the other programs', and the engine
//! (everything but `main`) could move to a `bench` library module.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::io::{self, Write};
use std::net::Shutdown;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::RecvTimeoutError;
use edgebroker::auth::{self, Secret};
use edgebroker::cli::{self, Args, Command, Flag};
use edgebroker::connection::{LineReader, Stream, dial, is_timeout};
use edgebroker::protocol::{AuthKind, MsgId, Reply, Request};
use edgebroker::{Error, Result};
use log::debug;

/// The `bench` program's command line (could move to `edgebroker::cli` as `cli::BENCH`).
const BENCH: Command = Command {
    name: "bench",
    usage: "\
usage: bench <primary-host:port> [<backup-host:port>] [flags]

Measures the broker: publishers send their share of the messages, each waiting for its ACK
before the next publish; subscribers on the primary count what they receive. Reports
publish->ACK and publish->delivery latency, throughput, and delivered/lost/duplicate counts.
The backup address is only shown; the primary's STATUS says whether replication is on.

flags:
  --publishers N      publisher connections, each with its share of the messages [1]
  --subscribers N     subscriber connections on the primary (0: publish only) [1]
  --messages N        messages in all [10000]
  --payload-bytes N   payload size; it starts with a timing header of ~20-40 bytes [100]
  --topic T           topic to publish and subscribe to [bench]
  --json              also print the results as one JSON object, the last stdout line
  --secret S          the brokers' client secret [$BROKER_CLIENT_SECRET]
  -h, --help          print this help

A progress line goes to stderr once a second for runs longer than 2 s. Exit status: 0 done,
1 a connection failed or a broker refused a message, 2 bad arguments.",
    required: 1,
    max_positionals: 2,
    flags: &[
        Flag::value("--publishers"),
        Flag::value("--subscribers"),
        Flag::value("--messages"),
        Flag::value("--payload-bytes"),
        Flag::value("--topic"),
        Flag::switch("--json"),
        Flag::value("--secret"),
    ],
};

/// How long dialling a broker may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long an ACK, PONG or STATUS answer may take before the run fails.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// After the last ACK: give up waiting for deliveries when none arrived for this long...
const DRAIN_QUIET: Duration = Duration::from_secs(1);
/// ...or after this long in all.
const DRAIN_MAX: Duration = Duration::from_secs(10);
/// Runs shorter than this print no progress lines.
const PROGRESS_AFTER: Duration = Duration::from_secs(2);
/// The broker's default line limit; a PUB line must fit in it.
const MAX_LINE: usize = 64 * 1024;
/// Digits reserved for the send time in the timing header: 13 digits of nanoseconds cover
/// 2.7 hours; a longer run only makes its payloads a few bytes longer than asked.
const NS_DIGITS: usize = 13;

fn main() -> ExitCode {
    cli::run(&BENCH, |args| {
        let options = Options::from_args(&args)?;
        let report = run(&options)?;
        report.print(&options)
    })
}

/// The parsed command line.
#[derive(Debug)]
struct Options {
    primary: String,
    backup: Option<String>,
    publishers: usize,
    subscribers: usize,
    messages: u64,
    payload_bytes: usize,
    topic: String,
    json: bool,
    secret: Option<Secret>,
}

impl Options {
    fn from_args(args: &Args) -> Result<Options> {
        let primary = cli::check_host_port(args.positional(0).unwrap_or_default())?;
        let backup = args.positional(1).map(cli::check_host_port).transpose()?;
        let publishers: usize = args.value("--publishers")?.unwrap_or(1);
        let subscribers: usize = args.value("--subscribers")?.unwrap_or(1);
        let messages: u64 = args.value("--messages")?.unwrap_or(10_000);
        let payload_bytes: usize = args.value("--payload-bytes")?.unwrap_or(100);
        let topic: String = args.value("--topic")?.unwrap_or_else(|| "bench".into());
        let usage = |msg: String| Err(Error::Usage(msg));
        if publishers == 0 {
            return usage("--publishers must be at least 1".into());
        }
        if messages < publishers as u64 {
            return usage("--messages must be at least --publishers".into());
        }
        if topic.is_empty() || topic.contains(['|', '\n', '\r']) {
            return usage(format!("bad topic '{topic}' (not empty, no '|')"));
        }
        let min = header_room(publishers, messages.div_ceil(publishers as u64));
        if payload_bytes < min {
            return usage(format!(
                "--payload-bytes must be at least {min} (room for the timing header)"
            ));
        }
        // "PUB|" + two u64 + three '|' + topic + payload.
        let most = MAX_LINE - (4 + 20 + 20 + 3 + topic.len());
        if payload_bytes > most {
            return usage(format!(
                "--payload-bytes must be at most {most} (a line is at most {MAX_LINE} bytes)"
            ));
        }
        Ok(Options {
            primary,
            backup,
            publishers,
            subscribers,
            messages,
            payload_bytes,
            topic,
            json: args.switch("--json"),
            secret: cli::secret(args, "--secret", cli::CLIENT_SECRET_ENV),
        })
    }

    /// How many messages publisher `idx` sends: an even split, the first ones one more.
    fn share(&self, idx: usize) -> u64 {
        let p = self.publishers as u64;
        self.messages / p + u64::from((idx as u64) < self.messages % p)
    }
}

/// The longest timing header `<idx>:<seq>:<ns>:` for this many publishers and this share.
fn header_room(publishers: usize, share: u64) -> usize {
    let digits = |n: u64| n.to_string().len();
    digits(publishers as u64 - 1) + digits(share) + NS_DIGITS + 3
}

// ---- connections ----

/// One line connection to a broker, authenticated if a secret is set.
struct Conn {
    stream: Stream,
    reader: LineReader<Stream>,
    /// Who this is, for error messages: `publisher 3 (127.0.0.1:7000)`.
    who: String,
}

impl Conn {
    fn open(addr: &str, secret: Option<&Secret>, who: String) -> Result<Conn> {
        let who = format!("{who} ({addr})");
        // One descriptor per connection: ten thousand subscribers must fit in the fd limit.
        let stream = Stream::new(
            dial(addr, CONNECT_TIMEOUT)
                .map_err(|e| context(e, &format!("{who}: cannot connect")))?,
        );
        stream.set_read_timeout(Some(ANSWER_TIMEOUT))?;
        let mut reader = LineReader::new(stream.clone(), MAX_LINE);
        if let Some(secret) = secret {
            auth::authenticate(stream.clone(), &mut reader, AuthKind::Client, secret)
                .map_err(|e| context(e, &format!("{who}: authentication failed")))?;
        }
        Ok(Conn {
            stream,
            reader,
            who,
        })
    }

    fn send(&mut self, line: &[u8]) -> Result<()> {
        self.stream
            .write_all(line)
            .map_err(|e| context(e, &format!("{}: write failed", self.who)))
    }

    fn request(&mut self, request: &Request) -> Result<()> {
        let mut line = Vec::new();
        request.encode(&mut line);
        self.send(&line)
    }

    /// The next reply; the end of the stream, a timeout or an `ERR` is an error.
    fn recv(&mut self) -> Result<Reply> {
        let line = match self.reader.read_line() {
            Ok(Some(line)) => line,
            Ok(None) => {
                return Err(context(
                    io::ErrorKind::UnexpectedEof.into(),
                    &format!("{}: the broker closed the connection", self.who),
                ));
            }
            Err(e) if is_timeout(&e) => {
                return Err(context(
                    e,
                    &format!("{}: no answer within {ANSWER_TIMEOUT:?}", self.who),
                ));
            }
            Err(e) => return Err(context(e, &format!("{}: read failed", self.who))),
        };
        match Reply::parse(line) {
            Ok(Reply::Err(reason)) => Err(Error::Refused(format!("{reason} ({})", self.who))),
            Ok(reply) => Ok(reply),
            Err(e) => Err(Error::Protocol(format!("{}: {e}", self.who))),
        }
    }

    /// Asks `STATUS` and returns its key=value pairs.
    fn status(&mut self) -> Result<HashMap<String, String>> {
        self.request(&Request::Status)?;
        match self.recv()? {
            Reply::Status(pairs) => Ok(pairs.into_iter().collect()),
            other => Err(Error::Protocol(format!(
                "{}: answered STATUS with {other:?}",
                self.who
            ))),
        }
    }
}

/// An I/O error with what we were doing in its text, so the one-line message says where.
fn context(e: io::Error, what: &str) -> Error {
    Error::Io(io::Error::new(e.kind(), format!("{what}: {e}")))
}

// ---- the run ----

/// What all threads share: the time base of the send stamps and the counters the progress
/// line and the drain read.
struct Shared {
    base: Instant,
    acked: AtomicU64,
    delivered: AtomicU64,
    /// Set when any thread failed: publishers stop, the drain ends.
    failed: AtomicBool,
    /// Set before the subscriber sockets are shut down, so their end is not an error.
    stopping: AtomicBool,
}

impl Shared {
    fn now_ns(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

/// One publisher's plan.
struct Plan {
    idx: usize,
    id: u64,
    count: u64,
}

/// What one publisher measured.
struct PubStats {
    ack_ns: Vec<u64>,
    finished: Instant,
}

/// What one subscriber counted.
#[derive(Default)]
struct SubStats {
    deliver_ns: Vec<u64>,
    delivered: u64,
    duplicates: u64,
    /// Messages on the topic that were not ours (another client publishing to it).
    foreign: u64,
}

/// The results.
struct Report {
    status: HashMap<String, String>,
    acked: u64,
    publish_time: Duration,
    ack_ns: Vec<u64>,
    deliver_ns: Vec<u64>,
    expected: u64,
    delivered: u64,
    duplicates: u64,
    foreign: u64,
    drain_time: Duration,
    /// The primary's `pending` after the drain: messages it still had to compute or deliver.
    pending_after: Option<u64>,
}

fn run(o: &Options) -> Result<Report> {
    let secret = o.secret.as_ref();
    let mut control = Conn::open(&o.primary, secret, "primary".into())?;
    let status = control.status()?;
    let field = |k: &str| status.get(k).map_or("?", String::as_str);
    if field("role") != "primary" {
        return Err(Error::Refused(format!(
            "{} is not the primary (role={}); give the active primary's address first",
            o.primary,
            field("role")
        )));
    }
    cli::print_line(format_args!(
        "bench: primary {} role={} epoch={} backup={}{}",
        o.primary,
        field("role"),
        field("epoch"),
        field("backup"),
        match &o.backup {
            Some(b) => format!(" (backup address {b}, not measured)"),
            None => String::new(),
        }
    ))?;
    cli::print_line(format_args!(
        "bench: {} messages of {} bytes to '{}', {} publisher(s), {} subscriber(s)",
        o.messages, o.payload_bytes, o.topic, o.publishers, o.subscribers
    ))?;

    let shared = Arc::new(Shared {
        base: Instant::now(),
        acked: AtomicU64::new(0),
        delivered: AtomicU64::new(0),
        failed: AtomicBool::new(false),
        stopping: AtomicBool::new(false),
    });
    let plans = plans(o);
    let ids: Arc<HashMap<u64, (usize, u64)>> =
        Arc::new(plans.iter().map(|p| (p.id, (p.idx, p.count))).collect());

    // Subscribe first and confirm each subscription with PING/PONG: the broker handles a
    // connection's lines in order, so the PONG means SUB is in place.
    let mut subscribers = Vec::new();
    let mut sub_sockets = Vec::new();
    for idx in 0..o.subscribers {
        let mut conn = Conn::open(&o.primary, secret, format!("subscriber {idx}"))?;
        conn.request(&Request::SubscribeIds {
            topic: o.topic.clone(),
        })?;
        conn.request(&Request::Ping)?;
        match conn.recv()? {
            Reply::Pong => {}
            other => {
                return Err(Error::Protocol(format!(
                    "{}: answered PING with {other:?}",
                    conn.who
                )));
            }
        }
        // Deliveries may pause for as long as the broker computes; the end of the run is
        // signalled by shutting the socket down, not by a timeout.
        conn.stream.set_read_timeout(None)?;
        sub_sockets.push(conn.stream.clone());
        subscribers.push((idx, conn));
    }
    let publishers = plans
        .iter()
        .map(|p| Conn::open(&o.primary, secret, format!("publisher {}", p.idx)))
        .collect::<Result<Vec<_>>>()?;
    debug!("{} subscriber(s) confirmed, publishing", subscribers.len());

    let sub_handles = subscribers
        .into_iter()
        .map(|(idx, conn)| {
            let (shared, ids) = (Arc::clone(&shared), Arc::clone(&ids));
            spawn(format!("sub-{idx}"), move || subscribe(conn, &ids, &shared))
        })
        .collect::<Result<Vec<_>>>()?;

    let started = Instant::now();
    let (done_tx, done_rx) = crossbeam_channel::bounded::<()>(0);
    let pub_handles = plans
        .into_iter()
        .zip(publishers)
        .map(|(plan, conn)| {
            let shared = Arc::clone(&shared);
            let (topic, bytes, done) = (o.topic.clone(), o.payload_bytes, done_tx.clone());
            spawn(format!("pub-{}", plan.idx), move || {
                let _done = done; // dropped when this publisher ends
                publish(conn, &plan, &topic, bytes, &shared)
            })
        })
        .collect::<Result<Vec<_>>>()?;
    drop(done_tx);

    // Every sender is dropped when the last publisher ends; until then, report progress.
    let mut progress = Progress::new(started, o.messages);
    loop {
        match done_rx.recv_deadline(progress.next) {
            Err(RecvTimeoutError::Disconnected) => break,
            Ok(()) | Err(RecvTimeoutError::Timeout) => {
                progress.tick(shared.acked.load(Ordering::Relaxed), "ACKed")
            }
        }
    }
    let mut ack_ns = Vec::new();
    let mut finished = started;
    let mut first_error = None;
    for handle in pub_handles {
        match join(handle) {
            Ok(stats) => {
                ack_ns.extend(stats.ack_ns);
                finished = finished.max(stats.finished);
            }
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    let publish_time = finished - started;
    let acked = shared.acked.load(Ordering::Relaxed);

    // Wait for deliveries: until all arrived, none arrived for a while, or the deadline.
    let expected = acked * o.subscribers as u64;
    let drain_start = Instant::now();
    let mut progress = Progress::new(drain_start, expected);
    let (mut last, mut last_change) = (shared.delivered.load(Ordering::Relaxed), drain_start);
    while first_error.is_none() && !shared.failed.load(Ordering::Relaxed) {
        let now = Instant::now();
        let delivered = shared.delivered.load(Ordering::Relaxed);
        if delivered != last {
            (last, last_change) = (delivered, now);
        }
        if delivered >= expected
            || now - last_change >= DRAIN_QUIET
            || now - drain_start >= DRAIN_MAX
        {
            break;
        }
        if now >= progress.next {
            progress.tick(delivered, "delivered");
        }
        thread::sleep(Duration::from_millis(2));
    }
    let drain_time = drain_start.elapsed();
    shared.stopping.store(true, Ordering::SeqCst);
    for socket in &sub_sockets {
        let _ = socket.shutdown(Shutdown::Both);
    }
    let mut subs = SubStats::default();
    for handle in sub_handles {
        match join(handle) {
            Ok(s) => {
                subs.deliver_ns.extend(s.deliver_ns);
                subs.delivered += s.delivered;
                subs.duplicates += s.duplicates;
                subs.foreign += s.foreign;
            }
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    if let Some(e) = first_error {
        // The error line says what failed; this one says how far the run got.
        eprintln!(
            "bench: stopped after {acked} of {} messages ACKed in {:.3} s, {} of {expected} \
             delivered",
            o.messages,
            publish_time.as_secs_f64(),
            subs.delivered
        );
        return Err(e);
    }
    let pending_after = control
        .status()
        .ok()
        .and_then(|s| s.get("pending")?.parse().ok());

    ack_ns.sort_unstable();
    subs.deliver_ns.sort_unstable();
    Ok(Report {
        status,
        acked,
        publish_time,
        ack_ns,
        deliver_ns: subs.deliver_ns,
        expected,
        delivered: subs.delivered,
        duplicates: subs.duplicates,
        foreign: subs.foreign,
        drain_time,
        pending_after,
    })
}

/// Splits the messages over the publishers and gives each a distinct random id.
fn plans(o: &Options) -> Vec<Plan> {
    let mut used = HashSet::new();
    (0..o.publishers)
        .map(|idx| {
            let id = loop {
                let id = rand::random_range(1..=u64::MAX);
                if used.insert(id) {
                    break id;
                }
            };
            Plan {
                idx,
                id,
                count: o.share(idx),
            }
        })
        .collect()
}

fn spawn<T: Send + 'static>(
    name: String,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<JoinHandle<Result<T>>> {
    Ok(thread::Builder::new().name(name).spawn(f)?)
}

fn join<T>(handle: JoinHandle<Result<T>>) -> Result<T> {
    let name = handle.thread().name().unwrap_or("?").to_string();
    handle
        .join()
        .unwrap_or_else(|_| Err(Error::Io(io::Error::other(format!("{name} panicked")))))
}

/// Publishes one publisher's share, one message at a time, each after the previous ACK.
fn publish(
    mut conn: Conn,
    plan: &Plan,
    topic: &str,
    payload_bytes: usize,
    shared: &Shared,
) -> Result<PubStats> {
    let result = publish_all(&mut conn, plan, topic, payload_bytes, shared);
    if result.is_err() {
        shared.failed.store(true, Ordering::SeqCst);
    }
    result
}

fn publish_all(
    conn: &mut Conn,
    plan: &Plan,
    topic: &str,
    payload_bytes: usize,
    shared: &Shared,
) -> Result<PubStats> {
    let mut ack_ns = Vec::with_capacity(usize::try_from(plan.count).unwrap_or(0));
    let mut line = Vec::with_capacity(payload_bytes + topic.len() + 64);
    for seq in 1..=plan.count {
        if shared.failed.load(Ordering::Relaxed) {
            break;
        }
        let sent = Instant::now();
        let sent_ns = u64::try_from((sent - shared.base).as_nanos()).unwrap_or(u64::MAX);
        line.clear();
        // Writing into a Vec cannot fail.
        let _ = write!(line, "PUB|{}|{seq}|{topic}|", plan.id);
        let payload_start = line.len();
        let _ = write!(line, "{}:{seq}:{sent_ns}:", plan.idx);
        let padded = payload_start + payload_bytes;
        if line.len() < padded {
            line.resize(padded, b'x');
        }
        line.push(b'\n');
        conn.send(&line)?;
        let id = MsgId {
            publisher: plan.id,
            seq,
        };
        match conn.recv()? {
            Reply::AckId(acked) if acked == id => {}
            other => {
                return Err(Error::Protocol(format!(
                    "{}: answered {id} with {other:?}",
                    conn.who
                )));
            }
        }
        ack_ns.push(u64::try_from(sent.elapsed().as_nanos()).unwrap_or(u64::MAX));
        shared.acked.fetch_add(1, Ordering::Relaxed);
    }
    Ok(PubStats {
        ack_ns,
        finished: Instant::now(),
    })
}

/// Counts one subscriber's deliveries until its socket is shut down.
fn subscribe(conn: Conn, ids: &HashMap<u64, (usize, u64)>, shared: &Shared) -> Result<SubStats> {
    let result = subscribe_all(conn, ids, shared);
    if result.is_err() {
        shared.failed.store(true, Ordering::SeqCst);
    }
    result
}

fn subscribe_all(
    mut conn: Conn,
    ids: &HashMap<u64, (usize, u64)>,
    shared: &Shared,
) -> Result<SubStats> {
    let mut stats = SubStats::default();
    // Receipts per publisher per seq (index 0 unused); saturating, only 0/1/more matters.
    let mut publishers = Vec::new();
    for &(idx, count) in ids.values() {
        if publishers.len() <= idx {
            publishers.resize(idx + 1, Vec::new());
        }
        publishers[idx] = vec![0u8; usize::try_from(count).unwrap_or(0) + 1];
    }
    loop {
        let line = match conn.reader.read_line() {
            Ok(Some(line)) => line,
            Ok(None) if shared.stopping.load(Ordering::SeqCst) => break,
            Err(_) if shared.stopping.load(Ordering::SeqCst) => break,
            Ok(None) => {
                return Err(context(
                    io::ErrorKind::UnexpectedEof.into(),
                    &format!("{}: the broker closed the connection", conn.who),
                ));
            }
            Err(e) => return Err(context(e, &format!("{}: read failed", conn.who))),
        };
        let now_ns = shared.now_ns();
        let message = match Reply::parse(line) {
            Ok(Reply::Msg { message, .. }) => message,
            Ok(Reply::Err(reason)) => {
                return Err(Error::Refused(format!("{reason} ({})", conn.who)));
            }
            Ok(other) => {
                debug!("{}: ignoring {other:?}", conn.who);
                continue;
            }
            Err(e) => return Err(Error::Protocol(format!("{}: {e}", conn.who))),
        };
        let Some(&(idx, _)) = ids.get(&message.id.publisher) else {
            stats.foreign += 1;
            continue;
        };
        let Some(seen) = usize::try_from(message.id.seq)
            .ok()
            .and_then(|seq| publishers[idx].get_mut(seq))
            .filter(|_| message.id.seq > 0)
        else {
            stats.foreign += 1;
            continue;
        };
        *seen = seen.saturating_add(1);
        if *seen > 1 {
            stats.duplicates += 1;
            continue;
        }
        stats.delivered += 1;
        shared.delivered.fetch_add(1, Ordering::Relaxed);
        if let Some(sent_ns) = sent_ns(&message.payload) {
            stats.deliver_ns.push(now_ns.saturating_sub(sent_ns));
        }
    }
    Ok(stats)
}

/// The send time from a payload `<idx>:<seq>:<ns>:xxx`.
fn sent_ns(payload: &str) -> Option<u64> {
    payload.split(':').nth(2)?.parse().ok()
}

/// The stderr progress line, once a second after the first [`PROGRESS_AFTER`].
struct Progress {
    next: Instant,
    total: u64,
    last: (Instant, u64),
}

impl Progress {
    fn new(start: Instant, total: u64) -> Progress {
        Progress {
            next: start + PROGRESS_AFTER,
            total,
            last: (start, 0),
        }
    }

    fn tick(&mut self, done: u64, what: &str) {
        let now = Instant::now();
        let (then, before) = self.last;
        let rate = (done - before.min(done)) as f64 / (now - then).as_secs_f64().max(1e-9);
        eprintln!("bench: {done}/{} {what}, {rate:.0} msg/s", self.total);
        self.last = (now, done);
        self.next = now + Duration::from_secs(1);
    }
}

// ---- the report ----

/// The `p`-th percentile (nearest rank, exact) of sorted nanoseconds, in whole microseconds.
fn percentile_us(sorted: &[u64], p: usize) -> Option<u64> {
    let n = sorted.len();
    if n == 0 {
        return None;
    }
    let rank = (p * n).div_ceil(100);
    Some(sorted[rank.clamp(1, n) - 1] / 1_000)
}

impl Report {
    fn lost(&self) -> u64 {
        self.expected.saturating_sub(self.delivered)
    }

    fn throughput(&self) -> f64 {
        self.acked as f64 / self.publish_time.as_secs_f64().max(1e-9)
    }

    fn print(&self, o: &Options) -> Result<()> {
        // "p50 38 us  p90 93 us ..." in microseconds, or "none" without samples.
        let latency = |sorted: &[u64], ps: &[(&str, usize)]| {
            if sorted.is_empty() {
                return "none".to_string();
            }
            ps.iter()
                .filter_map(|&(name, p)| Some(format!("{name} {} us", percentile_us(sorted, p)?)))
                .collect::<Vec<_>>()
                .join("  ")
        };
        let (ack, del) = (&self.ack_ns, &self.deliver_ns);
        let mut out = String::new();
        let _ = writeln!(out, "====== PUB (wait for each ACK; backup={}) ======", {
            self.status.get("backup").map_or("?", String::as_str)
        });
        let rows = [
            ("messages", format!("{} ({} ACKed)", o.messages, self.acked)),
            ("publishers", o.publishers.to_string()),
            ("subscribers", o.subscribers.to_string()),
            ("payload", format!("{} bytes", o.payload_bytes)),
            (
                "duration",
                format!("{:.3} s", self.publish_time.as_secs_f64()),
            ),
            ("throughput", format!("{:.0} messages/s", self.throughput())),
            (
                "publish->ACK",
                latency(ack, &[("p50", 50), ("p90", 90), ("p99", 99), ("max", 100)]),
            ),
            (
                "publish->deliver",
                latency(del, &[("p50", 50), ("p99", 99), ("max", 100)]),
            ),
            (
                "delivered",
                format!(
                    "{} of {} expected (drained in {:.3} s)",
                    self.delivered,
                    self.expected,
                    self.drain_time.as_secs_f64()
                ),
            ),
            ("lost", self.lost().to_string()),
            ("duplicates", self.duplicates.to_string()),
        ];
        for (name, value) in rows {
            let _ = writeln!(out, "  {name:<17} {value}");
        }
        if self.foreign > 0 {
            let _ = writeln!(
                out,
                "  note: {} messages on '{}' were not this run's (another publisher?)",
                self.foreign, o.topic
            );
        }
        if self.lost() > 0 {
            match self.pending_after {
                Some(n) if n > 0 => {
                    let _ = writeln!(
                        out,
                        "  note: the primary still holds {n} unprocessed messages (compute step?); \
                         'lost' counts what did not arrive within the drain"
                    );
                }
                _ => {}
            }
        }
        if o.json {
            let num = |v: Option<u64>| v.map_or("null".to_string(), |v| v.to_string());
            let _ = writeln!(
                out,
                "{{\"messages\":{},\"acked\":{},\"publishers\":{},\"subscribers\":{},\
                 \"payload_bytes\":{},\"duration_s\":{:.6},\"throughput_msgs_per_s\":{:.1},\
                 \"ack_p50_us\":{},\"ack_p90_us\":{},\"ack_p99_us\":{},\"ack_max_us\":{},\
                 \"deliver_p50_us\":{},\"deliver_p99_us\":{},\"deliver_max_us\":{},\
                 \"expected\":{},\"delivered\":{},\"lost\":{},\"duplicates\":{},\
                 \"backup\":\"{}\"}}",
                o.messages,
                self.acked,
                o.publishers,
                o.subscribers,
                o.payload_bytes,
                self.publish_time.as_secs_f64(),
                self.throughput(),
                num(percentile_us(ack, 50)),
                num(percentile_us(ack, 90)),
                num(percentile_us(ack, 99)),
                num(percentile_us(ack, 100)),
                num(percentile_us(del, 50)),
                num(percentile_us(del, 99)),
                num(percentile_us(del, 100)),
                self.expected,
                self.delivered,
                self.lost(),
                self.duplicates,
                json_safe(self.status.get("backup").map_or("?", String::as_str)),
            );
        }
        let mut stdout = io::stdout().lock();
        stdout.write_all(out.as_bytes())?;
        stdout.flush()?;
        debug!("done: {} ACKed, {} delivered", self.acked, self.delivered);
        Ok(())
    }
}

/// A STATUS value made safe inside a JSON string (it is a plain word in practice).
fn json_safe(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let ns: Vec<u64> = (1..=100).map(|v| v * 1_000).collect();
        assert_eq!(percentile_us(&ns, 50), Some(50));
        assert_eq!(percentile_us(&ns, 99), Some(99));
        assert_eq!(percentile_us(&ns, 100), Some(100));
        assert_eq!(percentile_us(&[7_000], 50), Some(7));
        assert_eq!(percentile_us(&[], 50), None);
    }

    #[test]
    fn send_time_comes_back_out_of_the_payload() {
        assert_eq!(sent_ns("3:17:123456:xxxx"), Some(123456));
        assert_eq!(sent_ns("3:17:"), None);
        assert_eq!(sent_ns("garbage"), None);
    }

    #[test]
    fn shares_add_up() {
        let o = Options {
            primary: "a:1".into(),
            backup: None,
            publishers: 3,
            subscribers: 1,
            messages: 10,
            payload_bytes: 100,
            topic: "t".into(),
            json: false,
            secret: None,
        };
        let shares: Vec<u64> = (0..3).map(|i| o.share(i)).collect();
        assert_eq!(shares, vec![4, 3, 3]);
        assert_eq!(header_room(1, 10_000), 1 + 5 + NS_DIGITS + 3);
    }
}
