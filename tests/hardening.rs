//! What a hostile or unlucky client could once break, each pinned by a test: messages at the
//! line limit, spoofed publisher ids, memory held for slow subscribers, slow subscribers
//! refusing other topics' publishers, strangers holding the peer's connection slots (and the
//! backup's, so that the primary would ACK alone),
//! unreachable epochs, and the small ones (a payload's last `\r`, unbounded subscriptions).

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use edgebroker::auth::Secret;
use edgebroker::broker::BackupHealth;
use edgebroker::protocol::{Epoch, Message, Role};
use edgebroker::{BrokerConfig, ComputeStep, Publisher, Subscriber};

/// A `PUB` line of exactly `len` bytes.
fn pub_line(key: u64, seq: u64, len: usize) -> String {
    let head = format!("PUB|{key}|{seq}|t|");
    format!("{head}{}", "x".repeat(len - head.len()))
}

#[test]
fn a_message_whose_replica_would_not_fit_is_refused_and_one_that_fits_survives_a_failover() {
    let valve = Valve::default();
    let mut pair = Pair::start(BrokerConfig {
        compute: valve.step(),
        ..base_with_line(1024)
    });
    let mut sub = Subscriber::connect(pair.subscriber_config("t")).unwrap();
    let mut client = LineClient::connect(pair.primary_addr);
    // A line at the limit is a legal line, but its REPLICATE would not be.
    let answer = client.ask(&pub_line(7, 1, 1024));
    assert!(
        answer.starts_with("ERR|message too large: topic and payload may take at most 923 bytes"),
        "{answer}"
    );
    assert_eq!(client.ask("PING"), "PONG", "the connection stays usable");
    // The largest message that fits is replicated, held by the backup, and redone by it.
    let payload_len = 1024 - Message::ENVELOPE_BYTES - "t".len();
    let line = format!("PUB|7|1|t|{}", "y".repeat(payload_len));
    assert_eq!(client.ask(&line), "ACK|7|1");
    assert_eq!(pair.backup().status().pending, 1, "the backup holds it");
    pair.primary.take().unwrap().kill();
    valve.open();
    let delivery = sub.recv_timeout(DEADLINE).expect("redone by the backup");
    assert_eq!(delivery.message.payload.len(), payload_len);
}

fn base_with_line(max_line_bytes: usize) -> BrokerConfig {
    BrokerConfig {
        max_line_bytes,
        ..config(ComputeStep::Off)
    }
}

#[test]
fn a_backup_that_refuses_the_stream_is_redialled_with_backoff_and_status_says_why() {
    // A misconfigured pair: the backup's lines are shorter than the primary's. The valve
    // keeps the message in the primary's log, so every resync sends it again.
    let valve = Valve::default();
    let primary = BrokerConfig {
        ping_interval: Duration::from_millis(200),
        compute: valve.step(),
        ..base_with_line(4096)
    };
    let backup = BrokerConfig {
        max_line_bytes: 1024,
        ..primary.clone()
    };
    let pair = Pair::start_with(primary, backup);
    let mut client = LineClient::connect(pair.primary_addr);
    let answer = client.ask(&format!("PUB|7|1|t|{}", "z".repeat(2000)));
    assert!(
        answer.starts_with("ACK") || answer.starts_with("ERR"),
        "{answer}"
    );
    let before = pair.primary().status().counters.link_sessions;
    let watch = Instant::now();
    let status = wait_for("the primary to say what is wrong", || {
        let s = pair.primary().status();
        s.link_error.is_some().then_some(s)
    });
    thread::sleep(Duration::from_secs(1).saturating_sub(watch.elapsed()));
    let sessions = pair.primary().status().counters.link_sessions - before;
    // Without backoff this was tens of thousands of sessions a second.
    assert!(
        sessions <= 15,
        "{sessions} sessions in a second: {status:?}"
    );
    assert!(
        status
            .link_error
            .as_deref()
            .unwrap_or_default()
            .contains("line too long")
            || status
                .link_error
                .as_deref()
                .unwrap_or_default()
                .contains("broke within"),
        "{status:?}"
    );
    valve.open();
}

