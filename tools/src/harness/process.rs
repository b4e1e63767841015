//! One child process of a run: where its output goes, how to signal it, and a guard that
//! SIGKILLs it in `Drop`, so a failing test or an aborted soak leaves nothing running.
//!
//! A child's stdout and stderr go to files in the run's folder (`<name>.out`, `<name>.err`):
//! the harness reads them back to wait for a line and, at the end, to judge the run; a failed
//! run keeps them as its evidence. Signals are sent with the `kill` program (the crate has no
//! libc), so only the pid of a child this process spawned is ever signalled.

use std::fmt;
use std::fs::{self, File};
use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use edgebroker::error::{Error, Result};
use log::debug;

use super::{unix_ms, wait_for};

/// A signal the harness sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    /// SIGSTOP: freeze (a hung process).
    Stop,
    /// SIGCONT: resume a frozen process.
    Cont,
    /// SIGKILL: a crash.
    Kill,
    /// SIGINT: Ctrl-C, a clean stop.
    Int,
    /// SIGTERM: a clean stop.
    Term,
}

impl Signal {
    /// The name `kill` takes: `STOP`, `CONT`, …
    pub fn name(self) -> &'static str {
        match self {
            Signal::Stop => "STOP",
            Signal::Cont => "CONT",
            Signal::Kill => "KILL",
            Signal::Int => "INT",
            Signal::Term => "TERM",
        }
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SIG{}", self.name())
    }
}

/// Sends `sig` to `pid` with the `kill` program.
pub fn signal(pid: u32, sig: Signal) -> Result<()> {
    let status = Command::new("kill")
        .arg(format!("-{}", sig.name()))
        .arg(pid.to_string())
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .status()?;
    if status.success() {
        Ok(())
    } else {
        Err(Error::Io(io::Error::other(format!(
            "kill -{} {pid} failed ({status})",
            sig.name()
        ))))
    }
}

/// A running child, killed (SIGKILL) and reaped when dropped.
pub struct Proc {
    name: String,
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
    started_ms: u64,
    exit: Option<ExitStatus>,
}

impl fmt::Debug for Proc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Proc")
            .field("name", &self.name)
            .field("pid", &self.child.id())
            .field("exit", &self.exit)
            .finish()
    }
}

impl Proc {
    /// Spawns `command` with stdin closed, stdout to `<dir>/<name>.out` and stderr to
    /// `<dir>/<name>.err` (created or truncated), in a process group of its own: a Ctrl-C at
    /// the terminal reaches the harness, which decides what its children get.
    pub fn spawn(name: impl Into<String>, mut command: Command, dir: &Path) -> Result<Proc> {
        let name = name.into();
        let stdout = dir.join(format!("{name}.out"));
        let stderr = dir.join(format!("{name}.err"));
        let child = command
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(File::create(&stdout)?)
            .stderr(File::create(&stderr)?)
            .spawn()
            .map_err(|e| {
                Error::Io(io::Error::new(
                    e.kind(),
                    format!("cannot start {name} ({command:?}): {e}"),
                ))
            })?;
        debug!("started {name} as pid {}", child.id());
        Ok(Proc {
            name,
            child,
            stdout,
            stderr,
            started_ms: unix_ms(),
            exit: None,
        })
    }

    /// The name it was given (also its files' names).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// When it was started, unix ms.
    pub fn started_ms(&self) -> u64 {
        self.started_ms
    }

    /// The file its stdout goes to.
    pub fn stdout_path(&self) -> &Path {
        &self.stdout
    }

    /// The file its stderr goes to.
    pub fn stderr_path(&self) -> &Path {
        &self.stderr
    }

    /// What it printed on stdout so far.
    pub fn stdout(&self) -> String {
        fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    /// What it printed on stderr so far.
    pub fn stderr(&self) -> String {
        fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Sends it a signal (an error if it has exited).
    pub fn signal(&mut self, sig: Signal) -> Result<()> {
        if let Some(status) = self.try_exit() {
            return Err(Error::Io(io::Error::other(format!(
                "cannot send {sig} to {}: it exited ({status})",
                self.name
            ))));
        }
        signal(self.pid(), sig)
    }

    /// Its exit status if it has exited (reaping it), `None` while it runs.
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            self.exit = self.child.try_wait().ok().flatten();
        }
        self.exit
    }

    /// Waits up to `within` for it to exit.
    pub fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        wait_for(within, || self.try_exit())
    }

    /// Sends it SIGKILL and returns at once, not waiting for it to die: for killing several
    /// at one moment ([`Proc::kill`] then reaps each).
    pub fn kill_now(&mut self) {
        if self.try_exit().is_none() {
            let _ = self.child.kill();
        }
    }

    /// SIGKILLs it (a stopped process dies too) and reaps it.
    pub fn kill(&mut self) {
        if self.try_exit().is_none() {
            let _ = self.child.kill();
            self.exit = self.child.wait().ok();
        }
    }

    /// Asks it to stop with `sig`, waits up to `within`, then SIGKILLs it. Returns whether it
    /// exited on its own.
    pub fn stop(&mut self, sig: Signal, within: Duration) -> bool {
        if self.try_exit().is_some() {
            return true;
        }
        if self.signal(sig).is_ok() && self.wait_exit(within).is_some() {
            return true;
        }
        self.kill();
        false
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}
