//! The processes the study starts: each is a `Spawned` guard that stops its process by pid when dropped (also
//! on an error or after ctrl-C), in a process group of its own so that a ctrl-C on the terminal reaches only the
//! harness, which then stops everything in order. `interrupted()` tells the loops that the user asked to stop.

use std::os::unix::process::CommandExt;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use nix::sys::signal::{self, SigHandler, Signal};
use nix::unistd::Pid;

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn note_interrupt(_signal: nix::libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Turns SIGINT and SIGTERM into a flag the study checks between steps, so that it can stop what it started.
pub(crate) fn catch_interrupts() -> anyhow::Result<()> {
    for sig in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { signal::signal(sig, SigHandler::Handler(note_interrupt)) }
            .with_context(|| format!("cannot catch {sig}"))?;
    }
    Ok(())
}

/// Whether the user asked the study to stop.
pub(crate) fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Fails once the user asked the study to stop.
pub(crate) fn check_interrupt() -> anyhow::Result<()> {
    if interrupted() {
        bail!("interrupted");
    }
    Ok(())
}

/// A started process, stopped by pid on drop: `stop_signal` first, SIGKILL if it is still there after the grace
/// period.
pub(crate) struct Spawned {
    child: Child,
    name: String,
    stop_signal: Signal,
    grace: Duration,
}

impl Spawned {
    /// Starts `command` in a process group of its own.
    pub(crate) fn start(
        mut command: Command,
        name: &str,
        stop_signal: Signal,
        grace: Duration,
    ) -> anyhow::Result<Self> {
        command.process_group(0);
        let child = command.spawn().with_context(|| format!("cannot start {name} ({command:?})"))?;
        Ok(Spawned { child, name: name.to_string(), stop_signal, grace })
    }

    pub(crate) fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).unwrap_or(i32::MAX)
    }

    /// `Some(description)` once the process has exited.
    pub(crate) fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(status)) => Some(status.to_string()),
            Ok(None) => None,
            Err(err) => Some(format!("unknown status ({err})")),
        }
    }

    /// Waits until the process exits by itself, for at most `limit`; stops it if the user interrupts.
    /// `Ok(true)` if it exited with success.
    pub(crate) fn wait_bounded(&mut self, limit: Duration) -> anyhow::Result<bool> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().with_context(|| format!("cannot wait for {}", self.name))? {
                return Ok(status.success());
            }
            check_interrupt()?;
            sleep(Duration::from_millis(50));
        }
        bail!("{} (pid {}) did not finish within {:.0} s", self.name, self.pid(), limit.as_secs_f64())
    }

    /// Stops the process by pid and reaps it.
    pub(crate) fn stop(&mut self) {
        if self.exited().is_some() {
            return;
        }
        let pid = Pid::from_raw(self.pid());
        let _ = signal::kill(pid, self.stop_signal);
        let deadline = Instant::now() + self.grace;
        while Instant::now() < deadline {
            if self.exited().is_some() {
                return;
            }
            sleep(Duration::from_millis(20));
        }
        eprintln!("study: {} (pid {}) still running after {:?}: SIGKILL", self.name, pid, self.grace);
        let _ = signal::kill(pid, Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Sends SIGKILL to `pid` if it is still alive after `grace`: for a server's workers, once their arbiter is gone.
pub(crate) fn reap_orphan(pid: i32, grace: Duration) {
    let deadline = Instant::now() + grace;
    let alive = || signal::kill(Pid::from_raw(pid), None).is_ok();
    while alive() && Instant::now() < deadline {
        sleep(Duration::from_millis(20));
    }
    if alive() {
        eprintln!("study: pid {pid} outlived its arbiter: SIGKILL");
        let _ = signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
}
