//! A broker pair and its clients as real processes on a [`Site`]: the broker started as
//! `primary` on the `primary` host, the one started as `backup` on the `backup` host,
//! `test_publisher` on the `publisher` host, any number of `subscriber`s on the `subscriber`
//! host, and, with [`ClusterConfig::witness`], the pair's `witness` on the `witness` host
//! (started first; both brokers get `--witness`). A [`Cluster`] starts them, injects the
//! faults (kill, restart, stop, resume, cut a link between any two hosts, cut a host off),
//! waits until the pair is healthy again, and hands the output files to [`super::check`].
//!
//! Every process writes into the run's folder, one pair of files per process run
//! (`primary.1.out`, `primary.1.err`, `primary.2.err` after a restart, `witness.1.err`,
//! `sub-1.1.out`, …).
//! Dropping the cluster kills every process it started, then drops the site (and with it the
//! namespaces).

use std::fmt;
use std::fs;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

use edgebroker::error::{Error, Result};
use log::info;

use super::check::{self, EpochClaim, SubscriberRun};
use super::netns::Host;
use super::process::{Proc, Signal};
use super::site::Site;
use super::{unix_ms, wait_for};

/// How long a program may take to start listening.
pub const START_DEADLINE: Duration = Duration::from_secs(10);

/// The port brokers listen on when each has a host of its own.
pub const NETNS_PORT: u16 = 7000;

/// Where the project's programs are.
#[derive(Clone, Debug)]
pub struct Programs {
    /// The `primary` program.
    pub primary: PathBuf,
    /// The `backup` program.
    pub backup: PathBuf,
    /// The `subscriber` program.
    pub subscriber: PathBuf,
    /// The `test_publisher` program.
    pub test_publisher: PathBuf,
    /// The `witness` program.
    pub witness: PathBuf,
}

impl Programs {
    /// The programs in `dir` (a cargo profile folder such as `target/release`).
    pub fn in_dir(dir: &Path) -> Programs {
        Programs {
            primary: dir.join("primary"),
            backup: dir.join("backup"),
            subscriber: dir.join("subscriber"),
            test_publisher: dir.join("test_publisher"),
            witness: dir.join("witness"),
        }
    }

    /// The programs of the build this executable belongs to: those in its cargo profile folder
    /// (`target/release` for `cargo run --release --bin soak`, `target/debug` for a test, whose
    /// executable sits in `target/debug/deps`). Under cargo (`cargo run`, `cargo test`: they
    /// set `CARGO` and `CARGO_MANIFEST_DIR`), the programs are built first with the same
    /// profile, so a run never uses stale or missing ones: they belong to the `edgebroker`
    /// crate, which cargo does not build for this one.
    pub fn of_this_build() -> Result<Programs> {
        let exe = std::env::current_exe()?;
        let mut dir = exe.parent().unwrap_or(Path::new(".")).to_path_buf();
        if dir.file_name().is_some_and(|name| name == "deps") {
            dir.pop();
        }
        build_under_cargo(&dir)?;
        Ok(Programs::in_dir(&dir))
    }

    /// Copies the programs into `dir` (made if missing) and returns the copies, so a long run
    /// restarts its brokers with the build it started with even if the originals are rebuilt
    /// meanwhile — and a failed run's folder holds the very programs that failed.
    pub fn snapshot(&self, dir: &Path) -> Result<Programs> {
        self.check()?;
        fs::create_dir_all(dir)?;
        let copy = |from: &Path| -> Result<PathBuf> {
            let to = dir.join(from.file_name().unwrap_or_default());
            fs::copy(from, &to)?;
            Ok(to)
        };
        Ok(Programs {
            primary: copy(&self.primary)?,
            backup: copy(&self.backup)?,
            subscriber: copy(&self.subscriber)?,
            test_publisher: copy(&self.test_publisher)?,
            witness: copy(&self.witness)?,
        })
    }

