//! The log on disk (`--data-dir`): every change of the message log ([`super::message_log`])
//! as a line in `DIR/messages.log`, read back when the broker starts (`recover`), so a pair
//! that loses both brokers at once loses nothing it ACKed.
//!
//! ```text
//!  [conn-N] admit ─┐ append a line (under the role lock,      [journal] takes every line
//!  [backup] hold  ─┼─▶ so the file keeps the log's order) ─▶   waiting: one write(2), then
//!  [worker] done  ─┘                                           fsync as --fsync says; marks
//!                                                              what is on disk, answers ACKs
//! ```
//!
//! The journal thread writes whatever piled up while it was busy in one write, and with
//! `--fsync always` syncs it in one fsync: a group commit, so one sync covers every publish
//! that waits, as a pipelined publisher's many do. An ACK waits until its message's line is
//! written (`never`, `batch`) or synced (`always`); `Node::await_safe_until` asks [`Journal::covers`].
//!
//! The file is rewritten from what the log holds once it has grown past twice that plus
//! [`SLACK`] (in `Journal::append`, where the log changes): its size stays within
//! three times what is held, plus the slack.

mod record;
mod recover;

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use log::{info, warn};
use parking_lot::{Condvar, Mutex};

use crate::config::{BrokerConfig, Fsync};
use crate::error::{Error, Result};
use crate::protocol::Epoch;

pub use record::Record;
pub use recover::Restored;

/// With `--fsync batch`, the longest a written line waits for its sync.
pub const BATCH_INTERVAL: Duration = Duration::from_millis(100);

/// How far the file may grow past twice what the log holds before it is rewritten.
pub const SLACK: usize = 4 * 1024 * 1024;

/// How often a write that failed (a full disk) is tried again.
const RETRY: Duration = Duration::from_millis(100);

/// The log's file, its name in the data directory.
const FILE: &str = "messages.log";

/// What waits to be written, and what is on disk.
#[derive(Debug, Default)]
struct Book {
    /// Lines appended and not yet taken by a writer.
    lines: Vec<u8>,
    /// A rewrite of the whole file, asked for before `lines` were appended.
    snapshot: Option<Vec<u8>>,
    /// The highest log index whose HOLD line was appended.
    appended: u64,
    /// The highest log index whose HOLD line is written, and synced.
    written: u64,
    synced: u64,
    /// When the file was last synced.
    last_sync: Option<Instant>,
    /// The epoch of the latest EPOCH line, for a rewrite.
    epoch: Epoch,
    /// Bytes appended since the file was last rewritten.
    since_rewrite: usize,
    /// Why the last write failed, until one succeeds; after a failed fsync, for good.
    failure: Option<String>,
    broken: bool,
    stopping: bool,
}

/// Lines taken from the book, not yet (all) written.
#[derive(Debug, Default)]
struct Batch {
    snapshot: Option<Vec<u8>>,
    lines: Vec<u8>,
    index: u64,
}

/// The file, held by whoever writes it: the journal thread, or a takeover that syncs its epoch.
#[derive(Debug)]
struct Disk {
    file: File,
    dir: PathBuf,
    unwritten: Batch,
}

/// The log on disk of one broker.
#[derive(Debug)]
pub struct Journal {
    fsync: Fsync,
    header: Record,
    slack: usize,
    book: Mutex<Book>,
    work: Condvar,
    disk: Mutex<Disk>,
    /// Held while the broker runs, so no second broker uses the directory.
    _lock: File,
}

