//! The pair's state as STATUS says it: the brokers' and the witness's lines parsed
//! ([`BrokerStatus`], [`WitnessStatus`]), sampled (noting two primaries in one epoch), and
//! judged: a healthy pair ([`Roles`]), subscriptions counted.

use std::time::Duration;

use edgebroker::client::status::StatusFields;
use edgebroker::error::Result;

use super::{BrokerId, Cluster};
use crate::harness::netns::Host;
use crate::harness::{failure, unix_ms, wait_for};

/// The `key=value` fields of a `STATUS|…` line; `None` for any other line.
fn fields(line: &str) -> Option<StatusFields> {
    let fields = line.trim_end().strip_prefix("STATUS|")?;
    Some(StatusFields(
        fields
            .split('|')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    ))
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
        let f = fields(line)?;
        Some(BrokerStatus {
            role: f.get("role")?.to_string(),
            epoch: f.get("epoch")?.to_string(),
            backup: f.get("backup").unwrap_or_default().to_string(),
            pending: f.number("pending").unwrap_or(0),
            subscriptions: f.number("subscriptions").unwrap_or(0),
            witness: f.get("witness").unwrap_or("none").to_string(),
            lease_ms: f.number("lease_ms").unwrap_or(0),
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
        let f = fields(line)?;
        let number = |key: &str| f.number(key).unwrap_or(0);
        (f.get("role")? == "witness").then(|| WitnessStatus {
            epoch: f.get("epoch").unwrap_or_default().to_string(),
            holder: f.get("holder").unwrap_or_default().to_string(),
            holder_epoch: f.get("holder_epoch").unwrap_or_default().to_string(),
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

impl Cluster {
    /// A broker's STATUS, or `None` if it is not running, stopped, or does not answer.
    pub fn status(&mut self, id: BrokerId) -> Option<BrokerStatus> {
        let slot = &mut self.brokers[id.index()];
        if slot.stopped || !slot.running() {
            return None;
        }
        let line = self.site.status_line(id.host(), slot.port)?;
        BrokerStatus::parse(&line)
    }

    /// Both brokers' STATUS. Also notes, for [`Cluster::double_primaries`], a moment when both
    /// said they were primary in the same epoch.
    pub fn statuses(&mut self) -> [Option<BrokerStatus>; 2] {
        let both = BrokerId::BOTH.map(|id| self.status(id));
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

    /// Waits until each running broker that answers counts at least `n` subscriptions.
    pub fn wait_subscribed(&mut self, n: u64, within: Duration) -> Result<()> {
        wait_for(within, || {
            let s = self.statuses();
            let answering: Vec<&BrokerStatus> = s.iter().flatten().collect();
            (!answering.is_empty() && answering.iter().all(|s| s.subscriptions >= n)).then_some(())
        })
        .ok_or_else(|| failure(&format!("the brokers did not count {n} subscriptions")))
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
