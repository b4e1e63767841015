//! Replication, takeover, dedup, fencing and rejoin, with brokers in-process on port 0 and
//! fast timings (probes every 20 ms, 200 ms probe timeout).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use common::*;
use edgebroker::broker::BackupHealth;
use edgebroker::client::Source;
use edgebroker::protocol::Role;
use edgebroker::{Broker, BrokerConfig, ComputeStep, Publisher, Subscriber, SubscriberConfig};

/// Receives until `n` deliveries arrived and returns their payloads in order.
fn collect(sub: &mut Subscriber, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            sub.recv_timeout(DEADLINE)
                .unwrap_or_else(|| panic!("delivery {} of {n} never came", i + 1))
                .message
                .payload
        })
        .collect()
}

fn numbers(range: std::ops::RangeInclusive<u64>) -> Vec<String> {
    range.map(|i| i.to_string()).collect()
}

/// Publishes 1, 2, 3, … on `topic` from a thread until told to stop; returns the ACKed
/// sequence numbers.
struct Background {
    stop: Arc<AtomicBool>,
    thread: thread::JoinHandle<Vec<u64>>,
}

impl Background {
    fn start(pair: &Pair, topic: &'static str) -> Background {
        let stop = Arc::new(AtomicBool::new(false));
        let mut publisher = Publisher::new(pair.publisher_config());
        let flag = Arc::clone(&stop);
        let thread = thread::spawn(move || {
            let mut acked = Vec::new();
            let mut seq = 0u64;
            while !flag.load(Ordering::Acquire) {
                seq += 1;
                publisher.publish(topic, &seq.to_string()).expect("publish");
                acked.push(seq);
                thread::sleep(Duration::from_millis(2));
            }
            acked
        });
        Background { stop, thread }
    }

    fn stop(self) -> Vec<u64> {
        self.stop.store(true, Ordering::Release);
        self.thread.join().expect("publisher thread")
    }
}

/// Checks that the subscriber prints every ACKed message exactly once, in order.
fn assert_exactly_once_in_order(sub: &mut Subscriber, acked: &[u64]) {
    let last = *acked.last().expect("something was ACKed");
    let mut got = Vec::new();
    while got.last() != Some(&last) {
        let d = sub
            .recv_timeout(DEADLINE)
            .unwrap_or_else(|| panic!("stuck after {:?}", got.last()));
        got.push(d.message.payload.parse::<u64>().unwrap());
    }
    let expected: Vec<u64> = (1..=last).collect();
    assert_eq!(got, expected, "each ACKed message once, in order");
}

#[test]
fn pub_sub_through_the_pair() {
    let pair = Pair::start(config(ComputeStep::Off));
    assert_eq!(pair.primary().status().role, Role::Primary);
    assert_eq!(pair.backup().status().role, Role::Backup);
    let mut sub = Subscriber::connect(pair.subscriber_config("t")).unwrap();
    wait_subscriptions(pair.primary(), 1);
    let mut publisher = Publisher::new(pair.publisher_config());
    publisher.publish("t", "hello").unwrap();
    assert_eq!(collect(&mut sub, 1), ["hello"]);
}

#[test]
fn the_backup_holds_a_message_before_it_is_acked_and_drops_it_on_clear() {
    // A long compute step keeps the message pending while we look.
    let pair = Pair::start(config(ComputeStep::BusyLoop(300..=300)));
    let mut client = LineClient::connect(pair.primary_addr);
    assert_eq!(client.ask("PUBLISH|t|x"), "ACK");
    assert_eq!(
        pair.backup().status().pending,
        1,
        "replicated before the ACK"
    );
    wait_until("the CLEAR to reach the backup", || {
        pair.backup().status().pending == 0
    });
    assert_eq!(pair.primary().status().counters.processed, 1);
}

#[test]
fn no_ack_until_the_backup_confirms_or_is_declared_down() {
    let pair = Pair::start(config(ComputeStep::Off));
    pair.backup().pause(); // hung: the link stays open but nothing is confirmed
    let mut client = LineClient::connect(pair.primary_addr);
    assert_eq!(client.ask("PUBLISH|t|x"), "ACK");
    // The ACK could only come from declaring the silent backup down.
    assert_eq!(pair.primary().status().backup, BackupHealth::Down);
    pair.backup().resume();
    pair.wait_replicating();
    assert_eq!(client.ask("PUBLISH|t|y"), "ACK");
}

