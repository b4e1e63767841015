//! One line connection to a broker, authenticated if a secret is set: requests out, replies
//! in, and every failure named after the connection it happened on.

use std::collections::HashMap;
use std::io::Write;
use std::time::Duration;

use edgebroker::auth::Secret;
use edgebroker::connection::{Connection, Stream};
use edgebroker::error::{Error, Result};
use edgebroker::protocol::{AuthKind, Reply, Request};

use super::MAX_LINE;

/// How long dialling a broker may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long an ACK, PONG or STATUS answer may take before the run fails.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// One line connection to a broker, authenticated if a secret is set.
pub(super) struct Conn {
    conn: Connection,
    /// Who this is, for error messages: `publisher 3 (127.0.0.1:7000)`.
    pub(super) who: String,
}

impl Conn {
    /// Dials `addr` and authenticates with `secret`; `who` names it in errors.
    pub(super) fn open(addr: &str, secret: Option<&Secret>, who: String) -> Result<Conn> {
        let who = format!("{who} ({addr})");
        let auth = secret.map(|s| (AuthKind::Client, s));
        let conn = Connection::dial(addr, CONNECT_TIMEOUT, MAX_LINE, auth)
            .map_err(|e| context(e, &format!("{who}: cannot connect")))?;
        conn.set_read_timeout(Some(ANSWER_TIMEOUT))?;
        Ok(Conn { conn, who })
    }

    /// The socket, for read timeouts and the shutdown that ends a subscriber.
    pub(super) fn stream(&self) -> &Stream {
        self.conn.stream()
    }

    /// Writes one line encoded already (a publisher's, built without allocating).
    pub(super) fn send(&mut self, line: &[u8]) -> Result<()> {
        (&**self.conn.stream())
            .write_all(line)
            .map_err(|e| context(e.into(), &format!("{}: write failed", self.who)))
    }

    /// Writes one request.
    pub(super) fn request(&mut self, request: &Request) -> Result<()> {
        self.conn
            .send(request)
            .map_err(|e| context(e, &format!("{}: write failed", self.who)))
    }

    /// The next reply; the end of the stream, a timeout or an `ERR` is an error.
    pub(super) fn recv(&mut self) -> Result<Reply> {
        match self.conn.recv() {
            Ok(Reply::Err(reason)) => Err(Error::Refused(format!("{reason} ({})", self.who))),
            Ok(reply) => Ok(reply),
            Err(Error::Closed) => Err(context(
                Error::Closed,
                &format!("{}: the broker closed the connection", self.who),
            )),
            Err(Error::Timeout) => Err(context(
                Error::Timeout,
                &format!("{}: no answer within {ANSWER_TIMEOUT:?}", self.who),
            )),
            Err(e) => Err(context(e, &format!("{}: read failed", self.who))),
        }
    }

    /// Asks `STATUS` and returns its key=value pairs.
    pub(super) fn status(&mut self) -> Result<HashMap<String, String>> {
        self.request(&Request::Status)?;
        match self.recv()? {
            Reply::Status(pairs) => Ok(pairs.into_iter().collect()),
            other => Err(Error::Protocol(format!(
                "{}: answered STATUS with {other:?}",
                self.who
            ))),
        }
    }
}

/// An error with what we were doing in its text, so the one-line message says where.
pub(super) fn context(e: Error, what: &str) -> Error {
    Error::Protocol(format!("{what}: {e}"))
}
