//! One poll: every address asked its `STATUS` at once, each answer or failure a [`Reading`].

use std::io;
use std::thread;
use std::time::Duration;

use edgebroker::auth::Secret;
use edgebroker::client::status::{StatusFields, query};
use edgebroker::error::{Error, Result};

/// What one poll learnt about one address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reading {
    /// It answered `STATUS`.
    Up(StatusFields),
    /// It did not; the text says why (`connection refused`, `no answer in time`).
    Down(String),
}

impl Reading {
    /// A [`query`]'s outcome as a reading: any error means down, with a short reason.
    pub fn from_query(result: Result<StatusFields>) -> Reading {
        match result {
            Ok(fields) => Reading::Up(fields),
            Err(Error::Io(e)) if e.kind() == io::ErrorKind::ConnectionRefused => {
                Reading::Down(e.kind().to_string())
            }
            Err(Error::Closed) => Reading::Down("connection closed".into()),
            Err(Error::Timeout) => Reading::Down("no answer in time".into()),
            Err(e) => Reading::Down(e.to_string()),
        }
    }
}

/// Queries every address at once, one named thread each, so a hung broker delays the poll
/// by at most `timeout`; the readings come back in address order. The first `brokers`
/// addresses are asked with `secret`; the rest are witnesses, whose `STATUS` needs none.
pub fn poll(
    addrs: &[String],
    timeout: Duration,
    secret: Option<&Secret>,
    brokers: usize,
) -> Vec<Reading> {
    thread::scope(|scope| {
        let asks: Vec<_> = addrs
            .iter()
            .enumerate()
            .map(|(i, addr)| {
                thread::Builder::new()
                    .name(format!("status-{i}"))
                    .spawn_scoped(scope, move || {
                        let secret = if i < brokers { secret } else { None };
                        Reading::from_query(query(addr, timeout, secret))
                    })
            })
            .collect();
        asks.into_iter()
            .map(|ask| match ask {
                Ok(handle) => handle
                    .join()
                    .unwrap_or_else(|_| Reading::Down("the status thread panicked".into())),
                Err(e) => Reading::Down(format!("cannot start a status thread: {e}")),
            })
            .collect()
    })
}
