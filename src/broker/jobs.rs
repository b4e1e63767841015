//! What waits for the compute workers: the tasks their channels carry, and how much the jobs
//! waiting hold ([`Computing`]), which the primary checks before it admits a publish.

use std::sync::atomic::{AtomicUsize, Ordering};

use crate::protocol::Message;

use super::role::Job;

/// How many messages, and how many bytes of topic and payload, wait for the compute step
/// (queued on a worker's channel or being computed). Publishes are refused past
/// `--max-pending` and `--max-pending-bytes`.
#[derive(Debug, Default)]
pub struct Computing {
    messages: AtomicUsize,
    bytes: AtomicUsize,
}

impl Computing {
    /// A message was queued for a worker.
    pub fn add(&self, message: &Message) {
        self.messages.fetch_add(1, Ordering::AcqRel);
        self.bytes.fetch_add(message.size(), Ordering::AcqRel);
    }

    /// A worker is done with a message (forwarded or dropped).
    pub fn done(&self, message: &Message) {
        self.messages.fetch_sub(1, Ordering::AcqRel);
        self.bytes.fetch_sub(message.size(), Ordering::AcqRel);
    }

    /// Messages and bytes waiting.
    pub fn get(&self) -> (usize, usize) {
        (
            self.messages.load(Ordering::Acquire),
            self.bytes.load(Ordering::Acquire),
        )
    }
}

/// What a worker's channel carries.
#[derive(Debug)]
pub enum Task {
    /// Process a message.
    Process(Job),
    /// The broker is stopping.
    Stop,
}