#[test]
fn a_filed_ack_keeps_its_place_before_the_replies_to_later_lines() {
    let pair = Pair::start(config(ComputeStep::Off));
    pair.backup().pause(); // no confirmation: the ACK stays filed until the backup is declared down
    let mut client = LineClient::connect(pair.primary_addr);
    client.send("PUBLISH|t|x");
    thread::sleep(Duration::from_millis(20));
    client.send("PING");
    assert_eq!(client.recv().as_deref(), Some("ACK"));
    assert_eq!(client.recv().as_deref(), Some("PONG"));
    // Pipelined in one write, the same order.
    pair.backup().resume();
    pair.wait_replicating();
    client.send_raw(b"PUB|5|1|t|y\nPING\nPUB|5|2|t|z\n");
    let answers: Vec<_> = (0..3).map(|_| client.recv().unwrap()).collect();
    assert_eq!(answers, ["ACK|5|1", "PONG", "ACK|5|2"]);
}

#[test]
fn a_client_that_stops_sending_still_gets_its_last_ack() {
    let pair = Pair::start(config(ComputeStep::Off));
    pair.wait_replicating();
    let mut client = LineClient::connect(pair.primary_addr);
    client.send("PUBLISH|t|last");
    client.close_sending();
    assert_eq!(client.recv().as_deref(), Some("ACK"));
}

#[test]
fn require_backup_refuses_while_silent_but_not_when_dead() {
    let base = BrokerConfig {
        require_backup: true,
        ..config(ComputeStep::Off)
    };
    let mut pair = Pair::start(base);
    let mut client = LineClient::connect(pair.primary_addr);
    assert_eq!(client.ask("PUBLISH|t|1"), "ACK");
    pair.backup().pause();
    let answer = client.ask("PUBLISH|t|2");
    assert!(answer.starts_with("ERR|backup silent"), "{answer}");
    assert_eq!(pair.primary().status().backup, BackupHealth::Silent);
    pair.backup().resume();
    pair.wait_replicating();
    assert_eq!(client.ask("PUBLISH|t|3"), "ACK");
    // A backup that is certainly dead (refused) does not block the primary.
    pair.backup.take().unwrap().kill();
    wait_until("the dead backup to be noticed", || {
        pair.primary().status().backup == BackupHealth::Down
    });
    assert_eq!(client.ask("PUBLISH|t|4"), "ACK");
}

#[test]
fn takeover_replays_the_buffer_in_order_without_duplicates() {
    let valve = Valve::default();
    // Only the primary's worker waits at the valve.
    let mut pair = Pair::start_with(config(valve.step()), config(ComputeStep::Off));
    let mut sub = Subscriber::connect(pair.subscriber_config("t")).unwrap();
    wait_subscriptions(pair.primary(), 1);
    wait_subscriptions(pair.backup(), 1);
    let mut client = LineClient::connect(pair.primary_addr);
    for i in 1..=20 {
        client.send(&format!("PUB|7|{i}|t|{i}"));
    }
    for i in 1..=20 {
        assert_eq!(client.recv().unwrap(), format!("ACK|7|{i}"));
    }
    // The primary's worker holds message 1 at the valve: the backup holds all twenty.
    assert_eq!(pair.backup().status().pending, 20);
    // kill() closes every socket and returns at once, though its worker is held at the valve.
    let primary = pair.primary.take().unwrap();
    primary.kill();
    let replayed: Vec<(Source, String)> = (0..20)
        .map(|_| {
            let d = sub.recv_timeout(DEADLINE).expect("a replayed message");
            (d.source, d.message.payload)
        })
        .collect();
    valve.open();
    drop(primary);
    let expected: Vec<(Source, String)> = numbers(1..=20)
        .into_iter()
        .map(|p| (Source::Backup, p))
        .collect();
    assert_eq!(
        replayed, expected,
        "all twenty redone by the backup, in order"
    );
}