    /// Fails, naming the first one, if a program is missing.
    pub fn check(&self) -> Result<()> {
        for p in [
            &self.primary,
            &self.backup,
            &self.subscriber,
            &self.test_publisher,
            &self.witness,
        ] {
            if !p.is_file() {
                return Err(Error::Io(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!(
                        "{} not found (build it: cargo build --release --bins)",
                        p.display()
                    ),
                )));
            }
        }
        Ok(())
    }
}

/// Under cargo, builds the `edgebroker` crate's programs with the profile whose folder is
/// `profile_dir`; elsewhere (the programs run by hand) does nothing.
fn build_under_cargo(profile_dir: &Path) -> Result<()> {
    let (Some(cargo), Some(manifest)) = (
        std::env::var_os("CARGO"),
        std::env::var_os("CARGO_MANIFEST_DIR"),
    ) else {
        return Ok(());
    };
    let profile = profile_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut build = std::process::Command::new(cargo);
    build
        .arg("build")
        .arg("--manifest-path")
        .arg(Path::new(&manifest).join("Cargo.toml"))
        .args(["--package", "edgebroker", "--bins", "--quiet"]);
    match profile.as_str() {
        "debug" => {}
        "release" => {
            build.arg("--release");
        }
        other => {
            build.args(["--profile", other]);
        }
    }
    info!("building the programs ({profile})");
    let status = build.status()?;
    if status.success() {
        Ok(())
    } else {
        Err(Error::Io(io::Error::other(format!(
            "building the programs failed ({status})"
        ))))
    }
}

/// How the programs of a cluster are run.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// The topic everyone uses.
    pub topic: String,
    /// The brokers' `--compute-ms`.
    pub compute: String,
    /// The brokers' `--ping-interval-ms`.
    pub ping_interval_ms: u64,
    /// The brokers' `--ping-timeout-ms`.
    pub ping_timeout_ms: u64,
    /// Both brokers get `--require-backup`.
    pub require_backup: bool,
    /// `test_publisher`'s `--rate-hz`.
    pub rate_hz: u32,
    /// `RUST_LOG` for every program.
    pub log_level: String,
    /// More flags for the broker started as `primary`, after the common ones (a flag given
    /// twice takes its last value).
    pub primary_flags: Vec<String>,
    /// More flags for the broker started as `backup`.
    pub backup_flags: Vec<String>,
    /// Run the pair's witness on the `witness` host, and give both brokers `--witness`.
    pub witness: bool,
    /// The witness's `--lease-ms`.
    pub lease_ms: u64,
}

impl Default for ClusterConfig {
    /// The seed's compute step and rate, with fast failure detection (probes every 200 ms,
    /// 300 ms timeout); no witness, and a 1000 ms lease when there is one (it must outlast a
    /// lost renewal and its retry, 200 + 300 + 50 ms, PROTOCOL.md "Default timings").
    fn default() -> Self {
        ClusterConfig {
            topic: "topicC".into(),
            compute: "50-150".into(),
            ping_interval_ms: 200,
            ping_timeout_ms: 300,
            require_backup: false,
            rate_hz: 10,
            log_level: "info".into(),
            primary_flags: Vec::new(),
            backup_flags: Vec::new(),
            witness: false,
            lease_ms: 1000,
        }
    }
}

impl ClusterConfig {
    /// The same settings with a witness.
    pub fn with_witness(self) -> ClusterConfig {
        ClusterConfig {
            witness: true,
            ..self
        }
    }
}

/// One of the two brokers, named after the program that started it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BrokerId {
    /// Started as `primary`, on the `primary` host; the subscriber labels its lines
    /// `[PRIMARY]`.
    Primary,
    /// Started as `backup`, on the `backup` host; `[BACKUP]`.
    Backup,
}

impl BrokerId {
    /// Both brokers.
    pub const BOTH: [BrokerId; 2] = [BrokerId::Primary, BrokerId::Backup];

