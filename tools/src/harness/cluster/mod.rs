//! A broker pair and its clients as real processes on a [`Site`]: the broker started as
//! `primary` on the `primary` host, the one started as `backup` on the `backup` host,
//! `test_publisher` on the `publisher` host, any number of `subscriber`s on the `subscriber`
//! host, and, with [`ClusterConfig::witness`], the pair's `witness` on the `witness` host
//! (started first; both brokers get `--witness`). A [`Cluster`] starts them, injects the
//! faults (kill one broker or both at once, restart, stop, resume, cut a link between any two
//! hosts, cut a host off), waits until the pair is healthy again, and hands the output files
//! to [`super::check`].
//!
//! Every process writes into the run's folder, one pair of files per process run
//! (`primary.1.out`, `primary.1.err`, `primary.2.err` after a restart, `witness.1.err`,
//! `sub-1.1.out`, …). With [`ClusterConfig::fsync`], each broker keeps its log on disk there
//! too, in a folder every run of it shares (`primary-data/`, `backup-data/`).
//! Dropping the cluster kills every process it started, then drops the site (and with it the
//! namespaces).
//!
//! ## Layout
//!
//! | file | its one job |
//! |---|---|
//! | `cluster/mod.rs` | the [`Cluster`] and its processes' slots, forming the pair, the brokers' names ([`BrokerId`]) |
//! | `cluster/programs.rs` | what it runs: the programs ([`Programs`]) and their settings ([`ClusterConfig`]) |
//! | `cluster/servers.rs` | starting the brokers and the witness, and whether they run |
//! | `cluster/faults.rs` | the faults: kill, SIGSTOP/SIGCONT, cut links and hosts off |
//! | `cluster/status.rs` | STATUS: the lines parsed ([`BrokerStatus`], [`WitnessStatus`]), sampled, and judged healthy ([`Roles`]) |
//! | `cluster/clients.rs` | starting and stopping the subscribers and `test_publisher` |
//! | `cluster/output.rs` | what the processes wrote: ACKs, subscribers' lines, logs, panics |

mod clients;
mod faults;
mod output;
mod programs;
mod servers;
mod status;

use std::fmt;
use std::fs;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use edgebroker::error::Result;

use super::netns::Host;
use super::process::Proc;
use super::site::Site;
use super::{failure, wait_for};

pub use programs::{ClusterConfig, Programs};
pub use status::{BrokerStatus, Roles, WitnessStatus};

/// How long a program may take to start listening.
pub const START_DEADLINE: Duration = Duration::from_secs(10);

/// The port brokers listen on when each has a host of its own.
pub const NETNS_PORT: u16 = 7000;

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

/// A server program's process, a broker's or the witness's: its port, its current run, and
/// every run's log.
struct ServerSlot {
    port: u16,
    proc: Option<Proc>,
    runs: u32,
    /// SIGSTOPped (only a broker ever is).
    stopped: bool,
    /// Every run's stderr log, as `(name.run, path)`.
    logs: Vec<(String, PathBuf)>,
}

impl ServerSlot {
    fn new(port: u16) -> ServerSlot {
        ServerSlot {
            port,
            proc: None,
            runs: 0,
            stopped: false,
            logs: Vec::new(),
        }
    }

    /// Starts the next run of `program` (named `program.run`) with `command` and waits until
    /// it listens; a run it replaces is killed. Returns the run's name.
    fn spawn(&mut self, program: &str, command: Command, dir: &Path) -> Result<String> {
        self.runs += 1;
        let name = format!("{program}.{}", self.runs);
        let proc = Proc::spawn(&name, command, dir)?;
        self.logs
            .push((name.clone(), proc.stderr_path().to_path_buf()));
        self.stopped = false;
        wait_listening(self.proc.insert(proc))?;
        Ok(name)
    }

    /// Whether its process runs (stopped counts as running).
    fn running(&mut self) -> bool {
        self.proc.as_mut().is_some_and(|p| p.try_exit().is_none())
    }

    /// Every run's stderr log, as `(name.run, text)`.
    fn read_logs(&self) -> impl Iterator<Item = (String, String)> + '_ {
        self.logs
            .iter()
            .map(|(name, path)| (name.clone(), fs::read_to_string(path).unwrap_or_default()))
    }
}

/// A subscriber's process and every run's output file.
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
    brokers: [ServerSlot; 2],
    witness: Option<ServerSlot>,
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
        let mut cluster = Cluster {
            brokers: BrokerId::BOTH.map(|id| ServerSlot::new(ports[id.index()])),
            witness: config.witness.then(|| ServerSlot::new(ports[2])),
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

    fn slot(&mut self, id: BrokerId) -> &mut ServerSlot {
        &mut self.brokers[id.index()]
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
