//! The pinger's conversation with the witness: as primary, renew our lease; as backup whose
//! primary went silent, claim a new epoch; either way, tell the mandate whether the witness
//! answers ([`super::mandate`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, info, warn};

use crate::error::Error;
use crate::witness::{self, Claim, Renewal};

use super::node::Node;

/// The pinger's conversation with the witness.
pub(super) struct Witness {
    node: Arc<Node>,
    client: witness::Client,
    /// Whether the last failure was logged (one line per outage, not one per ping).
    outage_logged: bool,
    /// Whether a `HELD` answer was logged since the primary last answered (one line per
    /// silence, not one per claim).
    held_logged: bool,
}

impl Witness {
    pub(super) fn new(node: &Arc<Node>, addr: String) -> Witness {
        let client =
            witness::Client::new(addr, node.config.ping_timeout, node.config.secret.clone())
                .for_pair(node.config.pair.clone());
        Witness {
            node: Arc::clone(node),
            client,
            outage_logged: false,
            held_logged: false,
        }
    }

    /// As primary: renews the lease of our epoch (or registers an epoch taken over on certain
    /// death). Returns when to renew next: every ping interval and twice per lease, sooner
    /// after a failure so that one lost answer does not cost the lease.
    pub(super) fn renew(&mut self) -> Duration {
        let interval = self.node.config.ping_interval;
        let (_, epoch) = self.node.role();
        let answer = self.client.renew(epoch, self.node.id);
        match self.heard(answer) {
            Ok(Renewal::Leased(lease)) => {
                self.node.mandate.leased(epoch, lease.until);
                witness::lease::renew_interval(interval, lease.left(Instant::now()))
                    .max(Duration::from_millis(1))
            }
            Ok(Renewal::Fenced(newer)) => {
                warn!("the witness knows epoch {newer}, newer than our {epoch}");
                self.node.observe(newer);
                Duration::ZERO
            }
            Ok(Renewal::Held(held)) => {
                debug!(
                    "the witness holds epoch {}'s lease for {} ms more; registering after it",
                    held.epoch,
                    held.left.as_millis()
                );
                held.left.min(interval)
            }
            Ok(Renewal::Restarting(left)) => {
                debug!(
                    "the witness restarted; registering in {} ms",
                    left.as_millis()
                );
                left.min(interval)
            }
            Err(_) => interval / 4,
        }
    }

    /// As backup, the primary silent (or both brokers backups, `certain`: nobody is
    /// primary): asks the witness for a new epoch, and takes over in it if granted. A witness
    /// out of reach grants nothing: on silence alone, nobody takes over.
    pub(super) fn claim(&mut self, reason: &str, certain: bool) -> Duration {
        let interval = self.node.config.ping_interval;
        let seen = self.node.with_state(|s, _| s.seen());
        let answer = self.client.claim(seen, self.node.id);
        match self.heard(answer) {
            Ok(Claim::Granted(lease)) => {
                self.node.take_over(
                    &format!("{reason}; the witness granted epoch {}", lease.epoch),
                    Some(lease),
                );
                Duration::ZERO
            }
            Ok(Claim::Held(held)) if self.held_logged => held.left.min(interval),
            Ok(Claim::Held(held)) => {
                self.held_logged = true;
                info!(
                    "{reason}, but the witness says the primary of epoch {} holds its \
                     lease for {} ms more; not taking over while it does",
                    held.epoch,
                    held.left.as_millis()
                );
                held.left.min(interval)
            }
            Ok(Claim::Restarting(left)) => {
                info!(
                    "{reason}, but the witness restarted and grants nothing for {} ms",
                    left.as_millis()
                );
                left.min(interval)
            }
            Err(_) if certain => {
                self.node
                    .take_over(&format!("{reason} (the witness is out of reach)"), None);
                interval
            }
            Err(_) => interval,
        }
    }

    /// As backup, the primary alive: only to know, for STATUS, whether the witness answers.
    pub(super) fn check(&mut self) {
        self.held_logged = false;
        let answer = self.client.status();
        let _ = self.heard(answer);
    }

    /// Tells the mandate whether the witness answered, and logs where an outage begins and
    /// ends; returns the answer.
    fn heard<T>(&mut self, answer: Result<T, Error>) -> Result<T, Error> {
        match &answer {
            Ok(_) if self.outage_logged => {
                info!("the witness at {} answers again", self.client.addr());
                self.outage_logged = false;
            }
            Err(e) if !self.outage_logged => {
                warn!("the witness at {} is out of reach: {e}", self.client.addr());
                self.outage_logged = true;
            }
            _ => {}
        }
        self.node.mandate.set_witness(answer.is_ok());
        answer
    }
}
