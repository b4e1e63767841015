//! The `pairstat` program against a pair started in-process: what it shows of a healthy
//! pair, and that it follows a failover (the backup primary in a newer epoch, the old primary
//! down) without stopping.

// The edgebroker crate's test helpers: an in-process pair.
#[path = "../../tests/common/mod.rs"]
mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::Instant;

use common::*;
use crossbeam_channel::Receiver;
use edgebroker::ComputeStep;
use edgebroker::protocol::Epoch;

const PAIRSTAT: &str = env!("CARGO_BIN_EXE_pairstat");

fn pairstat(args: &[&str]) -> Output {
    Command::new(PAIRSTAT)
        .args(args)
        .output()
        .expect("run pairstat")
}

/// A `pairstat` left running; `Drop` kills it, so a failing test leaves nothing behind.
struct Running {
    child: Child,
    lines: Receiver<String>,
}

impl Running {
    fn start(args: &[&str]) -> Running {
        let mut child = Command::new(PAIRSTAT)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn pairstat");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = crossbeam_channel::unbounded();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Running { child, lines }
    }

    /// Reads lines until one satisfies `want`, failing the test after [`DEADLINE`].
    fn wait_for_line(&self, what: &str, want: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + DEADLINE;
        let mut last = String::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if want(&line) => return line,
                Ok(line) => last = line,
                Err(_) => panic!("timed out waiting for {what}; last line: {last}"),
            }
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What `pairstat`'s JSON says of a broker that answered, from `"state"` up to the rates
/// (which depend on timing).
fn up(role: &str, epoch: Epoch, changed: bool, backup: &str) -> String {
    format!(
        r#""state":"up","role":"{role}","epoch":"{epoch}","changed":{changed},"backup":"{backup}","#
    )
}

/// The JSON object for the broker at `addr` in one line of `pairstat --json`.
fn broker_json(line: &str, addr: &str) -> String {
    let start = line
        .find(&format!(r#"{{"addr":"{addr}","#))
        .unwrap_or_else(|| panic!("no object for {addr} in {line}"));
    let object = &line[start..];
    object[..object.find('}').map_or(object.len(), |i| i + 1)].to_string()
}

#[test]
fn once_json_shows_both_roles_and_the_epoch() {
    let pair = Pair::start(config(ComputeStep::Off));
    let epoch = pair.primary().status().epoch;
    let (p, b) = (pair.primary_addr.to_string(), pair.backup_addr.to_string());

    let out = pairstat(&[&p, &b, "--once", "--json"]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "one JSON line: {text}");
    let line = lines[0];
    assert!(
        line.starts_with(r#"{"at_ms":"#) && line.ends_with(r#""events":[]}"#),
        "{line}"
    );
    let primary = broker_json(line, &p);
    assert!(
        primary.contains(&up("primary", epoch, false, "up")),
        "{primary}"
    );
    let backup = broker_json(line, &b);
    assert!(
        backup.contains(&up("backup", epoch, false, "-")),
        "{backup}"
    );
    assert!(backup.ends_with(r#""takeovers":0}"#), "{backup}");
}

#[test]
fn once_prints_one_table() {
    let pair = Pair::start(config(ComputeStep::Off));
    let p = pair.primary_addr.to_string();
    let out = pairstat(&[&p, "--once"]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    let row = text
        .lines()
        .find(|l| l.starts_with(&p))
        .unwrap_or_else(|| panic!("no row for {p}: {text}"));
    let epoch = pair.primary().status().epoch.to_string();
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cells[..4], [p.as_str(), "primary", &epoch, "up"], "{text}");
    assert!(
        !text.contains('\x1b'),
        "no terminal codes into a pipe: {text:?}"
    );
    assert!(text.contains("no role or epoch change seen yet"), "{text}");
}

#[test]
fn a_kill_shows_the_backup_as_primary_in_a_newer_epoch_and_the_old_one_down() {
    let mut pair = Pair::start(config(ComputeStep::Off));
    let old_epoch = pair.primary().status().epoch;
    let (p, b) = (pair.primary_addr.to_string(), pair.backup_addr.to_string());
    let view = Running::start(&[&p, &b, "--json", "--interval-ms", "50"]);
    let before = view.wait_for_line("the first poll", |l| l.contains(&p));
    assert!(broker_json(&before, &p).contains(&up("primary", old_epoch, false, "up")));

    pair.primary.take().expect("primary running").kill();
    let after = view.wait_for_line("the takeover", |line| {
        broker_json(line, &b).contains(r#""role":"primary""#)
    });
    let old = broker_json(&after, &p);
    assert!(old.contains(r#""state":"down""#), "{old}");
    let new_epoch = pair.backup().status().epoch;
    assert!(new_epoch > old_epoch, "{new_epoch} after {old_epoch}");
    let new = broker_json(&after, &b);
    assert!(
        new.contains(&up("primary", new_epoch, true, "down")),
        "{new}"
    );
    assert!(new.ends_with(r#""takeovers":1}"#), "{new}");

    // The poll that saw the change reports it as an event.
    let change =
        format!(r#""addr":"{b}","what":"backup -> primary, epoch {old_epoch} -> {new_epoch}""#);
    assert!(after.contains(&change), "{after}");
}

#[test]
fn a_broker_that_does_not_answer_is_a_down_row_not_an_error() {
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").to_string()
    };
    let out = pairstat(&[&closed, "--once", "--json"]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!(
            r#"{{"addr":"{closed}","state":"down","reason":"connection refused"}}"#
        )),
        "{text}"
    );
}

#[test]
fn help_and_bad_arguments() {
    let help = pairstat(&["--help"]);
    assert_eq!(help.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&help.stdout).starts_with("usage: pairstat "));
    for args in [
        &[][..],
        &["nocolon"][..],
        &["a:1", "b:2", "c:3"][..],
        &["a:1", "--interval-ms", "0"][..],
        &["a:1", "--interval-ms", "soon"][..],
        &["a:1", "--bogus"][..],
    ] {
        let out = pairstat(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        let first = err.lines().next().unwrap_or_default();
        assert!(first.starts_with("pairstat: "), "{args:?}: {err}");
        assert!(err.contains("usage: pairstat"), "{args:?}: {err}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
}

#[test]
fn with_a_witness_it_is_one_more_row_and_each_broker_shows_its_view_of_it() {
    let witness = edgebroker::Witness::start(edgebroker::WitnessConfig::fast()).unwrap();
    let with_witness = edgebroker::BrokerConfig {
        witness: Some(witness.local_addr().to_string()),
        ..config(ComputeStep::Off)
    };
    let pair = Pair::start(with_witness);
    let epoch = pair.primary().status().epoch;
    wait_until("the witness to lease the primary's epoch", || {
        witness.status().holder == Some(epoch)
    });
    wait_until("the backup to see the witness", || {
        pair.backup().status().witness == edgebroker::broker::WitnessView::Up
    });
    let (p, b, w) = (
        pair.primary_addr.to_string(),
        pair.backup_addr.to_string(),
        witness.local_addr().to_string(),
    );
    let out = pairstat(&[&p, &b, "--witness", &w, "--once", "--json"]);
    assert_eq!(out.status.code(), Some(0));
    let line = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let primary = broker_json(&line, &p);
    assert!(
        primary.contains(r#""witness":"up "#),
        "a lease left: {primary}"
    );
    let backup = broker_json(&line, &b);
    assert!(backup.contains(r#""witness":"up","#), "{backup}");
    let witness_row = broker_json(&line, &w);
    let want = format!(r#""role":"witness","epoch":"{epoch}","#);
    assert!(witness_row.contains(&want), "{witness_row}");
    assert!(
        witness_row.contains(r#""witness":"lease "#),
        "{witness_row}"
    );
}

/// A fake broker on a free loopback port: it answers the first connection's first line with
/// `answer`, then closes. Returns its address.
fn fake_broker(answer: &'static str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    thread::spawn(move || {
        if let Ok((stream, _)) = listener.accept() {
            let mut line = String::new();
            let mut reader = BufReader::new(&stream);
            if reader.read_line(&mut line).is_ok() {
                let _ = (&stream).write_all(answer.as_bytes());
            }
        }
    });
    addr
}

#[test]
fn the_table_shows_only_printable_characters_whatever_a_server_sends() {
    // Clear the screen, ring the bell, write the clipboard (OSC 52), an 8-bit CSI, DEL, NEL.
    let fields = fake_broker(
        "STATUS|role=primary|epoch=1.1\x1b[2J|backup=up\x07\x7f\
         |witness=\x1b]52;c;\x07\u{9b}|pending=3|takeovers=0\n",
    );
    let refusal = fake_broker("ERR|no\x1b]52;c;b3duZWQ=\x07\u{9b}2J\x1b]0;owned\x07\n");
    let role = fake_broker("STATUS|role=\x1b[31mwitness\u{85}|lease_left_ms=5\n");
    let out = pairstat(&[&fields, &refusal, "--witness", &role, "--once"]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8(out.stdout).expect("UTF-8");
    let bad: Vec<char> = text
        .chars()
        .filter(|&c| c != '\n' && (c < ' ' || ('\x7f'..='\u{9f}').contains(&c)))
        .collect();
    assert!(bad.is_empty(), "control characters {bad:?} in {text:?}");
    // What is printable is shown, each control character replaced by one `?`, so the columns
    // stay aligned: a row of values that fit ends where the heading does.
    let row = |addr: &str| {
        text.lines()
            .find(|l| l.starts_with(addr))
            .unwrap_or_else(|| panic!("no row for {addr}: {text}"))
    };
    let heading = row("address");
    let first = row(&fields);
    for cell in ["1.1?[2J", "up??", "?]52;c;??"] {
        assert!(first.contains(cell), "{cell} in {first}");
    }
    assert_eq!(first.chars().count(), heading.chars().count(), "{text}");
    assert!(row(&refusal).ends_with("no?]52;c;b3duZWQ=??2J?]0;owned?"));
    assert!(row(&role).contains(" ?[31mwitness? "));
}