    /// The program's name.
    pub fn name(self) -> &'static str {
        match self {
            BrokerId::Primary => "primary",
            BrokerId::Backup => "backup",
        }
    }

    /// The host it runs on.
    pub fn host(self) -> Host {
        match self {
            BrokerId::Primary => Host::Primary,
            BrokerId::Backup => Host::Backup,
        }
    }

    /// The other broker.
    pub fn other(self) -> BrokerId {
        match self {
            BrokerId::Primary => BrokerId::Backup,
            BrokerId::Backup => BrokerId::Primary,
        }
    }

    fn index(self) -> usize {
        match self {
            BrokerId::Primary => 0,
            BrokerId::Backup => 1,
        }
    }
}

impl fmt::Display for BrokerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A broker's STATUS line, the fields the harness uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokerStatus {
    /// `primary` or `backup`.
    pub role: String,
    /// `term.node`.
    pub epoch: String,
    /// The primary's view of its backup: `up`, `silent`, `down`.
    pub backup: String,
    /// Messages not yet delivered (on a backup: replicas held).
    pub pending: u64,
    /// Subscriptions over all topics.
    pub subscriptions: u64,
    /// Whether the witness answered its last request: `up`, `down`, or `none` (no witness).
    pub witness: String,
    /// The witness's lease's time left on this broker, ms (0 on a backup, or without one).
    pub lease_ms: u64,
    /// The whole line.
    pub line: String,
}

impl BrokerStatus {
    /// Parses `STATUS|role=…|epoch=…|…`.
    pub fn parse(line: &str) -> Option<BrokerStatus> {
        let fields = line.trim_end().strip_prefix("STATUS|")?;
        let get = |key: &str| {
            fields
                .split('|')
                .filter_map(|kv| kv.split_once('='))
                .find(|(k, _)| *k == key)
                .map(|(_, v)| v.to_string())
        };
        Some(BrokerStatus {
            role: get("role")?,
            epoch: get("epoch")?,
            backup: get("backup").unwrap_or_default(),
            pending: get("pending").and_then(|v| v.parse().ok()).unwrap_or(0),
            subscriptions: get("subscriptions")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
            witness: get("witness").unwrap_or_else(|| "none".into()),
            lease_ms: get("lease_ms").and_then(|v| v.parse().ok()).unwrap_or(0),
            line: line.trim_end().to_string(),
        })
    }

    /// Whether it acts as primary.
    pub fn is_primary(&self) -> bool {
        self.role == "primary"
    }
}

/// The witness's STATUS line, the fields the harness uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WitnessStatus {
    /// The highest epoch it has seen or granted.
    pub epoch: String,
    /// The node holding a live lease, or `none`.
    pub holder: String,
    /// The epoch of the live lease, or `none`.
    pub holder_epoch: String,
    /// The live lease's time left on the witness, margin included, ms.
    pub lease_left_ms: u64,
    /// Time left before a restarted witness answers, ms.
    pub restart_wait_ms: u64,
    /// New epochs granted so far.
    pub grants: u64,
    /// Requests answered `HELD`.
    pub held: u64,
    /// The whole line.
    pub line: String,
}

impl WitnessStatus {
    /// Parses `STATUS|role=witness|epoch=…|…`; `None` for any other line (a broker's STATUS).
    pub fn parse(line: &str) -> Option<WitnessStatus> {
        let fields = line.trim_end().strip_prefix("STATUS|")?;
        let get = |key: &str| {
            fields
                .split('|')
                .filter_map(|kv| kv.split_once('='))
                .find(|(k, _)| *k == key)
                .map(|(_, v)| v.to_string())
        };
        let number = |key: &str| get(key).and_then(|v| v.parse().ok()).unwrap_or(0);
        (get("role")? == "witness").then(|| WitnessStatus {
            epoch: get("epoch").unwrap_or_default(),
            holder: get("holder").unwrap_or_default(),
            holder_epoch: get("holder_epoch").unwrap_or_default(),
            lease_left_ms: number("lease_left_ms"),
            restart_wait_ms: number("restart_wait_ms"),
            grants: number("grants"),
            held: number("held"),
            line: line.trim_end().to_string(),
        })
    }

