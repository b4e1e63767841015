//! The primary's sending half of a live replication session.
//!
//! Lines for the backup are appended under the role lock, so they go out in log order, and
//! written by whichever thread finds the socket free — "flat combining". A publish on an idle
//! link is written by its own connection thread, with no thread to wake; while one thread
//! writes, the others append and move on, and the writer takes everything that piled up in its
//! next write. No lock is held across the write except the one that says who writes.

use std::io::Write;
use std::net::Shutdown;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use log::debug;
use parking_lot::Mutex;

use crate::connection::Stream;
use crate::protocol::{Epoch, Message, MsgId, PeerState, Request};

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
    /// PROBE: the heartbeat of an idle link.
    Probe(PeerState),
}

/// Appended lines not yet written.
#[derive(Default)]
struct Pending {
    bytes: Vec<u8>,
    /// The highest index among the REPLICATE lines in `bytes` (0 if none).
    highest: u64,
}

/// What the writing thread holds.
struct Writer {
    /// The bytes being written (swapped with [`Pending::bytes`], so neither reallocates).
    buf: Vec<u8>,
    last_write: Instant,
}

/// The sending half of one replication session in one epoch.
pub struct Link {
    epoch: Epoch,
    stream: Stream,
    pending: Mutex<Pending>,
    writer: Mutex<Writer>,
    broken: AtomicBool,
}

impl Link {
    /// The sending half of a synced session on `stream`.
    pub fn new(stream: Stream, epoch: Epoch) -> Arc<Link> {
        Arc::new(Link {
            epoch,
            stream,
            pending: Mutex::new(Pending::default()),
            writer: Mutex::new(Writer {
                buf: Vec::new(),
                last_write: Instant::now(),
            }),
            broken: AtomicBool::new(false),
        })
    }

    /// Appends one line; [`Link::flush`] sends it. Cheap enough to call under the role lock.
    pub fn push(&self, cmd: LinkCmd) {
        let epoch = self.epoch;
        let mut p = self.pending.lock();
        match cmd {
            LinkCmd::Replicate { index, message } => {
                message.encode_replicate(epoch, index, &mut p.bytes);
                p.highest = p.highest.max(index);
            }
            LinkCmd::Clear(index) => Request::Clear { epoch, index }.encode(&mut p.bytes),
            LinkCmd::Seen(id) => Request::Seen(id).encode(&mut p.bytes),
            LinkCmd::Handover => Request::Handover { epoch }.encode(&mut p.bytes),
            LinkCmd::Probe(me) => Request::Probe(me).encode(&mut p.bytes),
        }
    }

    /// Writes what is pending unless another thread is writing, in which case that thread
    /// writes it. Records what went out in `safety`. A failed or timed-out write breaks the
    /// link: the socket is shut, the session's reader sees it end, and the replicator redials.
    pub fn flush(&self, safety: &Safety) {
        loop {
            let Some(mut writer) = self.writer.try_lock() else {
                return; // the writer looks at `pending` again before it lets go
            };
            loop {
                let highest = {
                    let mut p = self.pending.lock();
                    if p.bytes.is_empty() || self.broken.load(Ordering::Acquire) {
                        break;
                    }
                    std::mem::swap(&mut p.bytes, &mut writer.buf);
                    std::mem::take(&mut p.highest)
                };
                let written = (&*self.stream).write_all(&writer.buf);
                writer.buf.clear();
                writer.last_write = Instant::now();
                if let Err(e) = written {
                    debug!("replication link write failed: {e}");
                    self.close();
                    return;
                }
                if highest > 0 {
                    safety.note_sent(highest);
                }
            }
            drop(writer);
            // A line appended after our last look found the writer busy and left it to us.
            let p = self.pending.lock();
            if p.bytes.is_empty() || self.broken.load(Ordering::Acquire) {
                return;
            }
        }
    }

    /// When a write last went out, or `None` while one is going out.
    pub fn last_write(&self) -> Option<Instant> {
        self.writer.try_lock().map(|w| w.last_write)
    }

    /// Ends the session: nothing more is written, and the socket is shut so its reader ends.
    pub fn close(&self) {
        self.broken.store(true, Ordering::Release);
        let _ = self.stream.shutdown(Shutdown::Both);
    }

    /// Whether a write failed or the session was closed.
    pub fn is_broken(&self) -> bool {
        self.broken.load(Ordering::Acquire)
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

    #[test]
    fn lines_appended_while_another_thread_writes_go_out_with_its_next_write() {
        let (link, mut reader) = link();
        let safety = Safety::new(false);
        let busy = link.writer.lock(); // another thread is writing
        link.push(LinkCmd::Replicate {
            index: 1,
            message: &message(1),
        });
        link.flush(&safety); // finds the writer busy: leaves the line to it
        assert!(!link.pending.lock().bytes.is_empty());
        drop(busy);
        link.push(LinkCmd::Clear(1));
        link.flush(&safety);
        assert_eq!(read(&mut reader), "REPLICATE|1.7|1|9|1|t|1\n");
        assert_eq!(read(&mut reader), "CLEAR|1.7|1\n");
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
            link.flush(&safety);
            if link.is_broken() {
                return;
            }
        }
        panic!("writes to a closed peer never failed");
    }
}
