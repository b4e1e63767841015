//! Load-testing a broker in the spirit of `redis-benchmark` and `nats bench`: the engine of the
//! `bench` program.
//!
//! Publishers each send their share of the messages on their own connection with the
//! idempotent `PUB` verb. With `--window 1` (the default) each waits for its ACK before the next
//! publish, so the ACK latency includes the synchronous replication to the backup; with
//! `--window N` up to N messages wait for their ACKs at once (pipelining), the ACKs matched in
//! order as the library's [`edgebroker::Publisher`] matches them (the bench has no failover:
//! it measures the primary). Subscribers (`SUB`, on the
//! primary only: the measured path is the primary's fan-out) count what they receive per
//! message id, which finds duplicates and, at the end, losses.
//!
//! Every payload starts with `<publisher-idx>:<seq>:<send-ns>:` (nanoseconds since the bench
//! started, on one `Instant` shared by every thread of this process) and is padded with `x`,
//! so a subscriber measures publish→delivery latency on receipt without shared state.
//!
//! This module holds the [`Options`] and [`run`], which sets the run up, waits for it and
//! drains the deliveries; three private modules do the rest: `conn` (one line connection to
//! the broker), `load` (the publisher and subscriber threads) and `report` (the [`Report`]:
//! its numbers, the text table and the JSON line).

mod conn;
mod load;
mod report;

use std::collections::HashMap;
use std::io;
use std::net::Shutdown;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::RecvTimeoutError;
use edgebroker::auth::Secret;
use edgebroker::cli::{self, Args};
use edgebroker::error::{Error, Result};
use edgebroker::protocol::{Reply, Request};
use log::debug;

use conn::Conn;
use load::{Shared, SubStats, plans, publish, subscribe};
pub use report::Report;

/// After the last ACK: give up waiting for deliveries when none arrived for this long since
/// the last one (the first may come late: a compute worker shared with other topics)...
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

/// What to measure: the `bench` command line ([`cli::BENCH`]), parsed and checked.
#[derive(Debug)]
pub struct Options {
    /// The primary's `host:port`: every connection of the run goes there.
    pub primary: String,
    /// The backup's `host:port`, only shown in the header.
    pub backup: Option<String>,
    /// Publisher connections, each with its share of the messages (at least 1).
    pub publishers: usize,
    /// Subscriber connections on the primary; 0 publishes only.
    pub subscribers: usize,
    /// Messages in all (at least one per publisher).
    pub messages: u64,
    /// Payload size in bytes, the timing header included.
    pub payload_bytes: usize,
    /// The topic published and subscribed to.
    pub topic: String,
    /// How many messages each publisher may have waiting for their ACKs at once.
    pub window: usize,
    /// Whether [`Report::print`] also prints the JSON line.
    pub json: bool,
    /// The brokers' client secret, if they require one.
    pub secret: Option<Secret>,
}

impl Options {
    /// Reads `bench`'s command line; a bad value is an [`Error::Usage`].
    pub fn from_args(args: &Args) -> Result<Options> {
        let primary = cli::check_host_port(args.positional(0).unwrap_or_default())?;
        let backup = args.positional(1).map(cli::check_host_port).transpose()?;
        let publishers: usize = args.value("--publishers")?.unwrap_or(1);
        let subscribers: usize = args.value("--subscribers")?.unwrap_or(1);
        let messages: u64 = args.value("--messages")?.unwrap_or(10_000);
        let payload_bytes: usize = args.value("--payload-bytes")?.unwrap_or(100);
        let topic: String = args.value("--topic")?.unwrap_or_else(|| "bench".into());
        let window = cli::window(args)?.unwrap_or(1);
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
            window,
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

/// Runs the benchmark against `o.primary`: prints the header lines, publishes and counts the
/// deliveries (with a progress line on stderr for long runs), and returns the results. Fails
/// when the address is not the active primary, a connection fails or a broker refuses a
/// message; the error says which, and a stderr line says how far the run got.
pub fn run(o: &Options) -> Result<Report> {
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
        "bench: {} messages of {} bytes to '{}', {} publisher(s) with a window of {}, {} \
         subscriber(s)",
        o.messages, o.payload_bytes, o.topic, o.publishers, o.window, o.subscribers
    ))?;

    let shared = Arc::new(Shared {
        base: Instant::now(),
        acked: AtomicU64::new(0),
        delivered: AtomicU64::new(0),
        failed: AtomicBool::new(false),
        stopping: AtomicBool::new(false),
    });
    let plans = plans(o);
    // Deliveries carry the id the broker derives from each publisher's key.
    let ids: Arc<HashMap<u64, (usize, u64)>> = Arc::new(
        plans
            .iter()
            .map(|p| (edgebroker::protocol::publisher_id(p.id), (p.idx, p.count)))
            .collect(),
    );

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
        conn.stream().set_read_timeout(None)?;
        sub_sockets.push(conn.stream().clone());
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
            let window = o.window;
            spawn(format!("pub-{}", plan.idx), move || {
                let _done = done; // dropped when this publisher ends
                publish(conn, &plan, &topic, bytes, window, &shared)
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

    // Wait for deliveries: until all arrived, none arrived for a while after the first one,
    // or the deadline.
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
            || (delivered > 0 && now - last_change >= DRAIN_QUIET)
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

#[cfg(test)]
mod tests {
    use super::*;

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
            window: 1,
            json: false,
            secret: None,
        };
        let shares: Vec<u64> = (0..3).map(|i| o.share(i)).collect();
        assert_eq!(shares, vec![4, 3, 3]);
        assert_eq!(header_room(1, 10_000), 1 + 5 + NS_DIGITS + 3);
    }
}