impl Journal {
    /// Opens the log in `dir` (creating it), reads back what it holds and rewrites it from
    /// that. A fresh log gets the node id `fresh_node`.
    pub fn open(dir: &Path, config: &BrokerConfig, fresh_node: u32) -> Result<(Journal, Restored)> {
        let failed =
            |what: &str, e: io::Error| Error::DataDir(format!("{what} {}: {e}", dir.display()));
        fs::create_dir_all(dir).map_err(|e| failed("cannot create", e))?;
        let lock =
            File::create(dir.join("lock")).map_err(|e| failed("cannot open the lock in", e))?;
        lock.try_lock().map_err(|_| {
            Error::DataDir(format!("{} is in use by another broker", dir.display()))
        })?;
        let path = dir.join(FILE);
        let read = recover::read(&path, config)?;
        let node = read.as_ref().map_or(fresh_node, |r| r.node);
        let header = Record::Header {
            version: record::VERSION,
            pair: config.pair.to_string(),
            node,
        };
        let mut whole = Vec::new();
        header.encode(&mut whole);
        let read_back = read.is_some();
        let restored = read.unwrap_or_else(|| Restored::fresh(node, config));
        restored.log.write_snapshot(restored.epoch, &mut whole);
        // What was read back is on disk already: every index in it counts as synced.
        let on_disk = restored.log.next_index().saturating_sub(1);
        let mut book = Book {
            epoch: restored.epoch,
            appended: on_disk,
            written: on_disk,
            synced: on_disk,
            ..Book::default()
        };
        // A torn first line, if that is all there was, is written over.
        let torn = fs::metadata(&path).is_ok_and(|m| m.is_file() && m.len() > 0);
        let file = if read_back || torn {
            rewrite(dir, &whole).map_err(|e| failed("cannot rewrite the log in", e))?
        } else {
            // A fresh log is appended to the file as it is, its header written by the journal
            // thread: a disk full from the start shows as refused publishes.
            book.lines = whole;
            open_append(&path).map_err(|e| failed("cannot open the log in", e))?
        };
        let journal = Journal {
            fsync: config.fsync,
            header,
            slack: SLACK,
            book: Mutex::new(book),
            work: Condvar::new(),
            disk: Mutex::new(Disk {
                file,
                dir: dir.to_path_buf(),
                unwritten: Batch::default(),
            }),
            _lock: lock,
        };
        Ok((journal, restored))
    }

    /// Appends `record`'s line. Called under the role lock, so the lines keep the log's order.
    /// Once the file has grown past twice the `held` bytes plus the slack, what waits to be
    /// written is replaced by a rewrite of the whole file: the header, then what `snapshot`
    /// writes for the epoch (`Log::write_snapshot`).
    pub fn append(&self, record: &Record, held: usize, snapshot: impl FnOnce(Epoch, &mut Vec<u8>)) {
        let mut book = self.book.lock();
        let before = book.lines.len();
        record.encode(&mut book.lines);
        book.since_rewrite += book.lines.len() - before;
        match record {
            Record::Hold { index, .. } => book.appended = book.appended.max(*index),
            Record::Epoch { epoch, .. } => book.epoch = *epoch,
            _ => {}
        }
        if book.since_rewrite > held.saturating_mul(2).saturating_add(self.slack) {
            let mut whole = Vec::new();
            self.header.encode(&mut whole);
            snapshot(book.epoch, &mut whole);
            // The rewrite holds what the lines waiting said: they need not be written.
            book.lines.clear();
            book.since_rewrite = 0;
            book.snapshot = Some(whole);
        }
        self.work.notify_one();
    }

    /// The highest log index an ACK may count as on disk: written, or with `--fsync always`
    /// synced.
    pub fn durable(&self) -> u64 {
        let book = self.book.lock();
        match self.fsync {
            Fsync::Always => book.synced,
            Fsync::Batch | Fsync::Never => book.written,
        }
    }

    /// Whether the message at `index` is on disk as `--fsync` asks; `Err` says why it cannot
    /// be written.
    pub fn covers(&self, index: u64) -> std::result::Result<bool, String> {
        let book = self.book.lock();
        let durable = match self.fsync {
            Fsync::Always => book.synced,
            Fsync::Batch | Fsync::Never => book.written,
        };
        match &book.failure {
            Some(why) if durable < index => Err(why.clone()),
            _ => Ok(durable >= index),
        }
    }

    /// Why the log cannot be written now, if it cannot.
    pub fn failure(&self) -> Option<String> {
        self.book.lock().failure.clone()
    }

    /// Writes and syncs everything appended, now, on the caller's thread (a takeover, before
    /// it acts in its new epoch: a broker that restarts must never claim it again).
    pub fn sync_now(&self) {
        let mut disk = self.disk.lock();
        self.write_out(&mut disk, true);
    }

    /// Ends the journal thread (what it had not written is lost, as in a crash).
    pub fn stop(&self) {
        self.book.lock().stopping = true;
        self.work.notify_all();
    }

    /// The journal thread: writes what is appended as it comes, syncs it as `--fsync` says,
    /// and tells `on_durable` the new [`Journal::durable`]; ends when the broker stops.
    ///
    /// With `always`, only while `leading` says we are the primary: a backup's lines wait for
    /// no ACK (the primary's log holds every message it ACKed, synced), so it leaves them to
    /// the OS and syncs them when it takes over (`Journal::sync_now`). On one host the two
    /// brokers' syncs would otherwise queue for the same disk.
    pub fn run(&self, leading: impl Fn() -> bool, on_durable: impl Fn(u64)) {
        while self.wait_for_work() {
            let sync = match self.fsync {
                Fsync::Always => leading(),
                Fsync::Batch => {
                    let last = self.book.lock().last_sync;
                    last.is_none_or(|t| t.elapsed() >= BATCH_INTERVAL)
                }
                Fsync::Never => false,
            };
            self.write_out(&mut self.disk.lock(), sync);
            on_durable(self.durable());
        }
    }

