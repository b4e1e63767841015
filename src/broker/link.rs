//! The primary's sending half of a live replication session: a crossbeam channel of encoded
//! lines, drained by one writer thread per session (the replicator's).
//!
//! ```text
//!   [conn-N] admit ─┐ push (under the role lock,    ┌─▶ [replicator] write_next:
//!   [worker] clear ─┼─▶ so lines keep log order) ─▶ │   everything waiting, one write;
//!   hand over ──────┘        channel                └── and a PROBE every interval ─▶ backup
//! ```
//!
//! Under load one write carries every line that piled up. (Letting whichever thread finds the
//! socket free write it — flat combining — was measured against this and bought nothing
//! beyond the noise: BENCHMARKS.md, "Speed tricks, measured".)

use std::collections::VecDeque;
use std::io::Write;
use std::net::Shutdown;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use log::debug;
use parking_lot::Mutex;

use crate::connection::Stream;
use crate::protocol::{Epoch, Message, MsgId, Request};

use super::safety::Safety;

/// A line for the backup.
#[derive(Debug)]
pub enum LinkCmd<'a> {
    /// REPLICATE one message.
    Replicate {
        /// Where it sits in the log.
        index: u64,
        /// The message.
        message: &'a Message,
    },
    /// CLEAR one processed message.
    Clear(u64),
    /// SEEN: a publisher's highest accepted sequence, sent during a sync.
    Seen(MsgId),
    /// HANDOVER: we are shutting down; the backup takes over now.
    Handover,
}

/// The heartbeats a session sent, for the mandate's count.
#[derive(Default)]
struct Heartbeats {
    last_sent: Option<Instant>,
    /// When each heartbeat not yet answered was sent, oldest first.
    unanswered: VecDeque<Instant>,
}

/// The sending half of one replication session in one epoch.
pub struct Link {
    /// The epoch the session replicates.
    pub epoch: Epoch,
    stream: Stream,
    /// The encoded lines on their way to the writer, each with the log index of a REPLICATE
    /// line (0 for any other).
    tx: Sender<(Vec<u8>, u64)>,
    rx: Receiver<(Vec<u8>, u64)>,
    broken: AtomicBool,
    heartbeats: Mutex<Heartbeats>,
}

impl Link {
    /// The sending half of a synced session on `stream`.
    pub fn new(stream: Stream, epoch: Epoch) -> Arc<Link> {
        let (tx, rx) = crossbeam_channel::unbounded();
        Arc::new(Link {
            epoch,
            stream,
            tx,
            rx,
            broken: AtomicBool::new(false),
            heartbeats: Mutex::new(Heartbeats::default()),
        })
    }

    /// Encodes one line and hands it to the writer. Called under the role lock, so the lines
    /// reach the channel in log order.
    pub fn push(&self, cmd: LinkCmd) {
        let epoch = self.epoch;
        let mut bytes = Vec::new();
        let mut index = 0;
        match cmd {
            LinkCmd::Replicate { index: i, message } => {
                message.encode_replicate(epoch, i, &mut bytes);
                index = i;
            }
            LinkCmd::Clear(index) => Request::Clear { epoch, index }.encode(&mut bytes),
            LinkCmd::Seen(id) => Request::Seen(id).encode(&mut bytes),
            LinkCmd::Handover => Request::Handover(epoch).encode(&mut bytes),
        }
        // The receiver lives in `self`: the send cannot fail.
        let _ = self.tx.send((bytes, index));
    }

    /// The writer's step: waits up to `idle` for a line, then writes it and every line behind
    /// it in one write; adds the `heartbeat` when none went out for `idle` (so a busy link
    /// carries one too: each answered heartbeat vouches for the primary, see
    /// [`super::mandate`]). Records the highest REPLICATE written in `safety`. A failed or
    /// timed-out write breaks the link: the socket is shut, the session's reader sees it end,
    /// and the replicator redials. Returns `false` once the link is broken.
    pub fn write_next(
        &self,
        idle: Duration,
        heartbeat: impl FnOnce() -> Request,
        safety: &Safety,
    ) -> bool {
        let mut bytes = Vec::new();
        let mut highest = 0;
        // The sender lives in `self`: the wait ends with a line or the timeout.
        if let Ok(line) = self.rx.recv_timeout(idle) {
            for (line, index) in std::iter::once(line).chain(self.rx.try_iter()) {
                bytes.extend_from_slice(&line);
                highest = highest.max(index);
            }
        }
        let now = Instant::now();
        let mut heartbeats = self.heartbeats.lock();
        if heartbeats.last_sent.is_none_or(|t| now - t >= idle) {
            heartbeat().encode(&mut bytes);
            // Queued before the write, so its answer always finds it.
            heartbeats.unanswered.push_back(now);
            heartbeats.last_sent = Some(now);
        }
        drop(heartbeats);
        // Closed, or an earlier write failed.
        if self.broken.load(Ordering::Acquire) {
            return false;
        }
        if let Err(e) = (&*self.stream).write_all(&bytes) {
            debug!("replication link write failed: {e}");
            self.close();
            return false;
        }
        if highest > 0 {
            safety.note_sent(highest);
        }
        true
    }

