//! Asking a broker how it is: [`query`] sends `STATUS` within a timeout and returns the
//! answer's `key=value` fields ([`StatusFields`]). The `pairstat` program (in the project's
//! tools) polls both brokers with it and draws the pair's live view.

use std::io::{self, Write};
use std::time::{Duration, Instant};

use crate::auth::{self, Secret};
use crate::connection::{LineReader, dial, is_timeout};
use crate::error::{Error, Result};
use crate::protocol::{AuthKind, Reply, Request};

/// The longest STATUS line accepted; real ones are a few hundred bytes.
const MAX_LINE: usize = 64 * 1024;

/// One broker's answer to `STATUS`: its `key=value` fields in the order it sent them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StatusFields(pub Vec<(String, String)>);

impl StatusFields {
    /// The value of `key`, if the broker sent it.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The value of `key` as a number; `None` if absent or not a number.
    pub fn number(&self, key: &str) -> Option<u64> {
        self.get(key)?.parse().ok()
    }
}

/// Asks the broker at `addr` (`host:port`) for its `STATUS` on a fresh connection,
/// authenticating first if `secret` is given. Dialling, the handshake and the answer must all
/// come within `timeout`.
pub fn query(addr: &str, timeout: Duration, secret: Option<&Secret>) -> Result<StatusFields> {
    let deadline = Instant::now() + timeout;
    let left = || {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            Err(Error::Timeout)
        } else {
            Ok(left)
        }
    };
    let stream = dial(addr, timeout)?;
    stream.set_read_timeout(Some(left()?))?;
    stream.set_write_timeout(Some(left()?))?;
    let mut reader = LineReader::new(stream.try_clone()?, MAX_LINE);
    if let Some(secret) = secret {
        auth::authenticate(&stream, &mut reader, AuthKind::Client, secret)?;
        stream.set_read_timeout(Some(left()?))?;
    }
    let mut line = Vec::new();
    Request::Status.encode(&mut line);
    (&stream).write_all(&line)?;
    let answer = match reader.read_line() {
        Ok(Some(answer)) => answer,
        Ok(None) => {
            return Err(Error::Io(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "closed the connection",
            )));
        }
        Err(e) if is_timeout(&e) => return Err(Error::Timeout),
        Err(e) => return Err(e.into()),
    };
    match Reply::parse(answer) {
        Ok(Reply::Status(pairs)) => Ok(StatusFields(pairs)),
        Ok(Reply::Err(reason)) => Err(Error::Refused(reason)),
        Ok(other) => Err(Error::Protocol(format!("answered STATUS with {other:?}"))),
        Err(e) => Err(Error::Protocol(e.to_string())),
    }
}