    /// Waits until there is something to write, a batch sync is due or a failed write is
    /// to be tried again; `false` once the broker stops.
    fn wait_for_work(&self) -> bool {
        let mut book = self.book.lock();
        loop {
            if book.stopping {
                return false;
            }
            if !book.lines.is_empty() || book.snapshot.is_some() {
                return true;
            }
            let now = Instant::now();
            let due = match (&book.failure, self.fsync) {
                (Some(_), _) if !book.broken => Some(now + RETRY),
                (_, Fsync::Batch) if book.synced < book.written => {
                    book.last_sync.map(|t| t + BATCH_INTERVAL)
                }
                _ => None,
            };
            match due {
                Some(at) if at <= now || self.work.wait_until(&mut book, at).timed_out() => {
                    return true;
                }
                Some(_) => {}
                None => self.work.wait(&mut book),
            }
        }
    }

    /// Writes what waits (and what an earlier failed write left), then syncs if `sync`;
    /// records what is on disk now, or why it is not.
    fn write_out(&self, disk: &mut Disk, sync: bool) {
        {
            let mut book = self.book.lock();
            if book.broken {
                return;
            }
            let lines = std::mem::take(&mut book.lines);
            let unwritten = &mut disk.unwritten;
            if let Some(snapshot) = book.snapshot.take() {
                // The rewrite covers every line before it, written or not.
                *unwritten = Batch::default();
                unwritten.snapshot = Some(snapshot);
            }
            unwritten.lines.extend_from_slice(&lines);
            unwritten.index = book.appended;
        }
        let written = write_batch(disk);
        let synced = written
            .as_ref()
            .ok()
            .filter(|_| sync)
            .map(|_| disk.file.sync_data());
        let mut book = self.book.lock();
        match (written, synced) {
            (Err(e), _) => {
                let why = format!("cannot write the log in {}: {e}", disk.dir.display());
                if book.failure.is_none() {
                    warn!("{why}; refusing publishes until it can");
                }
                book.failure = Some(why);
            }
            (Ok(()), Some(Err(e))) => {
                // After a failed fsync the kernel may have dropped the lines it could not
                // write: nothing written since can be trusted to be on disk.
                let why = format!(
                    "cannot sync the log in {}: {e}; restart the broker",
                    disk.dir.display()
                );
                warn!("{why}");
                book.failure = Some(why);
                book.broken = true;
            }
            (Ok(()), synced) => {
                if book.failure.take().is_some() {
                    info!("the log in {} is written again", disk.dir.display());
                }
                book.written = disk.unwritten.index;
                if synced.is_some() {
                    book.synced = book.written;
                    book.last_sync = Some(Instant::now());
                }
            }
        }
    }
}

