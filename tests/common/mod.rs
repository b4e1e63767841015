//! Helpers shared by the integration tests: brokers in-process on port 0 with fast timings,
//! a raw line client for seed-form traffic, and waits with deadlines.
#![allow(dead_code)] // each test file uses a different subset

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use edgebroker::protocol::Role;
use edgebroker::{Broker, BrokerConfig, ComputeStep, PublisherConfig, SubscriberConfig};

/// How long any single wait in a test may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// Polls `f` until it returns `Some`, failing the test after [`DEADLINE`].
pub fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Waits until `cond` holds.
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    wait_for(what, || cond().then_some(()));
}

/// A listener on a free loopback port.
pub fn listener() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").expect("bind a loopback port")
}

/// The fast test configuration, compute step `compute`.
pub fn config(compute: ComputeStep) -> BrokerConfig {
    BrokerConfig {
        compute,
        ..BrokerConfig::fast()
    }
}

/// A primary and its backup, in-process, with the backup synced.
pub struct Pair {
    pub primary: Option<Broker>,
    pub backup: Option<Broker>,
    pub primary_addr: SocketAddr,
    pub backup_addr: SocketAddr,
}

impl Pair {
    /// Starts a pair with `base` settings and waits until replication is up.
    pub fn start(base: BrokerConfig) -> Pair {
        Pair::start_with(base.clone(), base)
    }

    /// Starts a pair with different settings for each broker.
    pub fn start_with(primary_config: BrokerConfig, backup_config: BrokerConfig) -> Pair {
        let (pl, bl) = (listener(), listener());
        let (primary_addr, backup_addr) = (pl.local_addr().unwrap(), bl.local_addr().unwrap());
        let primary = start_broker(pl, &primary_config, backup_addr, true);
        wait_until("the primary to take over", || {
            primary.status().role == Role::Primary
        });
        let backup = start_broker(bl, &backup_config, primary_addr, false);
        let pair = Pair {
            primary: Some(primary),
            backup: Some(backup),
            primary_addr,
            backup_addr,
        };
        pair.wait_replicating();
        pair
    }

    pub fn primary(&self) -> &Broker {
        self.primary.as_ref().expect("primary running")
    }

    pub fn backup(&self) -> &Broker {
        self.backup.as_ref().expect("backup running")
    }

    /// Waits until the broker acting as primary has a synced backup.
    pub fn wait_replicating(&self) {
        wait_until("replication to the backup", || {
            [&self.primary, &self.backup].iter().any(|b| {
                b.as_ref().is_some_and(|b| {
                    let s = b.status();
                    s.role == Role::Primary && s.backup == edgebroker::broker::BackupHealth::Up
                })
            })
        });
    }

    pub fn publisher_config(&self) -> PublisherConfig {
        let mut c =
            PublisherConfig::new(self.primary_addr.to_string(), self.backup_addr.to_string());
        c.ack_timeout = Duration::from_millis(300);
        c.give_up_after = DEADLINE;
        c
    }

    pub fn subscriber_config(&self, topic: &str) -> SubscriberConfig {
        let mut c = SubscriberConfig::new(
            topic,
            self.primary_addr.to_string(),
            self.backup_addr.to_string(),
        );
        c.min_backoff = Duration::from_millis(10);
        c.max_backoff = Duration::from_millis(50);
        c
    }
}

/// Sends the brokers' logs to the test's output when `RUST_LOG` asks for them.
pub fn init_logs() {
    let env = env_logger::Env::default().default_filter_or("off");
    let _ = env_logger::Builder::from_env(env).is_test(true).try_init();
}

/// A broker with no peer: it takes over at once and runs alone (a degraded primary).
pub fn lone_broker(config: BrokerConfig) -> Broker {
    init_logs();
    let config = BrokerConfig {
        peer: None,
        ..config
    };
    let broker = Broker::start_on(listener(), config).expect("start broker");
    wait_until("the lone broker to lead", || {
        broker.status().role == Role::Primary
    });
    broker
}

/// Starts a broker on `listener` whose peer is `peer`.
pub fn start_broker(
    listener: TcpListener,
    base: &BrokerConfig,
    peer: SocketAddr,
    preferred: bool,
) -> Broker {
    init_logs();
    let config = BrokerConfig {
        peer: Some(peer.to_string()),
        preferred_primary: preferred,
        ..base.clone()
    };
    Broker::start_on(listener, config).expect("start broker")
}

