//! A pair with a witness (`--witness`), in-process: the brokers' link and each broker's path to
//! the witness go through proxies that can be cut. Each case of the witness's rules (SPEC §5.9,
//! ARCHITECTURE.md "The witness"): a cut link changes nothing, a cut-off primary stops and the
//! backup takes over once, a frozen primary forwards nothing when it resumes, and without the
//! witness a healthy pair goes on, silence takes nothing over and certain death still does.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{LineClient, Proxy, Valve, proxied_pair, wait_for, wait_subscriptions, wait_until};
use edgebroker::broker::{BackupHealth, WitnessView};
use edgebroker::protocol::Role;
use edgebroker::{BrokerConfig, ComputeStep, Publisher, Subscriber, Witness, WitnessConfig};

/// A witness with a 400 ms lease that has waited out its restart wait.
fn witness() -> Witness {
    let lease = Duration::from_millis(400);
    let witness = Witness::start(WitnessConfig {
        lease,
        margin: WitnessConfig::margin_for(lease),
        ..WitnessConfig::fast()
    })
    .expect("start witness");
    wait_until("the witness's restart wait", || {
        witness.status().restart_wait.is_zero()
    });
    witness
}

/// The fast broker timings, with the witness at `witness`.
fn witnessed(compute: ComputeStep, witness: &str) -> BrokerConfig {
    BrokerConfig {
        witness: Some(witness.to_string()),
        ..common::config(compute)
    }
}

/// A pair whose link, and whose paths to the witness, can each be cut.
struct Setup {
    pair: common::Pair,
    /// `None` once a test stopped it.
    witness: Option<Witness>,
    /// The brokers' link, both ways.
    link: [Proxy; 2],
    /// The primary's path to the witness (the backup's is direct).
    primary_witness: Proxy,
}

impl Setup {
    fn start(primary: ComputeStep, backup: ComputeStep) -> Setup {
        let witness = witness();
        let primary_witness = Proxy::start(witness.local_addr());
        let (pair, to_primary, to_backup) = proxied_pair(
            witnessed(primary, &primary_witness.addr.to_string()),
            witnessed(backup, &witness.local_addr().to_string()),
        );
        wait_until("the primary to hold a lease", || {
            pair.primary().status().lease_left > Duration::ZERO
        });
        Setup {
            pair,
            witness: Some(witness),
            link: [to_primary, to_backup],
            primary_witness,
        }
    }

    fn witness(&self) -> &Witness {
        self.witness.as_ref().expect("the witness runs")
    }

    fn cut_link(&self) {
        self.link.iter().for_each(Proxy::cut);
    }

    fn heal_link(&self) {
        self.link.iter().for_each(Proxy::heal);
    }
}

/// A compute step held by a [`Valve`], and a flag set once the worker has entered it.
fn watched_valve() -> (Valve, Arc<AtomicBool>, ComputeStep) {
    let valve = Valve::default();
    let ComputeStep::Custom(hold) = valve.step() else {
        unreachable!("a valve is a custom step")
    };
    let entered = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&entered);
    let step = ComputeStep::Custom(Arc::new(move |m| {
        flag.store(true, Ordering::Release);
        hold(m)
    }));
    (valve, entered, step)
}

fn ask_publish(client: &mut LineClient, seq: u64) -> String {
    client.ask(&format!("PUB|9|{seq}|t|{seq}"))
}

#[test]
fn a_cut_link_with_both_brokers_reaching_the_witness_changes_no_role() {
    let s = Setup::start(ComputeStep::Off, ComputeStep::Off);
    let epoch = s.pair.primary().status().epoch;
    s.cut_link();
    // The backup claims on silence, and the witness turns it away while the lease is live.
    let held = s.witness().status().counters.held;
    wait_until(
        "three claims refused while the primary holds the lease",
        || s.witness().status().counters.held >= held + 3,
    );
    let (primary, backup) = (s.pair.primary().status(), s.pair.backup().status());
    assert_eq!((primary.role, backup.role), (Role::Primary, Role::Backup));
    assert_eq!((primary.epoch, backup.epoch), (epoch, epoch));
    assert_eq!(backup.counters.takeovers, 0, "{backup:?}");
    // The primary goes on, degraded: its lease says nobody else can be primary.
    wait_until("the primary to give up its backup", || {
        s.pair.primary().status().backup == BackupHealth::Down
    });
    let mut client = LineClient::connect(s.pair.primary_addr);
    assert_eq!(ask_publish(&mut client, 1), "ACK|9|1");
    assert_eq!(s.pair.primary().status().witness, WitnessView::Up);
    s.heal_link();
    s.pair.wait_replicating();
    assert_eq!(s.pair.primary().status().epoch, epoch);
}

