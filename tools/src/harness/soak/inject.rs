//! One fault of a soak: wait for a healthy pair, strike the broker holding the role the fault
//! names, hold it, undo it, wait for a healthy pair again, and keep the record
//! ([`FaultRecord`]).

use std::time::{Duration, Instant};

use edgebroker::error::Result;
use log::{info, warn};

use super::report::secs;
use super::{FaultKind, SUBSCRIBERS, Soak};
use crate::harness::cluster::{BrokerId, Roles};
use crate::harness::netns::Host;
use crate::harness::unix_ms;

/// One fault as it happened.
#[derive(Clone, Debug)]
pub struct FaultRecord {
    /// 1, 2, 3, …
    pub number: usize,
    /// What it was.
    pub kind: FaultKind,
    /// The broker it struck (for a cut link, both brokers killed or a witness fault: the
    /// primary of the moment; for the backup-witness link, the backup).
    pub target: BrokerId,
    /// The epoch of the pair when it struck.
    pub epoch: String,
    /// When it struck, unix ms.
    pub at_ms: u64,
    /// How long it lasted before it was undone, ms.
    pub held_ms: u64,
    /// How long after it was undone the pair was healthy again, ms; `None` if it never was.
    pub healthy_after_ms: Option<u64>,
    /// The roles once healthy again.
    pub roles_after: Option<Roles>,
}

impl Soak<'_> {
    /// One fault: wait for a healthy pair, strike whichever broker holds the role `kind`
    /// names, hold the fault, undo it, and wait for a healthy pair again. What goes wrong is
    /// recorded in `problems`.
    pub(super) fn fault(&mut self, number: usize, kind: FaultKind, hold: Duration) {
        let deadline = self.config.healthy_deadline;
        let of = self.config.faults;
        let roles = match self.cluster.wait_healthy(deadline, SUBSCRIBERS as u64) {
            Ok(roles) => roles,
            Err(why) => {
                self.problems.push(format!(
                    "before fault {number}: the pair was not healthy within {} s: {why}",
                    deadline.as_secs()
                ));
                return;
            }
        };
        let epoch = self
            .cluster
            .status(roles.primary)
            .map(|s| s.epoch)
            .unwrap_or_default();
        let target = match kind {
            FaultKind::KillBackup | FaultKind::CutWitnessBackup => roles.backup,
            _ => roles.primary,
        };
        let at_ms = unix_ms();
        info!(
            "fault {number}/{of}: {kind} (target {target}, epoch {epoch}) for {} ms",
            hold.as_millis()
        );
        if let Err(e) = self.inject(kind, target, hold) {
            self.problems.push(format!(
                "fault {number} ({kind}) could not be injected or undone: {e}"
            ));
            return;
        }
        let undone = Instant::now();
        let healthy = self.cluster.wait_healthy(deadline, SUBSCRIBERS as u64);
        let healthy_after_ms = healthy
            .as_ref()
            .ok()
            .map(|_| u64::try_from(undone.elapsed().as_millis()).unwrap_or(u64::MAX));
        match &healthy {
            Ok(roles) => info!(
                "fault {number}/{of} undone: healthy {} later, primary={}",
                secs(healthy_after_ms.unwrap_or(0)),
                roles.primary
            ),
            Err(why) => {
                warn!("fault {number}/{of} undone: the pair is not healthy: {why}");
                self.problems.push(format!(
                    "after fault {number} ({kind}): the pair was not healthy within {} s: {why}",
                    deadline.as_secs()
                ));
            }
        }
        self.faults.push(FaultRecord {
            number,
            kind,
            target,
            epoch,
            at_ms,
            held_ms: u64::try_from(hold.as_millis()).unwrap_or(u64::MAX),
            healthy_after_ms,
            roles_after: healthy.ok(),
        });
    }

    /// Injects one fault, holds it for `hold` (a Ctrl-C shortens the hold; a fault is always
    /// undone), and undoes it.
    fn inject(&mut self, kind: FaultKind, target: BrokerId, hold: Duration) -> Result<()> {
        match kind {
            FaultKind::KillPrimary | FaultKind::KillBackup => {
                self.cluster.kill_broker(target);
                self.pause(hold);
                self.cluster.start_broker(target)
            }
            FaultKind::StopPrimary => {
                self.cluster.stop_broker(target)?;
                self.pause(hold);
                self.cluster.resume_broker(target)
            }
            FaultKind::CutLink => {
                self.cluster.cut_broker_link()?;
                self.pause(hold);
                self.cluster.heal_broker_link()
            }
            FaultKind::IsolatePrimary => {
                self.cluster.isolate_broker(target)?;
                self.pause(hold);
                self.cluster.rejoin_broker(target)
            }
            FaultKind::KillBoth => {
                self.cluster.kill_both_brokers();
                self.pause(hold);
                self.cluster.start_brokers()
            }
            FaultKind::KillWitness => {
                self.cluster.kill_witness();
                self.pause(hold);
                self.cluster.start_witness()
            }
            FaultKind::CutWitnessPrimary | FaultKind::CutWitnessBackup => {
                self.cluster.cut_link(target.host(), Host::Witness)?;
                self.pause(hold);
                self.cluster.heal_link(target.host(), Host::Witness)
            }
            FaultKind::IsolateWitness => {
                self.cluster.isolate(Host::Witness)?;
                self.pause(hold);
                self.cluster.rejoin(Host::Witness)
            }
        }
    }
}
