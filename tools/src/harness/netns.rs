//! Hosts as Linux network namespaces: one namespace per host, each with a veth link to a
//! bridge in a switch namespace, and the faults a network can have — a link cut between two
//! hosts, a host cut off entirely.
//!
//! ```text
//!     [primary]     [backup]    [publisher]   [subscriber]    [witness]     one namespace each,
//!   eth0 .<n>.1   eth0 .<n>.2   eth0 .<n>.3   eth0 .<n>.4   eth0 .<n>.5    198.18.<n>.<k>/24
//!        │             │             │             │             │
//!   ─────┴─────────────┴─────────── br0 ───────────┴─────────────┴─────    the switch namespace
//! ```
//!
//! The `witness` host runs the pair's witness when a run has one; otherwise it stays empty.
//!
//! Every name starts with a tag unique to the process and the network (`ebh-<pid>-<n>-…`), so
//! several networks can live side by side (tests run in parallel). [`Network`]'s `Drop` kills
//! whatever still runs in its namespaces and deletes them, which deletes the veth links too;
//! [`Network::create`] also sweeps up namespaces left by a harness process that died without
//! dropping its network (a SIGKILLed test run).
//!
//! Nothing here touches the machine's own namespace: no addresses, routes or firewall rules
//! are added outside the namespaces the network made.
//!
//! **How a link is cut.** Each host's routing rules are set up with the `local` table moved
//! behind one free slot; cutting the link between `a` and `b` adds, in each of the two, a rule
//! that blackholes packets *arriving* on `eth0` from the other (`ip rule add from <b> iif eth0
//! blackhole`). Packets are dropped silently on arrival, as by a dead cable or a firewall that
//! drops: a connect times out and an open connection goes silent, while both hosts still reach
//! every other host. (A blackhole *route* would not do: the sender's own kernel would refuse
//! the connect at once with `EINVAL`, which looks like a dead peer, not a silent one.)
//!
//! **How a host is cut off.** The switch side of its veth goes down: the host's `eth0` loses
//! its carrier and nothing gets in or out. Processes on it run on and reach themselves over
//! loopback.

use std::ffi::OsStr;
use std::fmt;
use std::io;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use edgebroker::error::{Error, Result};
use log::{debug, info, warn};

/// The hosts of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Host {
    /// Runs the broker started as `primary`.
    Primary,
    /// Runs the broker started as `backup`.
    Backup,
    /// Runs `test_publisher`.
    Publisher,
    /// Runs the subscribers.
    Subscriber,
    /// Runs the pair's `witness`, when the run has one.
    Witness,
}

impl Host {
    /// Every host, in address order.
    pub const ALL: [Host; 5] = [
        Host::Primary,
        Host::Backup,
        Host::Publisher,
        Host::Subscriber,
        Host::Witness,
    ];

    /// The host's name, as in its namespace's name.
    pub fn name(self) -> &'static str {
        match self {
            Host::Primary => "primary",
            Host::Backup => "backup",
            Host::Publisher => "publisher",
            Host::Subscriber => "subscriber",
            Host::Witness => "witness",
        }
    }

    /// The last byte of its address.
    fn number(self) -> u8 {
        match self {
            Host::Primary => 1,
            Host::Backup => 2,
            Host::Publisher => 3,
            Host::Subscriber => 4,
            Host::Witness => 5,
        }
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What every namespace name starts with.
const PREFIX: &str = "ebh";
/// Networks made by this process so far: the second part of the tag.
static NEXT: AtomicU32 = AtomicU32::new(0);
/// The routing-rule priority of a cut (before the `local` table, moved to [`LOCAL_PREF`]).
const CUT_PREF: &str = "10";
/// Where the `local` table's rule goes, so a cut can come before it.
const LOCAL_PREF: &str = "100";

/// A set of hosts on one bridge, each in its own network namespace.
///
/// Dropping it kills what still runs in its namespaces and deletes them.
pub struct Network {
    tag: String,
    subnet: u8,
    /// Namespaces made so far, in the order made.
    namespaces: Vec<String>,
    cuts: Vec<(Host, Host)>,
    isolated: Vec<Host>,
}

impl fmt::Debug for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Network")
            .field("tag", &self.tag)
            .field("subnet", &format_args!("198.18.{}.0/24", self.subnet))
            .field("cuts", &self.cuts)
            .field("isolated", &self.isolated)
            .finish()
    }
}

