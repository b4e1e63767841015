//! The backup's probe connection to its primary: one persistent connection that sends
//! `PROBE` and reads the `PONG`, redialled once when it broke, and what a failure means.

use std::sync::Arc;

use log::{debug, info};

use crate::connection::Connection;
use crate::error::{Error, Result};
use crate::protocol::{PeerState, Reply, Request};

use super::node::Node;

/// A persistent probe connection to the peer.
pub(super) struct Prober {
    node: Arc<Node>,
    pub(super) addr: String,
    /// Whether the peer's refusal to authenticate was logged since it last answered.
    pub(super) refusal_logged: bool,
    /// The connection and its key in the node's socket registry.
    conn: Option<(Connection, u64)>,
}

impl Prober {
    pub(super) fn new(node: &Arc<Node>, addr: String) -> Self {
        Prober {
            node: Arc::clone(node),
            addr,
            refusal_logged: false,
            conn: None,
        }
    }

    /// Sends PROBE and reads the PONG. A connection that broke since the last probe is
    /// redialled once before the peer counts as dead. [`Error::Auth`] means the peer is alive
    /// but the secrets differ, [`Error::Refused`] that it is alive but turned us away.
    pub(super) fn probe(&mut self, me: PeerState) -> Result<PeerState> {
        let fresh = self.conn.is_none();
        match self.exchange(me) {
            Err(e @ (Error::Closed | Error::Io(_))) if !fresh => {
                debug!("probe connection to {} broke ({e}); redialling", self.addr);
                self.exchange(me)
            }
            result => result,
        }
    }

    fn exchange(&mut self, me: PeerState) -> Result<PeerState> {
        let result = self.try_exchange(me);
        if result.is_err()
            && let Some((conn, key)) = self.conn.take()
        {
            conn.close();
            self.node.unregister(key);
        }
        result
    }

    fn try_exchange(&mut self, me: PeerState) -> Result<PeerState> {
        let config = &self.node.config;
        if self.conn.is_none() {
            let conn = Connection::dial(
                &self.addr,
                config.ping_timeout,
                config.max_line_bytes,
                config.peer_auth(),
            )?;
            let key = self.node.register(conn.stream()).ok_or(Error::Shutdown)?;
            self.conn = Some((conn, key));
        }
        let Some((conn, _)) = self.conn.as_mut() else {
            return Err(Error::Shutdown);
        };
        match conn.ask(&Request::Probe(me))? {
            Reply::PeerPong(peer) => Ok(peer),
            Reply::Err(reason) if reason == "too many connections" => Err(Error::Refused(reason)),
            // Our epoch is past what it may adopt yet (it restarted, and learns ours from its
            // own probe): alive, and no question of secrets.
            Reply::Err(reason) if reason.starts_with("epoch ") => Err(Error::Refused(reason)),
            Reply::Err(reason) => Err(Error::Auth(format!("refused the probe: {reason}"))),
            other => Err(Error::Protocol(format!(
                "answered the probe with {other:?}"
            ))),
        }
    }
}

/// What a failed probe says of the primary, in words for the log (and logged).
pub(super) fn describe(e: &Error) -> String {
    let text = match e {
        Error::Io(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            "refused the connection (process gone)".to_string()
        }
        Error::Closed => "closed the connection (process gone)".to_string(),
        Error::Timeout => "did not answer within the ping timeout".to_string(),
        e => format!("failed the probe: {e}"),
    };
    info!("probe failed: {text}");
    text
}
