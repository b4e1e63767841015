//! A primary, its backup, a subscriber and a publisher, all in one process.
//!
//! Run with `cargo run --example pair`.

use std::net::TcpListener;
use std::time::Duration;

use edgebroker::{Broker, BrokerConfig, Publisher, PublisherConfig, Subscriber, SubscriberConfig};

fn main() -> edgebroker::Result<()> {
    edgebroker::cli::init_logging();
    // Bind both listeners first, so each broker knows the other's address.
    let (a, b) = (
        TcpListener::bind("127.0.0.1:0")?,
        TcpListener::bind("127.0.0.1:0")?,
    );
    let (primary, backup) = (a.local_addr()?.to_string(), b.local_addr()?.to_string());
    let config = |peer: &str, preferred| BrokerConfig {
        peer: Some(peer.to_string()),
        preferred_primary: preferred,
        ..BrokerConfig::default() // the seed's numbers: 50-150 ms compute, 1 s pings
    };
    let _primary = Broker::start_on(a, config(&backup, true))?;
    let _backup = Broker::start_on(b, config(&primary, false))?;

    let mut subscriber = Subscriber::connect(SubscriberConfig::new("news", &primary, &backup))?;
    let mut publisher = Publisher::new(PublisherConfig::new(&primary, &backup));
    for text in ["Hello", "from", "edgebroker"] {
        publisher.publish("news", text)?;
    }
    for _ in 0..3 {
        let d = subscriber
            .recv_timeout(Duration::from_secs(5))
            .expect("delivered");
        println!("{} {}", d.source.label(), d.message.payload);
    }
    Ok(())
}
