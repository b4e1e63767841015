//! edgebroker (docs written below as modules land).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod broker;
pub mod config;
pub mod connection;
pub mod error;
pub mod protocol;
pub mod report;

pub use broker::{Broker, Status};
pub use config::{BrokerConfig, ComputeStep, PublisherConfig, SubscriberConfig};
pub use error::{Error, Result};
