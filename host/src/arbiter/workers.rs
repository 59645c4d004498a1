//! The arbiter's table of workers: which generation each belongs to, its heartbeat slot, and what the arbiter
//! did to it, so that its exit can be reported truthfully (a timeout kill is not "perhaps out of memory"). A
//! worker that must die, silent past `--timeout` or still running past its graceful timeout, gets SIGABRT
//! first, on which it answers the connections it queued but never started 503, and SIGKILL a second later.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use crate::log;
use crate::worker::heartbeat::{CAPACITY, Heartbeats};
use crate::worker::{BOOT_ERROR, REFUSED_ARTEFACT, SIGNALS_THAT_END_A_WORKER};

/// After SIGABRT, how long a worker has before SIGKILL.
const ABORT_GRACE: Duration = Duration::from_secs(1);

/// Why the arbiter sent a worker SIGABRT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AbortCause {
    /// Silent past `--timeout`.
    Timeout,
    /// Retired or stopped, and still running past `--graceful-timeout`.
    GracefulTimeout,
}

/// A worker the arbiter started and has not reaped yet.
#[derive(Debug)]
pub(super) struct WorkerRecord {
    pub slot: usize,
    pub generation: u64,
    started: Instant,
    /// The arbiter sent it SIGKILL.
    killed_by_arbiter: bool,
    /// When and why the arbiter sent it SIGABRT.
    aborted: Option<(Instant, AbortCause)>,
    /// The worker was retired, or stopped gracefully, with SIGTERM; past this it gets SIGABRT.
    graceful_deadline: Option<Instant>,
    /// It was retired: sent SIGTERM while the listeners stay open for other workers.
    retired: bool,
    /// A worker of the shared pool: it takes the connections from the listeners and hands the requests for a
    /// dedicated pool over to that pool's workers.
    front_door: bool,
}

impl WorkerRecord {
    pub(super) fn started(&self) -> Instant {
        self.started
    }

    /// The arbiter killed it for silence past `--timeout`.
    pub(super) fn timed_out(&self) -> bool {
        matches!(self.aborted, Some((_, AbortCause::Timeout)))
    }

    /// The arbiter killed it for running past its graceful timeout.
    pub(super) fn overdue(&self) -> bool {
        matches!(self.aborted, Some((_, AbortCause::GracefulTimeout))) || self.killed_by_arbiter
    }

    /// It was retired (a reload, TTOU, a smaller pool).
    pub(super) fn retired(&self) -> bool {
        self.retired
    }
}

#[derive(Debug, Default)]
pub(super) struct Workers {
    records: BTreeMap<Pid, WorkerRecord>,
}

impl Workers {
    pub(super) fn add(&mut self, pid: Pid, slot: usize, generation: u64, front_door: bool) {
        let record = WorkerRecord {
            slot,
            generation,
            started: Instant::now(),
            killed_by_arbiter: false,
            aborted: None,
            graceful_deadline: None,
            retired: false,
            front_door,
        };
        self.records.insert(pid, record);
    }

    pub(super) fn remove(&mut self, pid: Pid) -> Option<WorkerRecord> {
        self.records.remove(&pid)
    }

    pub(super) fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    pub(super) fn count(&self) -> usize {
        self.records.len()
    }

    /// Workers of `generation` that are not retiring.
    fn serving(&self, generation: u64) -> impl Iterator<Item = (&Pid, &WorkerRecord)> {
        self.records.iter().filter(move |(_, record)| record.generation == generation && !record.retired)
    }

    pub(super) fn count_current(&self, generation: u64) -> usize {
        self.serving(generation).count()
    }

    /// Whether `target` workers of `generation` have loaded the app.
    pub(super) fn generation_ready(&self, generation: u64, target: usize, heartbeats: &Heartbeats) -> bool {
        self.serving(generation).filter(|(_, record)| heartbeats.slot(record.slot).is_ready()).count() >= target
    }

    /// Whether some worker that is not retiring has loaded its apps.
    pub(super) fn any_accepting(&self, heartbeats: &Heartbeats) -> bool {
        self.records.values().any(|record| !record.retired && heartbeats.slot(record.slot).is_ready())
    }

    /// The lowest heartbeat slot no worker uses.
    pub(super) fn free_slot(&self) -> Option<usize> {
        let used: Vec<usize> = self.records.values().map(|record| record.slot).collect();
        (0..CAPACITY).find(|slot| !used.contains(slot))
    }

    /// Marks every worker's slot before the server stops them: a worker that dies then answers what its listeners
    /// queued (see `worker::farewell`), since no worker will accept it any more, unless a `successor` arbiter
    /// shares the listeners.
    pub(super) fn mark_server_stopping(&self, heartbeats: &Heartbeats, successor: bool) {
        for record in self.records.values() {
            heartbeats.slot(record.slot).mark_server_stopping(successor);
        }
    }

