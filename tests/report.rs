//! Drives the `report` program on small hand-written run logs: the exit code is the verdict
//! run_test.sh relies on, so each test checks it together with what is printed.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::{fs, process};

/// A scratch directory under the system temp dir, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!(
            "edgebroker-report-test-{}-{n}-{name}",
            process::id()
        ));
        // A leftover from an earlier run with the same pid is stale; start clean.
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("create scratch dir");
        Scratch(dir)
    }

    /// Writes `text` to `name` in the scratch dir and returns its path.
    fn file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        fs::write(&path, text).expect("write scratch file");
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn report(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_report"))
        .args(args)
        .output()
        .expect("run report")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn p(path: &Path) -> &str {
    path.to_str().expect("temp paths are UTF-8")
}

const T0: u64 = 1_764_424_800_000;

/// Subscriber output: `seqs` from `source`, 100 ms apart starting at `T0 + start_ms`.
fn sub_lines(source: &str, seqs: std::ops::RangeInclusive<u64>, start_ms: u64) -> String {
    seqs.enumerate()
        .map(|(i, seq)| format!("{} [{source}] {seq}\n", T0 + start_ms + 100 * i as u64))
        .collect()
}

/// test_publisher output: one ACK line per seq, 100 ms apart.
fn ack_lines(seqs: impl IntoIterator<Item = u64>) -> String {
    seqs.into_iter()
        .map(|seq| format!("{} ACK {seq}\n", T0 + 100 * seq))
        .collect()
}

#[test]
fn clean_failover_passes_and_draws_the_run() {
    let dir = Scratch::new("pass");
    // Primary delivers 1..=20 until T0+1900, is killed at T0+1950, backup goes on at T0+2500.
    let mut sub = sub_lines("PRIMARY", 1..=20, 0);
    sub.push_str(&sub_lines("BACKUP", 21..=30, 2500));
    let sub = dir.file("subscriber.out", &sub);
    let acks = dir.file("test_publisher.out", &ack_lines(1..=30));
    // Each message is published 20 ms before the primary would deliver it; seq 21 is
    // published just before the kill and waits out the failover: 570 ms.
    let published: String = (1..=30u64)
        .map(|seq| {
            let at = if seq == 21 {
                T0 + 1930
            } else {
                T0 + 100 * (seq - 1) - 20
            };
            format!("{at} PUBLISH {seq}\n")
        })
        .collect();
    let published = dir.file("published.log", &published);
    let svg = dir.0.join("run.svg");
    let kill = (T0 + 1950).to_string();

    let out = report(&[
        "--sub",
        p(&sub),
        "--acks",
        p(&acks),
        "--published",
        p(&published),
        "--sent",
        "30",
        "--kill-ms",
        &kill,
        "--max-silence-ms",
        "1000",
        "--svg",
        p(&svg),
        "--title",
        "test <run>",
    ]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}{}", stderr(&out));
    assert!(text.contains("RESULT: PASS"), "{text}");
    assert!(text.contains("longest silence:   600 ms"), "{text}");
    assert!(
        text.contains("first after kill:  seq 21 from BACKUP"),
        "{text}"
    );

    let picture = fs::read_to_string(&svg).expect("svg written");
    assert!(picture.starts_with("<svg"), "{picture}");
    assert!(picture.contains("primary killed"));
    assert!(picture.contains("test &lt;run&gt;"));

    // The zoom: 1.5 s before the kill to 1 s after the backup's first delivery, one tick per
    // delivery in it (seq 6 to 30), the 600 ms silence labelled.
    let zoom = panel(&picture, "zoom-1");
    assert_eq!(zoom.matches(r#"class="tick""#).count(), 25, "{zoom}");
    assert!(zoom.contains(">600 ms without a delivery</text>"), "{zoom}");
    assert!(zoom.contains(">zoom: primary killed</text>"), "{zoom}");
    assert!(!picture.contains(r#"id="zoom-2""#));

    // The latency of every message, the one that waited out the failover the highest.
    let latency = panel(&picture, "latency");
    assert_eq!(
        latency.matches(r#"class="latency""#).count(),
        30,
        "{latency}"
    );
    assert!(
        latency.contains("median 20 ms, max 570 ms (seq 21)"),
        "{latency}"
    );
}

/// The SVG group with this id, up to the next group's start or the end of the picture.
fn panel<'a>(picture: &'a str, id: &str) -> &'a str {
    let start = picture
        .find(&format!(r#"<g id="{id}">"#))
        .unwrap_or_else(|| panic!("no panel {id} in {picture}"));
    let rest = &picture[start + 1..];
    let end = rest.find(r#"<g id=""#).unwrap_or(rest.len());
    &rest[..end]
}

#[test]
fn missing_acked_seq_fails_and_is_named() {
    let dir = Scratch::new("missing");
    let mut sub = sub_lines("PRIMARY", 1..=6, 0);
    sub.push_str(&sub_lines("PRIMARY", 8..=10, 700));
    sub.push_str("some stray line\n");
    let sub = dir.file("subscriber.out", &sub);
    let acks = dir.file("test_publisher.out", &ack_lines(1..=10));

    let out = report(&["--sub", p(&sub), "--acks", p(&acks)]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}{}", stderr(&out));
    assert!(text.contains("missing:           1 (seq 7)"), "{text}");
    assert!(
        text.contains("RESULT: FAIL (1 ACKed message never delivered)"),
        "{text}"
    );
    // The stray line is reported, not fatal.
    assert!(text.contains("unparsed lines:"), "{text}");
    assert!(stderr(&out).contains("some stray line"), "{}", stderr(&out));
}

#[test]
fn long_silence_after_kill_fails() {
    let dir = Scratch::new("silence");
    let mut sub = sub_lines("PRIMARY", 1..=5, 0);
    sub.push_str(&sub_lines("BACKUP", 6..=8, 3000));
    let sub = dir.file("subscriber.out", &sub);
    let acks = dir.file("test_publisher.out", &ack_lines(1..=8));
    let kill = (T0 + 450).to_string();

    let out = report(&["--sub", p(&sub), "--acks", p(&acks), "--kill-ms", &kill]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("silence around the kill 2600 ms > 1000 ms"),
        "{text}"
    );
}

/// Kill, restart, kill: the primary delivers 1..=10 until T0+900 and is killed at T0+950; the
/// backup delivers 11..=190 from T0+1500 to T0+19400 and is killed at T0+19450; the restarted
/// broker delivers 191..=200 from T0+20200 (silences of 600 and 800 ms).
fn two_failovers(dir: &Scratch) -> (PathBuf, PathBuf, [String; 2]) {
    let mut sub = sub_lines("PRIMARY", 1..=10, 0);
    sub.push_str(&sub_lines("BACKUP", 11..=190, 1500));
    sub.push_str(&sub_lines("PRIMARY", 191..=200, 20_200));
    let sub = dir.file("subscriber.out", &sub);
    let acks = dir.file("test_publisher.out", &ack_lines(1..=200));
    let kills = [(T0 + 950).to_string(), (T0 + 19_450).to_string()];
    (sub, acks, kills)
}

#[test]
fn every_fault_gets_a_silence_line_and_all_must_pass() {
    let dir = Scratch::new("two-kills");
    let (sub, acks, [k1, k2]) = two_failovers(&dir);
    let svg = dir.0.join("run.svg");
    let args = |limit: &'static str| {
        let mut args = vec!["--sub", p(&sub), "--acks", p(&acks)];
        args.extend([
            "--kill-ms",
            &k2,
            "--kill-ms",
            &k1,
            "--max-silence-ms",
            limit,
        ]);
        args.extend(["--svg", p(&svg)]);
        args
    };

    let out = report(&args("800"));
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}{}", stderr(&out));
    assert!(
        text.contains("silence at kill 1:  600 ms, from 50 ms before kill 1"),
        "{text}"
    );
    assert!(
        text.contains("silence at kill 2:  800 ms, from 50 ms before kill 2"),
        "{text}"
    );
    assert!(text.contains("RESULT: PASS"), "{text}");
    let picture = fs::read_to_string(&svg).expect("svg written");
    assert!(picture.contains("primary killed (1)"), "{picture}");
    assert!(picture.contains("primary killed (2)"), "{picture}");
    assert!(panel(&picture, "zoom-1").contains(">600 ms without a delivery<"));
    assert!(panel(&picture, "zoom-2").contains(">800 ms without a delivery<"));
    // Without a publish log there is no latency to draw, and the panel says how to get one.
    let latency = panel(&picture, "latency");
    assert!(!latency.contains(r#"class="latency""#), "{latency}");
    assert!(latency.contains("--publish-log"), "{latency}");

    // The first failover alone would pass; the second one's silence fails the run.
    let out = report(&args("700"));
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("RESULT: FAIL (silence around kill 2: 800 ms > 700 ms)"),
        "{text}"
    );
}

#[test]
fn fault_label_names_the_fault_in_the_report_and_the_picture() {
    let dir = Scratch::new("label");
    let mut sub = sub_lines("PRIMARY", 1..=20, 0);
    sub.push_str(&sub_lines("BACKUP", 21..=30, 3000));
    let sub = dir.file("subscriber.out", &sub);
    let acks = dir.file("test_publisher.out", &ack_lines(1..=30));
    let svg = dir.0.join("run.svg");
    let stop = (T0 + 1950).to_string();

    let out = report(&[
        "--sub",
        p(&sub),
        "--acks",
        p(&acks),
        "--kill-ms",
        &stop,
        "--fault-label",
        "primary stopped (SIGSTOP 3 s)",
        "--max-silence-ms=2000",
        "--svg",
        p(&svg),
    ]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}{}", stderr(&out));
    assert!(
        text.contains(&format!(
            "fault at:          {stop} (unix ms), primary stopped (SIGSTOP 3 s)"
        )),
        "{text}"
    );
    assert!(
        text.contains("longest silence:   1100 ms, from 50 ms before the fault"),
        "{text}"
    );
    assert!(text.contains("(limit 2000 ms)"), "{text}");
    let picture = fs::read_to_string(&svg).expect("svg written");
    assert!(
        picture.contains(">primary stopped (SIGSTOP 3 s)</text>"),
        "{picture}"
    );
    assert!(!picture.contains("primary killed"), "{picture}");
}

#[test]
fn help_exits_zero_with_usage_on_stdout() {
    let out = report(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(stdout(&out).contains("usage: report --sub FILE --acks FILE"));
}

#[test]
fn bad_arguments_exit_two_with_usage_on_stderr() {
    for args in [
        &["--bogus"][..],
        &["--sub", "a"][..],
        &["--sub", "a", "--acks", "b", "--sent", "many"][..],
        &["--sub", "a", "--acks"][..],
        &[
            "--sub",
            "a",
            "--acks",
            "b",
            "--kill-ms",
            "1",
            "--kill-ms",
            "soon",
        ][..],
        &["--sub", "a", "--acks", "b", "--fault-label", " "][..],
    ] {
        let out = report(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = stderr(&out);
        assert!(err.starts_with("report: error: "), "{args:?}: {err}");
        assert!(err.contains("usage: report"), "{args:?}: {err}");
        assert!(stdout(&out).is_empty(), "{args:?}");
    }
}

#[test]
fn unreadable_file_exits_two() {
    let dir = Scratch::new("unreadable");
    let acks = dir.file("test_publisher.out", "");
    let absent = dir.0.join("absent.out");
    let out = report(&["--sub", p(&absent), "--acks", p(&acks)]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("cannot read"), "{}", stderr(&out));
}
