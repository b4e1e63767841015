//! The pair's clients as processes: the `subscriber`s on the `subscriber` host (each run of one
//! a new output file) and `test_publisher` on the `publisher` host, started against both
//! brokers and stopped with SIGINT.

use std::process::ExitStatus;
use std::time::Duration;

use edgebroker::error::Result;

use super::{BrokerId, Cluster, SubscriberSlot};
use crate::harness::netns::Host;
use crate::harness::process::{Proc, Signal};

impl Cluster {
    /// Starts a subscriber on the `subscriber` host; `stays_up` says whether it must print
    /// every ACKed message (it is not restarted). Returns its index.
    pub fn add_subscriber(&mut self, stays_up: bool) -> Result<usize> {
        let i = self.subscribers.len();
        self.subscribers.push(SubscriberSlot {
            name: format!("sub-{}", i + 1),
            stays_up,
            proc: None,
            runs: 0,
            outputs: Vec::new(),
        });
        self.start_subscriber(i)?;
        Ok(i)
    }

    /// Kills a subscriber and starts it again (a new run with a new output file).
    pub fn restart_subscriber(&mut self, i: usize) -> Result<()> {
        if let Some(mut proc) = self.subscribers[i].proc.take() {
            proc.kill();
        }
        self.start_subscriber(i)
    }

    fn start_subscriber(&mut self, i: usize) -> Result<()> {
        let mut command = self
            .site
            .command(Host::Subscriber, &self.programs.subscriber);
        command
            .arg(&self.config.topic)
            .arg(self.addr(BrokerId::Primary).to_string())
            .arg(self.addr(BrokerId::Backup).to_string())
            .arg("--timestamps")
            .env("RUST_LOG", &self.config.log_level);
        let slot = &mut self.subscribers[i];
        slot.runs += 1;
        let proc = Proc::spawn(format!("{}.{}", slot.name, slot.runs), command, &self.dir)?;
        slot.outputs.push(proc.stdout_path().to_path_buf());
        slot.proc = Some(proc);
        Ok(())
    }

    /// How many subscribers there are.
    pub fn subscriber_count(&self) -> usize {
        self.subscribers.len()
    }

    /// Stops every subscriber with SIGINT (killing one that does not exit within `within`).
    pub fn stop_subscribers(&mut self, within: Duration) {
        for s in &mut self.subscribers {
            if let Some(proc) = s.proc.as_mut() {
                proc.stop(Signal::Int, within);
            }
        }
    }

    /// Starts `test_publisher` on the `publisher` host.
    pub fn start_publisher(&mut self) -> Result<()> {
        let mut command = self
            .site
            .command(Host::Publisher, &self.programs.test_publisher);
        command
            .arg(&self.config.topic)
            .arg(self.addr(BrokerId::Primary).to_string())
            .arg(self.addr(BrokerId::Backup).to_string())
            .args([
                "--rate-hz",
                &self.config.rate_hz.to_string(),
                "--window",
                &self.config.window.to_string(),
                "--timestamps",
            ])
            .env("RUST_LOG", &self.config.log_level);
        self.publisher = Some(Proc::spawn("test_publisher", command, &self.dir)?);
        Ok(())
    }

    /// Stops `test_publisher` with SIGINT (it finishes the publish in hand, logs its summary
    /// and exits). Returns its exit status, `None` if it had to be killed after `within`.
    pub fn stop_publisher(&mut self, within: Duration) -> Option<ExitStatus> {
        let proc = self.publisher.as_mut()?;
        if proc.stop(Signal::Int, within) {
            proc.try_exit()
        } else {
            None
        }
    }
}