    /// Marks the workers of `generation`, which a reload kept, as routing with an out-of-date site.
    pub(super) fn mark_routes_stale(&self, generation: u64, heartbeats: &Heartbeats) {
        for record in self.records.values().filter(|record| record.generation == generation) {
            heartbeats.slot(record.slot).mark_routes_stale();
        }
    }

    pub(super) fn kill_all(&mut self, signal: Signal) {
        let pids: Vec<Pid> = self.records.keys().copied().collect();
        for pid in pids {
            self.signal(pid, signal);
        }
    }

    fn signal(&mut self, pid: Pid, signal: Signal) {
        if let Some(record) = self.records.get_mut(&pid) {
            record.killed_by_arbiter |= signal == Signal::SIGKILL;
            deliver(pid, signal);
        }
    }

    /// Gracefully stops the oldest serving workers of `generation` beyond `keep`.
    pub(super) fn retire_oldest(&mut self, generation: u64, keep: usize, graceful: Duration, heartbeats: &Heartbeats) {
        let mut serving: Vec<(Instant, Pid)> =
            self.serving(generation).map(|(pid, record)| (record.started, *pid)).collect();
        serving.sort();
        let extra = serving.len().saturating_sub(keep);
        for (_, pid) in serving.into_iter().take(extra) {
            self.retire(pid, graceful, heartbeats);
        }
    }

    /// Gracefully stops every serving worker of `generation`.
    pub(super) fn retire_generation(&mut self, generation: u64, graceful: Duration, heartbeats: &Heartbeats) {
        let pids: Vec<Pid> = self.serving(generation).map(|(pid, _)| *pid).collect();
        for pid in pids {
            self.retire(pid, graceful, heartbeats);
        }
    }

    /// Marks the worker retiring in its slot (it accepts no more: the listeners stay open for the others), then
    /// sends SIGTERM.
    fn retire(&mut self, pid: Pid, graceful: Duration, heartbeats: &Heartbeats) {
        if let Some(record) = self.records.get_mut(&pid) {
            record.retired = true;
            record.graceful_deadline = Some(earliest(record.graceful_deadline, Instant::now() + graceful));
            heartbeats.slot(record.slot).mark_retiring();
            deliver(pid, Signal::SIGTERM);
        }
    }

    /// The server stops: SIGTERM to every worker of the shared pool (`front_door`), or to every other, each given
    /// until `deadline` (or what it has left of an earlier retirement).
    pub(super) fn stop_all(&mut self, front_door: bool, deadline: Instant) {
        for (pid, record) in self.records.iter_mut().filter(|(_, record)| record.front_door == front_door) {
            record.graceful_deadline = Some(earliest(record.graceful_deadline, deadline));
            deliver(*pid, Signal::SIGTERM);
        }
    }

    /// Whether a worker of the shared pool is still running.
    pub(super) fn any_front_door(&self) -> bool {
        self.records.values().any(|record| record.front_door)
    }

    /// Sends SIGABRT to workers retired or stopped and still running past their graceful timeout.
    pub(super) fn abort_overdue(&mut self) {
        let now = Instant::now();
        let overdue: Vec<Pid> = self
            .records
            .iter()
            .filter(|(_, record)| {
                record.graceful_deadline.is_some_and(|deadline| now >= deadline)
                    && record.aborted.is_none()
                    && !record.killed_by_arbiter
            })
            .map(|(pid, _)| *pid)
            .collect();
        for pid in overdue {
            log::warning(format_args!(
                "Worker (pid:{pid}) did not finish within the graceful timeout: sending SIGABRT, then SIGKILL"
            ));
            self.abort(pid, AbortCause::GracefulTimeout);
        }
    }

    fn abort(&mut self, pid: Pid, cause: AbortCause) {
        if let Some(record) = self.records.get_mut(&pid) {
            record.aborted = Some((Instant::now(), cause));
            deliver(pid, Signal::SIGABRT);
        }
    }

    /// Sends SIGKILL to workers still running `ABORT_GRACE` after their SIGABRT.
    pub(super) fn kill_aborted(&mut self) {
        let late: Vec<Pid> = self
            .records
            .iter()
            .filter(|(_, record)| {
                record.aborted.is_some_and(|(at, _)| at.elapsed() >= ABORT_GRACE) && !record.killed_by_arbiter
            })
            .map(|(pid, _)| *pid)
            .collect();
        for pid in late {
            self.signal(pid, Signal::SIGKILL);
        }
    }

