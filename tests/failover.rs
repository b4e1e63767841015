//! Replication, takeover, dedup, fencing and rejoin, with brokers in-process.

mod common;

use common::*;
use edgebroker::protocol::Role;
use edgebroker::{ComputeStep, Publisher, Subscriber};

#[test]
fn pair_starts_and_replicates() {
    let pair = Pair::start(config(ComputeStep::Off));
    assert_eq!(pair.primary().status().role, Role::Primary);
    assert_eq!(pair.backup().status().role, Role::Backup);
    let mut sub = Subscriber::connect(pair.subscriber_config("t")).unwrap();
    wait_subscriptions(pair.primary(), 1);
    let mut publisher = Publisher::new(pair.publisher_config());
    publisher.publish("t", "hello").unwrap();
    let d = sub.recv_timeout(DEADLINE).expect("delivery");
    assert_eq!(d.message.payload, "hello");
}
