//! The open sockets of one server (a broker or the witness), by key: so that stopping can
//! close them all, and a newcomer that takes an unproven connection's slot
//! ([`crate::slots`]) can hang up on it.

use std::collections::HashMap;
use std::net::Shutdown;

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
