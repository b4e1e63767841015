//! # edgebroker
//!
//! A fault-tolerant publish/subscribe broker for teaching and for real use: a **primary** and a
//! **backup** broker, automatic failover, and a pseudo edge-computing step (a CPU busy loop of
//! 50–150 ms) on every message. Plain threads and blocking sockets throughout — no async.
//!
//! The primary replicates every message to the backup before it ACKs the publisher, computes,
//! forwards the message to the topic's subscribers and tells the backup to CLEAR it. The backup
//! probes the primary every second and takes over when it fails, first redoing the messages it
//! still holds. Publishers fail over and resend their last five messages; message ids let the
//! brokers and subscribers drop the resends, so nothing is lost and nothing printed twice.
//! Epochs fence a primary that wakes up after being replaced.
//!
//! ```
//! use std::net::TcpListener;
//! use std::time::Duration;
//! use edgebroker::{Broker, BrokerConfig, ComputeStep, Publisher, PublisherConfig};
//! use edgebroker::{Subscriber, SubscriberConfig};
//!
//! # fn main() -> edgebroker::Result<()> {
//! // Bind both listeners first so each broker knows the other's address.
//! let (a, b) = (TcpListener::bind("127.0.0.1:0")?, TcpListener::bind("127.0.0.1:0")?);
//! let (primary_addr, backup_addr) = (a.local_addr()?.to_string(), b.local_addr()?.to_string());
//! let fast = BrokerConfig { compute: ComputeStep::Off, ..BrokerConfig::fast() };
//! let primary = Broker::start_on(a, BrokerConfig {
//!     peer: Some(backup_addr.clone()),
//!     preferred_primary: true,
//!     ..fast.clone()
//! })?;
//! let backup = Broker::start_on(b, BrokerConfig { peer: Some(primary_addr.clone()), ..fast })?;
//!
//! let mut subscriber =
//!     Subscriber::connect(SubscriberConfig::new("news", &primary_addr, &backup_addr))?;
//! let mut publisher = Publisher::new(PublisherConfig::new(&primary_addr, &backup_addr));
//! publisher.publish("news", "hello")?;
//!
//! let delivery = subscriber.recv_timeout(Duration::from_secs(5)).expect("delivered");
//! assert_eq!(delivery.message.payload, "hello");
//! # drop((primary, backup));
//! # Ok(())
//! # }
//! ```
//!
//! ## Layout
//!
//! | module | its one job |
//! |---|---|
//! | [`protocol`] | every line on the wire as a Rust value: parse and encode bytes, no sockets |
//! | [`connection`] | reading lines off a socket within a length limit; dialling with a timeout |
//! | [`config`] | [`BrokerConfig`] and the client configs: the seed's numbers, a fast test preset |
//! | [`auth`] | the shared-secret handshake: nonces and HMAC-SHA256 proofs |
//! | [`cli`] | the command lines of every program, parsed once |
//! | [`broker`] | the engine: one broker, either role ([`Broker`]) |
//! | [`broker::node`] | role, epoch and log under one lock; takeover, step-down, following |
//! | [`broker::log`] | the ordered log of unprocessed messages and the dedup table |
//! | [`broker::safety`] | what the primary knows of the backup's copy; waiting until a message is safe |
//! | [`broker::handler`] | one thread per connection: a line in, an answer out |
//! | [`broker::compute`] | the compute workers fed by crossbeam channels; the busy loop |
//! | [`broker::topics`] | the subscriber map, outboxes (direct writes, bounded queues) and their writer threads |
//! | [`broker::replication`] | the primary's replication sessions: dial, sync, read confirmations, heartbeat |
//! | [`broker::link`] | a session's sending half: lines appended under the role lock, written by whoever finds the socket free |
//! | [`broker::monitor`] | the backup's pinger: probe the primary, take over when it fails |
//! | [`broker::status`] | counters and the STATUS snapshot |
//! | [`broker::capacity`] | how many connections the machine's limits fit |
//! | [`client`] | blocking [`Publisher`] and [`Subscriber`] with failover |
//! | [`client::status`] | the pair at a glance: STATUS with a timeout, rates and role changes (`pairstat`) |
//! | [`report`] | judging a demo run (missing, duplicates, silence) and drawing it as SVG |
//! | [`report::program`] | the `report` program's work: read the two output files, print the verdict, draw |
//! | [`broker::handoff`] | a stepped-down primary publishes its undelivered messages to the new one |
//! | [`witness`] | the third, data-less process: leases and epoch grants ([`Witness`]) |
//! | [`witness::lease`] | the witness's rules on an injected clock: at most one holder, epochs only go up |
//! | [`witness::protocol`] | the witness's lines (`LEASE`, `CLAIM`, …): parse and encode bytes, no sockets |
//! | [`witness::client`] | what a broker calls to renew its lease or claim an epoch |
//! | [`error`] | the library's [`Error`] and [`Result`] |
//!
//! The project's own tools — the chaos soak on separate hosts and the `bench` load generator —
//! are not part of this crate: they are the `edgebroker-tools` crate in `tools/`, a user of
//! this one like any other.
//!
//! ## Threads
//!
//! ```text
//!            publishers / subscribers / peer broker
//!                          │ TCP
//!                      [accept] ──spawns──▶ [conn-N] one per connection
//!                                             │ admit under the role lock
//!            ┌────────────────────────────────┼─────────────────────────────┐
//!            ▼ crossbeam channel (per topic   ▼ link buffer, written by     │ SYNC/REPLICATE/CLEAR
//!       [worker-K]  shard)              whoever finds it free ─▶ backup     │ from our primary
//!        wait until replicated,          [repl-reader] ◀─ REPLICATED|i      ▼
//!        busy-loop, fan out ─┬─ idle socket: write ──────────▶ subscriber  log (backup side)
//!                            └─ else queue ─▶ [sub-writer-N] ─▶ subscriber
//!       [pinger]: while backup, PROBE the primary every interval or on demand; take over
//! ```
//!
//! ## The life of one message
//!
//! 1. A `conn-N` thread reads `PUB|p|s|topic|payload` and, under the role lock, appends it to
//!    the log, appends a REPLICATE to the replication link's buffer and queues a job on its
//!    topic's worker.
//! 2. Out of the lock, the same thread writes the REPLICATE to the link (or leaves it to the
//!    thread already writing there); the backup's `conn` thread stores it in its log and
//!    answers `REPLICATED|i`; the `repl-reader` records the confirmation.
//! 3. The `conn-N` thread, waiting in [`broker::safety::Safety::wait`], wakes and writes the ACK.
//! 4. The worker, which also waited for the confirmation, busy-loops 50–150 ms, checks that its
//!    epoch is still current, and sends the delivery to every subscriber: written straight into
//!    an idle subscriber's socket, or queued for its `sub-writer` when it is busy.
//! 5. When the last copy is written to its socket, the message is removed from the log and a
//!    CLEAR goes to the backup, which drops its copy.
//!
//! If the primary dies between 1 and 5, the backup holds the message and redoes it after taking
//! over; the subscriber drops the copy it may already have printed. ARCHITECTURE.md tells the
//! failure stories.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod auth;
pub mod broker;
pub mod cli;
pub mod client;
pub mod config;
pub mod connection;
pub mod error;
pub mod protocol;
pub mod report;
pub mod witness;

pub use broker::{Broker, Status};
pub use client::{Publisher, Subscriber};
pub use config::{BrokerConfig, ComputeStep, PublisherConfig, SubscriberConfig, WitnessConfig};
pub use error::{Error, Result};
pub use witness::Witness;
