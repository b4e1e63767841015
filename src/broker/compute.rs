//! The compute workers: each takes jobs from its crossbeam channel in order, waits until the
//! message is replicated, runs the compute step and forwards the message to the topic's
//! subscribers. The message is cleared from the log (and the backup) once every subscriber's
//! socket has it. Topics are spread over the workers by hash, so each topic keeps its order.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use log::debug;

use crate::config::ComputeStep;
use crate::protocol::{Epoch, Message};

use super::node::Node;
use super::topics::Token;

/// One message to process in one epoch.
#[derive(Debug)]
pub struct Job {
    /// Its place in the log.
    pub index: u64,
    /// The reign that queued it; a job from an ended reign is dropped.
    pub epoch: Epoch,
    /// The message.
    pub message: Arc<Message>,
}

/// What a worker's channel carries.
#[derive(Debug)]
pub enum Task {
    /// Process a message.
    Process(Job),
    /// The broker is stopping.
    Stop,
}

/// The worker loop.
pub fn run_worker(node: Arc<Node>, tasks: Receiver<Task>) {
    while let Ok(Task::Process(job)) = tasks.recv() {
        let Job {
            index,
            epoch,
            message,
        } = job;
        if !node.await_replicated(index, epoch) {
            debug!(
                "{} dropped: epoch {epoch} ended before it was processed",
                message.id
            );
            continue;
        }
        node.gate();
        let started = Instant::now();
        compute(&node.config.compute, &message);
        node.gate();
        // Fencing: a broker that stepped down while computing must not forward.
        if !node.is_current(epoch) {
            debug!(
                "{} computed but not forwarded: epoch {epoch} ended",
                message.id
            );
            continue;
        }
        let token: Token = Arc::new(ClearWhenWritten {
            node: Arc::clone(&node),
            index,
            epoch,
        });
        // With jobs waiting, the writer threads write (and batch) so this one gets on.
        let direct = tasks.is_empty();
        let (delivered, slow) = node.topics.deliver(&message, epoch, &token, direct);
        node.counters.processed.fetch_add(1, Ordering::Relaxed);
        node.counters
            .delivered
            .fetch_add(delivered as u64, Ordering::Relaxed);
        node.counters
            .slow_consumers
            .fetch_add(slow as u64, Ordering::Relaxed);
        debug!(
            "{} computed in {} ms, forwarded to {delivered} subscriber(s) (epoch {epoch})",
            message.id,
            started.elapsed().as_millis()
        );
    }
}

/// Clears a message from the log when the last subscriber's writer has written it (or the
/// last subscriber went away). Dropped during a crash or shutdown, it does nothing: the
/// message stays with the backup.
struct ClearWhenWritten {
    node: Arc<Node>,
    index: u64,
    epoch: Epoch,
}

impl Drop for ClearWhenWritten {
    fn drop(&mut self) {
        if !self.node.stopping() {
            self.node.processed(self.index, self.epoch);
        }
    }
}

/// Runs the compute step for one message.
pub fn compute(step: &ComputeStep, message: &Message) {
    match step {
        ComputeStep::Off => {}
        ComputeStep::BusyLoop(range) => {
            let ms = rand::random_range(range.clone());
            busy_loop(Duration::from_millis(ms));
        }
        ComputeStep::Custom(f) => f(message),
    }
}

/// Keeps the CPU busy for `duration`: a spin on `Instant`, not a sleep, because it stands for
/// real work.
pub fn busy_loop(duration: Duration) {
    let start = Instant::now();
    while start.elapsed() < duration {
        std::hint::spin_loop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_loop_lasts_at_least_its_duration() {
        let start = Instant::now();
        busy_loop(Duration::from_millis(5));
        assert!(start.elapsed() >= Duration::from_millis(5));
    }
}
