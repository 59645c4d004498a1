//! The arbiter: compiles the app, binds the sockets, forks the workers and keeps the right number of them alive.
//! It reacts to signals (TERM graceful stop, INT/QUIT quick stop, TTIN/TTOU one worker more or less), reaps
//! workers, says truthfully why each one left, and stops the server when workers cannot boot instead of
//! respawning them in a storm.

mod signals;
mod spawn;

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use crate::config::Config;
use crate::guest::Artefact;
use crate::listener::Listener;
use crate::log;
use crate::worker::BOOT_ERROR;
use signals::{Signals, short_name};

/// How long a graceful stop waits for workers to finish their requests before killing them.
const GRACEFUL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the main loop sleeps when nothing happens.
const IDLE_WAIT: Duration = Duration::from_millis(1000);

/// Runs the server until it is stopped. Returns the process's exit code.
pub fn run(config: Config) -> anyhow::Result<ExitCode> {
    let artefact = spawn::compile(&config.app, &config.cache_dir)?;
    let listeners = config.binds.iter().map(|spec| Listener::bind(spec)).collect::<anyhow::Result<Vec<_>>>()?;
    log::info(format_args!("Starting wasmcorn {}", env!("CARGO_PKG_VERSION")));
    let pid = std::process::id();
    for listener in &listeners {
        log::info(format_args!("Listening at: {} ({pid})", listener.url()));
    }
    log::info("Using worker: sync");
    let signals = Signals::install()?;
    let target = config.workers;
    let mut arbiter = Arbiter { config, artefact, listeners, signals, workers: BTreeMap::new(), target, stop: None };
    arbiter.run()
}

/// A worker the arbiter started and has not reaped yet.
struct WorkerRecord {
    /// The arbiter sent it SIGKILL, so its death by SIGKILL is no mystery.
    killed_by_arbiter: bool,
}

/// A stop in progress.
struct Stop {
    graceful: bool,
    deadline: Instant,
    exit_code: u8,
}

struct Arbiter {
    config: Config,
    artefact: Artefact,
    listeners: Vec<Listener>,
    signals: Signals,
    workers: BTreeMap<Pid, WorkerRecord>,
    /// How many workers to keep alive.
    target: u32,
    stop: Option<Stop>,
}

impl Arbiter {
    fn run(&mut self) -> anyhow::Result<ExitCode> {
        loop {
            self.reap();
            match &self.stop {
                None => self.spawn_missing()?,
                Some(stop) if self.workers.is_empty() => {
                    log::info("Shutting down: wasmcorn");
                    return Ok(ExitCode::from(stop.exit_code));
                }
                Some(stop) if Instant::now() >= stop.deadline => self.kill_all(Signal::SIGKILL),
                Some(_) => {}
            }
            let wait = match &self.stop {
                Some(stop) => stop.deadline.saturating_duration_since(Instant::now()).min(IDLE_WAIT),
                None => IDLE_WAIT,
            };
            for signal in self.signals.wait(wait) {
                self.handle(signal);
            }
        }
    }

    fn handle(&mut self, signal: Signal) {
        if signal != Signal::SIGCHLD {
            log::info(format_args!("Handling signal: {}", short_name(signal)));
        }
        match signal {
            Signal::SIGCHLD => {}
            Signal::SIGTERM => self.begin_stop(true, 0),
            Signal::SIGINT | Signal::SIGQUIT => self.begin_stop(false, 0),
            Signal::SIGTTIN => {
                self.target += 1;
                log::info(format_args!("Number of workers: {}", self.target));
            }
            Signal::SIGTTOU => {
                if self.target > 1 {
                    self.target -= 1;
                    log::info(format_args!("Number of workers: {}", self.target));
                    self.retire_extra();
                }
            }
            other => log::warning(format_args!("Ignoring signal {}: not supported yet", short_name(other))),
        }
    }

