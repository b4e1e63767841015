//! Where a run's hosts are: separate network namespaces ([`Network`]), or this machine's
//! loopback interface with a port per broker. The rest of the harness asks a [`Site`] to run a
//! program on a host, for a host's address, and for a broker's STATUS line, and does not care
//! which kind it is — except for the network faults, which only namespaces can have.
//!
//! The harness itself runs outside the namespaces and cannot open a socket inside one (that
//! would need `setns`, and the crate has no libc), so in namespaces a STATUS query is a tiny
//! `bash` client (`/dev/tcp`) run on the broker's own host, over that host's loopback: it
//! works even while the host is cut off. [`Site::ask`] sends any other line the same way, and
//! [`Site::ask_from`] sends one from a client's host across the network, as a client would.

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::netns::{Host, Network};

/// How long a STATUS query may take before the broker counts as not answering.
pub const STATUS_TIMEOUT: Duration = Duration::from_secs(1);

/// Where the hosts of a run are.
#[derive(Debug)]
pub enum Site {
    /// Each host in its own network namespace.
    Netns(Network),
    /// Every host is this machine; brokers listen on loopback ports.
    Loopback,
}

/// The bash client that sends a broker on this host one line and prints the first line of
/// the answer: `$1` is the port, `$2` the timeout in seconds, `$3` the line.
const ASK_SCRIPT: &str = r#"exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
printf '%s\n' "$3" >&3
IFS= read -r -t "$2" line <&3 && printf '%s\n' "$line""#;

/// The bash client that sends one line to another host, as a client there would, and prints
/// the first line of the answer: `$1` the address, `$2` the port, `$3` the timeout in seconds
/// (the answer's; the caller bounds the connect with `timeout`), `$4` the line.
const ASK_FROM_SCRIPT: &str = r#"exec 3<>"/dev/tcp/$1/$2" || exit 1
printf '%s\n' "$4" >&3
IFS= read -r -t "$3" line <&3 && printf '%s\n' "$line""#;

impl Site {
    /// Whether links can be cut and hosts cut off here.
    pub fn has_network_faults(&self) -> bool {
        matches!(self, Site::Netns(_))
    }

    /// The network, if the hosts are namespaces.
    pub fn network(&self) -> Option<&Network> {
        match self {
            Site::Netns(net) => Some(net),
            Site::Loopback => None,
        }
    }

    /// The network, if the hosts are namespaces, to inject a fault.
    pub fn network_mut(&mut self) -> Option<&mut Network> {
        match self {
            Site::Netns(net) => Some(net),
            Site::Loopback => None,
        }
    }

    /// The address other hosts reach `host` at.
    pub fn addr(&self, host: Host) -> IpAddr {
        match self {
            Site::Netns(net) => IpAddr::V4(net.addr(host)),
            Site::Loopback => IpAddr::V4(Ipv4Addr::LOCALHOST),
        }
    }

    /// The address a broker on `host` should listen on.
    pub fn bind_addr(&self, _host: Host) -> IpAddr {
        match self {
            // Every address of its own host, loopback included (for the STATUS client).
            Site::Netns(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            Site::Loopback => IpAddr::V4(Ipv4Addr::LOCALHOST),
        }
    }

    /// A command that runs `program` on `host`; add arguments and spawn it.
    pub fn command(&self, host: Host, program: &Path) -> Command {
        match self {
            Site::Netns(net) => net.command(host, program),
            Site::Loopback => Command::new(program),
        }
    }

    /// The STATUS line of the broker listening on `port` on `host`, or `None` if it does not
    /// answer within [`STATUS_TIMEOUT`] (dead, stopped, or its host is unreachable).
    pub fn status_line(&self, host: Host, port: u16) -> Option<String> {
        let line = self.ask(host, port, "STATUS")?;
        line.starts_with("STATUS|").then_some(line)
    }

    /// Sends one protocol line to the broker listening on `port` on `host`, from a fresh
    /// connection on that host, and returns the first line of its answer (without the line
    /// end), or `None` if none came within [`STATUS_TIMEOUT`]. The connection is closed
    /// afterwards, as a client that gave up would close it.
    pub fn ask(&self, host: Host, port: u16, line: &str) -> Option<String> {
        let answer = match self {
            Site::Netns(net) => {
                let out = net
                    .command(host, "bash")
                    .args(["-c", ASK_SCRIPT, "ask"])
                    .arg(port.to_string())
                    .arg(STATUS_TIMEOUT.as_secs_f64().to_string())
                    .arg(line)
                    .stdin(Stdio::null())
                    .stderr(Stdio::null())
                    .output()
                    .ok()?;
                String::from_utf8_lossy(&out.stdout).into_owned()
            }
            Site::Loopback => {
                let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
                let mut stream = TcpStream::connect_timeout(&addr, STATUS_TIMEOUT).ok()?;
                stream.set_read_timeout(Some(STATUS_TIMEOUT)).ok()?;
                stream.write_all(format!("{line}\n").as_bytes()).ok()?;
                let mut answer = String::new();
                BufReader::new(stream).read_line(&mut answer).ok()?;
                answer
            }
        };
        let answer = answer.trim_end();
        (!answer.is_empty()).then(|| answer.to_string())
    }

    /// Sends one protocol line from `from` to `to` across the network (the path a client on
    /// `from` takes, so a cut link or a host cut off shows), from a fresh connection closed
    /// afterwards, and returns the first line of the answer, or `None` if none came within
    /// `within` (connect included).
    pub fn ask_from(
        &self,
        from: Host,
        to: SocketAddr,
        line: &str,
        within: Duration,
    ) -> Option<String> {
        let answer = match self {
            Site::Netns(net) => {
                // `/dev/tcp` has no connect timeout: a blackholed SYN would retry for minutes.
                let out = net
                    .command(from, "timeout")
                    .arg(format!("{:.3}", within.as_secs_f64() + 0.5))
                    .args(["bash", "-c", ASK_FROM_SCRIPT, "ask"])
                    .arg(to.ip().to_string())
                    .arg(to.port().to_string())
                    .arg(format!("{:.3}", within.as_secs_f64()))
                    .arg(line)
                    .stdin(Stdio::null())
                    .stderr(Stdio::null())
                    .output()
                    .ok()?;
                String::from_utf8_lossy(&out.stdout).into_owned()
            }
            Site::Loopback => {
                let mut stream = TcpStream::connect_timeout(&to, within).ok()?;
                stream.set_read_timeout(Some(within)).ok()?;
                stream.write_all(format!("{line}\n").as_bytes()).ok()?;
                let mut answer = String::new();
                BufReader::new(stream).read_line(&mut answer).ok()?;
                answer
            }
        };
        let answer = answer.trim_end();
        (!answer.is_empty()).then(|| answer.to_string())
    }
}
