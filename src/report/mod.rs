//! Run analysis for the failover demo (`run_test.sh`, SPEC §6): what the subscriber received
//! compared with what `test_publisher` had ACKed, and a picture of the run.
//!
//! This module owns three things, none of which touch a socket or a file:
//! - **Parsing** the data streams the demo records (`parse.rs`): the subscriber's stdout
//!   (`<unix_ms> [PRIMARY] <seq>`, see [`parse_delivery`]), `test_publisher`'s stdout
//!   (`<unix_ms> ACK <seq>`, see [`parse_ack`]) and its publish log (`<unix_ms> PUBLISH <seq>`,
//!   see [`parse_publish`]). [`parse_log`] applies any of them to a whole file and counts the
//!   lines it could not read instead of failing on them.
//! - **Judging** a run: [`analyse`] (`analysis.rs`) turns deliveries and ACKs into a
//!   [`RunReport`] (missing ACKed messages, duplicates, order inversions, the longest silence
//!   around each fault — a kill or a stop of the primary); `verdict.rs` gives its `Display`,
//!   the human report, and [`RunReport::passed`], the PASS/FAIL rule.
//! - **Drawing** the run: [`render_svg`] (`svg.rs`) plots sequence number against time, one
//!   dot per delivery, coloured by the broker that delivered it, with each fault marked
//!   (`overview.rs`); under it a zoom around each fault, where the silence is measured, and
//!   the publish→delivery [`latencies`] of every message (`panels.rs`), all drawn with the
//!   primitives of `plot.rs` on the bands and time axis of `layout.rs`.
//!
//! The `report` program is a thin wrapper around [`program`], which reads the files, calls
//! these and prints; the program maps the verdict to exit 0/1.

mod analysis;
mod layout;
mod overview;
mod panels;
mod parse;
mod plot;
pub mod program;
mod svg;
mod verdict;

pub use crate::client::Source;
pub use analysis::{
    DEFAULT_MAX_SILENCE_MS, FaultWindow, Latency, RunReport, SILENCE_WINDOW_AFTER_MS,
    SILENCE_WINDOW_BEFORE_MS, Silence, analyse, latencies,
};
pub use panels::ZOOM_MS;
pub use parse::{
    Delivery, ParsedLog, UNPARSED_EXAMPLES, parse_ack, parse_delivery, parse_log, parse_publish,
};
pub use svg::{DEFAULT_FAULT_LABEL, render_svg};
pub use verdict::MISSING_SHOWN;

#[cfg(test)]
mod fixtures;
