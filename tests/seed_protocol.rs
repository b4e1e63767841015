//! The seed's wire protocol byte for byte, as `nc` would speak it (SPEC §4), the project's
//! idempotent verbs, the assignment's base scenario, and the programs' command lines (§3).
//!
//! Brokers run in-process on loopback port 0; only the command-line tests start the real
//! binaries.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;

use common::{DEADLINE, LineClient, Pair};
use edgebroker::protocol::Role;
use edgebroker::{Broker, BrokerConfig, ComputeStep};

// ---- helpers local to this file ----

/// A lone primary with the compute step off.
fn lone() -> Broker {
    common::lone_broker(common::config(ComputeStep::Off))
}

/// Connects a raw client and subscribes it to `topics` with the seed's `SUBSCRIBE`, then waits
/// until `broker` counts `total` subscriptions, so a publish after this reaches it.
fn raw_subscriber(broker: &Broker, topics: &[&str], total: usize) -> LineClient {
    let mut sub = LineClient::connect(broker.local_addr());
    for topic in topics {
        sub.send(&format!("SUBSCRIBE|{topic}"));
    }
    common::wait_subscriptions(broker, total);
    sub
}

/// Publishes one seed-form message on its own connection and checks the answer is `ACK`.
fn publish(addr: SocketAddr, topic: &str, payload: &str) {
    let mut client = LineClient::connect(addr);
    assert_eq!(client.ask(&format!("PUBLISH|{topic}|{payload}")), "ACK");
}

/// Reads the next line, failing the test at EOF.
fn next(client: &mut LineClient) -> String {
    client.recv().expect("a line before EOF")
}

// ---- PUBLISH ----

#[test]
fn publish_is_answered_by_exactly_ack() {
    let broker = lone();
    let mut client = LineClient::connect(broker.local_addr());
    assert_eq!(client.ask("PUBLISH|t|p"), "ACK");
    // The connection stays usable, and nothing but the ACK was sent before the PONG.
    assert_eq!(client.ask("PING"), "PONG");
    assert_eq!(broker.status().counters.published, 1);
}

#[test]
fn many_publishes_on_one_connection_are_acked_in_order() {
    let broker = lone();
    let mut sub = raw_subscriber(&broker, &["t"], 1);
    let mut client = LineClient::connect(broker.local_addr());
    // Pipelined in one write, as `nc < file` would send them.
    let lines: String = (1..=20).map(|i| format!("PUBLISH|t|m{i}\n")).collect();
    client.send_raw(lines.as_bytes());
    for i in 1..=20 {
        assert_eq!(next(&mut client), "ACK", "answer to publish {i}");
    }
    for i in 1..=20 {
        assert_eq!(next(&mut sub), format!("m{i}"));
    }
    assert_eq!(client.ask("PING"), "PONG", "no extra answers were queued");
}

#[test]
fn one_connection_per_message_works() {
    let broker = lone();
    let mut sub = raw_subscriber(&broker, &["t"], 1);
    for i in 1..=5 {
        publish(broker.local_addr(), "t", &format!("single{i}"));
    }
    for i in 1..=5 {
        assert_eq!(next(&mut sub), format!("single{i}"));
    }
}

#[test]
fn a_publish_from_a_client_that_closes_at_once_is_delivered() {
    let broker = lone();
    let mut sub = raw_subscriber(&broker, &["t"], 1);
    {
        let mut client = LineClient::connect(broker.local_addr());
        client.send("PUBLISH|t|x");
        // Dropped here without reading the ACK.
    }
    assert_eq!(next(&mut sub), "x");
    assert_eq!(broker.status().counters.published, 1);
}

// ---- SUBSCRIBE ----

#[test]
fn subscribers_receive_raw_payload_lines_exactly() {
    let broker = lone();
    let mut sub = raw_subscriber(&broker, &["t"], 1);
    let payloads = ["plain", "a|b||c", "", "  spaced  ", "ends with pipe|"];
    let mut client = LineClient::connect(broker.local_addr());
    for p in payloads {
        assert_eq!(client.ask(&format!("PUBLISH|t|{p}")), "ACK", "{p:?}");
    }
    // A `\r\n` line ending is not part of the payload.
    client.send_raw(b"PUBLISH|t|crlf\r\n");
    assert_eq!(next(&mut client), "ACK");
    for p in payloads.into_iter().chain(["crlf"]) {
        assert_eq!(next(&mut sub), p);
    }
}

