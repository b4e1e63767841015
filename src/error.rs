//! The library's error type.

use std::fmt;
use std::io::{self, ErrorKind};

/// Everything that can go wrong in the library, as one enum.
#[derive(Debug)]
pub enum Error {
    /// A socket or file operation failed.
    Io(io::Error),
    /// The broker could not listen on the address (in use, or not ours).
    Listen(std::net::SocketAddr, io::Error),
    /// A command line argument was missing or malformed; the text says which.
    Usage(String),
    /// A peer sent something the protocol does not allow; the text says what.
    Protocol(String),
    /// A broker answered `ERR|<reason>`.
    Refused(String),
    /// The shared-secret handshake failed: the other side does not know our secret, or
    /// refused our proof. The text says which.
    Auth(String),
    /// No answer in time: a socket's read or write timeout passed, or no broker ACKed.
    Timeout,
    /// A line longer than the limit.
    LineTooLong,
    /// The other side closed the connection.
    Closed,
    /// The operation was abandoned because the program is shutting down.
    Shutdown,
    /// The log on disk (`--data-dir`) cannot be used; the text says why.
    DataDir(String),
}

/// The library's result type.
pub type Result<T> = std::result::Result<T, Error>;

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io(e) => write!(f, "{e}"),
            Error::Listen(addr, e) => write!(f, "cannot listen on {addr}: {e}"),
            Error::Usage(msg) => write!(f, "{msg}"),
            Error::Protocol(msg) => write!(f, "protocol error: {msg}"),
            Error::Refused(reason) => write!(f, "broker refused: {reason}"),
            Error::Auth(why) => write!(f, "authentication failed: {why}"),
            Error::Timeout => write!(f, "no answer in time"),
            Error::LineTooLong => write!(f, "line too long"),
            Error::Closed => write!(f, "the other side closed the connection"),
            Error::Shutdown => write!(f, "shutting down"),
            Error::DataDir(why) => write!(f, "--data-dir: {why}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io(e) | Error::Listen(_, e) => Some(e),
            _ => None,
        }
    }
}

/// Whether an I/O error is a read or write timeout rather than a broken connection.
pub(crate) fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

/// An I/O error, with a read or write timeout ([`is_timeout`]) as [`Error::Timeout`] and a
/// connection closed by the other side as [`Error::Closed`].
impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        use ErrorKind::*;
        match e.kind() {
            _ if is_timeout(&e) => Error::Timeout,
            UnexpectedEof | ConnectionReset | ConnectionAborted | BrokenPipe => Error::Closed,
            _ => Error::Io(e),
        }
    }
}
