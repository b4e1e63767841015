//! Line I/O over a `TcpStream`, for brokers and clients alike; the protocol module never sees
//! a socket.
//!
//! - [`LineReader`] reads `\n`-terminated lines, never buffering more than the line limit.
//! - [`Connection`] is one connection to a broker in both directions: every dialler (the
//!   replicator, the pinger, the hand-off, the publisher, the subscriber, the STATUS query)
//!   dials, authenticates, sends requests and reads replies through it, and
//!   [`Connection::ask`] is the request/answer call they share.
//! - [`wake_listener`] is the dial that wakes a server's accepting thread (the broker's or
//!   the witness's, in `Registry::accept`) when the server stops.
//!
//! Errors come as the crate's [`Error`]: [`Error::LineTooLong`], [`Error::Timeout`] (the
//! socket's read or write timeout passed; a partly read line stays buffered),
//! [`Error::Closed`], or [`Error::Io`] for the rest.

use std::io::{self, ErrorKind, Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use crate::auth::{self, Secret, Side};
use crate::error::{Error, Result};
use crate::protocol::{AuthKind, Reply, Request};

/// A TCP stream shared by the threads that serve one connection (its reader, its writer, the
/// registry that closes it at shutdown). Cloning shares the socket instead of duplicating its
/// file descriptor, so a connection costs one descriptor however many threads touch it.
#[derive(Clone, Debug)]
pub struct Stream(Arc<TcpStream>);

impl Stream {
    /// Shares `stream`.
    pub fn new(stream: TcpStream) -> Self {
        Stream(Arc::new(stream))
    }
}

impl Deref for Stream {
    type Target = TcpStream;

    fn deref(&self) -> &TcpStream {
        &self.0
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&*self.0).read(buf)
    }
}

/// Reads `\n`-terminated lines, never buffering more than the line limit.
pub struct LineReader<R> {
    inner: R,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    max_line: usize,
}

impl<R: Read> LineReader<R> {
    /// Wraps `inner`; lines longer than `max_line` bytes (without `\r\n`) are refused.
    pub fn new(inner: R, max_line: usize) -> Self {
        LineReader {
            inner,
            buf: vec![0; 4096.min(max_line + 2)],
            start: 0,
            end: 0,
            max_line,
        }
    }

