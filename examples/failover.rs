//! A failover you trigger yourself: publish through the primary, `kill()` it as if its process
//! crashed, and keep publishing. The backup takes over, redoes what the primary had not
//! delivered, and the subscriber prints every message once.
//!
//! Run with `cargo run --example failover` (add `RUST_LOG=info` to watch the takeover).

use std::net::TcpListener;
use std::time::Duration;

use edgebroker::{Broker, BrokerConfig, Publisher, PublisherConfig, Subscriber, SubscriberConfig};

fn main() -> edgebroker::Result<()> {
    edgebroker::cli::init_logging();
    let (a, b) = (
        TcpListener::bind("127.0.0.1:0")?,
        TcpListener::bind("127.0.0.1:0")?,
    );
    let (primary_addr, backup_addr) = (a.local_addr()?.to_string(), b.local_addr()?.to_string());
    let config = |peer: &str, preferred| BrokerConfig {
        peer: Some(peer.to_string()),
        preferred_primary: preferred,
        ..BrokerConfig::default()
    };
    let primary = Broker::start_on(a, config(&backup_addr, true))?;
    let backup = Broker::start_on(b, config(&primary_addr, false))?;
    let mut subscriber =
        Subscriber::connect(SubscriberConfig::new("topicC", &primary_addr, &backup_addr))?;
    let mut publisher = Publisher::new(PublisherConfig::new(&primary_addr, &backup_addr));

    for seq in 1..=10 {
        publisher.publish("topicC", &seq.to_string())?;
    }
    println!("killing the primary (its queue still holds messages)");
    primary.kill();
    for seq in 11..=20 {
        publisher.publish("topicC", &seq.to_string())?;
    }
    for _ in 1..=20 {
        let d = subscriber
            .recv_timeout(Duration::from_secs(10))
            .expect("delivered");
        println!(
            "{} {} (epoch {})",
            d.source.label(),
            d.message.payload,
            d.epoch
        );
    }
    let status = backup.status();
    println!(
        "the backup is now {} in epoch {}",
        status.role, status.epoch
    );
    Ok(())
}