    /// Sends SIGABRT to workers silent for longer than `timeout` (and SIGKILL a second later). A worker serving
    /// a request gets at least `busy_minimum`: the guest's own deadline, which answers 503 and keeps the
    /// worker, must fire first.
    pub(super) fn murder_silent(&mut self, heartbeats: &Heartbeats, timeout: Duration, busy_minimum: Duration) {
        let pids: Vec<Pid> = self.records.keys().copied().collect();
        for pid in pids {
            let Some(record) = self.records.get(&pid) else { continue };
            if record.aborted.is_some() {
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
            self.abort(pid, AbortCause::Timeout);
        }
    }
}

/// Sends `signal` to the worker `pid`, and SIGCONT after it: a stopped worker (SIGSTOP, a debugger) runs no
/// handler until it is continued, so a stop, a retirement or an abort would stay pending until SIGKILL, and the
/// connections it holds would be reset instead of answered.
fn deliver(pid: Pid, signal: Signal) {
    if SIGNALS_THAT_END_A_WORKER.contains(&signal) {
        to_main_thread(pid, signal);
    } else {
        let _ = kill(pid, signal);
    }
    if signal != Signal::SIGKILL {
        let _ = kill(pid, Signal::SIGCONT);
    }
}

/// Sends `signal` to the main thread of the worker `pid` (the thread that was forked: its id is the pid). The
/// worker's handler answers what it holds from that thread alone; a process-wide signal taken by another of its
/// threads is passed on to it, and in that moment the main thread, continued or running, could start serving a
/// held request, which the handler then cuts instead of answering (seen under load: a kept connection's request
/// got a FIN instead of a 503).
fn to_main_thread(pid: Pid, signal: Signal) {
    // SAFETY: tgkill takes three integers and touches no memory; a thread that is gone is ESRCH, ignored as for
    // kill.
    let _ = unsafe { nix::libc::tgkill(pid.as_raw(), pid.as_raw(), signal as nix::libc::c_int) };
}

/// `deadline`, or the one already set if it comes sooner.
fn earliest(set: Option<Instant>, deadline: Instant) -> Instant {
    set.map_or(deadline, |set| set.min(deadline))
}

/// Every child that has exited, with its status.
pub(super) fn reap_children() -> Vec<(Pid, WaitStatus)> {
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
pub(super) enum Exit {
    /// Nothing more than a replacement, if the pool needs one.
    Left,
    /// It could not load its apps.
    BootFailed,
    /// It refused a compiled artefact (it logged why): the apps are compiled again.
    RefusedArtefact,
}

/// Logs why a worker left (`answered`: how many queued connections it answered 503 as it was killed) and says
/// what its exit asks for.
pub(super) fn report_exit(pid: Pid, status: WaitStatus, record: &WorkerRecord, answered: u32, stopping: bool) -> Exit {
    let answers = match answered {
        0 => String::new(),
        1 => "; it answered its 1 queued connection 503".to_string(),
        count => format!("; it answered its {count} queued connections 503"),
    };
    match status {
        WaitStatus::Exited(_, 0) => log::info(format_args!("Worker exiting (pid: {pid})")),
        WaitStatus::Exited(_, BOOT_ERROR) => {
            log::error(format_args!("Worker (pid:{pid}) failed to boot"));
            return Exit::BootFailed;
        }
        WaitStatus::Exited(_, REFUSED_ARTEFACT) => return Exit::RefusedArtefact,
        WaitStatus::Exited(_, code) => log::error(format_args!("Worker (pid:{pid}) exited with code {code}")),
        WaitStatus::Signaled(_, signal, _) if record.aborted.is_some() => {
            let after = match record.aborted {
                Some((_, AbortCause::Timeout)) => "WORKER TIMEOUT",
                _ => "the graceful timeout",
            };
            log::error(format_args!("Worker (pid:{pid}) was killed with {signal} after {after}{answers}"));
        }
        WaitStatus::Signaled(_, Signal::SIGKILL, _) if record.killed_by_arbiter => {
            log::error(format_args!("Worker (pid:{pid}) was sent SIGKILL by the arbiter after the graceful timeout"));
        }
        WaitStatus::Signaled(_, Signal::SIGKILL, _) => log::error(format_args!(
            "Worker (pid:{pid}) was sent SIGKILL from outside wasmcorn (perhaps the kernel's out-of-memory killer)"
        )),
        WaitStatus::Signaled(_, signal, _) if stopping => {
            log::info(format_args!("Worker (pid:{pid}) stopped by {signal}{answers}"))
        }
        WaitStatus::Signaled(_, signal, _) => {
            log::error(format_args!("Worker (pid:{pid}) was killed by {signal}{answers}"))
        }
        other => log::warning(format_args!("Worker (pid:{pid}) changed state: {other:?}")),
    }
    Exit::Left
}
