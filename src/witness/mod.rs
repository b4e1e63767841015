//! The witness: a third, data-less process that lets a pair tell a dead primary from a cut
//! one. It stores no messages; it keeps one lease and the highest epoch it has seen, and it
//! grants a new epoch to at most one broker, only once the current primary's lease has lapsed
//! (SPEC §5.9; the reasoning is in ARCHITECTURE.md, the wire in PROTOCOL.md, "Witness").
//!
//! | module | its one job |
//! |---|---|
//! | [`lease`] | the rules, a pure state machine on an injected clock: lease, claim, fence; one set per pair name, so one witness serves many pairs |
//! | [`protocol`] | the witness's lines as Rust values: parse and encode bytes, no sockets |
//! | [`server`] | the `witness` program's engine: a listener, and a thread per connection that answers its lines and remembers what its peer has proved |
//! | [`client`] | what a broker calls: renew its lease, claim an epoch, over one connection |
//!
//! ```text
//!   primary ──LEASE every ping interval──▶ ┌─────────┐ ◀──CLAIM when the primary is silent── backup
//!           ◀──LEASED | FENCED ─────────── │ witness │ ──GRANTED | HELD ───────────────────▶
//!                                          └─────────┘
//!   [witness-accept] ──spawns──▶ [witness-conn-N]: a line in, the rules under one mutex, an answer out
//! ```

pub mod client;
pub mod lease;
pub mod protocol;
pub mod server;

pub use client::{Claim, Client, Lease, Renewal};
pub use protocol::Pair;
pub use server::Witness;