    /// The next line without its `\n` (and without a `\r` before it), or `None` at a clean end
    /// of stream. A read timeout is [`Error::Timeout`] and loses nothing: the partial line
    /// stays buffered for the next call. A line over the limit is [`Error::LineTooLong`]; an
    /// end of stream in the middle of a line is [`Error::Closed`].
    pub fn read_line(&mut self) -> Result<Option<&[u8]>> {
        let mut scanned = 0;
        loop {
            let unread = &self.buf[self.start + scanned..self.end];
            if let Some(pos) = unread.iter().position(|&b| b == b'\n') {
                let line = self.start..self.start + scanned + pos;
                self.start = line.end + 1;
                let line = &self.buf[line];
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                if line.len() > self.max_line {
                    return Err(Error::LineTooLong);
                }
                return Ok(Some(line));
            }
            scanned = self.end - self.start;
            // A line may be max_line bytes plus "\r\n".
            if scanned > self.max_line + 1 {
                return Err(Error::LineTooLong);
            }
            self.make_room();
            match self.inner.read(&mut self.buf[self.end..]) {
                // The stream may end cleanly only between lines.
                Ok(0) if self.start == self.end => return Ok(None),
                Ok(0) => return Err(Error::Closed),
                Ok(n) => self.end += n,
                // A signal (SIGSTOP/SIGCONT, a debugger) interrupted the read: try again.
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Whether a whole line is already buffered, so the caller can hold back a flush.
    pub fn has_buffered_line(&self) -> bool {
        self.buf[self.start..self.end].contains(&b'\n')
    }

    /// The wrapped reader.
    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    fn make_room(&mut self) {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            let limit = self.max_line + 2;
            let grown = (self.buf.len() * 2).min(limit).max(self.buf.len() + 1);
            self.buf.resize(grown, 0);
        }
    }
}

/// One connection to a broker, in both directions: requests out, replies in.
pub struct Connection {
    stream: Stream,
    reader: LineReader<Stream>,
}

impl Connection {
    /// Dials `addr` within `timeout` (which then bounds every read and write too), reading
    /// lines of at most `max_line` bytes, and authenticates with `auth` if given.
    pub fn dial(
        addr: &str,
        timeout: Duration,
        max_line: usize,
        auth: Option<(AuthKind, &Secret)>,
    ) -> Result<Connection> {
        // The first of the addresses `addr` resolves to that answers (the rest are not dialled
        // then), else the last failure.
        let none = io::Error::new(ErrorKind::InvalidInput, format!("{addr}: no address"));
        let mut tried = Err(none);
        for sock in addr.to_socket_addrs()? {
            tried = tried.or_else(|_| TcpStream::connect_timeout(&sock, timeout));
        }
        let stream = tried?;
        // Every line we send is worth sending at once: no Nagle.
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        let stream = Stream::new(stream);
        let reader = LineReader::new(stream.clone(), max_line);
        let mut conn = Connection { stream, reader };
        if let Some((kind, secret)) = auth {
            conn.authenticate(kind, secret)?;
        }
        Ok(conn)
    }

    /// Runs the dialer's side of the handshake (`crate::auth`) on a fresh connection. Fails
    /// with [`Error::Auth`] when either side's proof is wrong, and with [`Error::Refused`] when
    /// the listener refused the connection for another reason (`ERR|too many connections`):
    /// it is alive, and the secrets may well match.
    pub fn authenticate(&mut self, kind: AuthKind, secret: &Secret) -> Result<()> {
        let mine = auth::nonce();
        let hello = Request::Hello {
            kind,
            nonce: mine.clone(),
        };
        let (theirs, their_proof) = match refusal_or_verdict(self.ask(&hello))? {
            Reply::Challenge { nonce, proof } => (nonce, proof),
            other => return Err(Error::Auth(format!("answered HELLO with {other:?}"))),
        };
        if !auth::verify(secret, Side::Listener, kind, (&mine, &theirs), &their_proof) {
            return Err(Error::Auth("the listener does not know the secret".into()));
        }
        let proof = Request::Proof {
            proof: auth::proof(secret, Side::Dialer, kind, &mine, &theirs),
        };
        match refusal_or_verdict(self.ask(&proof))? {
            Reply::Welcome => Ok(()),
            other => Err(Error::Auth(format!("answered PROOF with {other:?}"))),
        }
    }

    /// Sends one request.
    pub fn send(&mut self, request: &Request) -> Result<()> {
        self.send_all(std::slice::from_ref(request))
    }

    /// Sends requests in one write.
    pub fn send_all(&mut self, requests: &[Request]) -> Result<()> {
        let mut out = Vec::new();
        for request in requests {
            request.encode(&mut out);
        }
        self.send_line(&out)
    }

    /// The next reply. The other side closing the connection is [`Error::Closed`]; a line
    /// that is not a reply is [`Error::Protocol`].
    pub fn recv(&mut self) -> Result<Reply> {
        Reply::parse(self.read_line()?).map_err(|e| Error::Protocol(e.to_string()))
    }

    /// Writes lines encoded already (another program's protocol, such as the witness's).
    pub fn send_line(&mut self, line: &[u8]) -> Result<()> {
        Ok((&*self.stream).write_all(line)?)
    }

    /// The next line, unparsed; the other side closing the connection is [`Error::Closed`].
    pub fn read_line(&mut self) -> Result<&[u8]> {
        self.reader.read_line()?.ok_or(Error::Closed)
    }

    /// Sends a request and reads its answer.
    pub fn ask(&mut self, request: &Request) -> Result<Reply> {
        self.send(request)?;
        self.recv()
    }

    /// How long a read may wait (`None`: for ever).
    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> Result<()> {
        Ok(self.stream.set_read_timeout(timeout)?)
    }

    /// The socket, shared: to shut it from another thread, or to write on it from one while
    /// this one reads.
    pub fn stream(&self) -> &Stream {
        &self.stream
    }

    /// The reading half, for a thread that only reads from here on.
    pub fn into_reader(self) -> LineReader<Stream> {
        self.reader
    }

    /// Shuts the socket both ways.
    pub fn close(&self) {
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}

/// Connects to our own listener on `addr` and hangs up at once, so a thread blocked in its
/// `accept()` wakes and sees that the server is stopping (an unspecified address, `0.0.0.0`,
/// is reached on loopback).
pub fn wake_listener(mut addr: SocketAddr) {
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            SocketAddr::V4(_) => Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => Ipv6Addr::LOCALHOST.into(),
        });
    }
    let _ = TcpStream::connect_timeout(&addr, Duration::from_millis(200));
}

