//! The publisher and subscriber threads of a run: each publisher's plan and its loop (up to
//! `--window` messages waiting for their ACKs, matched in order), each subscriber's count of
//! what it received.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use edgebroker::error::{Error, Result};
use edgebroker::protocol::{MsgId, Reply};
use log::debug;

use super::Options;
use super::conn::Conn;

/// What all threads share: the time base of the send stamps and the counters the progress
/// line and the drain read.
pub(super) struct Shared {
    /// The time base of the send stamps in the payloads.
    pub(super) base: Instant,
    /// Messages ACKed so far, by every publisher.
    pub(super) acked: AtomicU64,
    /// Distinct messages delivered so far, to every subscriber.
    pub(super) delivered: AtomicU64,
    /// Set when any thread failed: publishers stop, the drain ends.
    pub(super) failed: AtomicBool,
    /// Set before the subscriber sockets are shut down, so their end is not an error.
    pub(super) stopping: AtomicBool,
}

impl Shared {
    fn now_ns(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

/// One publisher's plan.
pub(super) struct Plan {
    /// Its index, 0 up: in thread names, errors and the timing header.
    pub(super) idx: usize,
    /// Its random publisher id on the wire.
    pub(super) id: u64,
    /// How many messages it sends.
    pub(super) count: u64,
}

/// What one publisher measured.
pub(super) struct PubStats {
    /// Each message's publish->ACK time in nanoseconds.
    pub(super) ack_ns: Vec<u64>,
    /// When its last ACK came.
    pub(super) finished: Instant,
}

/// What one subscriber counted.
#[derive(Default)]
pub(super) struct SubStats {
    /// Each first delivery's publish->delivery time in nanoseconds.
    pub(super) deliver_ns: Vec<u64>,
    /// Distinct messages received.
    pub(super) delivered: u64,
    /// Messages received more than once (each extra copy counts).
    pub(super) duplicates: u64,
    /// Messages on the topic that were not ours (another client publishing to it).
    pub(super) foreign: u64,
}

/// Splits the messages over the publishers and gives each a distinct random id.
pub(super) fn plans(o: &Options) -> Vec<Plan> {
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

/// Publishes one publisher's share with up to `window` messages waiting for their ACKs at
/// once (1: each after the previous ACK), the ACKs matched in order.
pub(super) fn publish(
    mut conn: Conn,
    plan: &Plan,
    topic: &str,
    payload_bytes: usize,
    window: usize,
    shared: &Shared,
) -> Result<PubStats> {
    let result = publish_all(&mut conn, plan, topic, payload_bytes, window, shared);
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
    window: usize,
    shared: &Shared,
) -> Result<PubStats> {
    let mut ack_ns = Vec::with_capacity(usize::try_from(plan.count).unwrap_or(0));
    let mut line = Vec::with_capacity(payload_bytes + topic.len() + 64);
    // The messages sent and waiting for their ACKs, oldest first, with when each was sent.
    let mut in_flight: VecDeque<(u64, Instant)> = VecDeque::with_capacity(window);
    let mut next_seq = 1;
    loop {
        let more = next_seq <= plan.count && !shared.failed.load(Ordering::Relaxed);
        if more && in_flight.len() < window {
            let seq = next_seq;
            next_seq += 1;
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
            in_flight.push_back((seq, sent));
            continue;
        }
        // The window is full, or everything is sent: the next answer is the oldest's ACK.
        let Some((seq, sent)) = in_flight.pop_front() else {
            break;
        };
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
pub(super) fn subscribe(
    conn: Conn,
    ids: &HashMap<u64, (usize, u64)>,
    shared: &Shared,
) -> Result<SubStats> {
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
        let reply = match conn.recv() {
            Err(_) if shared.stopping.load(Ordering::SeqCst) => break,
            reply => reply?,
        };
        let now_ns = shared.now_ns();
        let message = match reply {
            Reply::Msg { message, .. } => message,
            other => {
                debug!("{}: ignoring {other:?}", conn.who);
                continue;
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn send_time_comes_back_out_of_the_payload() {
        assert_eq!(sent_ns("3:17:123456:xxxx"), Some(123456));
        assert_eq!(sent_ns("3:17:"), None);
        assert_eq!(sent_ns("garbage"), None);
    }
}
