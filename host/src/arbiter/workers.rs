//! The arbiter's table of workers: which generation each belongs to, its heartbeat slot, and what the arbiter
//! did to it, so that its exit can be reported truthfully (a timeout kill is not "perhaps out of memory").

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use crate::log;
use crate::worker::heartbeat::{CAPACITY, Heartbeats};
use crate::worker::{BOOT_ERROR, REFUSED_ARTEFACT};

/// After SIGABRT for a timeout, how long a worker has before SIGKILL.
const ABORT_GRACE: Duration = Duration::from_secs(1);

/// A worker the arbiter started and has not reaped yet.
#[derive(Debug)]
pub struct WorkerRecord {
    pub slot: usize,
    pub generation: u64,
    started: Instant,
    /// The arbiter sent it SIGKILL.
    killed_by_arbiter: bool,
    /// When the arbiter sent SIGABRT because the worker was silent past the timeout.
    timed_out: Option<Instant>,
    /// A retiring worker was sent SIGTERM; past this it gets SIGKILL.
    retire_deadline: Option<Instant>,
}

impl WorkerRecord {
    pub fn started(&self) -> Instant {
        self.started
    }
}

#[derive(Debug, Default)]
pub struct Workers {
    records: BTreeMap<Pid, WorkerRecord>,
}

impl Workers {
    pub fn add(&mut self, pid: Pid, slot: usize, generation: u64) {
        let record = WorkerRecord {
            slot,
            generation,
            started: Instant::now(),
            killed_by_arbiter: false,
            timed_out: None,
            retire_deadline: None,
        };
        self.records.insert(pid, record);
    }

    pub fn remove(&mut self, pid: Pid) -> Option<WorkerRecord> {
        self.records.remove(&pid)
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Workers of `generation` that are not retiring.
    fn serving(&self, generation: u64) -> impl Iterator<Item = (&Pid, &WorkerRecord)> {
        self.records
            .iter()
            .filter(move |(_, record)| record.generation == generation && record.retire_deadline.is_none())
    }

    pub fn count_current(&self, generation: u64) -> usize {
        self.serving(generation).count()
    }

    /// Whether `target` workers of `generation` have loaded the app.
    pub fn generation_ready(&self, generation: u64, target: usize, heartbeats: &Heartbeats) -> bool {
        self.serving(generation).filter(|(_, record)| heartbeats.slot(record.slot).is_ready()).count() >= target
    }

    /// The lowest heartbeat slot no worker uses.
    pub fn free_slot(&self) -> Option<usize> {
        let used: Vec<usize> = self.records.values().map(|record| record.slot).collect();
        (0..CAPACITY).find(|slot| !used.contains(slot))
    }

    pub fn kill_all(&mut self, signal: Signal) {
        let pids: Vec<Pid> = self.records.keys().copied().collect();
        for pid in pids {
            self.signal(pid, signal);
        }
    }

    fn signal(&mut self, pid: Pid, signal: Signal) {
        if let Some(record) = self.records.get_mut(&pid) {
            record.killed_by_arbiter |= signal == Signal::SIGKILL;
            let _ = kill(pid, signal);
        }
    }

    /// Gracefully stops the oldest serving workers of `generation` beyond `keep`.
    pub fn retire_oldest(&mut self, generation: u64, keep: usize, graceful: Duration) {
        let mut serving: Vec<(Instant, Pid)> =
            self.serving(generation).map(|(pid, record)| (record.started, *pid)).collect();
        serving.sort();
        let extra = serving.len().saturating_sub(keep);
        for (_, pid) in serving.into_iter().take(extra) {
            self.retire(pid, graceful);
        }
    }

    /// Gracefully stops every serving worker of `generation`.
    pub fn retire_generation(&mut self, generation: u64, graceful: Duration) {
        let pids: Vec<Pid> = self.serving(generation).map(|(pid, _)| *pid).collect();
        for pid in pids {
            self.retire(pid, graceful);
        }
    }

    fn retire(&mut self, pid: Pid, graceful: Duration) {
        if let Some(record) = self.records.get_mut(&pid) {
            record.retire_deadline = Some(Instant::now() + graceful);
            let _ = kill(pid, Signal::SIGTERM);
        }
    }

    /// Kills retiring workers still running past their graceful timeout.
    pub fn kill_overdue_retirees(&mut self) {
        let now = Instant::now();
        let overdue: Vec<Pid> = self
            .records
            .iter()
            .filter(|(_, record)| {
                record.retire_deadline.is_some_and(|deadline| now >= deadline) && !record.killed_by_arbiter
            })
            .map(|(pid, _)| *pid)
            .collect();
        for pid in overdue {
            log::warning(format_args!("Worker (pid:{pid}) did not finish within the graceful timeout: killing it"));
            self.signal(pid, Signal::SIGKILL);
        }
    }

    /// Sends SIGABRT to workers silent for longer than `timeout` (and SIGKILL a second later). A worker serving
    /// a request gets at least `busy_minimum`: the guest's own deadline, which answers 503 and keeps the
    /// worker, must fire first.
    pub fn murder_silent(&mut self, heartbeats: &Heartbeats, timeout: Duration, busy_minimum: Duration) {
        let pids: Vec<Pid> = self.records.keys().copied().collect();
        for pid in pids {
            let Some(record) = self.records.get_mut(&pid) else { continue };
            if let Some(aborted) = record.timed_out {
                if aborted.elapsed() >= ABORT_GRACE && !record.killed_by_arbiter {
                    self.signal(pid, Signal::SIGKILL);
                }
                continue;
            }
            let slot = heartbeats.slot(record.slot);
            let silence = slot.silence();
            let limit = if slot.current_request().is_some() { timeout.max(busy_minimum) } else { timeout };
            if silence <= limit {
                continue;
            }
            let doing = match slot.current_request() {
                Some((what, busy)) => format!("serving {what} for {:.1} s", busy.as_secs_f64()),
                None if !slot.is_ready() => "while loading the app".to_string(),
                None => format!("silent for {:.1} s while idle", silence.as_secs_f64()),
            };
            log::critical(format_args!("WORKER TIMEOUT (pid:{pid}) {doing}"));
            record.timed_out = Some(Instant::now());
            let _ = kill(pid, Signal::SIGABRT);
        }
    }
}

/// Every child that has exited, with its status.
pub fn reap_children() -> Vec<(Pid, WaitStatus)> {
    let mut exited = Vec::new();
    loop {
        match waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return exited,
            Err(Errno::EINTR) => continue,
            Err(err) => {
                log::error(format_args!("waitpid failed: {err}"));
                return exited;
            }
            Ok(status) => {
                if let Some(pid) = status.pid() {
                    exited.push((pid, status));
                }
            }
        }
    }
}

