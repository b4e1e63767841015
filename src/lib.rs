//! edgebroker (docs written below as modules land).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod broker;
pub mod cli;
pub mod client;
pub mod config;
pub mod connection;
pub mod error;
pub mod protocol;
pub mod report;

pub use broker::{Broker, Status};
pub use client::{Publisher, Subscriber};
pub use config::{BrokerConfig, ComputeStep, PublisherConfig, SubscriberConfig};
pub use error::{Error, Result};
