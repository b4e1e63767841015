//! edgebroker (docs written below as modules land).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod report;
