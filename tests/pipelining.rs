//! A pipelining publisher (a window of 16, at full speed) across a failover, with brokers
//! in-process on port 0 and the fast timings: every ACKed message reaches the subscriber once,
//! in order, whether the primary dies, freezes and is killed, or freezes and wakes up.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::Duration;

use common::*;
use edgebroker::client::Outcome;
use edgebroker::protocol::Role;
use edgebroker::{BrokerConfig, ComputeStep, Publisher, Subscriber};

/// The publisher's window in these tests.
const WINDOW: usize = 16;
/// How many ACKs to wait for before the fault, and again after the takeover.
const TRAFFIC: u64 = 300;

/// Publishes 1, 2, 3, … on `topic` with a window of [`WINDOW`] and no pause, from a thread
/// until told to stop; counts the ACKs as they come.
struct Pipeline {
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
    thread: thread::JoinHandle<Vec<Outcome>>,
}

impl Pipeline {
    fn start(pair: &Pair, topic: &'static str) -> Pipeline {
        let mut config = pair.publisher_config();
        config.window = WINDOW;
        let mut publisher = Publisher::new(config);
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(AtomicU64::new(0));
        let (flag, count) = (Arc::clone(&stop), Arc::clone(&acked));
        let thread = thread::spawn(move || {
            let mut outcomes = Vec::new();
            let mut seq = 0u64;
            while !flag.load(Ordering::Acquire) {
                seq += 1;
                publisher.submit(topic, &seq.to_string()).expect("submit");
                let settled = publisher.take_outcomes();
                let ok = settled.iter().filter(|o| o.result.is_ok()).count();
                count.fetch_add(ok as u64, Ordering::Release);
                outcomes.extend(settled);
            }
            publisher.flush();
            outcomes.extend(publisher.take_outcomes());
            outcomes
        });
        Pipeline {
            stop,
            acked,
            thread,
        }
    }

    fn acked(&self) -> u64 {
        self.acked.load(Ordering::Acquire)
    }

    /// Waits for `n` more ACKs than now.
    fn wait_acks(&self, what: &str, n: u64) {
        let before = self.acked();
        wait_until(what, || self.acked() >= before + n);
    }

    /// Stops publishing, waits for the last ACKs and returns every outcome.
    fn stop(self) -> Vec<Outcome> {
        self.stop.store(true, Ordering::Release);
        self.thread.join().expect("publisher thread")
    }
}

/// Checks that every message was ACKed, in order, and that the subscriber printed each one
/// exactly once, in publish order, nothing missing and nothing more.
fn assert_acked_and_delivered_once_in_order(sub: &mut Subscriber, outcomes: &[Outcome]) {
    let failed: Vec<String> = outcomes
        .iter()
        .filter_map(|o| o.result.as_ref().err().map(|e| format!("{}: {e}", o.seq)))
        .collect();
    assert!(failed.is_empty(), "messages not ACKed: {failed:?}");
    let acked: Vec<u64> = outcomes.iter().map(|o| o.seq).collect();
    let last = *acked.last().expect("something was ACKed");
    assert_eq!(acked, (1..=last).collect::<Vec<u64>>(), "ACKs in order");
    let mut got = Vec::new();
    while got.last() != Some(&last) {
        let d = sub
            .recv_timeout(DEADLINE)
            .unwrap_or_else(|| panic!("stuck after {:?} of {last}", got.last()));
        got.push(d.message.payload.parse::<u64>().unwrap());
    }
    let delivered: HashSet<u64> = got.iter().copied().collect();
    let missing: Vec<u64> = acked
        .iter()
        .copied()
        .filter(|s| !delivered.contains(s))
        .collect();
    assert!(
        missing.is_empty(),
        "ACKed messages never delivered: {missing:?}"
    );
    assert_eq!(delivered.len(), got.len(), "messages delivered twice");
    assert_eq!(got, acked, "each ACKed message once, in order");
}

/// A synced pair with a subscriber on both brokers and a pipelining publisher at full speed
/// that has had [`TRAFFIC`] ACKs; the primary runs with `primary`, the backup with the fast
/// timings. The compute step is off: a publisher at full speed would outrun any other and fill
/// the brokers' `max_pending`.
fn pair_under_load(primary: BrokerConfig) -> (Pair, Subscriber, Pipeline) {
    let pair = Pair::start_with(primary, fast());
    let sub = Subscriber::connect(pair.subscriber_config("t")).unwrap();
    wait_subscriptions(pair.primary(), 1);
    wait_subscriptions(pair.backup(), 1);
    let publisher = Pipeline::start(&pair, "t");
    publisher.wait_acks("traffic through the primary", TRAFFIC);
    (pair, sub, publisher)
}

fn fast() -> BrokerConfig {
    config(ComputeStep::Off)
}

/// A primary to be frozen: it notices a silent backup only after 5 s (and so takes 5 s to
/// start, probing a backup not yet up). `Broker::pause` freezes each thread at its next step,
/// so the primary's replication reader gets one more: with the fast timeout it could find the
/// backup silent (it has taken over) and ACK alone what it admitted last, which a process
/// frozen by SIGSTOP never could, and a kill would then lose it.
fn to_be_frozen() -> BrokerConfig {
    BrokerConfig {
        ping_timeout: Duration::from_secs(5),
        ..fast()
    }
}

#[test]
fn a_pipelining_publisher_loses_nothing_when_the_primary_dies() {
    let (mut pair, mut sub, publisher) = pair_under_load(fast());
    pair.primary.take().unwrap().kill();
    wait_until("the backup to take over", || {
        pair.backup().status().role == Role::Primary
    });
    publisher.wait_acks("traffic through the new primary", TRAFFIC);
    let outcomes = publisher.stop();
    assert_acked_and_delivered_once_in_order(&mut sub, &outcomes);
}

#[test]
fn a_frozen_then_killed_primary_loses_nothing_of_a_full_window() {
    // The messages sent after the freeze wait unread in the frozen primary's socket, where the
    // kill destroys them: only the publisher's resend of its whole window brings them to the
    // backup.
    let (mut pair, mut sub, publisher) = pair_under_load(to_be_frozen());
    pair.primary().pause();
    wait_until("the backup to take over", || {
        pair.backup().status().role == Role::Primary
    });
    publisher.wait_acks("traffic through the new primary", TRAFFIC);
    pair.primary.take().unwrap().kill();
    publisher.wait_acks("traffic after the kill", TRAFFIC);
    let outcomes = publisher.stop();
    assert_acked_and_delivered_once_in_order(&mut sub, &outcomes);
}

#[test]
fn a_frozen_primary_that_wakes_up_steps_down_and_duplicates_nothing() {
    // As SIGSTOP then SIGCONT: the woken primary finds a full window of lines in its socket
    // and must neither deliver them out of order nor twice.
    let (pair, mut sub, publisher) = pair_under_load(to_be_frozen());
    pair.primary().pause();
    wait_until("the backup to take over", || {
        pair.backup().status().role == Role::Primary
    });
    publisher.wait_acks("traffic through the new primary", TRAFFIC);
    pair.primary().resume();
    wait_until("the old primary to step down and follow", || {
        let s = pair.primary().status();
        s.role == Role::Backup && s.epoch == pair.backup().status().epoch
    });
    publisher.wait_acks("traffic after the wake-up", TRAFFIC);
    let outcomes = publisher.stop();
    assert_acked_and_delivered_once_in_order(&mut sub, &outcomes);
}
