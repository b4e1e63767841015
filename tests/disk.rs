//! The log on disk (`--data-dir`), in-process: a broker killed and started again from its log
//! holds what it held, replays it in order and still knows every resend; a torn last line is
//! dropped; a full disk refuses publishes; a log of another pair or a damaged one is refused
//! with an error that says which, as is a folder another broker uses (another version: the
//! unit tests of `src/broker/journal/recover.rs`).
//! (Both brokers of a pair killed with SIGKILL and restarted: `tests/e2e.rs`.)

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::*;
use edgebroker::config::Fsync;
use edgebroker::protocol::Role;
use edgebroker::{Broker, BrokerConfig, Error, Subscriber, SubscriberConfig};

/// An empty folder for one test's log.
fn data_dir(test: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("disk-{test}"));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).expect("create the data folder");
    dir
}

/// A lone broker's configuration with its log in `dir`, the compute step held by `valve`.
fn on_disk(dir: &Path, valve: &Valve) -> BrokerConfig {
    BrokerConfig {
        data_dir: Some(dir.to_path_buf()),
        fsync: Fsync::Always,
        ..config(valve.step())
    }
}

/// Publishes `PUB|7|<seq>|t|m<seq>` for each of `seqs` and returns the answers.
fn publish(broker: &Broker, seqs: impl IntoIterator<Item = u64>) -> Vec<String> {
    let mut client = LineClient::connect(broker.local_addr());
    (seqs.into_iter())
        .map(|seq| client.ask(&format!("PUB|7|{seq}|t|m{seq}")))
        .collect()
}

/// Kills `broker` like a crash and waits until its threads are gone; `valve` lets the message
/// it was computing go, so the worker ends (what it does after the kill never reaches the disk).
fn crash(broker: Broker, valve: &Valve) {
    broker.kill();
    valve.open();
    drop(broker);
}

/// What starting a broker with `config` fails with.
fn refusal(config: BrokerConfig) -> String {
    match Broker::start_on(listener(), config) {
        Err(Error::DataDir(why)) => why,
        Err(e) => panic!("refused for another reason: {e}"),
        Ok(_) => panic!("started"),
    }
}

#[test]
fn a_broker_started_again_from_its_log_replays_what_it_acked_in_order_and_knows_every_resend() {
    let dir = data_dir("restart");
    let valve = Valve::default();
    let broker = lone_broker(on_disk(&dir, &valve));
    let (node, epoch) = (broker.status().node, broker.status().epoch);
    let acks = publish(&broker, 1..=5);
    assert_eq!(
        acks,
        (1..=5).map(|s| format!("ACK|7|{s}")).collect::<Vec<_>>()
    );
    crash(broker, &valve);

    let valve = Valve::default();
    let broker = Broker::start_on(listener(), on_disk(&dir, &valve)).expect("start again");
    let status = broker.status();
    assert_eq!(
        (status.node, status.pending),
        (node, 5),
        "same node, all 5 held"
    );
    // It waits out its grace before it leads: time for the subscriber to come back.
    assert_eq!(status.role, Role::Backup);
    let config = SubscriberConfig::new("t", broker.local_addr().to_string(), "127.0.0.1:9");
    let mut sub = Subscriber::connect(config).expect("subscribe");
    wait_until("the restarted broker to lead", || {
        broker.status().role == Role::Primary
    });
    assert!(
        broker.status().epoch > epoch,
        "a newer epoch than any it used"
    );
    assert_eq!(
        publish(&broker, [3, 6]),
        ["ACK|7|3", "ACK|7|6"],
        "3 is a resend"
    );
    valve.open();
    let got: Vec<String> = (0..6)
        .map(|_| {
            sub.recv_timeout(DEADLINE)
                .expect("a delivery")
                .message
                .payload
        })
        .collect();
    assert_eq!(got, ["m1", "m2", "m3", "m4", "m5", "m6"]);
    assert!(
        sub.recv_timeout(std::time::Duration::from_millis(200))
            .is_none(),
        "nothing twice"
    );
}