/// Restarts a broker on the same address (as a restarted process would).
pub fn restart_broker(
    addr: SocketAddr,
    base: &BrokerConfig,
    peer: SocketAddr,
    preferred: bool,
) -> Broker {
    let listener = wait_for("the old port to be free", || TcpListener::bind(addr).ok());
    start_broker(listener, base, peer, preferred)
}

/// A raw line-based client, for seed-form traffic as `nc` would send it.
pub struct LineClient {
    stream: TcpStream,
    reader: BufReader<TcpStream>,
}

impl LineClient {
    pub fn connect(addr: SocketAddr) -> LineClient {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(DEADLINE)).unwrap();
        let reader = BufReader::new(stream.try_clone().unwrap());
        LineClient { stream, reader }
    }

    /// Sends raw bytes (include the line ending yourself).
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send");
    }

    /// Shuts the sending side, as `nc` does at the end of its input; replies still come.
    pub fn close_sending(&mut self) {
        self.stream
            .shutdown(std::net::Shutdown::Write)
            .expect("shutdown");
    }

    /// Sends one line, adding `\n`.
    pub fn send(&mut self, line: &str) {
        self.send_raw(format!("{line}\n").as_bytes());
    }

    /// Reads one line without its `\n`; `None` at EOF. Fails the test after [`DEADLINE`].
    pub fn recv(&mut self) -> Option<String> {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => None,
            Ok(_) => Some(line.trim_end_matches('\n').to_string()),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => None,
            Err(e) => panic!("read failed: {e}"),
        }
    }

    /// Sends a line and returns the answer.
    pub fn ask(&mut self, line: &str) -> String {
        self.send(line);
        self.recv().expect("an answer")
    }

    /// The broker's STATUS as key=value pairs.
    pub fn status(&mut self) -> std::collections::HashMap<String, String> {
        let line = self.ask("STATUS");
        line.strip_prefix("STATUS|")
            .expect("a STATUS line")
            .split('|')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }
}

/// Waits until `broker` counts `n` subscriptions (so a publish after this reaches them).
pub fn wait_subscriptions(broker: &Broker, n: usize) {
    wait_until(&format!("{n} subscription(s)"), || {
        broker.status().subscriptions >= n
    });
}

/// A compute step that holds every message until the test opens it, so messages stay pending
/// for exactly as long as a test needs.
#[derive(Clone, Default)]
pub struct Valve(std::sync::Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>);

impl Valve {
    /// The compute step that waits for this valve (at most [`DEADLINE`]).
    pub fn step(&self) -> ComputeStep {
        let valve = self.clone();
        ComputeStep::Custom(std::sync::Arc::new(move |_| valve.wait()))
    }

    fn wait(&self) {
        let (open, cv) = &*self.0;
        let guard = open.lock().unwrap();
        let _ = cv
            .wait_timeout_while(guard, DEADLINE, |open| !*open)
            .unwrap();
    }

    /// Lets every held and future message through.
    pub fn open(&self) {
        let (open, cv) = &*self.0;
        *open.lock().unwrap() = true;
        cv.notify_all();
    }
}

