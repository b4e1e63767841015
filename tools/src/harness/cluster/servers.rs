//! Starting the pair's server programs, both brokers and the witness, with the flags the
//! cluster's settings give them; whether they run; and asking a broker a line.

use std::net::SocketAddr;
use std::path::PathBuf;

use edgebroker::error::Result;
use log::info;

use super::{BrokerId, Cluster, ServerSlot};
use crate::harness::failure;
use crate::harness::netns::Host;
use crate::harness::process::Proc;

impl Cluster {
    /// Starts (or restarts) a broker with the program that first started it, and waits until
    /// it listens.
    pub fn start_broker(&mut self, id: BrokerId) -> Result<()> {
        let peer = self.addr(id.other());
        let bind = self.site.bind_addr(id.host());
        let program = match id {
            BrokerId::Primary => &self.programs.primary,
            BrokerId::Backup => &self.programs.backup,
        };
        let c = &self.config;
        let mut args = vec![
            self.brokers[id.index()].port.to_string(),
            peer.to_string(),
            "--bind".into(),
            bind.to_string(),
            "--compute-ms".into(),
            c.compute.clone(),
            "--ping-interval-ms".into(),
            c.ping_interval_ms.to_string(),
            "--ping-timeout-ms".into(),
            c.ping_timeout_ms.to_string(),
            "--startup-grace-ms".into(),
            c.startup_grace_ms.to_string(),
        ];
        if c.require_backup {
            args.push("--require-backup".into());
        }
        if let Some(fsync) = &c.fsync {
            let dir = self.data_dir(id).to_string_lossy().into_owned();
            args.extend(["--data-dir".into(), dir, "--fsync".into(), fsync.clone()]);
        }
        if let Some(witness) = self.witness_addr() {
            args.extend(["--witness".into(), witness.to_string()]);
        }
        args.extend(match id {
            BrokerId::Primary => c.primary_flags.iter().cloned(),
            BrokerId::Backup => c.backup_flags.iter().cloned(),
        });
        let mut command = self.site.command(id.host(), program);
        command.args(&args).env("RUST_LOG", &self.config.log_level);
        let name = self.brokers[id.index()].spawn(id.name(), command, &self.dir)?;
        info!("{name} listening on {}", self.addr(id));
        Ok(())
    }

    /// The folder of a broker's log on disk (`--data-dir`, with [`ClusterConfig::fsync`]):
    /// `primary-data` or `backup-data` in the run's folder, the same for every run of it.
    ///
    /// [`ClusterConfig::fsync`]: super::ClusterConfig::fsync
    pub fn data_dir(&self, id: BrokerId) -> PathBuf {
        self.dir.join(format!("{}-data", id.name()))
    }

    /// Whether a broker's process runs (stopped counts as running).
    pub fn broker_running(&mut self, id: BrokerId) -> bool {
        self.slot(id).running()
    }

    /// The pid of a broker's current run.
    pub fn broker_pid(&self, id: BrokerId) -> Option<u32> {
        self.brokers[id.index()].proc.as_ref().map(Proc::pid)
    }

    /// Starts (or restarts) both brokers, the one started as `primary` first, each with its
    /// own command line; the second is started even if the first fails.
    pub fn start_brokers(&mut self) -> Result<()> {
        let primary = self.start_broker(BrokerId::Primary);
        let backup = self.start_broker(BrokerId::Backup);
        primary.and(backup)
    }

    /// Kills both brokers.
    pub fn stop_brokers(&mut self) {
        for id in BrokerId::BOTH {
            self.kill_broker(id);
        }
    }

    /// Sends a broker one protocol line from a fresh connection on its own host (closed
    /// afterwards) and returns the first answer line; `None` if it is not running or did not
    /// answer. For reproducing what a peer or a client that gave up would send.
    pub fn ask(&mut self, id: BrokerId, line: &str) -> Option<String> {
        let port = self.brokers[id.index()].port;
        if !self.broker_running(id) {
            return None;
        }
        self.site.ask(id.host(), port, line)
    }

    /// Where the brokers reach the witness; `None` without one.
    pub fn witness_addr(&self) -> Option<SocketAddr> {
        let slot = self.witness.as_ref()?;
        Some(SocketAddr::new(self.site.addr(Host::Witness), slot.port))
    }

    /// Starts (or restarts) the witness with the config's lease, and waits until it listens.
    /// A restarted witness knows nothing: it leases and grants nothing for a lease and a
    /// margin (`restart_wait_ms` in its STATUS).
    pub fn start_witness(&mut self) -> Result<()> {
        let bind = self.site.bind_addr(Host::Witness);
        let mut command = self.site.command(Host::Witness, &self.programs.witness);
        let slot = self
            .witness
            .as_mut()
            .ok_or_else(|| failure("the cluster was started without a witness"))?;
        command
            .arg(slot.port.to_string())
            .args(["--bind", &bind.to_string()])
            .args(["--lease-ms", &self.config.lease_ms.to_string()])
            .env("RUST_LOG", &self.config.log_level);
        if let Some(mut old) = slot.proc.take() {
            old.kill();
        }
        let name = slot.spawn("witness", command, &self.dir)?;
        info!(
            "{name} listening on {}",
            self.witness_addr().expect("a witness slot")
        );
        Ok(())
    }

    /// Whether the witness's process runs.
    pub fn witness_running(&mut self) -> bool {
        self.witness.as_mut().is_some_and(ServerSlot::running)
    }
}
