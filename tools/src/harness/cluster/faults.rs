//! The faults a cluster injects from outside, the way an operator would meet them: a broker,
//! both brokers at once or the witness killed (`kill -9`), a broker hung (SIGSTOP) and
//! resumed (SIGCONT), the link between two hosts cut and healed, a host cut off and brought
//! back.

use edgebroker::error::Result;
use log::info;

use super::{BrokerId, Cluster};
use crate::harness::failure;
use crate::harness::netns::{Host, Network};
use crate::harness::process::Signal;

impl Cluster {
    /// SIGKILLs a broker: a crash. It stays dead until [`Cluster::start_broker`].
    pub fn kill_broker(&mut self, id: BrokerId) {
        let slot = self.slot(id);
        if let Some(mut proc) = slot.proc.take() {
            proc.kill();
            info!("{} (pid {}) killed", proc.name(), proc.pid());
        }
        slot.stopped = false;
    }

    /// SIGKILLs both brokers at one moment: a power cut of the pair. Both are sent SIGKILL
    /// before either is reaped, so they die within a moment of each other. They stay
    /// dead until [`Cluster::start_broker`].
    pub fn kill_both_brokers(&mut self) {
        for slot in &mut self.brokers {
            if let Some(proc) = slot.proc.as_mut() {
                proc.kill_now();
            }
        }
        for id in BrokerId::BOTH {
            self.kill_broker(id);
        }
    }

    /// SIGSTOPs a broker: a hang.
    pub fn stop_broker(&mut self, id: BrokerId) -> Result<()> {
        self.signal_broker(id, Signal::Stop)?;
        self.slot(id).stopped = true;
        Ok(())
    }

    /// SIGCONTs a stopped broker.
    pub fn resume_broker(&mut self, id: BrokerId) -> Result<()> {
        self.signal_broker(id, Signal::Cont)?;
        self.slot(id).stopped = false;
        Ok(())
    }

    fn signal_broker(&mut self, id: BrokerId, sig: Signal) -> Result<()> {
        match self.slot(id).proc.as_mut() {
            Some(proc) => proc.signal(sig),
            None => Err(failure(&format!("{id} is not running"))),
        }
    }

    /// SIGKILLs the witness. It stays dead until [`Cluster::start_witness`].
    pub fn kill_witness(&mut self) {
        if let Some(mut proc) = self.witness.as_mut().and_then(|w| w.proc.take()) {
            proc.kill();
            info!("{} (pid {}) killed", proc.name(), proc.pid());
        }
    }

    /// Cuts the link between any two hosts (the primary's and the witness's, say): neither
    /// receives a packet from the other, while both still reach every other host.
    pub fn cut_link(&mut self, a: Host, b: Host) -> Result<()> {
        self.network()?.cut_link(a, b)
    }

    /// Heals a link cut by [`Cluster::cut_link`].
    pub fn heal_link(&mut self, a: Host, b: Host) -> Result<()> {
        self.network()?.heal_link(a, b)
    }

    /// Cuts any host off the network entirely.
    pub fn isolate(&mut self, host: Host) -> Result<()> {
        self.network()?.isolate(host)
    }

    /// Brings a host cut off by [`Cluster::isolate`] back.
    pub fn rejoin(&mut self, host: Host) -> Result<()> {
        self.network()?.rejoin(host)
    }

    /// Cuts the link between the brokers' hosts (both still reach every client).
    pub fn cut_broker_link(&mut self) -> Result<()> {
        self.cut_link(Host::Primary, Host::Backup)
    }

    /// Heals the link cut by [`Cluster::cut_broker_link`].
    pub fn heal_broker_link(&mut self) -> Result<()> {
        self.heal_link(Host::Primary, Host::Backup)
    }

    /// Cuts a broker's host off the network entirely.
    pub fn isolate_broker(&mut self, id: BrokerId) -> Result<()> {
        self.isolate(id.host())
    }

    /// Brings a broker's host back on the network.
    pub fn rejoin_broker(&mut self, id: BrokerId) -> Result<()> {
        self.rejoin(id.host())
    }

    fn network(&mut self) -> Result<&mut Network> {
        self.site
            .network_mut()
            .ok_or_else(|| failure("network faults need hosts in network namespaces"))
    }
}
