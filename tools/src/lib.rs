//! # edgebroker-tools
//!
//! The edgebroker project's own tools, built on the `edgebroker` crate like any other user of
//! it: the chaos soak, which runs the real programs on separate hosts and injects faults, and
//! a load generator. They test and measure the broker; nothing in a broker or a client depends
//! on them, so they live outside the library a student reads and an embedder builds on.
//!
//! ## Layout
//!
//! | module | its one job |
//! |---|---|
//! | [`harness`] | separate hosts in network namespaces, fault injection and the chaos soak |
//! | [`harness::soak_program`] | the `soak` program's work: its command line, flags to a soak, building the programs, logs, outcome |
//! | [`bench`](mod@bench) | load-testing a broker: publishers and subscribers on threads, latency and loss figures |
//! | [`pairstat`] | the pair's live view: both brokers' STATUS as one refreshing table |
//!
//! The `soak`, `bench` and `pairstat` programs (`tools/src/bin/`) are thin wrappers around
//! [`harness::soak_program::run`] and [`bench::run`]; the tests in `tools/tests/` run the
//! separate-host scenarios (`netns.rs`) and the `bench` program end to end (`bench_cli.rs`).
//! Both the soak and those tests run the broker programs of the same build
//! ([`harness::cluster::Programs::of_this_build`]).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod bench;
pub mod harness;
pub mod pairstat;
