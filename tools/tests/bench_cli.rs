//! The `bench` program end to end: the real binary against an in-process primary and backup.

// The edgebroker crate's test helpers: an in-process pair, a raw line client.
#[path = "../../tests/common/mod.rs"]
mod common;

use std::process::{Command, Output};

use common::Pair;
use edgebroker::ComputeStep;

fn bench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bench"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run bench")
}

/// A number field of a flat JSON object, without a JSON library.
fn json_number(json: &str, key: &str) -> f64 {
    let start = json
        .find(&format!("\"{key}\":"))
        .unwrap_or_else(|| panic!("no key {key} in {json}"))
        + key.len()
        + 3;
    let rest = &json[start..];
    let end = rest.find([',', '}']).expect("a value ends");
    rest[..end]
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("{key} is not a number in {json}"))
}

#[test]
fn bench_counts_every_delivery_through_a_replicating_pair() {
    let pair = Pair::start(common::config(ComputeStep::Off));
    let (primary, backup) = (pair.primary_addr.to_string(), pair.backup_addr.to_string());
    let out = bench(&[
        &primary,
        &backup,
        "--messages",
        "500",
        "--publishers",
        "2",
        "--subscribers",
        "2",
        "--json",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench failed: {stderr}\n{stdout}");
    assert!(
        stdout.contains("backup=up"),
        "the header shows replication: {stdout}"
    );
    let json = stdout.lines().last().expect("a last line");
    assert!(json.starts_with('{') && json.ends_with('}'), "{json}");
    assert_eq!(json_number(json, "delivered"), 1000.0, "{json}");
    assert_eq!(json_number(json, "lost"), 0.0, "{json}");
    assert_eq!(json_number(json, "duplicates"), 0.0, "{json}");
    assert!(json_number(json, "throughput_msgs_per_s") > 0.0, "{json}");
    assert!(
        json_number(json, "ack_p50_us") <= json_number(json, "ack_p99_us"),
        "{json}"
    );
    assert!(
        json_number(json, "deliver_p50_us") <= json_number(json, "deliver_p99_us"),
        "{json}"
    );
    // Every message went through the primary exactly once.
    let status = common::LineClient::connect(pair.primary_addr).status();
    assert_eq!(status["published"], "500");
}

#[test]
fn help_exits_zero_and_bad_arguments_exit_two() {
    let help = bench(&["--help"]);
    assert_eq!(help.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&help.stdout).contains("usage: bench"));

    for args in [
        &[][..],
        &["127.0.0.1:1", "--publishers", "0"][..],
        &["127.0.0.1:1", "--payload-bytes", "3"][..],
        &["nocolon"][..],
    ] {
        let out = bench(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("usage: bench"),
            "{args:?}"
        );
    }
}

#[test]
fn an_unreachable_broker_is_a_clear_failure() {
    // A port that was free a moment ago: nothing listens there now.
    let addr = common::listener().local_addr().unwrap().to_string();
    let out = bench(&[&addr, "--messages", "10"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot connect"), "{stderr}");
}
