//! The witness over loopback: a `Witness` in-process on port 0 and the brokers' `Client`,
//! speaking the real protocol with a 1 s lease and a 125 ms margin: short enough to wait out,
//! long enough that a busy test machine does not see a lease lapse between two steps. The rules
//! themselves are unit-tested on a fake clock in `src/witness/lease.rs`; these tests check
//! that the server applies them to what arrives on the wire, and the `witness` program.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{ChildGuard, DEADLINE, LineClient};
use edgebroker::auth::Secret;
use edgebroker::protocol::Epoch;
use edgebroker::witness::{Claim, Client, Renewal, Witness};
use edgebroker::{Error, WitnessConfig};

const A: u32 = 41277;
const B: u32 = 90211;

/// A 1 s lease on loopback port 0.
fn steady() -> WitnessConfig {
    let lease = Duration::from_millis(1000);
    WitnessConfig {
        lease,
        margin: WitnessConfig::margin_for(lease),
        ..WitnessConfig::fast()
    }
}

/// A witness that has waited out its restart wait, so it grants at once.
fn ready(config: WitnessConfig) -> Witness {
    let witness = Witness::start(config).expect("start witness");
    common::wait_until("the witness's restart wait", || {
        witness.status().restart_wait.is_zero()
    });
    witness
}

fn client(witness: &Witness, secret: Option<Secret>) -> Client {
    Client::new(
        witness.local_addr().to_string(),
        Duration::from_millis(500),
        secret,
    )
}

fn granted(claim: edgebroker::Result<Claim>) -> edgebroker::witness::Lease {
    match claim {
        Ok(Claim::Granted(lease)) => lease,
        other => panic!("expected a grant, got {other:?}"),
    }
}

#[test]
fn a_fresh_witness_grants_nothing_for_a_lease_and_margin() {
    let started = Instant::now();
    let witness = Witness::start(steady()).expect("start witness");
    let mut b = client(&witness, None);
    let left = match b.claim(Epoch::default(), B).expect("an answer") {
        Claim::Restarting(left) => left,
        other => panic!("expected RESTARTING, got {other:?}"),
    };
    assert!(left <= Duration::from_millis(1125), "{left:?}");
    common::wait_for("a grant after the restart wait", || {
        match b.claim(Epoch::default(), B).expect("an answer") {
            Claim::Granted(lease) => Some(lease),
            _ => None,
        }
    });
    assert!(started.elapsed() >= Duration::from_millis(1125));
}

#[test]
fn grant_renew_refuse_a_second_claimant_then_grant_after_the_lapse() {
    let witness = ready(steady());
    let (mut a, mut b) = (client(&witness, None), client(&witness, None));

    let lease = Duration::from_millis(1000);
    let before = Instant::now();
    let first = granted(a.claim(Epoch::default(), A));
    let after = Instant::now();
    assert_eq!(first.epoch, Epoch { term: 1, node: A });
    // Counted from the send, inside the call.
    assert!(before + lease <= first.until && first.until <= after + lease);

    let renewed = match a.renew(first.epoch, A).expect("an answer") {
        Renewal::Leased(lease) => lease,
        other => panic!("expected LEASED, got {other:?}"),
    };
    assert_eq!(renewed.epoch, first.epoch);
    assert!(renewed.until >= first.until);

    // B claims while A's lease is live: HELD, naming A, with no more than lease + margin left.
    match b.claim(first.epoch, B).expect("an answer") {
        Claim::Held(held) => {
            assert_eq!((held.epoch, held.holder), (first.epoch, A));
            assert!(held.left <= Duration::from_millis(1125), "{:?}", held.left);
        }
        other => panic!("expected HELD, got {other:?}"),
    }
    // A lease always ends on A's side before the witness lets it go.
    common::wait_until("A's lease to lapse on the witness", || {
        witness.status().holder.is_none()
    });
    assert!(renewed.until <= Instant::now());

    let second = granted(b.claim(first.epoch, B));
    assert_eq!(second.epoch, Epoch { term: 2, node: B });
    // A wakes up and renews its old epoch: fenced with B's.
    assert_eq!(
        a.renew(first.epoch, A).expect("an answer"),
        Renewal::Fenced(second.epoch)
    );
    let status = witness.status();
    assert_eq!(status.holder, Some(second.epoch));
    assert_eq!((status.counters.grants, status.counters.fenced), (2, 1));
}

