//! What a cluster runs: the project's programs (where they are, built first under cargo, copied
//! for a long run) and the settings they are started with ([`ClusterConfig`]).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use edgebroker::error::{Error, Result};
use log::info;

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
    /// The brokers' `--startup-grace-ms`. A broker read back from its log on disk waits it out
    /// before it leads and replays what it holds, so it must comfortably outlast the
    /// subscribers' longest wait between redials (`SubscriberConfig::max_backoff`): those
    /// that lost both brokers are subscribed again before the replay.
    pub startup_grace_ms: u64,
    /// Both brokers get `--require-backup`.
    pub require_backup: bool,
    /// Give each broker a log on disk with this `--fsync` (`always`, `batch`, `never`):
    /// `--data-dir` a folder of its own in the run's folder (`primary-data`, `backup-data`),
    /// kept across its restarts. `None` keeps the brokers in memory only.
    pub fsync: Option<String>,
    /// `test_publisher`'s `--rate-hz`.
    pub rate_hz: u32,
    /// `test_publisher`'s `--window`: how many messages may wait for their ACKs at once.
    pub window: usize,
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
    /// The seed's compute step and rate (no pipelining), with fast failure detection (probes every 200 ms,
    /// 300 ms timeout); the brokers' start-up grace of 3000 ms (three times the subscribers'
    /// longest backoff of 1 s); no log on disk; no witness, and a 1000 ms lease when there is
    /// one (it must outlast a lost renewal and its retry, 200 + 300 + 50 ms, PROTOCOL.md
    /// "Default timings").
    fn default() -> Self {
        ClusterConfig {
            topic: "topicC".into(),
            compute: "50-150".into(),
            ping_interval_ms: 200,
            ping_timeout_ms: 300,
            startup_grace_ms: 3000,
            require_backup: false,
            fsync: None,
            rate_hz: 10,
            window: 1,
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use edgebroker::SubscriberConfig;

    use super::*;

    #[test]
    fn the_start_up_grace_outlasts_a_subscribers_longest_redial_with_room_to_spare() {
        // A subscriber that lost both brokers dials again at most this long after a restarted
        // one listens, and its dial (1 s at most) must be done before the grace is out.
        let backoff = SubscriberConfig::new("t", "a:1", "b:2").max_backoff;
        let grace = Duration::from_millis(ClusterConfig::default().startup_grace_ms);
        assert!(grace >= 3 * backoff, "{grace:?} against {backoff:?}");
    }
}
