//! The soak's run: the hosts chosen, the programs copied, the cluster started with its clients,
//! then a pause and a fault, over and over, until every fault was injected, something went
//! wrong, or Ctrl-C; the pauses sample STATUS and restart the third subscriber.

use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use edgebroker::error::Result;
use log::{info, warn};

use super::schedule::Schedule;
use super::{Mode, SUBSCRIBERS, Soak, SoakConfig, SoakReport};
use crate::harness::cluster::{BrokerId, Cluster};
use crate::harness::netns::Network;
use crate::harness::site::Site;
use crate::harness::{failure, unix_ms, wait_for};

/// How often STATUS is sampled while the soak waits.
const SAMPLE_EVERY: Duration = Duration::from_millis(300);

/// Runs a soak, logging each step (`info!`). `interrupts` receives on Ctrl-C: the soak then
/// undoes the fault in hand, stops injecting, and judges what ran.
pub fn run(config: &SoakConfig, interrupts: &Receiver<()>) -> Result<SoakReport> {
    let started = Instant::now();
    let started_ms = unix_ms();
    let (site, mut site_text, skipped_kinds) = choose_site(config.mode)?;
    if config.cluster.witness {
        site_text.push_str(&format!(
            ", with a witness (lease {} ms)",
            config.cluster.lease_ms
        ));
    }
    info!("seed {}; hosts: {site_text}", config.seed);
    if let Some(why) = &skipped_kinds {
        info!("not injected: {why}");
    }
    let mut schedule = Schedule::new(config, site.has_network_faults())?;
    let programs = config.programs.snapshot(&config.dir.join("bin"))?;
    let mut cluster = Cluster::start(site, programs, config.cluster.clone(), &config.dir)?;
    for i in 0..SUBSCRIBERS {
        cluster.add_subscriber(i + 1 < SUBSCRIBERS)?;
    }
    cluster.wait_subscribed(SUBSCRIBERS as u64, Duration::from_secs(10))?;
    cluster.start_publisher()?;
    info!(
        "pair up (primary {}, backup {}), {SUBSCRIBERS} subscribers, publishing at {} Hz with a \
         window of {}",
        cluster.addr(BrokerId::Primary),
        cluster.addr(BrokerId::Backup),
        config.cluster.rate_hz,
        config.cluster.window
    );

    let mut soak = Soak {
        cluster,
        config,
        interrupts,
        interrupted: false,
        last_restart: Instant::now(),
        faults: Vec::new(),
        problems: Vec::new(),
    };
    if wait_for(Duration::from_secs(10), || {
        (!soak.cluster.acks().is_empty()).then_some(())
    })
    .is_none()
    {
        soak.problems
            .push("no ACK within 10 s of the publisher's start".into());
    }
    for number in 1..=config.faults {
        if soak.interrupted || !soak.problems.is_empty() {
            break;
        }
        let (gap, kind, hold) = schedule.next();
        soak.pause(gap);
        if !soak.interrupted {
            soak.fault(number, kind, hold);
        }
    }
    if soak.problems.is_empty() && !soak.interrupted {
        // A little more traffic on the healed pair before the end.
        soak.pause(Duration::from_secs(2));
    }
    Ok(soak.finish(site_text, skipped_kinds, started, started_ms))
}

/// The hosts for `mode`, a description, and which fault kinds cannot be injected there.
fn choose_site(mode: Mode) -> Result<(Site, String, Option<String>)> {
    let local = |why: &str| {
        (
            Site::Loopback,
            format!("loopback ({why})"),
            Some(format!(
                "link cuts and host cut-offs need network namespaces ({why})"
            )),
        )
    };
    Ok(match mode {
        Mode::Local => local("--local"),
        Mode::Netns | Mode::Auto => match Network::available() {
            Ok(()) => {
                let net = Network::create("soak")?;
                let text = format!("network namespaces {}-*", net.tag());
                (Site::Netns(net), text, None)
            }
            Err(why) if mode == Mode::Netns => {
                return Err(failure(&format!(
                    "network namespaces are not available: {why}"
                )));
            }
            Err(why) => {
                warn!("network namespaces are not available ({why}); running on loopback");
                local(&why)
            }
        },
    })
}

impl Soak<'_> {
    /// Waits `d`, sampling STATUS (for two primaries in one epoch) and restarting the third
    /// subscriber when its time has come. Returns early on Ctrl-C.
    pub(super) fn pause(&mut self, d: Duration) {
        let until = Instant::now() + d;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() || self.interrupted {
                return;
            }
            match self.interrupts.recv_timeout(left.min(SAMPLE_EVERY)) {
                Ok(()) | Err(RecvTimeoutError::Disconnected) => {
                    warn!("interrupted: undoing the fault in hand, then judging the run");
                    self.interrupted = true;
                    return;
                }
                Err(RecvTimeoutError::Timeout) => {}
            }
            self.cluster.statuses();
            if self.last_restart.elapsed() >= self.config.restart_every {
                self.last_restart = Instant::now();
                let last = self.cluster.subscriber_count() - 1;
                if let Err(e) = self.cluster.restart_subscriber(last) {
                    warn!("could not restart subscriber {}: {e}", last + 1);
                }
            }
        }
    }
}
