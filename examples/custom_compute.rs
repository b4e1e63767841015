//! A compute step of your own instead of the busy loop: here, a word count that runs on the
//! compute worker thread for every message before it is forwarded.
//!
//! Run with `cargo run --example custom_compute`.

use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use edgebroker::SubscriberConfig;
use edgebroker::{Broker, BrokerConfig, ComputeStep, Publisher, PublisherConfig, Subscriber};

fn main() -> edgebroker::Result<()> {
    let words = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&words);
    let compute = ComputeStep::Custom(Arc::new(move |message| {
        counter.fetch_add(
            message.payload.split_whitespace().count(),
            Ordering::Relaxed,
        );
    }));

    // A lone primary (no backup) is enough to try a compute step.
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?.to_string();
    let _broker = Broker::start_on(
        listener,
        BrokerConfig {
            compute,
            ..BrokerConfig::default()
        },
    )?;

    let mut subscriber = Subscriber::connect(SubscriberConfig::new("text", &addr, &addr))?;
    let mut publisher = Publisher::new(PublisherConfig::new(&addr, &addr));
    for line in ["the quick brown fox", "jumps over", "the lazy dog"] {
        publisher.publish("text", line)?;
    }
    for _ in 0..3 {
        let d = subscriber
            .recv_timeout(Duration::from_secs(5))
            .expect("delivered");
        println!("forwarded: {}", d.message.payload);
    }
    println!(
        "words counted by the compute step: {}",
        words.load(Ordering::Relaxed)
    );
    Ok(())
}