#[test]
fn publisher_fails_over_and_resends_without_duplicates() {
    let mut pair = Pair::start(config(ComputeStep::BusyLoop(1..=3)));
    let mut sub = Subscriber::connect(pair.subscriber_config("t")).unwrap();
    wait_subscriptions(pair.primary(), 1);
    wait_subscriptions(pair.backup(), 1);
    let mut publisher = Publisher::new(pair.publisher_config());
    for i in 1..=20 {
        publisher.publish("t", &i.to_string()).unwrap();
    }
    pair.primary.take().unwrap().kill();
    for i in 21..=40 {
        publisher.publish("t", &i.to_string()).unwrap();
    }
    assert_eq!(publisher.broker(), pair.backup_addr.to_string());
    assert_eq!(collect(&mut sub, 40), numbers(1..=40));
    // Failing over with message 21, the publisher resent 17..=21: the backup held 17..=20
    // already and ACKed them without processing them again.
    let counters = pair.backup().status().counters;
    assert_eq!(counters.duplicates, 4, "{counters:?}");
    assert_eq!(counters.published, 20, "{counters:?}");
}

#[test]
fn a_publish_on_the_backup_makes_it_probe_at_once() {
    // Probes so rare that only the publish can trigger the takeover within the test.
    let base = BrokerConfig {
        ping_interval: Duration::from_secs(60),
        ..config(ComputeStep::Off)
    };
    let pair = Pair::start(base);
    pair.primary().pause(); // hung, so no connection breaks to give it away
    let mut client = LineClient::connect(pair.backup_addr);
    assert_eq!(client.ask("PUBLISH|t|x"), "ACK");
    assert_eq!(pair.backup().status().role, Role::Primary);
    pair.primary().resume();
}

#[test]
fn the_subscriber_prints_each_id_once_across_brokers() {
    // Two fake brokers: the "backup" replays what the "primary" already delivered.
    let (fake_primary, fake_backup) = (listener(), listener());
    let config = SubscriberConfig::new(
        "t",
        fake_primary.local_addr().unwrap().to_string(),
        fake_backup.local_addr().unwrap().to_string(),
    );
    let mut sub = Subscriber::connect(config).unwrap();
    let serve = |l: TcpListener, lines: &'static [&'static str]| {
        thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut first = String::new();
            BufReader::new(s.try_clone().unwrap())
                .read_line(&mut first)
                .unwrap();
            assert_eq!(first, "SUB|t\n");
            for line in lines {
                s.write_all(format!("{line}\n").as_bytes()).unwrap();
            }
            s // keep the connection open until joined
        })
    };
    let p = serve(
        fake_primary,
        &["MSG|1.1|9|1|t|a", "MSG|1.1|9|2|t|b", "MSG|1.1|9|3|t|c"],
    );
    let first = collect(&mut sub, 3);
    assert_eq!(first, ["a", "b", "c"]);
    let b = serve(
        fake_backup,
        &["MSG|2.2|9|2|t|b", "MSG|2.2|9|3|t|c", "MSG|2.2|9|4|t|d"],
    );
    let d = sub.recv_timeout(DEADLINE).expect("the new message");
    assert_eq!(d.message.payload, "d");
    assert_eq!(d.epoch.term, 2);
    drop((p.join(), b.join()));
}

#[test]
fn a_paused_primary_is_fenced_and_steps_down_when_it_resumes() {
    let pair = Pair::start(config(ComputeStep::BusyLoop(1..=3)));
    let mut sub = Subscriber::connect(pair.subscriber_config("t")).unwrap();
    wait_subscriptions(pair.primary(), 1);
    wait_subscriptions(pair.backup(), 1);
    let publisher = Background::start(&pair, "t");
    wait_until("traffic through the primary", || {
        pair.primary().status().counters.processed > 20
    });
    let first_epoch = pair.primary().status().epoch;
    pair.primary().pause();
    wait_until("the backup to take over", || {
        pair.backup().status().role == Role::Primary
    });
    let taken = pair.backup().status();
    wait_until("traffic through the new primary", || {
        pair.backup().status().counters.processed > taken.counters.processed + 20
    });
    pair.primary().resume();
    wait_until("the old primary to step down and follow", || {
        let s = pair.primary().status();
        s.role == Role::Backup && s.epoch == pair.backup().status().epoch
    });
    let acked = publisher.stop();
    assert_exactly_once_in_order(&mut sub, &acked);
    let old = pair.primary().status();
    assert_eq!(old.counters.step_downs, 1, "{old:?}");
    assert!(taken.epoch > first_epoch);
    assert_eq!(
        taken.epoch.node, taken.node,
        "the new epoch is the backup's own"
    );
}

