//! One line connection to a broker, authenticated if a secret is set: requests out, replies
//! in, and every failure named after the connection it happened on.

use std::collections::HashMap;
use std::io::{self, Write};
use std::time::Duration;

use edgebroker::auth::{self, Secret};
use edgebroker::connection::{LineReader, Stream, dial, is_timeout};
use edgebroker::error::{Error, Result};
use edgebroker::protocol::{AuthKind, Reply, Request};

use super::MAX_LINE;

/// How long dialling a broker may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long an ACK, PONG or STATUS answer may take before the run fails.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// One line connection to a broker, authenticated if a secret is set.
pub(super) struct Conn {
    /// The socket, for writes, read timeouts and the shutdown that ends a subscriber.
    pub(super) stream: Stream,
    /// The same socket, read line by line.
    pub(super) reader: LineReader<Stream>,
    /// Who this is, for error messages: `publisher 3 (127.0.0.1:7000)`.
    pub(super) who: String,
}

impl Conn {
    /// Dials `addr` and authenticates with `secret`; `who` names it in errors.
    pub(super) fn open(addr: &str, secret: Option<&Secret>, who: String) -> Result<Conn> {
        let who = format!("{who} ({addr})");
        // One descriptor per connection: ten thousand subscribers must fit in the fd limit.
        let stream = Stream::new(
            dial(addr, CONNECT_TIMEOUT)
                .map_err(|e| context(e, &format!("{who}: cannot connect")))?,
        );
        stream.set_read_timeout(Some(ANSWER_TIMEOUT))?;
        let mut reader = LineReader::new(stream.clone(), MAX_LINE);
        if let Some(secret) = secret {
            auth::authenticate(stream.clone(), &mut reader, AuthKind::Client, secret)
                .map_err(|e| context(e.into(), &format!("{who}: authentication failed")))?;
        }
        Ok(Conn {
            stream,
            reader,
            who,
        })
    }

    /// Writes one encoded line.
    pub(super) fn send(&mut self, line: &[u8]) -> Result<()> {
        self.stream
            .write_all(line)
            .map_err(|e| context(e, &format!("{}: write failed", self.who)))
    }

    /// Writes one request.
    pub(super) fn request(&mut self, request: &Request) -> Result<()> {
        let mut line = Vec::new();
        request.encode(&mut line);
        self.send(&line)
    }

    /// The next reply; the end of the stream, a timeout or an `ERR` is an error.
    pub(super) fn recv(&mut self) -> Result<Reply> {
        let line = match self.reader.read_line() {
            Ok(Some(line)) => line,
            Ok(None) => {
                return Err(context(
                    io::ErrorKind::UnexpectedEof.into(),
                    &format!("{}: the broker closed the connection", self.who),
                ));
            }
            Err(e) if is_timeout(&e) => {
                return Err(context(
                    e,
                    &format!("{}: no answer within {ANSWER_TIMEOUT:?}", self.who),
                ));
            }
            Err(e) => return Err(context(e, &format!("{}: read failed", self.who))),
        };
        match Reply::parse(line) {
            Ok(Reply::Err(reason)) => Err(Error::Refused(format!("{reason} ({})", self.who))),
            Ok(reply) => Ok(reply),
            Err(e) => Err(Error::Protocol(format!("{}: {e}", self.who))),
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

/// An I/O error with what we were doing in its text, so the one-line message says where.
pub(super) fn context(e: io::Error, what: &str) -> Error {
    Error::Io(io::Error::new(e.kind(), format!("{what}: {e}")))
}
