//! Asking a broker how it is: [`query`] sends `STATUS` within a timeout and returns the
//! answer's `key=value` fields ([`StatusFields`]). The `pairstat` program (in the project's
//! tools) polls both brokers with it and draws the pair's live view.

use std::time::Duration;

use crate::auth::Secret;
use crate::connection::Connection;
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
/// authenticating first if `secret` is given. The dial and each exchange wait at most
/// `timeout`.
pub fn query(addr: &str, timeout: Duration, secret: Option<&Secret>) -> Result<StatusFields> {
    let auth = secret.map(|s| (AuthKind::Client, s));
    let mut conn = Connection::dial(addr, timeout, MAX_LINE, auth)?;
    match conn.ask(&Request::Status)? {
        Reply::Status(pairs) => Ok(StatusFields(pairs)),
        Reply::Err(reason) => Err(Error::Refused(reason)),
        other => Err(Error::Protocol(format!("answered STATUS with {other:?}"))),
    }
}