#[test]
fn a_restarted_broker_rejoins_as_backup_with_the_pending_log() {
    let valve = Valve::default();
    let base = config(valve.step());
    let mut pair = Pair::start(base.clone());
    pair.primary.take().unwrap().kill();
    wait_until("the backup to take over", || {
        pair.backup().status().role == Role::Primary
    });
    // Queue work on the new primary, held at the valve, so there is a log to hand over.
    let mut client = LineClient::connect(pair.backup_addr);
    for i in 1..=5 {
        assert_eq!(
            client.ask(&format!("PUB|3|{i}|t|{i}")),
            format!("ACK|3|{i}")
        );
    }
    // Restarted as the preferred `primary`, it still joins the active primary as backup.
    pair.primary = Some(restart_broker(
        pair.primary_addr,
        &base,
        pair.backup_addr,
        true,
    ));
    pair.wait_replicating();
    wait_until("the pending log to reach the rejoined backup", || {
        pair.primary().status().pending == 5
    });
    let rejoined = pair.primary().status();
    assert_eq!(rejoined.role, Role::Backup);
    assert_eq!(rejoined.epoch, pair.backup().status().epoch);
    valve.open();
    wait_until("the rejoined backup to see every CLEAR", || {
        pair.primary().status().pending == 0
    });
}

#[test]
fn kill_restart_kill_loses_and_duplicates_nothing() {
    let base = config(ComputeStep::BusyLoop(1..=3));
    let mut pair = Pair::start(base.clone());
    let mut sub = Subscriber::connect(pair.subscriber_config("t")).unwrap();
    wait_subscriptions(pair.primary(), 1);
    wait_subscriptions(pair.backup(), 1);
    let publisher = Background::start(&pair, "t");
    let processed =
        |b: &Option<edgebroker::Broker>| b.as_ref().unwrap().status().counters.processed;
    wait_until("traffic", || processed(&pair.primary) > 20);

    // First failure: the primary dies; the backup takes over.
    pair.primary.take().unwrap().kill();
    wait_until("takeover", || pair.backup().status().role == Role::Primary);
    let before = processed(&pair.backup);
    wait_until("traffic on the new primary", || {
        processed(&pair.backup) > before + 20
    });

    // It comes back and rejoins as backup.
    pair.primary = Some(restart_broker(
        pair.primary_addr,
        &base,
        pair.backup_addr,
        true,
    ));
    wait_subscriptions(pair.primary(), 1);
    pair.wait_replicating();
    assert_eq!(pair.primary().status().role, Role::Backup);

    // Second failure: the new primary dies; the restarted one takes over.
    pair.backup.take().unwrap().kill();
    wait_until("second takeover", || {
        pair.primary().status().role == Role::Primary
    });
    let before = processed(&pair.primary);
    wait_until("traffic after the second takeover", || {
        processed(&pair.primary) > before + 20
    });

    let acked = publisher.stop();
    assert_exactly_once_in_order(&mut sub, &acked);
}

#[test]
fn a_dead_backup_is_resynced_when_it_returns() {
    let base = config(ComputeStep::BusyLoop(1..=3));
    let mut pair = Pair::start(base.clone());
    let mut sub = Subscriber::connect(pair.subscriber_config("t")).unwrap();
    wait_subscriptions(pair.primary(), 1);
    let mut publisher = Publisher::new(pair.publisher_config());
    publisher.publish("t", "1").unwrap();

    pair.backup.take().unwrap().kill();
    wait_until("degraded mode", || {
        pair.primary().status().backup == BackupHealth::Down
    });
    publisher.publish("t", "2").unwrap(); // ACKed without replication

    pair.backup = Some(restart_broker(
        pair.backup_addr,
        &base,
        pair.primary_addr,
        false,
    ));
    wait_subscriptions(pair.backup(), 1);
    pair.wait_replicating();
    assert_eq!(pair.backup().status().role, Role::Backup);
    publisher.publish("t", "3").unwrap();

    // The resynced backup can carry the next failure.
    pair.primary.take().unwrap().kill();
    publisher.publish("t", "4").unwrap();
    assert_eq!(collect(&mut sub, 4), numbers(1..=4));
}