/// Writes the batch: a rewrite first, then its lines, as far as the disk takes them; what it
/// did not take stays in the batch for the next try.
fn write_batch(disk: &mut Disk) -> io::Result<()> {
    if let Some(snapshot) = &disk.unwritten.snapshot {
        disk.file = rewrite(&disk.dir, snapshot)?;
        disk.unwritten.snapshot = None;
    }
    let lines = &mut disk.unwritten.lines;
    while !lines.is_empty() {
        match disk.file.write(lines) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => drop(lines.drain(..n)),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Replaces the log in `dir` by `whole`: written beside it, synced, renamed over it, the
/// directory synced; returns the new file, open to append.
fn rewrite(dir: &Path, whole: &[u8]) -> io::Result<File> {
    let (path, tmp) = (dir.join(FILE), dir.join(format!("{FILE}.tmp")));
    let mut file = File::create(&tmp)?;
    file.write_all(whole)?;
    file.sync_all()?;
    fs::rename(&tmp, &path)?;
    File::open(dir)?.sync_all()?;
    open_append(&path)
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::thread;

    use super::*;
    use crate::broker::message_log::Log;
    use crate::protocol::{Message, MsgId};

    fn message(seq: u64) -> Arc<Message> {
        let id = MsgId { publisher: 9, seq };
        let (topic, payload) = ("t".into(), "x".repeat(100));
        Arc::new(Message { id, topic, payload })
    }

    type Running = (PathBuf, Arc<Journal>, Log, thread::JoinHandle<()>);

    /// A journal syncing as `fsync` says in a fresh folder with `slack`, its log, its thread.
    fn journal(name: &str, slack: usize, fsync: Fsync) -> Running {
        let pid = std::process::id();
        let dir = std::env::temp_dir().join(format!("edgebroker-journal-{name}-{pid}"));
        let _ = fs::remove_dir_all(&dir);
        let config = BrokerConfig {
            fsync,
            ..BrokerConfig::fast()
        };
        let (mut journal, restored) = Journal::open(&dir, &config, 42).unwrap();
        journal.slack = slack;
        let journal = Arc::new(journal);
        let mut log = restored.log;
        log.attach(Arc::clone(&journal));
        let writer = Arc::clone(&journal);
        let thread = thread::spawn(move || writer.run(|| true, |_| {}));
        (dir, journal, log, thread)
    }

    /// Waits until `done` holds, failing after 10 s.
    fn wait_until(what: &str, done: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            thread::sleep(Duration::from_millis(1));
        }
    }

    /// Waits until `index` is on disk.
    fn wait_durable(journal: &Journal, index: u64) {
        wait_until(&format!("{index} on disk"), || journal.durable() >= index);
    }

    #[test]
    fn the_file_stays_within_three_times_what_is_held_plus_the_slack() {
        let slack = 4096;
        let (dir, journal, mut log, thread) = journal("compact", slack, Fsync::Always);
        // Ten messages held at any time, each its size plus a line's bytes, one publisher.
        let held = 10 * (101 + 64) + 64;
        let mut largest = 0;
        for index in 1..=3000 {
            log.insert(index, message(index));
            if index > 10 {
                log.remove(index - 10);
            }
            if index % 50 == 0 {
                wait_durable(&journal, index);
                largest = largest.max(fs::metadata(dir.join(FILE)).unwrap().len() as usize);
            }
        }
        assert!(
            largest <= 3 * held + slack,
            "{largest} bytes for {held} held"
        );
        journal.stop();
        thread.join().unwrap();
        drop((log, journal));
        let (_, restored) = Journal::open(&dir, &BrokerConfig::fast(), 7).unwrap();
        assert_eq!(restored.node, 42, "the node id is kept");
        let pending: Vec<u64> = restored.log.pending().map(|(i, _)| i).collect();
        assert_eq!(pending, (2991..=3000).collect::<Vec<_>>());
    }

    #[test]
    fn a_full_disk_fails_the_writes_until_it_has_room_and_then_nothing_is_lost() {
        let (dir, journal, mut log, thread) = journal("full", SLACK, Fsync::Always);
        wait_durable(&journal, 0);
        let full = OpenOptions::new().append(true).open("/dev/full").unwrap();
        let real = std::mem::replace(&mut journal.disk.lock().file, full);
        log.insert(1, message(1));
        log.insert(2, message(2));
        wait_until("the full disk noticed", || journal.failure().is_some());
        let why = journal.covers(2).unwrap_err();
        assert!(why.contains("No space left on device"), "{why}");
        // Room again: the next try writes what the failed one left, whole.
        journal.disk.lock().file = real;
        wait_durable(&journal, 2);
        assert_eq!(journal.failure(), None);
        journal.stop();
        thread.join().unwrap();
        drop((log, journal));
        let (_, restored) = Journal::open(&dir, &BrokerConfig::fast(), 7).unwrap();
        assert_eq!(restored.log.len(), 2);
    }

    #[test]
    fn with_fsync_batch_a_written_line_is_synced_within_the_interval_though_nothing_follows() {
        let (_dir, journal, mut log, thread) = journal("batch", SLACK, Fsync::Batch);
        // The header is synced at once; a line right after it waits for the timer.
        wait_until("the header synced", || {
            journal.book.lock().last_sync.is_some()
        });
        log.insert(1, message(1));
        wait_durable(&journal, 1);
        wait_until("the line synced", || journal.book.lock().synced >= 1);
        journal.stop();
        thread.join().unwrap();
    }

    #[test]
    fn a_sync_now_puts_every_line_appended_on_disk_at_once() {
        let (dir, journal, log, thread) = journal("sync", SLACK, Fsync::Never);
        journal.stop();
        thread.join().unwrap();
        let epoch = Epoch { term: 5, node: 42 };
        log.begin_epoch(epoch);
        journal.sync_now();
        let text = fs::read_to_string(dir.join(FILE)).unwrap();
        assert!(text.ends_with(&format!("EPOCH|{epoch}|1\n")), "{text}");
        assert_eq!(journal.covers(0), Ok(true));
    }
}