    /// Whether some epoch holds a live lease.
    pub fn has_holder(&self) -> bool {
        !self.holder_epoch.is_empty() && self.holder_epoch != "none"
    }
}

/// A healthy pair: one primary with a synced backup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Roles {
    /// The broker acting as primary.
    pub primary: BrokerId,
    /// The broker acting as its backup.
    pub backup: BrokerId,
}

struct BrokerSlot {
    port: u16,
    proc: Option<Proc>,
    runs: u32,
    stopped: bool,
    /// Every run's stderr log, as `(name.run, path)`.
    logs: Vec<(String, PathBuf)>,
}

/// The witness's process, runs and logs.
struct WitnessSlot {
    port: u16,
    proc: Option<Proc>,
    runs: u32,
    /// Every run's stderr log, as `(name.run, path)`.
    logs: Vec<(String, PathBuf)>,
}

struct SubscriberSlot {
    name: String,
    stays_up: bool,
    proc: Option<Proc>,
    runs: u32,
    outputs: Vec<PathBuf>,
}

/// A broker pair, a test publisher and subscribers, as processes on a site.
pub struct Cluster {
    // Processes first: fields drop in order, and they must die before the site (the
    // namespaces) goes.
    brokers: [BrokerSlot; 2],
    witness: Option<WitnessSlot>,
    publisher: Option<Proc>,
    subscribers: Vec<SubscriberSlot>,
    dir: PathBuf,
    config: ClusterConfig,
    programs: Programs,
    /// STATUS samples where both brokers were primary in one epoch.
    double_primaries: Vec<String>,
    site: Site,
}

impl Cluster {
    /// Starts the pair on `site` — the witness first if the config has one, then the primary,
    /// then the backup — and waits until the primary has a synced backup (and, with a
    /// witness, both brokers reach it and the primary holds its lease). Output files go to
    /// `dir`, which must exist.
    pub fn start(
        site: Site,
        programs: Programs,
        config: ClusterConfig,
        dir: &Path,
    ) -> Result<Cluster> {
        programs.check()?;
        let ports = match site {
            Site::Netns(_) => [NETNS_PORT; 3],
            Site::Loopback => free_ports()?,
        };
        let slot = |id: BrokerId| BrokerSlot {
            port: ports[id.index()],
            proc: None,
            runs: 0,
            stopped: false,
            logs: Vec::new(),
        };
        let mut cluster = Cluster {
            brokers: [slot(BrokerId::Primary), slot(BrokerId::Backup)],
            witness: config.witness.then(|| WitnessSlot {
                port: ports[2],
                proc: None,
                runs: 0,
                logs: Vec::new(),
            }),
            publisher: None,
            subscribers: Vec::new(),
            dir: dir.to_path_buf(),
            config,
            programs,
            double_primaries: Vec::new(),
            site,
        };
        if cluster.witness.is_some() {
            cluster.start_witness()?;
        }
        cluster.start_broker(BrokerId::Primary)?;
        wait_for(START_DEADLINE, || {
            cluster
                .status(BrokerId::Primary)
                .filter(BrokerStatus::is_primary)
        })
        .ok_or_else(|| failure("the primary did not become primary"))?;
        cluster.start_broker(BrokerId::Backup)?;
        cluster
            .wait_healthy(START_DEADLINE, 0)
            .map_err(|why| failure(&format!("the pair did not form: {why}")))?;
        Ok(cluster)
    }

    /// The folder the output files go to.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The site the cluster runs on.
    pub fn site(&self) -> &Site {
        &self.site
    }

    /// The cluster's settings.
    pub fn config(&self) -> &ClusterConfig {
        &self.config
    }

    /// The address clients use for a broker.
    pub fn addr(&self, id: BrokerId) -> SocketAddr {
        SocketAddr::new(self.site.addr(id.host()), self.brokers[id.index()].port)
    }

    fn slot(&mut self, id: BrokerId) -> &mut BrokerSlot {
        &mut self.brokers[id.index()]
    }