#[test]
fn status_shows_epoch_holder_and_lease_left() {
    let witness = ready(steady());
    let mut a = client(&witness, None);
    let lease = granted(a.claim(Epoch { term: 6, node: B }, A));
    let status: std::collections::HashMap<String, String> =
        a.status().expect("STATUS").into_iter().collect();
    assert_eq!(status["role"], "witness");
    assert_eq!(status["epoch"], lease.epoch.to_string());
    assert_eq!(status["holder"], A.to_string());
    assert_eq!(status["holder_epoch"], "7.41277");
    let left: u64 = status["lease_left_ms"].parse().expect("a number");
    assert!((1..=1125).contains(&left), "{left}");
    assert_eq!(status["lease_ms"], "1000");
    assert_eq!(status["margin_ms"], "125");
    assert_eq!(status["restart_wait_ms"], "0");
    assert_eq!(status["grants"], "1");
    assert_eq!(status["connections"], "1");
    // The same line as nc sees it.
    let mut raw = LineClient::connect(witness.local_addr());
    assert!(
        raw.ask("STATUS")
            .starts_with("STATUS|role=witness|epoch=7.41277|holder=41277|")
    );
}

#[test]
fn bad_lines_get_err_and_the_connection_stays_usable() {
    let witness = ready(steady());
    let mut raw = LineClient::connect(witness.local_addr());
    assert_eq!(
        raw.ask("LEASE|default|3|1"),
        "ERR|bad epoch '3' (want term.node)"
    );
    assert_eq!(
        raw.ask(&format!("CLAIM|default|{}.1|1", Epoch::MAX_TERM + 1)),
        "ERR|epoch term 281474976710657 is beyond any a broker can reach"
    );
    assert_eq!(
        raw.ask("LEASE|default|3.5|6"),
        "ERR|epoch 3.5 was started by node 5, not by node 6"
    );
    assert_eq!(raw.ask("PING"), "PONG");
    assert_eq!(raw.ask("LEASE|default|3.5|5"), "LEASED|3.5|1000");
    assert!(raw.ask("CLAIM|default|3.5|9").starts_with("HELD|3.5|5|"));
    // A line past the limit ends the connection, after saying why.
    raw.send(&"x".repeat(5000));
    assert_eq!(raw.recv().as_deref(), Some("ERR|line too long"));
    assert_eq!(raw.recv(), None);
}

#[test]
fn with_a_secret_lease_and_claim_need_the_peer_handshake() {
    let secret = Secret::new("s3cret");
    let witness = ready(WitnessConfig {
        secret: secret.clone(),
        ..steady()
    });
    let mut raw = LineClient::connect(witness.local_addr());
    assert_eq!(
        raw.ask("CLAIM|default|0.0|7"),
        "ERR|authenticate first (HELLO|peer|<nonce>)"
    );
    assert_eq!(raw.ask("PING"), "PONG");
    assert!(raw.ask("STATUS").starts_with("STATUS|role=witness|"));
    assert_eq!(
        raw.ask("HELLO|client|00ff"),
        "ERR|no client secret is set here"
    );

    let mut stranger = client(&witness, None);
    match stranger.claim(Epoch::default(), B) {
        Err(Error::Refused(reason)) => assert!(reason.contains("authenticate first")),
        other => panic!("expected a refusal, got {other:?}"),
    }
    let mut impostor = client(&witness, Secret::new("guess"));
    assert!(matches!(
        impostor.claim(Epoch::default(), B),
        Err(Error::Auth(_))
    ));
    assert_eq!(witness.status().holder, None);

    let mut peer = client(&witness, secret);
    granted(peer.claim(Epoch::default(), A));
    assert_eq!(witness.status().counters.grants, 1);
}

#[test]
fn a_primary_re_registers_with_a_restarted_witness() {
    let config = steady();
    let first = ready(config.clone());
    let addr = first.local_addr();
    let mut a = client(&first, None);
    let lease = granted(a.claim(Epoch::default(), A));
    first.shutdown();

    // Same port, new process: it knows nothing and says so; the client redials by itself.
    let second = Witness::start(WitnessConfig {
        listen: addr,
        ..config
    })
    .expect("restart on the same port");
    assert!(matches!(
        a.renew(lease.epoch, A).expect("an answer"),
        Renewal::Restarting(_)
    ));
    let renewed = common::wait_for("the re-registration", || {
        match a.renew(lease.epoch, A).expect("an answer") {
            Renewal::Leased(lease) => Some(lease),
            _ => None,
        }
    });
    assert_eq!(renewed.epoch, lease.epoch);
    assert_eq!(second.status().counters.registrations, 1);
}