#[test]
fn a_spoofed_publisher_id_cannot_suppress_or_reorder_another_publishers_messages() {
    let pair = Pair::start(config(ComputeStep::Off));
    let mut sub = Subscriber::connect(pair.subscriber_config("t")).unwrap();
    let mut publisher = Publisher::new(pair.publisher_config());
    for i in 1..=3 {
        publisher.publish("t", &i.to_string()).unwrap();
    }
    // The attacker reads a delivery, learns the publisher's id, and publishes under it far
    // ahead of its sequence, and at the last sequence there is.
    let mut spy = LineClient::connect(pair.primary_addr);
    spy.send("SUB|t");
    wait_subscriptions(pair.primary(), 2);
    publisher.publish("t", "4").unwrap();
    let seen = spy.recv().expect("a delivery");
    let id: u64 = seen.split('|').nth(2).unwrap().parse().unwrap();
    assert_eq!(id, publisher.id());
    let mut attacker = LineClient::connect(pair.primary_addr);
    for seq in [9_000, u64::MAX] {
        assert!(
            attacker
                .ask(&format!("PUB|{id}|{seq}|t|x"))
                .starts_with("ACK")
        );
    }
    assert_eq!(
        attacker.ask(&format!("PUB|{id}|0|t|x")),
        "ERR|seq must be at least 1"
    );
    for i in 5..=20 {
        publisher.publish("t", &i.to_string()).unwrap();
    }
    let mut got = Vec::new();
    while got.len() < 20 {
        let d = sub.recv_timeout(DEADLINE).expect("every real message");
        if d.message.id.publisher == publisher.id() {
            got.push(d.message.payload.parse::<u64>().unwrap());
        }
    }
    assert_eq!(got, (1..=20).collect::<Vec<_>>());
    assert_eq!(pair.primary().status().counters.duplicates, 0);
}

/// A subscriber to `topic` that reads `chunk` bytes every `pause` until its connection ends
/// or `stop` is set.
fn trickle(
    addr: SocketAddr,
    topic: &str,
    chunk: usize,
    pause: Duration,
    stop: &Arc<AtomicBool>,
) -> thread::JoinHandle<()> {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .write_all(format!("SUBSCRIBE|{topic}\n").as_bytes())
        .unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    let stop = Arc::clone(stop);
    thread::spawn(move || {
        let mut buf = vec![0; chunk];
        while !stop.load(Ordering::Acquire) {
            thread::sleep(pause);
            if matches!(stream.read(&mut buf), Ok(0) | Err(_)) {
                return;
            }
        }
    })
}

#[test]
fn trickling_subscribers_are_cut_off_by_bytes_and_memory_stays_bounded() {
    const LIMIT: usize = 2 * 1024 * 1024;
    let broker = lone_broker(BrokerConfig {
        slow_consumer_bytes: LIMIT,
        ..config(ComputeStep::Off)
    });
    let addr = broker.local_addr();
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..3)
        .map(|_| trickle(addr, "t", 16 * 1024, Duration::from_millis(20), &stop))
        .collect();
    wait_subscriptions(&broker, 3);
    let mut client = LineClient::connect(addr);
    let payload = "p".repeat(60_000);
    let mut most_queued = 0;
    for _ in 0..400 {
        assert_eq!(client.ask(&format!("PUBLISH|t|{payload}")), "ACK");
        most_queued = most_queued.max(broker.status().queued_bytes);
        if broker.status().counters.slow_consumers == 3 {
            break;
        }
    }
    let status = broker.status();
    assert_eq!(status.counters.slow_consumers, 3, "{status:?}");
    // Each queue is bounded by its limit.
    assert!(most_queued <= 3 * LIMIT, "{most_queued} bytes queued");
    wait_until("the queues to be given back", || {
        broker.status().queued_bytes == 0 && broker.status().pending == 0
    });
    stop.store(true, Ordering::Release);
    readers.into_iter().for_each(|r| r.join().unwrap());
}