#[test]
fn a_healed_split_loses_nothing_the_old_primary_acked_alone() {
    let valve = Valve::default();
    let (pair, to_primary, to_backup) = proxied_pair(
        config(valve.step()), // the old primary's worker will hold what it accepts
        config(ComputeStep::Off),
    );
    let mut sub = Subscriber::connect(pair.subscriber_config("t")).unwrap();
    wait_subscriptions(pair.primary(), 1);
    wait_subscriptions(pair.backup(), 1);

    // Cut the link between the brokers only: both act as primary, in different epochs.
    to_primary.cut();
    to_backup.cut();
    wait_until("the backup to take over", || {
        pair.backup().status().role == Role::Primary
    });
    wait_until("the primary to give up its backup", || {
        pair.primary().status().backup == BackupHealth::Down
    });
    let mut client = LineClient::connect(pair.primary_addr);
    for i in 1..=5 {
        assert_eq!(
            client.ask(&format!("PUB|9|{i}|t|{i}")),
            format!("ACK|9|{i}")
        );
    }
    assert_eq!(
        pair.primary().status().pending,
        5,
        "ACKed alone, held at the valve"
    );
    // Let the new primary give up on a SYNC the cut holds: it reaches the old primary after
    // the heal, on a connection nobody reads any more.
    wait_until("a SYNC abandoned in the cut", || to_primary.abandoned() > 0);

    // Heal: the lower epoch steps down and hands its undelivered messages to the new primary.
    to_primary.heal();
    to_backup.heal();
    wait_until("the old primary to follow the new one", || {
        let s = pair.primary().status();
        s.role == Role::Backup && s.epoch == pair.backup().status().epoch
    });
    valve.open();
    assert_eq!(collect(&mut sub, 5), numbers(1..=5));
    // The two proxies heal one after the other, so a probe can still meet the cut and start
    // one more takeover; the pair must settle on one primary all the same.
    wait_until("exactly one primary, followed by the other", || {
        let (a, b) = (pair.primary().status(), pair.backup().status());
        a.role != b.role && a.epoch == b.epoch
    });
}

#[test]
fn require_backup_acks_nothing_while_the_link_is_cut() {
    let strict = BrokerConfig {
        require_backup: true,
        ..config(ComputeStep::Off)
    };
    let (pair, to_primary, to_backup) = proxied_pair(strict.clone(), strict);
    let mut to_a = LineClient::connect(pair.primary_addr);
    assert_eq!(to_a.ask("PUBLISH|t|before"), "ACK");
    to_primary.cut();
    to_backup.cut();
    wait_until("the primary to see its backup silent", || {
        pair.primary().status().backup == BackupHealth::Silent
    });
    wait_until("the backup to take over", || {
        pair.backup().status().role == Role::Primary
    });
    let mut to_b = LineClient::connect(pair.backup_addr);
    for client in [&mut to_a, &mut to_b] {
        let answer = client.ask("PUBLISH|t|during");
        assert!(answer.starts_with("ERR|backup silent"), "{answer}");
    }
    to_primary.heal();
    to_backup.heal();
    pair.wait_replicating();
    wait_until("one primary again", || {
        pair.primary().status().role == Role::Backup
    });
    assert_eq!(to_b.ask("PUBLISH|t|after"), "ACK");
}