#[test]
fn no_witness_is_an_io_error_within_the_timeout() {
    let free = common::listener().local_addr().expect("an address");
    // The listener is dropped: nobody listens there.
    let mut a = Client::new(free.to_string(), Duration::from_millis(200), None);
    let started = Instant::now();
    assert!(matches!(
        a.renew(Epoch { term: 1, node: A }, A),
        Err(Error::Io(_))
    ));
    assert!(started.elapsed() < DEADLINE);
}

// ---- the program ----

#[test]
fn the_program_prints_its_address_serves_and_stops_on_ctrl_c() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_witness"))
        .args(["0", "--bind", "127.0.0.1", "--lease-ms", "300"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn witness");
    let stdout = child.stdout.take().expect("stdout");
    let mut guard = ChildGuard(Some(child));
    let mut first = String::new();
    BufReader::new(stdout)
        .read_line(&mut first)
        .expect("read stdout");
    let addr = first
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("first line {first:?}"))
        .to_string();
    let mut a = Client::new(addr, Duration::from_millis(500), None);
    let status: std::collections::HashMap<String, String> =
        a.status().expect("STATUS").into_iter().collect();
    assert_eq!(status["lease_ms"], "300");
    assert_eq!(status["margin_ms"], "38", "300 / 8, rounded up");

    let child = guard.0.as_mut().expect("the child");
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("send SIGINT");
    let deadline = Instant::now() + DEADLINE;
    let code = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status.code();
        }
        assert!(Instant::now() < deadline, "the witness ignored Ctrl-C");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(code, Some(0));
}

/// Opens `n` connections to `addr` that say nothing, as a stranger filling the slots would.
fn strangers(addr: std::net::SocketAddr, n: usize) -> Vec<std::net::TcpStream> {
    (0..n)
        .map(|_| std::net::TcpStream::connect(addr).expect("connect"))
        .collect()
}

#[test]
fn strangers_in_every_slot_never_keep_a_broker_from_the_witness() {
    for secret in [None, Secret::new("s3cret")] {
        let witness = ready(WitnessConfig {
            max_connections: 4,
            secret: secret.clone(),
            ..steady()
        });
        let addr = witness.local_addr();
        // A stranger takes every slot, and more; they keep the connections busy with PINGs.
        let mut pinging = LineClient::connect(addr);
        assert_eq!(pinging.ask("PING"), "PONG");
        let first = strangers(addr, 30);

        // A broker still gets in, claims and renews.
        let mut broker = client(&witness, secret.clone());
        let lease = granted(broker.claim(Epoch::default(), A));
        assert!(matches!(
            broker.renew(lease.epoch, A),
            Ok(Renewal::Leased(_))
        ));
        // The stranger who held a slot longest gave it up, and was told why.
        let mut oldest = String::new();
        let _ = BufReader::new(&first[0]).read_line(&mut oldest);
        assert!(
            ["ERR|too many connections\n", ""].contains(&oldest.as_str()),
            "{oldest:?}"
        );

        // However many strangers come now, the broker renews: a proven slot is never taken.
        let later = strangers(addr, 30);
        let refused = |broker: &mut Client| -> u64 {
            let status = broker.status().expect("STATUS");
            let (_, n) = status
                .iter()
                .find(|(k, _)| k == "refused_connections")
                .expect("refused_connections");
            n.parse().unwrap()
        };
        common::wait_until("the strangers to give way", || refused(&mut broker) >= 50);
        assert!(matches!(
            broker.renew(lease.epoch, A),
            Ok(Renewal::Leased(_))
        ));

        // A connection that never proves itself is closed when its time is up, PINGs or not.
        let mut answer = pinging.ask("PING");
        while answer == "PONG" {
            std::thread::sleep(Duration::from_millis(20));
            answer = pinging.ask("PING");
        }
        assert!(
            answer.starts_with("ERR|") && answer.ends_with("within 500 ms")
                || answer == "ERR|too many connections",
            "{answer}"
        );
        drop((first, later));
    }
}