    // ---- brokers ----

    /// Starts (or restarts) a broker with the program that first started it, and waits until
    /// it listens.
    pub fn start_broker(&mut self, id: BrokerId) -> Result<()> {
        let peer = self.addr(id.other());
        let bind = self.site.bind_addr(id.host());
        let program = match id {
            BrokerId::Primary => self.programs.primary.clone(),
            BrokerId::Backup => self.programs.backup.clone(),
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
        ];
        if c.require_backup {
            args.push("--require-backup".into());
        }
        if let Some(witness) = self.witness_addr() {
            args.extend(["--witness".into(), witness.to_string()]);
        }
        args.extend(match id {
            BrokerId::Primary => c.primary_flags.iter().cloned(),
            BrokerId::Backup => c.backup_flags.iter().cloned(),
        });
        let mut command = self.site.command(id.host(), &program);
        command.args(&args).env("RUST_LOG", &self.config.log_level);
        let slot = &mut self.brokers[id.index()];
        slot.runs += 1;
        let name = format!("{}.{}", id.name(), slot.runs);
        let proc = Proc::spawn(&name, command, &self.dir)?;
        slot.logs
            .push((name.clone(), proc.stderr_path().to_path_buf()));
        slot.stopped = false;
        wait_listening(slot.proc.insert(proc))?;
        info!("{name} listening on {}", self.addr(id));
        Ok(())
    }

    /// Whether a broker's process runs (stopped counts as running).
    pub fn broker_running(&mut self, id: BrokerId) -> bool {
        self.slot(id)
            .proc
            .as_mut()
            .is_some_and(|p| p.try_exit().is_none())
    }

    /// The pid of a broker's current run.
    pub fn broker_pid(&self, id: BrokerId) -> Option<u32> {
        self.brokers[id.index()].proc.as_ref().map(Proc::pid)
    }

    /// SIGKILLs a broker: a crash. It stays dead until [`Cluster::start_broker`].
    pub fn kill_broker(&mut self, id: BrokerId) {
        let slot = self.slot(id);
        if let Some(mut proc) = slot.proc.take() {
            proc.kill();
            info!("{} (pid {}) killed", proc.name(), proc.pid());
        }
        slot.stopped = false;
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

    // ---- the witness ----

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
        slot.runs += 1;
        let name = format!("witness.{}", slot.runs);
        let proc = Proc::spawn(&name, command, &self.dir)?;
        slot.logs
            .push((name.clone(), proc.stderr_path().to_path_buf()));
        wait_listening(slot.proc.insert(proc))?;
        info!(
            "{name} listening on {}",
            self.witness_addr().expect("a witness slot")
        );
        Ok(())
    }

    /// SIGKILLs the witness. It stays dead until [`Cluster::start_witness`].
    pub fn kill_witness(&mut self) {
        if let Some(mut proc) = self.witness.as_mut().and_then(|w| w.proc.take()) {
            proc.kill();
            info!("{} (pid {}) killed", proc.name(), proc.pid());
        }
    }

    /// Whether the witness's process runs.
    pub fn witness_running(&mut self) -> bool {
        self.witness
            .as_mut()
            .and_then(|w| w.proc.as_mut())
            .is_some_and(|p| p.try_exit().is_none())
    }

    /// The witness's STATUS, asked on its own host as a broker's is; `None` without a
    /// witness, or if it is not running or does not answer.
    pub fn witness_status(&mut self) -> Option<WitnessStatus> {
        if !self.witness_running() {
            return None;
        }
        let port = self.witness.as_ref()?.port;
        WitnessStatus::parse(&self.site.status_line(Host::Witness, port)?)
    }

    /// Every witness run's stderr log, as `(name.run, text)`.
    pub fn witness_logs(&self) -> Vec<(String, String)> {
        self.witness
            .iter()
            .flat_map(|w| &w.logs)
            .map(|(name, path)| (name.clone(), fs::read_to_string(path).unwrap_or_default()))
            .collect()
    }