/// A TCP forwarder between the two brokers, so a test can cut and heal the link between them
/// while clients still reach both. Cut, it drops what flows on the connections it carries and
/// holds new connections: their bytes wait, as they would in a network that delays packets,
/// and reach the target when the link heals — long after the dialer may have given up.
pub struct Proxy {
    pub addr: SocketAddr,
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
    conns: std::sync::Arc<std::sync::Mutex<Vec<TcpStream>>>,
    abandoned: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    /// Connections held by the cut that have not reached the target yet.
    held: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    /// Set by `heal` to release the held connections before anything else moves.
    releasing: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Proxy {
    /// Forwards connections made to `self.addr` to `target`.
    pub fn start(target: SocketAddr) -> Proxy {
        use std::sync::atomic::Ordering;
        let listener = listener();
        let addr = listener.local_addr().unwrap();
        let cut = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let conns = std::sync::Arc::new(std::sync::Mutex::new(Vec::<TcpStream>::new()));
        let abandoned = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let held_count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let releasing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (c, k, a, h, r) = (
            cut.clone(),
            conns.clone(),
            abandoned.clone(),
            held_count.clone(),
            releasing.clone(),
        );
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let (c, k, a, h, r) = (c.clone(), k.clone(), a.clone(), h.clone(), r.clone());
                std::thread::spawn(move || {
                    // Held while cut: keep what arrives, connect once healed.
                    let mut held = Vec::new();
                    let mut client = client;
                    client
                        .set_read_timeout(Some(Duration::from_millis(10)))
                        .unwrap();
                    let mut gave_up = false;
                    let was_held = c.load(Ordering::Acquire);
                    if was_held {
                        h.fetch_add(1, Ordering::AcqRel);
                    }
                    while c.load(Ordering::Acquire) && !r.load(Ordering::Acquire) {
                        if gave_up {
                            std::thread::sleep(Duration::from_millis(10));
                            continue;
                        }
                        let mut buf = [0u8; 4096];
                        match std::io::Read::read(&mut client, &mut buf) {
                            // The dialer gave up; what it sent still arrives after the heal.
                            Ok(0) => {
                                gave_up = true;
                                a.fetch_add(1, Ordering::AcqRel);
                            }
                            Ok(n) => held.extend_from_slice(&buf[..n]),
                            Err(_) => {}
                        }
                    }
                    client.set_read_timeout(None).unwrap();
                    let upstream = TcpStream::connect(target);
                    let delivered = upstream
                        .as_ref()
                        .is_ok_and(|mut u| u.write_all(&held).is_ok());
                    if was_held {
                        h.fetch_sub(1, Ordering::AcqRel);
                    }
                    let (Ok(upstream), true) = (upstream, delivered) else {
                        return;
                    };
                    {
                        let mut k = k.lock().unwrap();
                        k.push(client.try_clone().unwrap());
                        k.push(upstream.try_clone().unwrap());
                    }
                    for (mut from, mut to) in [
                        (client.try_clone().unwrap(), upstream.try_clone().unwrap()),
                        (upstream, client),
                    ] {
                        let c = c.clone();
                        std::thread::spawn(move || {
                            let mut buf = [0u8; 16 * 1024];
                            loop {
                                match std::io::Read::read(&mut from, &mut buf) {
                                    Ok(0) | Err(_) => break,
                                    Ok(n) if !c.load(Ordering::Acquire) => {
                                        if to.write_all(&buf[..n]).is_err() {
                                            break;
                                        }
                                    }
                                    Ok(_) => {} // cut: dropped
                                }
                            }
                            let _ = to.shutdown(std::net::Shutdown::Write);
                        });
                    }
                });
            }
        });
        Proxy {
            addr,
            cut,
            conns,
            abandoned,
            held: held_count,
            releasing,
        }
    }

    /// How many connections their dialer closed while they were held by a cut.
    pub fn abandoned(&self) -> usize {
        self.abandoned.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Drops what flows from now on and holds new connections, closing nothing.
    pub fn cut(&self) {
        self.cut.store(true, std::sync::atomic::Ordering::Release);
    }

    /// Ends the connections that lived through the cut, delivers what the held ones carried
    /// (before anything newer), and forwards again.
    pub fn heal(&self) {
        use std::sync::atomic::Ordering;
        for s in self.conns.lock().unwrap().drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
        self.releasing.store(true, Ordering::Release);
        wait_until("held connections to reach the target", || {
            self.held.load(Ordering::Acquire) == 0
        });
        self.cut.store(false, Ordering::Release);
        self.releasing.store(false, Ordering::Release);
    }
}

/// A pair whose broker-to-broker traffic goes through two [`Proxy`]s (clients connect
/// directly), with separate settings for each broker.
pub fn proxied_pair(primary: BrokerConfig, backup: BrokerConfig) -> (Pair, Proxy, Proxy) {
    let (pl, bl) = (listener(), listener());
    let (primary_addr, backup_addr) = (pl.local_addr().unwrap(), bl.local_addr().unwrap());
    let (to_primary, to_backup) = (Proxy::start(primary_addr), Proxy::start(backup_addr));
    let p = start_broker(pl, &primary, to_backup.addr, true);
    wait_until("the primary to take over", || {
        p.status().role == Role::Primary
    });
    let b = start_broker(bl, &backup, to_primary.addr, false);
    let pair = Pair {
        primary: Some(p),
        backup: Some(b),
        primary_addr,
        backup_addr,
    };
    pair.wait_replicating();
    (pair, to_primary, to_backup)
}

/// Kills its child in `Drop`, so a failing test leaves nothing running.
pub struct ChildGuard(pub Option<std::process::Child>);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