/// The listener's answer during the handshake; an `ERR` other than a failed proof is a
/// refusal, not a verdict on the secret.
fn refusal_or_verdict(reply: Result<Reply>) -> Result<Reply> {
    match reply {
        Ok(Reply::Err(reason)) if reason == "too many connections" => Err(Error::Refused(reason)),
        Err(Error::Protocol(why)) => Err(Error::Auth(why)),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader that hands out its data in fixed-size pieces, like a socket.
    struct Chunks<'a> {
        data: &'a [u8],
        step: usize,
    }

    impl Read for Chunks<'_> {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            let n = self.step.min(out.len()).min(self.data.len());
            out[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    fn lines(data: &[u8], step: usize, max: usize) -> Vec<std::result::Result<Vec<u8>, String>> {
        let mut r = LineReader::new(Chunks { data, step }, max);
        let mut out = Vec::new();
        loop {
            match r.read_line() {
                Ok(Some(l)) => out.push(Ok(l.to_vec())),
                Ok(None) => return out,
                Err(e) => {
                    out.push(Err(e.to_string()));
                    return out;
                }
            }
        }
    }

    #[test]
    fn splits_lines_across_reads_and_strips_cr() {
        for step in [1, 3, 4096] {
            let got = lines(b"PING\r\nPUBLISH|t|a|b\n\nx\n", step, 100);
            let want: Vec<std::result::Result<Vec<u8>, String>> = vec![
                Ok(b"PING".to_vec()),
                Ok(b"PUBLISH|t|a|b".to_vec()),
                Ok(b"".to_vec()),
                Ok(b"x".to_vec()),
            ];
            assert_eq!(got, want, "step {step}");
        }
    }

    #[test]
    fn long_lines_are_refused_without_buffering_them() {
        let mut data = vec![b'a'; 10_000];
        data.push(b'\n');
        let got = lines(&data, 7, 64);
        assert_eq!(got, vec![Err(Error::LineTooLong.to_string())]);
        // Exactly at the limit is fine, with or without \r.
        let got = lines(b"aaaa\r\nbbbb\n", 2, 4);
        assert_eq!(got, vec![Ok(b"aaaa".to_vec()), Ok(b"bbbb".to_vec())]);
    }

    #[test]
    fn eof_mid_line_is_an_error() {
        assert_eq!(
            lines(b"PING\nPUB", 100, 100),
            vec![Ok(b"PING".to_vec()), Err(Error::Closed.to_string())]
        );
    }

    #[test]
    fn buffer_never_outgrows_the_limit() {
        let mut data = vec![b'a'; 1 << 20];
        data.push(b'\n');
        let mut r = LineReader::new(
            Chunks {
                data: &data,
                step: 8192,
            },
            1000,
        );
        assert!(r.read_line().is_err());
        assert!(r.buf.len() <= 1002);
    }
}