    // ---- the network ----

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
        self.network()?.cut_link(Host::Primary, Host::Backup)
    }

    /// Heals the link cut by [`Cluster::cut_broker_link`].
    pub fn heal_broker_link(&mut self) -> Result<()> {
        self.network()?.heal_link(Host::Primary, Host::Backup)
    }

    /// Cuts a broker's host off the network entirely.
    pub fn isolate_broker(&mut self, id: BrokerId) -> Result<()> {
        self.network()?.isolate(id.host())
    }

    /// Brings a broker's host back on the network.
    pub fn rejoin_broker(&mut self, id: BrokerId) -> Result<()> {
        self.network()?.rejoin(id.host())
    }

    fn network(&mut self) -> Result<&mut super::netns::Network> {
        self.site
            .network_mut()
            .ok_or_else(|| failure("network faults need hosts in network namespaces"))
    }

    /// A broker's STATUS, or `None` if it is not running, stopped, or does not answer.
    pub fn status(&mut self, id: BrokerId) -> Option<BrokerStatus> {
        let slot = &mut self.brokers[id.index()];
        if slot.stopped || slot.proc.as_mut().is_none_or(|p| p.try_exit().is_some()) {
            return None;
        }
        let line = self.site.status_line(id.host(), slot.port)?;
        BrokerStatus::parse(&line)
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

    /// Both brokers' STATUS. Also notes, for [`Cluster::double_primaries`], a moment when both
    /// said they were primary in the same epoch.
    pub fn statuses(&mut self) -> [Option<BrokerStatus>; 2] {
        let both = [
            self.status(BrokerId::Primary),
            self.status(BrokerId::Backup),
        ];
        if let [Some(a), Some(b)] = &both
            && a.is_primary()
            && b.is_primary()
            && a.epoch == b.epoch
        {
            self.double_primaries.push(format!(
                "at {} both brokers were primary in epoch {}: primary {:?}, backup {:?}",
                unix_ms(),
                a.epoch,
                a.line,
                b.line
            ));
        }
        both
    }

    /// Moments when both brokers said they were primary in the same epoch.
    pub fn double_primaries(&self) -> &[String] {
        &self.double_primaries
    }

    /// The roles if the pair is healthy now: exactly one primary, whose backup is `up`, the
    /// other a backup in the same epoch, and each with at least `subscriptions`
    /// subscriptions; with a witness running, both brokers also say `witness=up` and the
    /// primary holds a live lease. `Err` describes what the brokers said instead.
    pub fn health(&mut self, subscriptions: u64) -> std::result::Result<Roles, String> {
        let witnessed = self.witness_running();
        let statuses = self.statuses();
        let describe = |statuses: &[Option<BrokerStatus>; 2]| {
            BrokerId::BOTH
                .iter()
                .zip(statuses)
                .map(|(id, s)| match s {
                    Some(s) => format!("{id}: {}", s.line),
                    None => format!("{id}: no answer"),
                })
                .collect::<Vec<_>>()
                .join("; ")
        };
        let [Some(a), Some(b)] = &statuses else {
            return Err(describe(&statuses));
        };
        let (primary, p, q) = match (a.is_primary(), b.is_primary()) {
            (true, false) => (BrokerId::Primary, a, b),
            (false, true) => (BrokerId::Backup, b, a),
            _ => return Err(describe(&statuses)),
        };
        if p.backup == "up"
            && q.role == "backup"
            && q.epoch == p.epoch
            && p.subscriptions >= subscriptions
            && q.subscriptions >= subscriptions
            && (!witnessed || (p.witness == "up" && p.lease_ms > 0 && q.witness == "up"))
        {
            Ok(Roles {
                primary,
                backup: primary.other(),
            })
        } else {
            Err(describe(&statuses))
        }
    }

    /// Waits up to `within` until [`Cluster::health`] says the pair is healthy.
    pub fn wait_healthy(
        &mut self,
        within: Duration,
        subscriptions: u64,
    ) -> std::result::Result<Roles, String> {
        let mut last = String::new();
        wait_for(within, || match self.health(subscriptions) {
            Ok(roles) => Some(roles),
            Err(why) => {
                last = why;
                None
            }
        })
        .ok_or(last)
    }

    // ---- clients ----

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

    /// Waits until each running broker that answers counts at least `n` subscriptions.
    pub fn wait_subscribed(&mut self, n: u64, within: Duration) -> Result<()> {
        wait_for(within, || {
            let s = self.statuses();
            let answering: Vec<&BrokerStatus> = s.iter().flatten().collect();
            (!answering.is_empty() && answering.iter().all(|s| s.subscriptions >= n)).then_some(())
        })
        .ok_or_else(|| failure(&format!("the brokers did not count {n} subscriptions")))
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

    /// The ACKs `test_publisher` printed so far, `(unix_ms, seq)`.
    pub fn acks(&self) -> Vec<(u64, u64)> {
        self.publisher
            .as_ref()
            .map(|p| check::parse_acks(&p.stdout()).0)
            .unwrap_or_default()
    }

    /// `test_publisher`'s stdout and stderr so far.
    pub fn publisher_output(&self) -> (String, String) {
        self.publisher
            .as_ref()
            .map(|p| (p.stdout(), p.stderr()))
            .unwrap_or_default()
    }

    /// What each subscriber printed so far.
    pub fn subscriber_runs(&self) -> Vec<SubscriberRun> {
        self.subscribers
            .iter()
            .map(|s| {
                let outputs: Vec<String> = s
                    .outputs
                    .iter()
                    .map(|p| fs::read_to_string(p).unwrap_or_default())
                    .collect();
                SubscriberRun::parse(&s.name, s.stays_up, &outputs)
            })
            .collect()
    }

    /// Waits until every subscriber that stays up printed all of `seqs`, for as long as they
    /// make progress towards it: it gives up once `stall` passed without one more of `seqs`
    /// printed (a broker with a backlog may take a while, but it must keep delivering).
    /// Returns whether they printed everything.
    pub fn wait_delivered(&self, seqs: &[u64], stall: Duration) -> bool {
        let wanted: std::collections::HashSet<u64> = seqs.iter().copied().collect();
        let mut best = 0;
        let mut last_progress = std::time::Instant::now();
        loop {
            let runs = self.subscriber_runs();
            let printed: usize = runs
                .iter()
                .filter(|r| r.stays_up)
                .map(|r| {
                    let mut got: Vec<u64> = r
                        .incarnations
                        .iter()
                        .flatten()
                        .map(|d| d.seq)
                        .filter(|s| wanted.contains(s))
                        .collect();
                    got.sort_unstable();
                    got.dedup();
                    got.len()
                })
                .sum();
            let want = wanted.len() * runs.iter().filter(|r| r.stays_up).count();
            if printed >= want {
                return true;
            }
            if printed > best {
                best = printed;
                last_progress = std::time::Instant::now();
            } else if last_progress.elapsed() > stall {
                return false;
            }
            std::thread::sleep(super::POLL);
        }
    }

    /// Stops every subscriber with SIGINT (killing one that does not exit within `within`).
    pub fn stop_subscribers(&mut self, within: Duration) {
        for s in &mut self.subscribers {
            if let Some(proc) = s.proc.as_mut() {
                proc.stop(Signal::Int, within);
            }
        }
    }

    /// Kills both brokers.
    pub fn stop_brokers(&mut self) {
        for id in BrokerId::BOTH {
            self.kill_broker(id);
        }
    }

    // ---- logs ----

    /// Every broker run's stderr log, as `(name.run, text)`.
    pub fn broker_logs(&self) -> Vec<(String, String)> {
        self.brokers
            .iter()
            .flat_map(|b| &b.logs)
            .map(|(name, path)| (name.clone(), fs::read_to_string(path).unwrap_or_default()))
            .collect()
    }

    /// Every takeover the brokers logged, over all their runs.
    pub fn epoch_claims(&self) -> Vec<EpochClaim> {
        self.broker_logs()
            .iter()
            .flat_map(|(name, log)| check::epoch_claims(name, log))
            .collect()
    }

    /// Lines of any program's stderr that say it panicked, prefixed with the file's name.
    pub fn panics(&self) -> Vec<String> {
        let mut found = Vec::new();
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return found;
        };
        let mut paths: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "err"))
            .collect();
        paths.sort();
        for path in paths {
            let text = fs::read_to_string(&path).unwrap_or_default();
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
            for line in check::panics(&text) {
                found.push(format!("{}: {line}", name.clone().unwrap_or_default()));
            }
        }
        found
    }

    /// The last `n` lines of each broker's current log, for a failure message.
    pub fn broker_log_tails(&self, n: usize) -> String {
        self.broker_logs()
            .iter()
            .map(|(name, log)| format!("---- {name} ----\n{}", tail(log, n)))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Three free loopback ports (the brokers', the witness's): bind them all, then let them go.
fn free_ports() -> Result<[u16; 3]> {
    let a = TcpListener::bind("127.0.0.1:0")?;
    let b = TcpListener::bind("127.0.0.1:0")?;
    let c = TcpListener::bind("127.0.0.1:0")?;
    Ok([
        a.local_addr()?.port(),
        b.local_addr()?.port(),
        c.local_addr()?.port(),
    ])
}

/// Waits until a server program prints `listening on …`; an error with its last log lines if
/// it exits or stays silent past [`START_DEADLINE`].
fn wait_listening(proc: &mut Proc) -> Result<()> {
    let listening = wait_for(START_DEADLINE, || {
        if proc.try_exit().is_some() || proc.stdout().starts_with("listening on ") {
            Some(())
        } else {
            None
        }
    });
    if listening.is_none() || proc.try_exit().is_some() {
        let why = tail(&proc.stderr(), 5);
        return Err(failure(&format!(
            "{} did not start listening:\n{why}",
            proc.name()
        )));
    }
    Ok(())
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn failure(what: &str) -> Error {
    Error::Io(io::Error::other(what.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_parse() {
        let s = BrokerStatus::parse(
            "STATUS|role=primary|epoch=3.41277|node=41277|backup=up|pending=2|confirmed=40|\
             subscriptions=3|connections=5\n",
        )
        .expect("a STATUS line");
        assert!(s.is_primary());
        assert_eq!((s.epoch.as_str(), s.backup.as_str()), ("3.41277", "up"));
        assert_eq!((s.pending, s.subscriptions), (2, 3));
        assert_eq!(BrokerStatus::parse("ERR|nope"), None);
        assert_eq!(BrokerStatus::parse("STATUS|epoch=1.2"), None, "no role");
        assert_eq!((s.witness.as_str(), s.lease_ms), ("none", 0));
        let w = BrokerStatus::parse("STATUS|role=primary|epoch=2.9|witness=up|lease_ms=812")
            .expect("a STATUS line");
        assert_eq!((w.witness.as_str(), w.lease_ms), ("up", 812));
    }

    #[test]
    fn witness_status_lines_parse() {
        let w = WitnessStatus::parse(
            "STATUS|role=witness|epoch=4.7|holder=7|holder_epoch=4.7|lease_left_ms=1800|\
             restart_wait_ms=0|lease_ms=2000|margin_ms=250|grants=2|renewals=40|held=3\n",
        )
        .expect("a witness STATUS line");
        assert!(w.has_holder());
        assert_eq!((w.epoch.as_str(), w.holder.as_str()), ("4.7", "7"));
        assert_eq!((w.lease_left_ms, w.grants, w.held), (1800, 2, 3));
        let idle =
            WitnessStatus::parse("STATUS|role=witness|epoch=0.0|holder=none|holder_epoch=none")
                .expect("a witness STATUS line");
        assert!(!idle.has_holder());
        assert_eq!(
            WitnessStatus::parse("STATUS|role=primary|epoch=1.2"),
            None,
            "a broker's"
        );
    }
}