    /// Starts a stop: a graceful one lets every worker finish its request, a quick one ends them at once.
    fn begin_stop(&mut self, graceful: bool, exit_code: u8) {
        if self.stop.as_ref().is_some_and(|stop| !stop.graceful || graceful) {
            return;
        }
        // Close our copy of the listeners: once the workers close theirs, new connections are refused.
        self.listeners.clear();
        self.stop = Some(Stop { graceful, deadline: Instant::now() + GRACEFUL_TIMEOUT, exit_code });
        self.kill_all(if graceful { Signal::SIGTERM } else { Signal::SIGINT });
    }

    fn spawn_missing(&mut self) -> anyhow::Result<()> {
        while self.workers.len() < self.target as usize {
            let close_in_child = [self.signals.raw_fd()];
            let pid =
                spawn::worker(&self.config.app, &self.config.http, &self.artefact, &self.listeners, &close_in_child)
                    .context("cannot start a worker")?;
            self.workers.insert(pid, WorkerRecord { killed_by_arbiter: false });
        }
        Ok(())
    }

    /// Retires the oldest workers beyond the target, gracefully.
    fn retire_extra(&mut self) {
        let extra = self.workers.len().saturating_sub(self.target as usize);
        let oldest: Vec<Pid> = self.workers.keys().take(extra).copied().collect();
        for pid in oldest {
            self.signal(pid, Signal::SIGTERM);
        }
    }

    fn kill_all(&mut self, signal: Signal) {
        let pids: Vec<Pid> = self.workers.keys().copied().collect();
        for pid in pids {
            self.signal(pid, signal);
        }
    }

    fn signal(&mut self, pid: Pid, signal: Signal) {
        if let Some(record) = self.workers.get_mut(&pid) {
            record.killed_by_arbiter |= signal == Signal::SIGKILL;
            let _ = kill(pid, signal);
        }
    }

    /// Collects every exited worker and logs why it left.
    fn reap(&mut self) {
        loop {
            let status = match waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return,
                Err(Errno::EINTR) => continue,
                Err(err) => {
                    log::error(format_args!("waitpid failed: {err}"));
                    return;
                }
                Ok(status) => status,
            };
            let Some(pid) = status.pid() else { continue };
            let Some(record) = self.workers.remove(&pid) else { continue };
            self.report_exit(pid, status, &record);
        }
    }

    fn report_exit(&mut self, pid: Pid, status: WaitStatus, record: &WorkerRecord) {
        let stopping = self.stop.is_some();
        match status {
            WaitStatus::Exited(_, 0) => log::info(format_args!("Worker exiting (pid: {pid})")),
            WaitStatus::Exited(_, BOOT_ERROR) => {
                log::critical(format_args!("Worker (pid:{pid}) failed to boot; shutting down"));
                if !stopping {
                    self.begin_stop(false, BOOT_ERROR as u8);
                }
            }
            WaitStatus::Exited(_, code) => log::error(format_args!("Worker (pid:{pid}) exited with code {code}")),
            WaitStatus::Signaled(_, Signal::SIGKILL, _) if record.killed_by_arbiter => {
                log::error(format_args!(
                    "Worker (pid:{pid}) was sent SIGKILL by the arbiter after the graceful timeout"
                ));
            }
            WaitStatus::Signaled(_, Signal::SIGKILL, _) => log::error(format_args!(
                "Worker (pid:{pid}) was sent SIGKILL from outside wasmcorn (perhaps the kernel's out-of-memory killer)"
            )),
            WaitStatus::Signaled(_, signal, _) if stopping => {
                log::info(format_args!("Worker (pid:{pid}) stopped by {signal}"));
            }
            WaitStatus::Signaled(_, signal, _) => log::error(format_args!("Worker (pid:{pid}) was killed by {signal}")),
            other => log::warning(format_args!("Worker (pid:{pid}) changed state: {other:?}")),
        }
    }
}