#[test]
fn one_connection_may_subscribe_to_two_topics() {
    let broker = lone();
    let mut sub = raw_subscriber(&broker, &["a", "b"], 2);
    publish(broker.local_addr(), "a", "on-a");
    publish(broker.local_addr(), "b", "on-b");
    let mut got = vec![next(&mut sub), next(&mut sub)];
    got.sort();
    assert_eq!(got, ["on-a", "on-b"]);
    // A topic it did not subscribe to is not delivered: the next line is the next `a`.
    publish(broker.local_addr(), "c", "on-c");
    publish(broker.local_addr(), "a", "on-a-again");
    assert_eq!(next(&mut sub), "on-a-again");
}

// ---- PING ----

#[test]
fn ping_forms_are_answered_by_exactly_pong() {
    let broker = lone();
    let mut client = LineClient::connect(broker.local_addr());
    for ping in ["PING", "PING||", "PING|anything", "PING|a|b|c"] {
        assert_eq!(client.ask(ping), "PONG", "{ping:?}");
    }
    client.send_raw(b"PING\r\n");
    assert_eq!(next(&mut client), "PONG");
}

// ---- malformed input ----

#[test]
fn malformed_lines_get_err_with_reason_and_the_connection_stays_usable() {
    let broker = lone();
    let mut client = LineClient::connect(broker.local_addr());
    let cases: [(&[u8], &str); 10] = [
        (b"", "empty verb"),
        (b"PUBLISH", "PUBLISH is missing its topic"),
        (b"PUBLISH|t", "PUBLISH is missing its payload"),
        (b"PUBLISH||x", "empty topic"),
        (b"SUBSCRIBE|", "empty topic"),
        (
            b"publish|t|x",
            "unknown verb 'publish' (verbs are upper-case)",
        ),
        (b"FROB", "unknown verb 'FROB'"),
        (b"|||", "empty verb"),
        (b"PUBLISH|t|\xff\xfe", "line is not valid UTF-8"),
        (b"PUB|x|1|t|p", "bad publisher key 'x'"),
    ];
    for (line, reason) in cases {
        let mut raw = line.to_vec();
        raw.push(b'\n');
        client.send_raw(&raw);
        assert_eq!(
            next(&mut client),
            format!("ERR|{reason}"),
            "{:?}",
            String::from_utf8_lossy(line)
        );
        assert_eq!(
            client.ask("PING"),
            "PONG",
            "usable after {:?}",
            String::from_utf8_lossy(line)
        );
    }
    let status = client.status();
    assert_eq!(status["published"], "0", "no malformed line was published");
    assert_eq!(status["subscriptions"], "0", "no malformed line subscribed");
}

#[test]
fn a_line_over_the_limit_gets_err_then_eof() {
    let broker = common::lone_broker(BrokerConfig {
        max_line_bytes: 1024,
        ..common::config(ComputeStep::Off)
    });
    let mut client = LineClient::connect(broker.local_addr());
    let mut line = vec![b'a'; 5000];
    line.push(b'\n');
    client.send_raw(&line);
    assert_eq!(client.recv().as_deref(), Some("ERR|line too long"));
    assert_eq!(
        client.recv(),
        None,
        "the connection is closed after the limit"
    );
    // The broker itself is fine.
    let mut other = LineClient::connect(broker.local_addr());
    assert_eq!(other.ask("PING"), "PONG");
}

// ---- the assignment's base scenario ----

