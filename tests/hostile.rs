//! Hostile and heavy input: the shared secret, the connection limit, slow consumers, and the
//! planned handover on shutdown.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::thread;

use common::*;
use edgebroker::auth::Secret;
use edgebroker::broker::BackupHealth;
use edgebroker::protocol::Role;
use edgebroker::{BrokerConfig, ComputeStep, Publisher, PublisherConfig, Subscriber};

fn secret(s: &str) -> Option<Secret> {
    Secret::new(s)
}

#[test]
fn peer_verbs_are_refused_without_the_secret() {
    let base = BrokerConfig {
        secret: secret("pair-secret"),
        ..config(ComputeStep::Off)
    };
    let pair = Pair::start(base);
    let before = pair.backup().status();
    for target in [pair.primary_addr, pair.backup_addr] {
        let mut intruder = LineClient::connect(target);
        for line in [
            "SYNC|99.1|1",
            "PROBE|99.1|1|1",
            "REPLICATE|99.1|1|5|1|t|injected",
            "CLEAR|1.1|1",
            "SEEN|5|1",
            "HANDOVER|1.1",
        ] {
            assert_eq!(
                intruder.ask(line),
                "ERR|authenticate first (HELLO|peer|<nonce>)",
                "{line}"
            );
        }
        // A guessed proof is refused and the connection closed.
        let challenge = intruder.ask("HELLO|peer|00112233445566778899aabbccddeeff");
        assert!(challenge.starts_with("CHALLENGE|"), "{challenge}");
        assert_eq!(
            intruder.ask(&format!("PROOF|{}", "ab".repeat(32))),
            "ERR|authentication failed"
        );
        assert_eq!(intruder.recv(), None);
    }
    // Nothing changed hands: same roles, same epoch, nothing injected.
    assert_eq!(pair.primary().status().role, Role::Primary);
    let after = pair.backup().status();
    assert_eq!(
        (after.role, after.epoch, after.pending),
        (Role::Backup, before.epoch, 0)
    );
    assert_eq!(pair.primary().status().backup, BackupHealth::Up);
}

#[test]
fn brokers_with_the_same_secret_replicate_and_fail_over() {
    let base = BrokerConfig {
        secret: secret("pair-secret"),
        ..config(ComputeStep::Off)
    };
    let mut pair = Pair::start(base);
    let mut sub = Subscriber::connect(pair.subscriber_config("t")).unwrap();
    let mut publisher = Publisher::new(pair.publisher_config());
    publisher.publish("t", "1").unwrap();
    pair.primary.take().unwrap().kill();
    publisher.publish("t", "2").unwrap();
    let got: Vec<String> = (0..2)
        .map(|_| sub.recv_timeout(DEADLINE).unwrap().message.payload)
        .collect();
    assert_eq!(got, ["1", "2"]);
}

#[test]
fn a_backup_with_the_wrong_secret_is_never_synced() {
    let (pl, bl) = (listener(), listener());
    let (pa, ba) = (pl.local_addr().unwrap(), bl.local_addr().unwrap());
    let with = |s: &str| BrokerConfig {
        secret: secret(s),
        ..config(ComputeStep::Off)
    };
    let primary = start_broker(pl, &with("right"), ba, true);
    let backup = start_broker(bl, &with("wrong"), pa, false);
    // Each side has tried the other and failed the handshake.
    wait_until("both handshakes to fail", || {
        primary.status().counters.auth_failures > 0 && backup.status().counters.auth_failures > 0
    });
    // The preferred primary leads alone; the misconfigured backup neither follows nor leads.
    let mut client = LineClient::connect(pa);
    assert_eq!(client.ask("PUBLISH|t|x"), "ACK");
    let (p, b) = (primary.status(), backup.status());
    assert_eq!((p.role, p.backup), (Role::Primary, BackupHealth::Down));
    assert_eq!(
        (b.role, b.epoch, b.pending),
        (Role::Backup, Default::default(), 0)
    );
}

#[test]
fn clients_must_authenticate_when_a_client_secret_is_set() {
    let broker = lone_broker(BrokerConfig {
        client_secret: secret("client-secret"),
        ..config(ComputeStep::Off)
    });
    let addr = broker.local_addr();
    let mut raw = LineClient::connect(addr);
    assert_eq!(raw.ask("PING"), "PONG");
    assert_eq!(
        raw.ask("PUBLISH|t|x"),
        "ERR|authenticate first (HELLO|client|<nonce>)"
    );
    assert_eq!(
        raw.ask("STATUS"),
        "ERR|authenticate first (HELLO|client|<nonce>)"
    );
    assert_eq!(broker.status().counters.published, 0);

    let config = |secret_text: Option<&str>| PublisherConfig {
        secret: secret_text.and_then(Secret::new),
        give_up_after: std::time::Duration::from_millis(300),
        ..PublisherConfig::new(addr.to_string(), addr.to_string())
    };
    let mut stranger = Publisher::new(config(None));
    assert!(stranger.publish("t", "x").is_err());
    let mut wrong = Publisher::new(config(Some("guess")));
    assert!(wrong.publish("t", "x").is_err());
    let mut member = Publisher::new(config(Some("client-secret")));
    member.publish("t", "x").unwrap();
    assert_eq!(broker.status().counters.published, 1);
}