impl Network {
    /// Whether namespaces can be made here; `Err` says why not (not root, no `ip`, `ip netns`
    /// refused, no `bash` for status queries).
    pub fn available() -> std::result::Result<(), String> {
        match effective_uid() {
            Some(0) => {}
            Some(uid) => {
                return Err(format!(
                    "not root (uid {uid}); network namespaces need root"
                ));
            }
            None => return Err("cannot tell the user id (/proc/self/status)".into()),
        }
        match Command::new("ip").arg("-V").output() {
            Ok(out) if out.status.success() => {}
            Ok(out) => return Err(format!("`ip -V` failed: {}", text(&out.stderr))),
            Err(e) => return Err(format!("no `ip` command ({e}); install iproute2")),
        }
        if let Err(e) = Command::new("bash").args(["-c", "true"]).output() {
            return Err(format!(
                "no `bash` ({e}); the harness asks brokers' STATUS with it"
            ));
        }
        let probe = format!(
            "{PREFIX}-{}-probe{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        ip(&["netns", "add", &probe])
            .map_err(|e| format!("cannot make a network namespace: {e}"))?;
        let exec = ip(&["netns", "exec", &probe, "true"]);
        let _ = ip(&["netns", "del", &probe]);
        exec.map_err(|e| format!("cannot run a program in a network namespace: {e}"))
    }

    /// Makes the switch and the five hosts. `label` (a test's name, say) goes into the
    /// namespaces' names so `ip netns list` tells whose they are.
    pub fn create(label: &str) -> Result<Network> {
        sweep_stale();
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let label: String = label
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
            .take(16)
            .collect();
        let mut net = Network {
            tag: format!("{PREFIX}-{}-{n}-{label}", std::process::id()),
            subnet: u8::try_from(n % 256).expect("below 256"),
            namespaces: Vec::new(),
            cuts: Vec::new(),
            isolated: Vec::new(),
        };
        // On an error below, `net` is dropped and deletes what was made so far.
        let switch = net.add_namespace("switch")?;
        ip(&["-n", &switch, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &switch, "link", "set", "br0", "up"])?;
        for host in Host::ALL {
            let ns = net.add_namespace(host.name())?;
            // Made directly in their namespaces: the names never meet the machine's own.
            ip(&[
                "link",
                "add",
                "eth0",
                "netns",
                &ns,
                "type",
                "veth",
                "peer",
                "name",
                host.name(),
                "netns",
                &switch,
            ])?;
            let addr = format!("{}/24", net.addr(host));
            ip(&["-n", &ns, "addr", "add", &addr, "dev", "eth0"])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
            ip(&[
                "-n", &ns, "rule", "add", "pref", LOCAL_PREF, "lookup", "local",
            ])?;
            ip(&["-n", &ns, "rule", "del", "pref", "0"])?;
            ip(&["-n", &switch, "link", "set", host.name(), "master", "br0"])?;
            ip(&["-n", &switch, "link", "set", host.name(), "up"])?;
        }
        info!(
            "network {} made: hosts on 198.18.{}.0/24",
            net.tag, net.subnet
        );
        Ok(net)
    }

    /// The network's tag, the start of every namespace name.
    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// The host's address.
    pub fn addr(&self, host: Host) -> Ipv4Addr {
        Ipv4Addr::new(198, 18, self.subnet, host.number())
    }

    /// The name of the host's namespace.
    pub fn namespace(&self, host: Host) -> String {
        format!("{}-{}", self.tag, host.name())
    }

    /// A command that runs `program` on `host` (`ip netns exec <ns> <program>`); add its
    /// arguments and spawn it. `ip netns exec` execs the program, so the child's pid is the
    /// program's.
    pub fn command(&self, host: Host, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec"])
            .arg(self.namespace(host))
            .arg(program);
        cmd
    }

    /// Cuts the link between two hosts: from now on neither receives a packet from the other,
    /// while both still reach every other host.
    pub fn cut_link(&mut self, a: Host, b: Host) -> Result<()> {
        for (host, other) in [(a, b), (b, a)] {
            self.cut_rule("add", host, other)?;
        }
        self.cuts.push((a, b));
        info!("network {}: link {a} <-> {b} cut", self.tag);
        Ok(())
    }

    /// Heals a link cut by [`Network::cut_link`].
    pub fn heal_link(&mut self, a: Host, b: Host) -> Result<()> {
        for (host, other) in [(a, b), (b, a)] {
            self.cut_rule("del", host, other)?;
        }
        self.cuts.retain(|&c| c != (a, b) && c != (b, a));
        info!("network {}: link {a} <-> {b} healed", self.tag);
        Ok(())
    }

    /// Sets the switch end of a host's link `up` or `down`.
    fn switch_port(&self, host: Host, state: &str) -> Result<()> {
        ip(&[
            "-n",
            &self.namespace_of_switch(),
            "link",
            "set",
            host.name(),
            state,
        ])
    }

    /// Cuts a host off entirely: its link to the switch goes down.
    pub fn isolate(&mut self, host: Host) -> Result<()> {
        self.switch_port(host, "down")?;
        self.isolated.push(host);
        info!("network {}: {host} cut off", self.tag);
        Ok(())
    }

    /// Brings a host cut off by [`Network::isolate`] back.
    pub fn rejoin(&mut self, host: Host) -> Result<()> {
        self.switch_port(host, "up")?;
        self.isolated.retain(|&h| h != host);
        info!("network {}: {host} back on the network", self.tag);
        Ok(())
    }

    /// Links cut now.
    pub fn cuts(&self) -> &[(Host, Host)] {
        &self.cuts
    }

    /// Hosts cut off now.
    pub fn isolated(&self) -> &[Host] {
        &self.isolated
    }

    fn namespace_of_switch(&self) -> String {
        format!("{}-switch", self.tag)
    }

    fn cut_rule(&self, verb: &str, host: Host, from: Host) -> Result<()> {
        let from = format!("{}/32", self.addr(from));
        let ns = self.namespace(host);
        ip(&[
            "-n",
            &ns,
            "rule",
            verb,
            "pref",
            CUT_PREF,
            "from",
            &from,
            "iif",
            "eth0",
            "blackhole",
        ])
    }

    fn add_namespace(&mut self, host: &str) -> Result<String> {
        let ns = format!("{}-{host}", self.tag);
        ip(&["netns", "add", &ns])?;
        self.namespaces.push(ns.clone());
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        Ok(ns)
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        for ns in self.namespaces.iter().rev() {
            remove_namespace(ns);
        }
        debug!("network {} removed", self.tag);
    }
}

/// Kills what runs in a namespace (only the harness starts programs in its namespaces) and
/// deletes it; deleting it deletes its end of every veth link, and so the other end.
fn remove_namespace(ns: &str) {
    if let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() {
        for pid in text(&out.stdout).split_whitespace() {
            let _ = Command::new("kill")
                .args(["-KILL", pid])
                .stderr(Stdio::null())
                .status();
        }
    }
    if let Err(e) = ip(&["netns", "del", ns]) {
        warn!("could not delete network namespace {ns}: {e}");
    }
}

/// Deletes namespaces of this harness whose process is gone: a harness killed before it could
/// drop its [`Network`]. A namespace whose pid is alive (maybe reused) is left alone.
fn sweep_stale() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in text(&out.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let mut parts = name.split('-');
        if parts.next() != Some(PREFIX) {
            continue;
        }
        let Some(pid) = parts.next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid != std::process::id() && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            info!("removing network namespace {name}, left behind by process {pid}");
            remove_namespace(name);
        }
    }
}

/// Runs `ip` with `args`; an error carries the command line and what `ip` said.
fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::Io(io::Error::new(e.kind(), format!("cannot run `ip`: {e}"))))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(Error::Io(io::Error::other(format!(
            "`ip {}` failed: {}",
            args.join(" "),
            text(&out.stderr).trim()
        ))))
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The effective user id, from `/proc/self/status` (no libc here).
fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}