#[test]
fn a_primary_cut_off_from_backup_and_witness_stops_before_the_backup_takes_over() {
    let s = Setup::start(ComputeStep::Off, ComputeStep::Off);
    let mut sub = Subscriber::connect(s.pair.subscriber_config("t")).unwrap();
    wait_subscriptions(s.pair.primary(), 1);
    wait_subscriptions(s.pair.backup(), 1);
    let mut client = LineClient::connect(s.pair.primary_addr);
    assert_eq!(ask_publish(&mut client, 1), "ACK|9|1");

    // Cut the primary off from the backup and the witness; its clients still reach it.
    s.cut_link();
    s.primary_witness.cut();
    let mut seq = 1;
    let mut acked = vec![1];
    let stopped = wait_for("the cut-off primary to refuse", || {
        seq += 1;
        let answer = ask_publish(&mut client, seq);
        if answer == format!("ACK|9|{seq}") {
            acked.push(seq);
            return None;
        }
        assert!(answer.starts_with("ERR|cut off"), "{answer}");
        Some(Instant::now())
    });
    assert_eq!(
        s.pair.backup().status().role,
        Role::Backup,
        "not before it stopped"
    );
    wait_until("the backup to take over with the witness's grant", || {
        s.pair.backup().status().role == Role::Primary
    });
    let took_over = Instant::now();
    assert!(stopped < took_over);
    let new = s.pair.backup().status();
    assert_eq!(
        Some(new.epoch),
        s.witness().status().holder,
        "the granted epoch"
    );
    // The old primary ACKs nothing while the new one serves.
    for _ in 0..3 {
        seq += 1;
        let answer = ask_publish(&mut client, seq);
        assert!(answer.starts_with("ERR|cut off"), "{answer}");
    }
    let mut publisher = Publisher::new(s.pair.publisher_config());
    publisher
        .publish("t", "after")
        .expect("the new primary serves");

    // Heal: the old primary meets the newer epoch, steps down, hands over what it ACKed alone.
    s.primary_witness.heal();
    s.heal_link();
    wait_until("the old primary to follow the new one", || {
        let old = s.pair.primary().status();
        old.role == Role::Backup && old.epoch == new.epoch
    });
    let mut got: Vec<String> = Vec::new();
    while !got.iter().any(|p| p == "after") || acked.iter().any(|a| !got.contains(&a.to_string())) {
        let d = sub
            .recv_timeout(common::DEADLINE)
            .expect("every ACKed message arrives");
        got.push(d.message.payload);
    }
    let mut unique = got.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), got.len(), "nothing printed twice: {got:?}");
}

#[test]
fn a_primary_frozen_past_its_lease_forwards_nothing_when_it_resumes() {
    let (valve, entered, step) = watched_valve();
    let s = Setup::start(step, ComputeStep::Off);
    let mut sub = LineClient::connect(s.pair.primary_addr);
    sub.send("SUBSCRIBE|t");
    wait_subscriptions(s.pair.primary(), 1);
    let mut client = LineClient::connect(s.pair.primary_addr);
    assert_eq!(
        ask_publish(&mut client, 1),
        "ACK|9|1",
        "the backup holds it"
    );
    // The worker computes; the process freezes; the compute ends while it is frozen.
    wait_until("the worker to compute", || entered.load(Ordering::Acquire));
    s.pair.primary().pause();
    valve.open();
    wait_until("the backup to take over", || {
        s.pair.backup().status().role == Role::Primary
    });
    let new = s.pair.backup().status().epoch;
    wait_until("the new primary to deliver what it held", || {
        s.pair.backup().status().counters.processed == 1
    });
    s.pair.primary().resume();
    wait_until("the old primary to step down and drop its job", || {
        let old = s.pair.primary().status();
        old.role == Role::Backup && old.epoch == new && old.computing == 0
    });
    let old = s.pair.primary().status();
    assert_eq!(old.counters.processed, 0, "forwarded nothing: {old:?}");
    assert_eq!(old.counters.delivered, 0);
}

