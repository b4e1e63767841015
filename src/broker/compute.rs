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

use super::node::{Node, Task};
use super::role::Job;
use super::status::bump;
use super::writer::HeldUntilWritten;

/// The worker loop.
pub fn run_worker(node: Arc<Node>, tasks: Receiver<Task>) {
    while let Ok(Task::Process(job)) = tasks.recv() {
        // A stopped broker is a crashed one: what is queued stays with the backup.
        if node.stopping() {
            return;
        }
        // With jobs waiting, the writer threads write (and batch) so this one gets on.
        process(&node, &job, tasks.is_empty());
        node.computing.done(&job.message);
    }
}

/// Computes and forwards one job; `direct` lets the delivery write straight into idle
/// subscribers' sockets.
fn process(node: &Arc<Node>, job: &Job, direct: bool) {
    let (id, index, epoch, message) = (job.message.id, job.index, job.epoch, &job.message);
    if !node.await_replicated(index, epoch) {
        debug!("{id} dropped: epoch {epoch} ended before it was processed");
        return;
    }
    node.gate();
    let started = Instant::now();
    compute(&node.config.compute, message, || node.stopping());
    node.gate();
    // Fencing: a broker that stepped down while computing must not forward, nor one that
    // was cut off (or frozen) past its lease.
    if !node.await_mandate(epoch) {
        debug!("{id} computed but not forwarded: epoch {epoch} ended");
        return;
    }
    node.topics.hold(message.size());
    let clear: HeldUntilWritten = Arc::new(ClearWhenWritten {
        node: Arc::clone(node),
        index,
        epoch,
        bytes: message.size(),
    });
    let delivered = node.topics.deliver(message, epoch, &clear, direct);
    bump(&node.counters.processed);
    node.counters
        .delivered
        .fetch_add(delivered as u64, Ordering::Relaxed);
    let ms = started.elapsed().as_millis();
    debug!("{id} computed in {ms} ms, forwarded to {delivered} subscriber(s) (epoch {epoch})");
}

/// The last step of a message's path. Every line that delivers the message holds one shared
/// `ClearWhenWritten`; a subscriber's writer drops its line once the line is written to the
/// socket (or the subscriber is gone), so the last drop comes when every subscriber's socket
/// has the message. `Drop` then removes it from the log and sends the backup its CLEAR
/// ([`Node::clear_delivered`]), and gives its bytes back to `--max-queued-bytes`. Dropped during a
/// crash or shutdown, it clears nothing: the message stays with the backup, which redoes it.
pub struct ClearWhenWritten {
    node: Arc<Node>,
    index: u64,
    epoch: Epoch,
    /// The message's share of `--max-queued-bytes` ([`super::topics::Topics::hold`]).
    bytes: usize,
}

impl Drop for ClearWhenWritten {
    fn drop(&mut self) {
        if !self.node.stopping() {
            self.node.clear_delivered(self.index, self.epoch);
        }
        self.node.topics.release(self.bytes);
    }
}

/// Runs the compute step for one message; a busy loop ends early once `stopped` says so (a
/// killed broker drops the work in hand, as a crashed process would).
pub fn compute(step: &ComputeStep, message: &Message, stopped: impl Fn() -> bool) {
    match step {
        ComputeStep::Off => {}
        ComputeStep::BusyLoop(range) => {
            let ms = rand::random_range(range.clone());
            busy_loop(Duration::from_millis(ms), stopped);
        }
        ComputeStep::Custom(f) => f(message),
    }
}

/// Keeps the CPU busy for `duration`, or until `stopped`: a spin on `Instant`, not a sleep,
/// because it stands for real work.
pub fn busy_loop(duration: Duration, stopped: impl Fn() -> bool) {
    let start = Instant::now();
    while start.elapsed() < duration && !stopped() {
        std::hint::spin_loop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_loop_ends_when_stopped() {
        let start = Instant::now();
        busy_loop(Duration::from_secs(60), || {
            start.elapsed() > Duration::from_millis(5)
        });
        assert!(start.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn busy_loop_lasts_at_least_its_duration() {
        let start = Instant::now();
        busy_loop(Duration::from_millis(5), || false);
        assert!(start.elapsed() >= Duration::from_millis(5));
    }
}