#[test]
fn a_subscriber_that_keeps_a_line_waiting_too_long_is_a_slow_consumer() {
    let broker = lone_broker(BrokerConfig {
        slow_consumer_age: Duration::from_millis(300),
        ..config(ComputeStep::Off)
    });
    let addr = broker.local_addr();
    let stop = Arc::new(AtomicBool::new(false));
    let reader = trickle(addr, "t", 1024, Duration::from_millis(10), &stop);
    wait_subscriptions(&broker, 1);
    let mut client = LineClient::connect(addr);
    let payload = "q".repeat(50_000);
    // Far under the line and byte limits: only the age of what waits can cut it off.
    for _ in 0..200 {
        assert_eq!(client.ask(&format!("PUBLISH|t|{payload}")), "ACK");
        if broker.status().counters.slow_consumers == 1 {
            break;
        }
        thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(broker.status().counters.slow_consumers, 1);
    stop.store(true, Ordering::Release);
    reader.join().unwrap();
}

#[test]
fn slow_subscribers_of_one_topic_never_refuse_another_topics_publishers() {
    let broker = lone_broker(BrokerConfig {
        max_pending: 50,
        ..config(ComputeStep::Off)
    });
    let addr = broker.local_addr();
    // Subscribers that never read, on topics of their own.
    let mut stalled = Vec::new();
    for t in ["a", "b", "c"] {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(format!("SUBSCRIBE|{t}\n").as_bytes()).unwrap();
        stalled.push(s);
    }
    wait_subscriptions(&broker, 3);
    let mut client = LineClient::connect(addr);
    let payload = "s".repeat(20_000);
    // More than their sockets' buffers take: the rest waits in the broker. Every ten
    // messages the compute step catches up, so only the subscribers can hold messages back.
    for i in 0..1200 {
        let topic = ["a", "b", "c"][i % 3];
        assert_eq!(client.ask(&format!("PUBLISH|{topic}|{payload}")), "ACK");
        if i % 10 == 9 {
            wait_until("the compute step to catch up", || {
                broker.status().computing == 0
            });
        }
    }
    assert!(broker.status().pending > 50, "{:?}", broker.status());
    // Their backlogs are theirs: a publisher on another topic is still served.
    for i in 0..20 {
        assert_eq!(client.ask(&format!("PUBLISH|d|{i}")), "ACK");
    }
    drop(stalled);
}

#[test]
fn a_stranger_holding_every_client_slot_cannot_keep_the_pair_from_resyncing() {
    let base = BrokerConfig {
        secret: Secret::new("pair"),
        max_connections: 4,
        ..config(ComputeStep::Off)
    };
    let pair = Pair::start(base);
    // The stranger fills the backup's client slots (the pair's own link holds one), and tries
    // the slots kept for the peer as well.
    let strangers: Vec<TcpStream> = (0..12)
        .filter_map(|_| TcpStream::connect(pair.backup_addr).ok())
        .collect();
    wait_until("the backup to be full", || {
        pair.backup().status().counters.connections >= 4
    });
    // The backup freezes long enough to be declared down, then resumes.
    pair.backup().pause();
    wait_until("the primary to declare its backup down", || {
        pair.primary().status().backup != BackupHealth::Up
    });
    pair.backup().resume();
    pair.wait_replicating();
    let refused = pair.backup().status().counters.refused_connections;
    assert!(refused > 0, "the strangers past the limit were refused");
    drop(strangers);
}

#[test]
fn strangers_in_every_slot_give_way_to_the_peer_broker_and_never_push_it_out() {
    let secret = Secret::new("pair").unwrap();
    let broker = lone_broker(BrokerConfig {
        secret: Some(secret.clone()),
        client_secret: Secret::new("clients"),
        max_connections: 2,
        // Unproven, a stranger could otherwise keep its slot for longer than the test.
        auth_timeout: Duration::from_secs(60),
        ..config(ComputeStep::Off)
    });
    // The strangers dial from the peer's own address, the harder case (from another address
    // they could never push the peer out at all): they still give way, oldest first.
    let addr = broker.local_addr();
    let strangers: Vec<TcpStream> = (0..6).map(|_| TcpStream::connect(addr).unwrap()).collect();
    wait_until("every slot taken", || {
        broker.status().counters.connections >= 6
    });
    let dial = || {
        edgebroker::connection::Connection::dial(
            &addr.to_string(),
            Duration::from_secs(5),
            65536,
            Some((edgebroker::protocol::AuthKind::Peer, &secret)),
        )
    };
    let mut peer = dial().expect("the peer gets a slot and authenticates");
    assert_eq!(
        peer.ask(&edgebroker::protocol::Request::Ping).unwrap(),
        edgebroker::protocol::Reply::Pong
    );
    // The oldest stranger gave way and was told why.
    let mut oldest = String::new();
    let _ = (&strangers[0]).read_to_string(&mut oldest);
    assert_eq!(oldest, "ERR|too many connections\n");
    // However many strangers come now, the proven peer keeps its slot.
    let more: Vec<TcpStream> = (0..10).map(|_| TcpStream::connect(addr).unwrap()).collect();
    wait_until("the newcomers to be let in", || {
        broker.status().counters.refused_connections >= 11
    });
    assert_eq!(
        peer.ask(&edgebroker::protocol::Request::Ping).unwrap(),
        edgebroker::protocol::Reply::Pong
    );
    drop((strangers, more));
}

#[test]
fn a_backup_that_is_alive_but_turns_the_primary_away_is_never_counted_as_down() {
    // A fake backup that answers probes as a fresh backup and turns every SYNC away as a
    // backup whose slots strangers hold.
    let fake = TcpListener::bind("127.0.0.1:0").unwrap();
    let fake_addr = fake.local_addr().unwrap();
    let syncs = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let (n, s) = (syncs.clone(), stop.clone());
    fake.set_nonblocking(true).unwrap();
    let server = thread::spawn(move || {
        let pong = edgebroker::protocol::Reply::PeerPong(edgebroker::protocol::PeerState {
            epoch: "0.0".parse().unwrap(),
            role: Role::Backup,
            node: 1,
            preferred: false,
        });
        while !s.load(Ordering::Acquire) {
            let Ok((c, _)) = fake.accept() else {
                thread::sleep(Duration::from_millis(2));
                continue;
            };
            // Each connection its own thread, as a real backup serves them: a probe held
            // open must not keep the replicator's SYNC waiting.
            let (n, pong) = (n.clone(), pong.clone());
            thread::spawn(move || {
                c.set_nonblocking(false).unwrap();
                let _ = c.set_read_timeout(Some(Duration::from_secs(1)));
                let mut lines = std::io::BufReader::new(c.try_clone().unwrap());
                let mut line = String::new();
                while std::io::BufRead::read_line(&mut lines, &mut line).unwrap_or(0) > 0 {
                    let answer = if line.starts_with("SYNC") {
                        n.fetch_add(1, Ordering::AcqRel);
                        b"ERR|too many connections\n".to_vec()
                    } else {
                        pong.to_bytes()
                    };
                    if (&c).write_all(&answer).is_err() || line.starts_with("SYNC") {
                        break;
                    }
                    line.clear();
                }
            });
        }
    });
    let broker = start_broker(listener(), &config(ComputeStep::Off), fake_addr, true);
    wait_until("the broker to lead and dial its backup", || {
        broker.status().role == Role::Primary && syncs.load(Ordering::Acquire) >= 3
    });
    assert_eq!(broker.status().backup, BackupHealth::Silent);
    // So nothing is ACKed that the backup does not hold.
    let mut client = LineClient::connect(broker.local_addr());
    let answer = client.ask("PUBLISH|t|not alone");
    assert!(answer.starts_with("ERR|"), "{answer}");
    assert_ne!(broker.status().backup, BackupHealth::Down);
    stop.store(true, Ordering::Release);
    server.join().unwrap();
}

#[test]
fn a_connection_in_a_peer_slot_that_does_not_authenticate_is_closed_in_time() {
    let broker = lone_broker(BrokerConfig {
        secret: Secret::new("pair"),
        max_connections: 1,
        ..config(ComputeStep::Off)
    });
    let mut first = LineClient::connect(broker.local_addr());
    assert_eq!(first.ask("PING"), "PONG");
    // Past the limit, in a peer slot: a client verb is turned away at once...
    let mut eager = LineClient::connect(broker.local_addr());
    assert_eq!(eager.ask("PUBLISH|t|x"), "ERR|too many connections");
    assert_eq!(eager.recv(), None);
    // ...and silence is, once the deadline passes.
    let started = Instant::now();
    let mut silent = LineClient::connect(broker.local_addr());
    assert_eq!(silent.recv().as_deref(), Some("ERR|too many connections"));
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(first.ask("PING"), "PONG");
}

#[test]
fn a_client_that_never_authenticates_is_closed_when_a_client_secret_is_set() {
    let broker = lone_broker(BrokerConfig {
        client_secret: Secret::new("clients"),
        ..config(ComputeStep::Off)
    });
    let mut idle = LineClient::connect(broker.local_addr());
    assert_eq!(idle.ask("PING"), "PONG", "PING needs no secret");
    assert_eq!(idle.recv().as_deref(), Some("ERR|authentication timed out"));
    assert_eq!(idle.recv(), None);
}

#[test]
fn a_full_peer_is_alive_and_never_taken_over_from() {
    // A fake primary that is full: it answers every connection as a full broker does.
    let fake = TcpListener::bind("127.0.0.1:0").unwrap();
    let fake_addr = fake.local_addr().unwrap();
    let answered = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let (a, s) = (answered.clone(), stop.clone());
    fake.set_nonblocking(true).unwrap();
    let server = thread::spawn(move || {
        while !s.load(Ordering::Acquire) {
            match fake.accept() {
                Ok((mut c, _)) => {
                    let _ = c.write_all(b"ERR|too many connections\n");
                    a.fetch_add(1, Ordering::AcqRel);
                }
                Err(_) => thread::sleep(Duration::from_millis(2)),
            }
        }
    });
    for secret in [None, Secret::new("pair")] {
        let before = answered.load(Ordering::Acquire);
        let broker = start_broker(
            listener(),
            &BrokerConfig {
                secret,
                ..config(ComputeStep::Off)
            },
            fake_addr,
            true, // the preferred primary, which once took over from a peer it could not trust
        );
        wait_until("several probes", || {
            answered.load(Ordering::Acquire) >= before + 5
        });
        assert_eq!(broker.status().role, Role::Backup);
        assert_eq!(broker.status().counters.auth_failures, 0);
    }
    stop.store(true, Ordering::Release);
    server.join().unwrap();
}

#[test]
fn an_epoch_no_broker_could_reach_is_refused_and_the_pair_holds() {
    let pair = Pair::start(config(ComputeStep::Off));
    let before = (pair.primary().status(), pair.backup().status());
    let mut stranger = LineClient::connect(pair.primary_addr);
    for _ in 0..20 {
        assert_eq!(
            stranger.ask("PROBE|18446744073709551615.1|1|0"),
            "ERR|epoch term 18446744073709551615 is beyond any a broker can reach"
        );
    }
    let mut publisher = Publisher::new(pair.publisher_config());
    publisher.publish("t", "still here").unwrap();
    let after = (pair.primary().status(), pair.backup().status());
    assert_eq!(after.0.role, Role::Primary);
    assert_eq!(after.0.epoch, before.0.epoch);
    assert_eq!(after.1.counters.takeovers, before.1.counters.takeovers);
}

#[test]
fn every_payload_byte_survives_or_is_refused_and_subscriptions_are_bounded() {
    let broker = lone_broker(BrokerConfig {
        max_subscriptions: 3,
        ..config(ComputeStep::Off)
    });
    let mut client = LineClient::connect(broker.local_addr());
    client.send_raw(b"PUBLISH|t|abc\r\r\n");
    assert_eq!(
        client.recv().as_deref(),
        Some("ERR|payload ends in a carriage return, which the line ending would swallow")
    );
    assert_eq!(
        client.ask("PUBLISH topicA hello"),
        "ERR|fields are separated by '|', not spaces: try 'PUBLISH|topicA|hello'"
    );
    assert_eq!(
        client.ask("PUBLISH| topicA|x"),
        "ERR|topic ' topicA' has leading or trailing whitespace"
    );
    let mut subscriber = LineClient::connect(broker.local_addr());
    for t in ["a", "b", "c", "a"] {
        subscriber.send(&format!("SUBSCRIBE|{t}"));
    }
    assert!(
        subscriber
            .ask("SUBSCRIBE|d")
            .starts_with("ERR|too many subscriptions: one connection may subscribe to 3 topics")
    );
    assert_eq!(broker.status().subscriptions, 3);
    assert_eq!(client.ask("PUBLISH|c|still served"), "ACK");
    assert_eq!(subscriber.recv().as_deref(), Some("still served"));
}

/// Starts the real `primary` program with `args`, waits for its address, runs `work` against
/// it, kills it, and returns what it logged.
fn primary_program(args: &[&str], work: impl FnOnce(SocketAddr)) -> String {
    use std::io::BufRead;
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_primary"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start primary");
    let mut first = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let port: u16 = first.trim().rsplit(':').next().unwrap().parse().unwrap();
    work(SocketAddr::from(([127, 0, 0, 1], port)));
    child.kill().unwrap();
    let mut log = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    child.wait().unwrap();
    log
}