#[test]
fn without_the_witness_the_pair_goes_on_silence_takes_nothing_over_and_death_does() {
    let mut s = Setup::start(ComputeStep::Off, ComputeStep::Off);
    let epoch = s.pair.primary().status().epoch;
    s.witness.take().unwrap().shutdown();
    wait_until("both brokers to see the witness down", || {
        [s.pair.primary(), s.pair.backup()]
            .iter()
            .all(|b| b.status().witness == WitnessView::Down)
    });
    // A healthy pair goes on: the backup vouches for the primary.
    let mut publisher = Publisher::new(s.pair.publisher_config());
    let mut sub = Subscriber::connect(s.pair.subscriber_config("t")).unwrap();
    wait_subscriptions(s.pair.primary(), 1);
    publisher
        .publish("t", "1")
        .expect("publish without the witness");
    assert_eq!(
        sub.recv_timeout(common::DEADLINE).unwrap().message.payload,
        "1"
    );

    // A cut link: the primary has nobody to vouch for it and stops; the backup may not take
    // over on silence alone.
    s.cut_link();
    let mut client = LineClient::connect(s.pair.primary_addr);
    let mut seq = 100;
    let mut refused = 0;
    wait_until(
        "the primary to refuse, cut off, for forty probes' time",
        || {
            seq += 1;
            let answer = ask_publish(&mut client, seq);
            if answer.starts_with("ERR|cut off") {
                refused += 1;
            }
            // Paced by the backup's probe interval, so the refusals span 40 of its probes.
            std::thread::sleep(common::config(ComputeStep::Off).ping_interval);
            refused >= 40
        },
    );
    let backup = s.pair.backup().status();
    assert_eq!(
        (backup.role, backup.epoch),
        (Role::Backup, epoch),
        "{backup:?}"
    );
    assert_eq!(backup.counters.takeovers, 0);

    // Certain death still fails over: the primary's process is gone, its port refuses.
    s.heal_link();
    s.pair.wait_replicating();
    s.pair.primary.take().unwrap().kill();
    wait_until("the backup to take over on certain death", || {
        s.pair.backup().status().role == Role::Primary
    });
    let mut client = LineClient::connect(s.pair.backup_addr);
    assert_eq!(ask_publish(&mut client, 1000), "ACK|9|1000");
    assert_eq!(s.pair.backup().status().witness, WitnessView::Down);
}

#[test]
fn alone_a_witnessed_primary_acks_only_what_it_delivered() {
    let (valve, entered, step) = watched_valve();
    let s = Setup::start(step, ComputeStep::Off);
    let mut sub = LineClient::connect(s.pair.primary_addr);
    sub.send("SUBSCRIBE|t");
    wait_subscriptions(s.pair.primary(), 1);
    // Alone: the link is cut, the primary holds its lease and ACKs without a backup.
    s.cut_link();
    wait_until("the primary to give up its backup", || {
        s.pair.primary().status().backup == BackupHealth::Down
    });
    let addr = s.pair.primary_addr;
    let publish = std::thread::spawn(move || {
        let answer = ask_publish(&mut LineClient::connect(addr), 1);
        (answer, Instant::now())
    });
    wait_until("the worker to compute", || entered.load(Ordering::Acquire));
    let opened = Instant::now();
    valve.open();
    let (answer, acked) = publish.join().unwrap();
    assert_eq!(answer, "ACK|9|1");
    assert!(
        acked > opened,
        "ACKed only once the compute step let it through"
    );
    assert_eq!(
        sub.recv().as_deref(),
        Some("1"),
        "the seed form delivers the payload"
    );
    assert_eq!(
        s.pair.primary().status().pending,
        0,
        "delivered before the ACK"
    );
}

#[test]
fn one_witness_serves_two_pairs_each_under_its_own_name() {
    let witness = witness();
    let addr = witness.local_addr().to_string();
    let named = |name: &str| BrokerConfig {
        pair: name.parse().unwrap(),
        ..witnessed(ComputeStep::Off, &addr)
    };
    let north = common::Pair::start(named("north"));
    let south = common::Pair::start(named("south"));
    for pair in [&north, &south] {
        wait_until("each primary to hold its own lease", || {
            pair.primary().status().lease_left > Duration::ZERO
        });
    }
    // Both serve, neither fenced nor held by the other's epochs.
    let mut clients = [&north, &south].map(|p| LineClient::connect(p.primary_addr));
    for seq in 1..=20 {
        for client in &mut clients {
            assert_eq!(ask_publish(client, seq), format!("ACK|9|{seq}"));
        }
    }
    let holder = |name: &str| witness.pair_status(&name.parse().unwrap()).holder;
    assert_eq!(holder("north"), Some(north.primary().status().epoch));
    assert_eq!(holder("south"), Some(south.primary().status().epoch));

    // North's primary freezes: north's backup gets a grant, south's primary keeps its lease.
    let south_epoch = south.primary().status().epoch;
    north.primary().pause();
    wait_until(
        "north's backup to take over with the witness's grant",
        || north.backup().status().role == Role::Primary,
    );
    assert_eq!(holder("north"), Some(north.backup().status().epoch));
    let south_now = south.primary().status();
    assert_eq!(
        (south_now.role, south_now.epoch),
        (Role::Primary, south_epoch)
    );
    assert_eq!(ask_publish(&mut clients[1], 21), "ACK|9|21");
    north.primary().resume();
}