/// What a worker's exit asks of the arbiter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Nothing more than a replacement, if the pool needs one.
    Left,
    /// It could not load its apps.
    BootFailed,
    /// It refused a compiled artefact (it logged why): the apps are compiled again.
    RefusedArtefact,
}

/// Logs why a worker left and says what its exit asks for.
pub fn report_exit(pid: Pid, status: WaitStatus, record: &WorkerRecord, stopping: bool) -> Exit {
    match status {
        WaitStatus::Exited(_, 0) => log::info(format_args!("Worker exiting (pid: {pid})")),
        WaitStatus::Exited(_, BOOT_ERROR) => {
            log::error(format_args!("Worker (pid:{pid}) failed to boot"));
            return Exit::BootFailed;
        }
        WaitStatus::Exited(_, REFUSED_ARTEFACT) => return Exit::RefusedArtefact,
        WaitStatus::Exited(_, code) => log::error(format_args!("Worker (pid:{pid}) exited with code {code}")),
        WaitStatus::Signaled(_, signal, _) if record.timed_out.is_some() => {
            log::error(format_args!("Worker (pid:{pid}) was killed with {signal} after WORKER TIMEOUT"));
        }
        WaitStatus::Signaled(_, Signal::SIGKILL, _) if record.killed_by_arbiter => {
            log::error(format_args!("Worker (pid:{pid}) was sent SIGKILL by the arbiter after the graceful timeout"));
        }
        WaitStatus::Signaled(_, Signal::SIGKILL, _) => log::error(format_args!(
            "Worker (pid:{pid}) was sent SIGKILL from outside wasmcorn (perhaps the kernel's out-of-memory killer)"
        )),
        WaitStatus::Signaled(_, signal, _) if stopping => {
            log::info(format_args!("Worker (pid:{pid}) stopped by {signal}"))
        }
        WaitStatus::Signaled(_, signal, _) => log::error(format_args!("Worker (pid:{pid}) was killed by {signal}")),
        other => log::warning(format_args!("Worker (pid:{pid}) changed state: {other:?}")),
    }
    Exit::Left
}