#[test]
fn a_broker_open_to_the_network_without_a_secret_says_so_and_floods_of_warnings_are_summed_up() {
    let open = primary_program(&["0", "--bind", "0.0.0.0"], |_| {});
    assert!(open.contains("no --secret: anyone who can reach"), "{open}");

    let guarded = primary_program(&["0", "--bind", "127.0.0.1", "--secret", "s"], |addr| {
        for _ in 0..30 {
            let mut c = LineClient::connect(addr);
            assert!(c.ask("HELLO|peer|00").starts_with("CHALLENGE|"));
            assert_eq!(c.ask("PROOF|00"), "ERR|authentication failed");
        }
    });
    assert!(!guarded.contains("no --secret"), "{guarded}");
    let warned = guarded.matches("authentication failed").count();
    assert_eq!(warned, 1, "30 failed logins, one warning:\n{guarded}");
}

#[test]
fn the_publisher_is_told_at_once_that_a_message_is_too_large_and_the_pair_stays_healthy() {
    let pair = Pair::start(BrokerConfig {
        secret: Secret::new("pair"),
        ..config(ComputeStep::Off)
    });
    let sessions = pair.primary().status().counters.link_sessions;
    let mut publisher = Publisher::new(pair.publisher_config());
    let started = Instant::now();
    let refused = publisher.publish("t", &"m".repeat(65_500));
    assert!(
        matches!(&refused, Err(edgebroker::Error::Refused(r)) if r.starts_with("message too large")),
        "{refused:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "no failover loop"
    );
    publisher.publish("t", "small").unwrap();
    let status = pair.primary().status();
    assert_eq!(status.counters.link_sessions, sessions, "{status:?}");
    assert_eq!(status.backup, BackupHealth::Up);
}