#[test]
fn connections_past_the_limit_are_refused_and_the_others_unaffected() {
    let broker = lone_broker(BrokerConfig {
        max_connections: 3,
        ..config(ComputeStep::Off)
    });
    let mut clients: Vec<LineClient> = (0..3)
        .map(|_| LineClient::connect(broker.local_addr()))
        .collect();
    for c in &mut clients {
        assert_eq!(c.ask("PING"), "PONG");
    }
    let mut extra = LineClient::connect(broker.local_addr());
    assert_eq!(extra.recv().as_deref(), Some("ERR|too many connections"));
    assert_eq!(extra.recv(), None);
    for c in &mut clients {
        assert_eq!(c.ask("PUBLISH|t|x"), "ACK");
    }
    // A slot frees when a client leaves.
    drop(clients.pop());
    wait_until("the slot to free", || {
        broker.status().counters.connections == 2
    });
    assert_eq!(LineClient::connect(broker.local_addr()).ask("PING"), "PONG");
}

#[test]
fn a_subscriber_that_never_reads_is_cut_off_and_holds_up_nobody() {
    const MESSAGES: usize = 30_000;
    let broker = lone_broker(config(ComputeStep::Off));
    let addr = broker.local_addr();

    // The slow one subscribes and never reads again.
    let mut slow = TcpStream::connect(addr).unwrap();
    slow.write_all(b"SUBSCRIBE|t\n").unwrap();
    // The fast one reads everything on its own thread.
    let mut fast = LineClient::connect(addr);
    fast.send("SUBSCRIBE|t");
    wait_subscriptions(&broker, 2);
    let received = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = received.clone();
    let reader = thread::spawn(move || {
        let lines: Vec<String> = (0..MESSAGES)
            .map(|_| {
                let line = fast.recv().expect("every message");
                counter.fetch_add(1, std::sync::atomic::Ordering::Release);
                line
            })
            .collect();
        (fast, lines)
    });

    // 1 KiB payloads, pipelined on one connection; the ACKs are read on another thread.
    let publisher = TcpStream::connect(addr).unwrap();
    let acks = BufReader::new(publisher.try_clone().unwrap());
    let acker = thread::spawn(move || {
        acks.lines()
            .take(MESSAGES)
            .filter(|l| l.as_deref().is_ok_and(|l| l == "ACK"))
            .count()
    });
    // In chunks the fast reader keeps up with, however busy the machine: only the subscriber
    // that never reads may fall the limit (10,000) behind.
    let mut out = std::io::BufWriter::new(&publisher);
    let filler = "x".repeat(1018);
    for chunk in 0..MESSAGES / 1000 {
        for i in chunk * 1000..(chunk + 1) * 1000 {
            writeln!(out, "PUBLISH|t|{i:05}{filler}").unwrap();
        }
        out.flush().unwrap();
        wait_until("the fast subscriber to keep up", || {
            received.load(std::sync::atomic::Ordering::Acquire) + 2000 > (chunk + 1) * 1000
        });
    }
    drop(out);

    assert_eq!(acker.join().unwrap(), MESSAGES);
    let (_fast, got) = reader.join().unwrap();
    assert!(
        got.iter()
            .enumerate()
            .all(|(i, line)| line.starts_with(&format!("{i:05}")))
    );
    let status = broker.status();
    assert_eq!(status.counters.slow_consumers, 1, "{status:?}");
    assert_eq!(status.subscriptions, 1, "only the fast subscriber is left");
}

#[test]
fn shutting_down_a_primary_hands_over_at_once_with_nothing_lost() {
    let base = BrokerConfig {
        // Probes so rare that only the handover can explain a quick takeover.
        ping_interval: std::time::Duration::from_secs(60),
        ..config(ComputeStep::BusyLoop(1..=3))
    };
    let mut pair = Pair::start(base);
    let mut sub = Subscriber::connect(pair.subscriber_config("t")).unwrap();
    let mut publisher = Publisher::new(pair.publisher_config());
    for i in 1..=20 {
        publisher.publish("t", &i.to_string()).unwrap();
    }
    pair.primary.take().unwrap().shutdown();
    // shutdown() returns once the backup's new epoch reached the old primary.
    let status = pair.backup().status();
    assert_eq!((status.role, status.counters.takeovers), (Role::Primary, 1));
    for i in 21..=30 {
        publisher.publish("t", &i.to_string()).unwrap();
    }
    let got: Vec<u64> = (0..30)
        .map(|_| {
            sub.recv_timeout(DEADLINE)
                .unwrap()
                .message
                .payload
                .parse()
                .unwrap()
        })
        .collect();
    assert_eq!(got, (1..=30).collect::<Vec<u64>>());
}
