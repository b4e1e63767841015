//! The open sockets of one server (a broker or the witness), by key: so that stopping can
//! close them all, and a newcomer that takes an unproven connection's slot
//! ([`crate::slots`]) can hang up on it. The server's accepting thread takes each new
//! connection from here too ([`Registry::accept`]), until the server closes.

use std::collections::HashMap;
use std::net::{Shutdown, SocketAddr, TcpListener};
use std::thread;
use std::time::Duration;

use parking_lot::Mutex;

use crate::connection::Stream;

/// Every open socket, by the key its connection was registered with.
#[derive(Default)]
pub(crate) struct Registry {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    sockets: HashMap<u64, Stream>,
    next_key: u64,
    /// Set by [`Registry::close_all`]: nothing registers after it.
    closed: bool,
}

impl Registry {
    /// The next connection on the server's `listener`, shared, with its peer's address;
    /// `None` once the server is closing. A failed accept (out of file descriptors, say) is
    /// logged and, after a breath, tried again, unless the server is closing: the dial that
    /// wakes its accepting thread ([`crate::connection::wake_listener`]) may fail the same way.
    pub(crate) fn accept(&self, listener: &TcpListener) -> Option<(Stream, SocketAddr)> {
        loop {
            match listener.accept() {
                Ok((stream, addr)) => {
                    // Every line a server sends is worth sending at once: no Nagle.
                    let _ = stream.set_nodelay(true);
                    return Some((Stream::new(stream), addr));
                }
                Err(_) if self.inner.lock().closed => return None,
                Err(e) => {
                    log::warn!("accept failed: {e}");
                    thread::sleep(Duration::from_millis(10));
                }
            }
        }
    }

    /// Remembers an open socket and gives it a key; `None` (and the socket closed) once
    /// the server is closing.
    pub(crate) fn register(&self, stream: &Stream) -> Option<u64> {
        let mut inner = self.inner.lock();
        if inner.closed {
            let _ = stream.shutdown(Shutdown::Both);
            return None;
        }
        inner.next_key += 1;
        let key = inner.next_key;
        inner.sockets.insert(key, stream.clone());
        Some(key)
    }

    /// Forgets a socket that closed.
    pub(crate) fn forget(&self, key: u64) {
        self.inner.lock().sockets.remove(&key);
    }

    /// Ends the reading side of socket `key`: its thread's read returns as if the other side
    /// had closed, and the thread says why and closes.
    pub(crate) fn hang_up(&self, key: u64) {
        if let Some(stream) = self.inner.lock().sockets.get(&key) {
            let _ = stream.shutdown(Shutdown::Read);
        }
    }

    /// Closes every socket, and every one registered from now on.
    pub(crate) fn close_all(&self) {
        let mut inner = self.inner.lock();
        inner.closed = true;
        for (_, stream) in inner.sockets.drain() {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }

    /// How many sockets are open.
    pub(crate) fn len(&self) -> usize {
        self.inner.lock().sockets.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_closing_server_stops_accepting_even_when_accept_fails() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        // Nobody dials: every accept fails (would block), as when out of file descriptors.
        listener.set_nonblocking(true).unwrap();
        let registry = Registry::default();
        registry.close_all();
        assert!(registry.accept(&listener).is_none());
    }
}