#[test]
fn a_late_subscriber_skips_a_replay_of_what_came_before_it() {
    // Both workers wait at valves, so each side of the split forwards exactly when told.
    let (valve_a, valve_b) = (Valve::default(), Valve::default());
    let (pair, to_primary, to_backup) =
        proxied_pair(config(valve_a.step()), config(valve_b.step()));
    let mut client = LineClient::connect(pair.primary_addr);
    for i in 1..=3 {
        assert_eq!(
            client.ask(&format!("PUB|9|{i}|t|{i}")),
            format!("ACK|9|{i}")
        );
    }
    assert_eq!(pair.backup().status().pending, 3);

    // Split: the backup takes over and its worker holds the replay of 1..=3 at its valve,
    // while the old primary forwards 1..=3 and its CLEARs are lost in the cut.
    to_primary.cut();
    to_backup.cut();
    wait_until("the backup to take over", || {
        pair.backup().status().role == Role::Primary
    });
    valve_a.open();
    wait_until("the old primary to forward 1..=3", || {
        pair.primary().status().pending == 0
    });

    // A subscriber joins now: its first message is 4, from the old primary.
    let mut sub = Subscriber::connect(pair.subscriber_config("t")).unwrap();
    assert_eq!(client.ask("PUB|9|4|t|4"), "ACK|9|4");
    assert_eq!(collect(&mut sub, 1), ["4"]);

    // The replay of 1..=3 reaches it after 4: published before it joined, so not printed.
    valve_b.open();
    wait_until("the replay to be written", || {
        pair.backup().status().pending == 0
    });
    to_primary.heal();
    to_backup.heal();
    wait_until("the old primary to follow the new one", || {
        pair.primary().status().role == Role::Backup
    });
    let mut to_new = LineClient::connect(pair.backup_addr);
    assert_eq!(to_new.ask("PUB|9|5|t|5"), "ACK|9|5");
    // The new primary wrote the replay before 5, so 1..=3 would come first if printed.
    assert_eq!(collect(&mut sub, 1), ["5"]);
}

#[test]
fn kill_returns_at_once_like_a_crash_even_mid_compute() {
    // A compute step of a minute: a kill that waited for the worker would take minutes.
    let minute = ComputeStep::BusyLoop(60_000..=60_000);
    let mut pair = Pair::start_with(config(minute), config(ComputeStep::Off));
    let mut client = LineClient::connect(pair.primary_addr);
    for i in 1..=3 {
        assert_eq!(
            client.ask(&format!("PUB|7|{i}|t|{i}")),
            format!("ACK|7|{i}")
        );
    }
    wait_until("the worker to start computing", || {
        pair.primary().status().computing == 3
    });
    let primary = Arc::new(pair.primary.take().unwrap());
    let started = std::time::Instant::now();
    // Through a shared handle, from another thread, as a lesson would.
    let handle = Arc::clone(&primary);
    thread::spawn(move || handle.kill()).join().unwrap();
    drop(primary);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    wait_until("the backup to take over", || {
        pair.backup().status().role == Role::Primary
    });
    wait_until("the backup to redo all three", || {
        pair.backup().status().counters.processed == 3
    });
}

#[test]
fn fresh_brokers_settle_as_their_names_say_whatever_the_start_order() {
    init_logs();
    for round in 0..20u64 {
        // Two free ports, not listened on yet: the backup's first probe finds nothing there.
        let (p, b) = (listener(), listener());
        let (primary_addr, backup_addr) = (p.local_addr().unwrap(), b.local_addr().unwrap());
        drop((p, b));
        let started = |listen, peer: std::net::SocketAddr, preferred| {
            Broker::start(BrokerConfig {
                listen,
                peer: Some(peer.to_string()),
                preferred_primary: preferred,
                // Far more than the primary's delay, however busy the machine.
                startup_grace: Duration::from_secs(5),
                ..config(ComputeStep::Off)
            })
            .unwrap()
        };
        let backup = started(backup_addr, primary_addr, false);
        // The primary comes up to 100 ms later, well inside the backup's start-up grace.
        thread::sleep(Duration::from_millis(round * 5));
        let primary = started(primary_addr, backup_addr, true);
        wait_until("the pair to settle", || {
            let s = primary.status();
            s.role == Role::Primary && s.backup == BackupHealth::Up
        });
        assert_eq!(backup.status().role, Role::Backup, "round {round}");
        assert_eq!(backup.status().counters.takeovers, 0, "round {round}");
    }
}