#[test]
fn base_scenario_topics_are_isolated_and_late_subscribers_join() {
    let pair = Pair::start(common::config(ComputeStep::BusyLoop(1..=3)));
    let primary = pair.primary();
    let addr = pair.primary_addr;

    let mut s1 = raw_subscriber(primary, &["topicA"], 1);
    let mut s2 = raw_subscriber(primary, &["topicB"], 2);

    publish(addr, "topicA", "Hello");
    assert_eq!(next(&mut s1), "Hello");
    // Topics are processed in order by one worker, so if S2 had been sent Hello it would
    // come before this marker.
    publish(addr, "topicB", "marker-1");
    assert_eq!(
        next(&mut s2),
        "marker-1",
        "S2 must not receive topicA's Hello"
    );

    let mut s3 = raw_subscriber(primary, &["topicA"], 3);
    publish(addr, "topicA", "Bye");
    assert_eq!(next(&mut s1), "Bye");
    assert_eq!(
        next(&mut s3),
        "Bye",
        "S3 joined after Hello, so Bye is its first line"
    );
    publish(addr, "topicB", "marker-2");
    assert_eq!(
        next(&mut s2),
        "marker-2",
        "S2 must not receive topicA's Bye"
    );
}

// ---- STATUS ----

#[test]
fn status_reports_role_and_counts_publishes() {
    let pair = Pair::start(common::config(ComputeStep::Off));
    let mut on_primary = LineClient::connect(pair.primary_addr);
    let mut on_backup = LineClient::connect(pair.backup_addr);

    let line = on_primary.ask("STATUS");
    assert!(line.starts_with("STATUS|"), "{line}");
    assert!(
        line.split('|').skip(1).all(|kv| kv.contains('=')),
        "every field is key=value: {line}"
    );

    let before = on_primary.status();
    assert_eq!(before["role"], "primary");
    assert_eq!(on_backup.status()["role"], "backup");
    let published: u64 = before["published"].parse().expect("a count");

    publish(pair.primary_addr, "t", "counted");
    let after = on_primary.status();
    assert_eq!(after["published"], (published + 1).to_string());
    assert_eq!(after["role"], "primary");
    assert_eq!(on_backup.status()["published"], "0");
}

// ---- the idempotent publish ----

#[test]
fn idempotent_publish_is_acked_with_its_id_and_delivered_once() {
    let pair = Pair::start(common::config(ComputeStep::Off));
    let mut sub = LineClient::connect(pair.primary_addr);
    sub.send("SUB|t");
    common::wait_subscriptions(pair.primary(), 1);
    let epoch = pair.primary().status().epoch.to_string();

    let mut client = LineClient::connect(pair.primary_addr);
    assert_eq!(client.ask("PUB|42|1|t|x"), "ACK|42|1");
    assert_eq!(
        client.ask("PUB|42|1|t|x"),
        "ACK|42|1",
        "a resend is ACKed again"
    );
    assert_eq!(client.ask("PUB|42|2|t|y"), "ACK|42|2");

    // MSG|<epoch>|<publisher>|<seq>|<topic>|<payload>, the publisher's id derived from its
    // key 42.
    let id = edgebroker::protocol::publisher_id(42);
    assert_eq!(next(&mut sub), format!("MSG|{epoch}|{id}|1|t|x"));
    assert_eq!(
        next(&mut sub),
        format!("MSG|{epoch}|{id}|2|t|y"),
        "the resend of 42:1 must not be delivered again"
    );
    let status = client.status();
    assert_eq!(status["published"], "2");
    assert_eq!(status["duplicates"], "1");
}

// ---- a publish to the backup ----

#[test]
fn seed_publish_to_the_backup_names_the_primary_and_delivers_nothing() {
    let pair = Pair::start(common::config(ComputeStep::Off));
    let mut on_primary = raw_subscriber(pair.primary(), &["t"], 1);
    let _on_backup = raw_subscriber(pair.backup(), &["t"], 1);

    let mut client = LineClient::connect(pair.backup_addr);
    assert_eq!(
        client.ask("PUBLISH|t|lost?"),
        format!("ERR|not primary; the primary is {}", pair.primary_addr)
    );
    assert_eq!(pair.backup().status().role, Role::Backup, "no takeover");

    // If the refused message had been relayed or processed anywhere, it would come first.
    publish(pair.primary_addr, "t", "marker");
    assert_eq!(next(&mut on_primary), "marker");
    let backup = pair.backup().status().counters;
    assert_eq!(
        (backup.published, backup.delivered),
        (0, 0),
        "the backup kept nothing"
    );
    assert_eq!(pair.primary().status().counters.published, 1);
}

// ---- the programs' command lines ----