/// Which of the pair leads, once one leads a synced backup in an epoch past `term`: `true`
/// for the broker started as primary.
fn leader_past(pair: &Pair, term: u64) -> bool {
    wait_for(
        "a primary with a synced backup past the stranger's epoch",
        || {
            [(true, pair.primary()), (false, pair.backup())]
                .into_iter()
                .find(|(_, b)| {
                    let s = b.status();
                    s.role == Role::Primary && s.backup == BackupHealth::Up && s.epoch.term > term
                })
                .map(|(first, _)| first)
        },
    )
}

#[test]
fn a_strangers_epoch_at_the_limit_never_stops_the_pair() {
    let base = config(ComputeStep::Off);
    let mut pair = Pair::start(base.clone());
    let before = pair.primary().status().epoch;
    let mut stranger = LineClient::connect(pair.primary_addr);
    // No takeover could follow the last term; a jump past the ceiling is no takeover's.
    for term in [Epoch::MAX_TERM, Epoch::MAX_TERM - 1, Epoch::CEILING + 2] {
        let answer = stranger.ask(&format!("PROBE|{term}.5|5|0"));
        assert!(answer.starts_with("ERR|epoch "), "term {term}: {answer}");
    }
    let status = pair.primary().status();
    assert_eq!((status.role, status.epoch), (Role::Primary, before));

    // Without a secret, a stranger at the ceiling still makes the primary step down; the pair
    // leads on from the epoch after it, with headroom to spare.
    let at_ceiling = stranger.ask(&format!("PROBE|{}.5|5|0", Epoch::CEILING));
    assert!(at_ceiling.starts_with("PONG|"), "{at_ceiling}");
    let first_leads = leader_past(&pair, Epoch::CEILING);

    // The leader dies: the other takes over; restarted, the dead one rejoins as its backup.
    let (slot, addr, peer) = if first_leads {
        (&mut pair.primary, pair.primary_addr, pair.backup_addr)
    } else {
        (&mut pair.backup, pair.backup_addr, pair.primary_addr)
    };
    let dead = slot.take().expect("the leader runs");
    let last = dead.status().epoch;
    dead.kill();
    drop(dead);
    let survivor = if first_leads {
        pair.backup()
    } else {
        pair.primary()
    };
    wait_until("the survivor to take over", || {
        let s = survivor.status();
        s.role == Role::Primary && s.epoch > last
    });
    let slot = if first_leads {
        &mut pair.primary
    } else {
        &mut pair.backup
    };
    *slot = Some(restart_broker(addr, &base, peer, first_leads));
    assert_eq!(leader_past(&pair, last.term), !first_leads);
    let mut publisher = Publisher::new(pair.publisher_config());
    publisher.publish("t", "still here").unwrap();
}
