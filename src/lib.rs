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
//! // Logs on stderr as the programs write them (RUST_LOG=debug follows every message).
//! edgebroker::cli::init_logging();
//!
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
//! // Labelled as the subscriber program prints it: `[PRIMARY] hello`.
//! println!("{} {}", delivery.source.label(), delivery.message.payload);
//! assert_eq!(delivery.message.payload, "hello");
//! # drop((primary, backup));
//! # Ok(())
//! # }
//! ```
//!
//! ARCHITECTURE.md has a **reading order**: the seven files a student opens, in order, to
//! follow one message from `PUB` to the subscriber and the backup's CLEAR, and the functions
//! to read in each.
//!
//! ## Layout
//!
//! | module | its one job |
//! |---|---|
//! | [`protocol`] | every line on the wire as a Rust value: parse and encode bytes, no sockets |
//! | `protocol::epoch` | the epoch and its rules: order, counting up, which epochs may be adopted |
//! | `protocol::message` | a published message and its id; the publisher id a key files it under |
//! | `protocol::peer` | a broker's role, the state it tells its peer, the secret a connection proves |
//! | `protocol::fields` | the field parser the brokers' and the witness's lines share; [`protocol::ParseError`] |
//! | `protocol::request` | every line a broker accepts |
//! | `protocol::reply` | every line a broker sends |
//! | [`connection`] | one connection in both directions: lines in within a limit, requests out, [`connection::Connection::ask`] |
//! | [`config`] | [`BrokerConfig`] and the client configs: the seed's numbers, a fast test preset |
//! | [`auth`] | the shared-secret handshake: nonces and HMAC-SHA256 proofs |
//! | `slots` | who may hold a listener's connection slots: reserved ones for the peer, and which unproven connection gives way to a newcomer |
//! | [`witness`] | the third, data-less process: leases and epoch grants ([`Witness`]) |
//! | [`witness::lease`] | the witness's rules on an injected clock: at most one holder, epochs only go up |
//! | [`witness::protocol`] | the witness's lines (`LEASE`, `CLAIM`, …): parse and encode bytes, no sockets |
//! | [`witness::client`] | what a broker calls to renew its lease or claim an epoch |
//! | [`error`] | the library's [`Error`] and [`Result`] |
//! | [`broker`] | the engine: one broker, either role ([`Broker`]) |
//! | `broker::conn` | one thread per connection, its life: a line in, handed to its verb, an answer out |
//! | `broker::conn::gate` | what a connection must prove: probation, the peer's slots, access, the handshake |
//! | `broker::conn::client` | the client verbs: publish and its ACK, subscribe |
//! | `broker::conn::follower` | the verbs a backup answers for its primary: SYNC, SEEN, the link's end |
//! | `broker::node` | the shared core: what every thread holds, the lifecycle, STATUS; what waits for the compute workers (`Task`, `Computing`) |
//! | `broker::path` | the message's path through it: admit, wait until safe, clear; hold replicas |
//! | `broker::role` | the role state machine, pure: what each role owns, every change of role and the effects it asks for |
//! | `broker::role::peer` | the role machine's side of the peer: SYNC and fencing, probes, the session's link, hand-over and orphans |
//! | `broker::reign` | each change of role under the role lock, its effects carried out; the lock order |
//! | `broker::message_log` | the ordered log of undelivered messages and the dedup table |
//! | `broker::journal` | the log on disk (`--data-dir`): its file, the `journal` thread that writes and syncs it, what an ACK waits for |
//! | `broker::journal::record` | one line of the log on disk: its checksum, encoding and parsing |
//! | `broker::journal::recover` | reading the log back at start: each line applied again, a torn tail dropped, a foreign log refused |
//! | `broker::safety` | what the primary knows of the backup's copy; waiting until a message is safe |
//! | `broker::acks` | ACKs filed by publishers' threads, filled in by the thread that learns their verdict; what it asks of the broker (`Verdicts`) |
//! | `broker::verdict` | why a publish is refused, and the admitted publish its verdict is asked for |
//! | `broker::compute` | the compute workers fed by crossbeam channels; the busy loop; the clear after the last write |
//! | `broker::topics` | the subscriber map and the fan-out of one message |
//! | `broker::writer` | the one way out to a connection's socket: its ordered queue (ACKs kept in their place), direct writes, its writer thread |
//! | `broker::writer::queue` | a writer's queue: lines and kept places in order, the limits' counts, taking off the head and putting back |
//! | `broker::replication` | the primary's replication sessions: dial, sync, read confirmations, heartbeat |
//! | `broker::link` | a session's sending half: a channel of lines sent under the role lock, one writer |
//! | `broker::pinger` | the pinger thread: probe the primary, take over when it fails, renew the witness's lease |
//! | `broker::handoff` | a stepped-down primary hands its undelivered messages to the new one |
//! | `broker::status` | counters and the STATUS snapshot |
//! | `broker::warnings` | warnings that come in floods, summed up |
//! | [`client`] | blocking [`Publisher`] and [`Subscriber`] with failover; [`client::status`] asks a broker its STATUS |
//! | [`cli`] | the command lines of every program: one table each for the parser and the usage |
//! | [`report`] | judging a demo run (missing, duplicates, silence) and drawing it as SVG |
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
//!            ▼ crossbeam channel (per topic   ▼ link channel ─▶ [replicator] │ SYNC/REPLICATE/CLEAR
//!       [worker-K]  shard)              writes all that waits ─▶ backup     │ from our primary
//!        wait until replicated,          [repl-reader] ◀─ REPLICATED|i      ▼
//!        busy-loop, fan out ─┬─ idle socket: write     └─▶ the ACKs it covers ─▶ publishers
//!                            │  ─────────────────────────▶ subscriber  log (backup side)
//!                            └─ else queue ─▶ [writer-N] ─▶ subscriber
//!       [acks]: ACKs decided by a change of health or role, or a deadline
//!       [pinger]: while backup, PROBE the primary every interval or on demand; take over
//!       [journal]: with --data-dir, writes and syncs the log's lines; the ACKs that waited for it
//! ```
//!
//! ## The life of one message
//!
//! 1. **Admit** — a `conn-N` thread reads `PUB|key|seq|topic|payload`
//!    (`broker::conn::client`, `Conn::publish`) and `broker::node::Node::admit` appends it to the
//!    log under the role lock, appends its REPLICATE to the live link and queues a job on its
//!    topic's worker.
//! 2. **Replicate** — the replicator writes the line (`broker::link::Link::write_next`); the
//!    backup holds it (`broker::node::Node::accept_replicate`) and answers `REPLICATED|i`,
//!    which the `repl-reader` records (`broker::safety::Safety::confirm`).
//! 3. **ACK** — the `conn-N` thread has kept the ACK's place in its connection's writer and
//!    filed it (`broker::acks::Acks::file`), and gone back to `read`; the `repl-reader` that
//!    recorded the confirmation fills it in and writes it
//!    (`broker::acks::Acks::answer_confirmed`, asking
//!    `broker::node::Node::await_safe_until` without waiting). A change of the backup's
//!    health or of the role, or a deadline, is answered by the `acks` thread instead. With
//!    `--data-dir` the ACK also waits for the message's line in the log on disk
//!    (`broker::journal::Journal::covers`): whichever of the `repl-reader` and the `journal`
//!    thread learns last writes it.
//! 4. **Compute** — the worker (`broker::compute::run_worker`) waits until the message is
//!    replicated (`broker::safety::Safety::wait_replicated`), busy-loops 50–150 ms and
//!    checks that its epoch is still current.
//! 5. **Forward** — `broker::topics::Topics::deliver` hands the line to every subscriber's
//!    writer (`broker::writer::Writer::deliver`): written straight into an idle subscriber's
//!    socket, or queued for its `writer-N` thread (`broker::writer::Writer::run`).
//! 6. **Clear** — when the last line is written, the message's
//!    `broker::compute::ClearWhenWritten` is dropped: `broker::node::Node::clear_delivered`
//!    removes it from the log and sends CLEAR; the backup drops its copy
//!    (`broker::node::Node::accept_clear`).
//!
//! If the primary dies between 1 and 6, the backup holds the message and redoes it after taking
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
pub(crate) mod registry;
pub mod report;
pub(crate) mod slots;
pub mod witness;

pub use broker::{Broker, Status};
pub use client::{Publisher, Subscriber};
pub use config::{BrokerConfig, ComputeStep, PublisherConfig, SubscriberConfig, WitnessConfig};
pub use error::{Error, Result};
pub use witness::Witness;