const PROGRAMS: [(&str, &str); 6] = [
    ("primary", env!("CARGO_BIN_EXE_primary")),
    ("backup", env!("CARGO_BIN_EXE_backup")),
    ("publisher", env!("CARGO_BIN_EXE_publisher")),
    ("test_publisher", env!("CARGO_BIN_EXE_test_publisher")),
    ("subscriber", env!("CARGO_BIN_EXE_subscriber")),
    ("witness", env!("CARGO_BIN_EXE_witness")),
];

/// Runs a program to completion. These invocations end at once, but a hang must not hang the
/// test run: after the deadline the child is killed and the test fails.
fn run(bin: &str, args: &[&str]) -> Output {
    let child = Command::new(bin)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn program");
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(DEADLINE) {
        Ok(output) => output.expect("collect the program's output"),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("{bin} {args:?} did not exit within {DEADLINE:?}");
        }
    }
}

#[test]
fn every_program_answers_help_with_its_usage() {
    for (name, bin) in PROGRAMS {
        for flag in ["--help", "-h"] {
            let out = run(bin, &[flag]);
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert_eq!(out.status.code(), Some(0), "{name} {flag}");
            assert!(
                stdout.starts_with(&format!("usage: {name} ")),
                "{name} {flag} prints its usage on stdout:\n{stdout}"
            );
            assert!(stdout.contains("--help"), "{name}: {stdout}");
        }
    }
}

#[test]
fn a_bad_argument_exits_2_with_one_error_line_and_usage_on_stderr() {
    let cases: [(&str, &[&str], &str); 8] = [
        ("primary", &["notaport"], "bad port 'notaport'"),
        ("backup", &["1"], "missing arguments"),
        (
            "publisher",
            &["t", "m", "nocolon", "127.0.0.1:1"],
            "bad address 'nocolon'",
        ),
        (
            "test_publisher",
            &["t", "127.0.0.1:1", "127.0.0.1:2", "--rate-hz", "0"],
            "--rate-hz",
        ),
        (
            "subscriber",
            &["t", "127.0.0.1:1", "127.0.0.1:2", "--nope"],
            "unknown flag '--nope'",
        ),
        ("primary", &["0", "--compute-ms", "9-3"], "--compute-ms"),
        ("witness", &[], "missing arguments"),
        (
            "witness",
            &["0", "--lease-ms", "0"],
            "--lease-ms must be at least 1",
        ),
    ];
    for (name, args, error) in cases {
        let bin = PROGRAMS
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, b)| *b)
            .expect("a program");
        let out = run(bin, args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name} {args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{name} {args:?}: nothing on stdout");
        let mut lines = stderr.lines();
        let first = lines.next().unwrap_or_default();
        assert!(
            first.starts_with(&format!("{name}: ")) && first.contains(error),
            "{name} {args:?}: first stderr line is the error, got {first:?}"
        );
        let rest: Vec<&str> = lines.collect();
        assert_eq!(
            rest.first(),
            Some(&""),
            "a blank line after the error:\n{stderr}"
        );
        assert!(
            rest.get(1)
                .is_some_and(|l| l.starts_with(&format!("usage: {name} "))),
            "{name} {args:?}: usage follows the error line:\n{stderr}"
        );
    }
}

#[test]
fn a_broker_on_port_0_prints_its_address_first() {
    let child = Command::new(env!("CARGO_BIN_EXE_primary"))
        .args(["0", "--bind", "127.0.0.1", "--compute-ms", "0"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn primary");
    let mut guard = common::ChildGuard(Some(child));
    let stdout = guard
        .0
        .as_mut()
        .and_then(|c| c.stdout.take())
        .expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut first = String::new();
        let _ = BufReader::new(stdout).read_line(&mut first);
        let _ = tx.send(first);
    });
    let first = rx
        .recv_timeout(DEADLINE)
        .expect("a first stdout line before the deadline");
    let addr: SocketAddr = first
        .trim_end()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("first line {first:?}"))
        .parse()
        .expect("an address");
    assert!(addr.ip().is_loopback(), "{addr}");
    assert_ne!(addr.port(), 0, "the real port, not 0");

    // It really listens there.
    let mut client = LineClient::connect(addr);
    assert_eq!(client.ask("PING"), "PONG");
    drop(guard);
}