#[test]
fn seed_form_publishes_after_a_restart_are_new_messages() {
    let dir = data_dir("seed-form");
    let valve = Valve::default();
    valve.open();
    let broker = lone_broker(on_disk(&dir, &valve));
    let mut client = LineClient::connect(broker.local_addr());
    assert_eq!(client.ask("PUBLISH|t|before"), "ACK");
    crash(broker, &valve);

    let broker = Broker::start_on(listener(), on_disk(&dir, &valve)).expect("start again");
    let config = SubscriberConfig::new("t", broker.local_addr().to_string(), "127.0.0.1:9");
    let mut sub = Subscriber::connect(config).expect("subscribe");
    wait_until("the restarted broker to lead", || {
        broker.status().role == Role::Primary
    });
    // The broker numbers seed-form publishes itself: not from 1 again, or the dedup table it
    // read back would take them for resends.
    let mut client = LineClient::connect(broker.local_addr());
    assert_eq!(client.ask("PUBLISH|t|after"), "ACK");
    let got = sub.recv_timeout(DEADLINE).expect("delivered");
    assert_eq!(got.message.payload, "after");
    assert_eq!(broker.status().counters.duplicates, 0);
}

#[test]
fn a_torn_last_line_is_dropped_and_everything_before_it_read_back() {
    let dir = data_dir("torn");
    let valve = Valve::default();
    let broker = lone_broker(on_disk(&dir, &valve));
    publish(&broker, 1..=3);
    crash(broker, &valve);
    // A crash in the middle of a write leaves part of a line.
    let log = dir.join("messages.log");
    let mut text = fs::read(&log).unwrap();
    text.extend_from_slice(b"9e4b2c11 HOLD|4|1093|4|t|");
    fs::write(&log, &text).unwrap();

    let valve = Valve::default();
    let broker = Broker::start_on(listener(), on_disk(&dir, &valve)).expect("start again");
    assert_eq!(broker.status().pending, 3);
    let rewritten = fs::read_to_string(&log).unwrap();
    assert!(
        !rewritten.contains("HOLD|4|"),
        "the torn line is gone:\n{rewritten}"
    );
    broker.shutdown();
}

#[test]
fn a_full_disk_refuses_publishes_and_acks_nothing_it_could_not_write() {
    let dir = data_dir("full");
    // Every write to /dev/full fails with ENOSPC, as on a full disk.
    std::os::unix::fs::symlink("/dev/full", dir.join("messages.log")).unwrap();
    let valve = Valve::default();
    valve.open();
    let broker = lone_broker(on_disk(&dir, &valve));
    for answer in publish(&broker, 1..=2) {
        assert!(
            answer.starts_with("ERR|cannot write the log in ") && answer.contains("No space left"),
            "{answer}"
        );
    }
    broker.shutdown();
}

#[test]
fn a_log_of_another_pair_or_a_damaged_one_is_refused_with_a_clear_error() {
    let dir = data_dir("foreign");
    let valve = Valve::default();
    let site = |name: &str| BrokerConfig {
        pair: name.parse().unwrap(),
        ..on_disk(&dir, &valve)
    };
    let broker = lone_broker(site("site-1"));
    publish(&broker, 1..=2);
    crash(broker, &valve);

    let why = refusal(site("site-2"));
    assert!(
        why.ends_with(
            "the log of pair 'site-1', not of 'site-2' (--pair): give each pair its own --data-dir"
        ),
        "{why}"
    );

    let log = dir.join("messages.log");
    let good = fs::read_to_string(&log).unwrap();
    let mut lines: Vec<String> = good.lines().map(String::from).collect();
    let first = lines.iter().position(|l| l.contains("HOLD|1|")).unwrap();
    lines[first] = lines[first].replacen("HOLD|1|", "HOLD|9|", 1);
    fs::write(&log, lines.join("\n") + "\n").unwrap();
    let why = refusal(site("site-1"));
    let damaged = format!("line {} is damaged: checksum does not match", first + 1);
    assert!(why.ends_with(&damaged), "{why}");

    fs::write(&log, "hello\nworld\n").unwrap();
    let why = refusal(site("site-1"));
    assert!(
        why.ends_with("not a message log (no EDGELOG header)"),
        "{why}"
    );
}

#[test]
fn two_brokers_never_share_a_data_dir() {
    let dir = data_dir("shared");
    let valve = Valve::default();
    let broker = lone_broker(on_disk(&dir, &valve));
    let why = refusal(on_disk(&dir, &valve));
    assert!(why.ends_with("is in use by another broker"), "{why}");
    valve.open();
    broker.shutdown();
}