    /// The backup answered a heartbeat: when we sent it (the backup answers in order). `None`
    /// if no heartbeat waits for an answer.
    pub fn heartbeat_answered(&self) -> Option<Instant> {
        self.heartbeats.lock().unanswered.pop_front()
    }

    /// Ends the session: nothing more is written, and the socket is shut so its reader ends.
    pub fn close(&self) {
        self.broken.store(true, Ordering::Release);
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader};
    use std::net::{TcpListener, TcpStream};

    use super::*;
    use crate::protocol::MsgId;

    fn link() -> (Arc<Link>, BufReader<TcpStream>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        let epoch = Epoch { term: 1, node: 7 };
        (
            Link::new(Stream::new(server), epoch),
            BufReader::new(client),
        )
    }

    fn message(seq: u64) -> Message {
        Message {
            id: MsgId { publisher: 9, seq },
            topic: "t".into(),
            payload: seq.to_string(),
        }
    }

    fn read(reader: &mut BufReader<TcpStream>) -> String {
        let mut s = String::new();
        reader.read_line(&mut s).unwrap();
        s
    }

    const IDLE: Duration = Duration::from_millis(10);

    #[test]
    fn lines_pushed_go_out_in_order_in_one_write_and_count_as_sent() {
        let (link, mut reader) = link();
        let safety = Safety::new(false);
        for seq in 1..=2 {
            link.push(LinkCmd::Replicate {
                index: seq,
                message: &message(seq),
            });
        }
        link.push(LinkCmd::Clear(1));
        assert!(link.write_next(IDLE, || Request::Ping, &safety));
        assert_eq!(read(&mut reader), "REPLICATE|1.7|1|9|1|t|1\n");
        assert_eq!(read(&mut reader), "REPLICATE|1.7|2|9|2|t|2\n");
        assert_eq!(read(&mut reader), "CLEAR|1.7|1\n");
        assert!(safety.unconfirmed_since().is_some(), "index 2 was sent");
    }

    #[test]
    fn an_idle_link_carries_the_heartbeat() {
        let (link, mut reader) = link();
        assert!(link.write_next(IDLE, || Request::Ping, &Safety::new(false)));
        assert_eq!(read(&mut reader), "PING\n");
    }

    #[test]
    fn a_busy_link_carries_the_heartbeat_too_and_remembers_when_it_went() {
        let (link, mut reader) = link();
        let safety = Safety::new(false);
        let before = Instant::now();
        assert!(link.write_next(IDLE, || Request::Ping, &safety));
        assert_eq!(read(&mut reader), "PING\n");
        for seq in 1..=3 {
            std::thread::sleep(IDLE);
            link.push(LinkCmd::Clear(seq));
            assert!(link.write_next(IDLE, || Request::Ping, &safety));
            assert_eq!(read(&mut reader), format!("CLEAR|1.7|{seq}\n"));
            assert_eq!(
                read(&mut reader),
                "PING\n",
                "a heartbeat interval has passed"
            );
        }
        let sent: Vec<Instant> = std::iter::from_fn(|| link.heartbeat_answered()).collect();
        assert_eq!(sent.len(), 4);
        assert!(sent[0] >= before && sent.is_sorted());
    }

    #[test]
    fn a_failed_write_breaks_the_link() {
        let (link, reader) = link();
        drop(reader);
        let safety = Safety::new(false);
        // The peer is gone: a write fails within a few attempts (the first may still land).
        for seq in 1..=100 {
            link.push(LinkCmd::Replicate {
                index: seq,
                message: &message(seq),
            });
            if !link.write_next(IDLE, || Request::Ping, &safety) {
                assert!(link.broken.load(Ordering::Acquire));
                return;
            }
        }
        panic!("writes to a closed peer never failed");
    }
}
