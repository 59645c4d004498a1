//! The arbiter's side of the metrics: it maps the metrics table before forking, names the apps and pools in
//! it, records who occupies each heartbeat slot and why each worker left (folding a dead worker's counts into
//! the retired totals), says whether the server is ready or stopping, pushes the `wasmcorn.workers` statsd gauge,
//! and keeps the metrics process running when `--metrics-bind` is set.
//!
//! Scrapes are served by a small process of their own, forked by the arbiter, rather than in the arbiter's loop:
//! whatever a client does (connect and never send, never read, flood), the arbiter's loop never reads a byte of
//! it, so supervision cannot be delayed; the process reads the shared tables and /proc, parses untrusted bytes
//! with the workers' credentials, and holds no listener of the app (a stopping server's queue is not kept open
//! by it). When it dies it is started again, after a growing wait.

use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::time::Instant;

use anyhow::Context;
use nix::sys::signal::{SigSet, Signal, kill};
use nix::sys::stat::{Mode, umask};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, Gid, Pid, Uid, fork};

use super::exposition::Scrape;
use super::metrics_http;
use super::retry::Retry;
use super::state::Arbiter;
use super::workers::WorkerRecord;
use crate::config::Config;
use crate::listener::{BindOptions, Listener};
use crate::site::{PoolKey, Site};
use crate::worker::counters::labels::app_label;
use crate::worker::counters::{Counters, ExitReason, ServerState};
use crate::worker::heartbeat::Heartbeats;
use crate::worker::meter::MeterSetup;
use crate::worker::statsd::Statsd;
use crate::worker::{BOOT_ERROR, REFUSED_ARTEFACT};
use crate::{log, process};

/// The metrics socket's listen backlog: scrapers are few.
const METRICS_BACKLOG: i32 = 64;

pub(super) struct Metrics {
    counters: Counters,
    config_statsd: Option<crate::settings::StatsdSettings>,
    statsd: Option<Statsd>,
    last_workers_gauge: Option<usize>,
    server: Option<MetricsServer>,
}

/// The metrics process and its socket.
struct MetricsServer {
    spec: String,
    /// Bound at start; a successor arbiter (SIGUSR2) binds it once its predecessor has let it go.
    listener: Option<Listener>,
    pid: Option<Pid>,
    retry: Retry,
    /// Each app bind's URL, whether it is a unix socket, and its socket's inode (for its listen queue).
    binds: Vec<Bind>,
}

/// Who the metrics process runs as, and what it must not keep.
struct ForkContext<'a> {
    pub heartbeats: &'a Heartbeats,
    pub close_in_child: Vec<RawFd>,
    pub user: Option<Uid>,
    pub group: Option<Gid>,
    pub workers: usize,
}

impl Metrics {
    /// Maps the table and binds `--metrics-bind` (a failure is the server's: it does not start), unless this
    /// arbiter succeeds another, which still holds the address: then it binds later.
    pub(super) fn new(config: &Config, listeners: &[Listener], successor: bool) -> anyhow::Result<Metrics> {
        let counters = Counters::new()?;
        counters.names().init();
        let server = match &config.metrics_bind {
            Some(spec) => {
                let listener = match bind(spec) {
                    Ok(listener) => Some(listener),
                    Err(err) if successor => {
                        log::warning(format_args!("{err:#}; trying again once the old arbiter has left"));
                        None
                    }
                    Err(err) => return Err(err),
                };
                let binds = listeners.iter().map(Bind::of).collect();
                Some(MetricsServer { spec: spec.clone(), listener, pid: None, retry: Retry::default(), binds })
            }
            None => None,
        };
        let statsd = config.statsd.as_ref().and_then(Statsd::connect);
        Ok(Metrics { counters, config_statsd: config.statsd.clone(), statsd, last_workers_gauge: None, server })
    }

    /// Logs where the metrics are served, once bound.
    pub(super) fn log_address(&self) {
        if let Some(listener) = self.server.as_ref().and_then(|server| server.listener.as_ref()) {
            log::info(format_args!("Serving metrics at: {}", listener.url()));
        }
    }

    /// What a worker of `pool` in slot `slot` counts with; names `site`'s apps first.
    pub(super) fn meter_setup(&self, slot: usize, site: &Site) -> MeterSetup {
        let names = self.counters.names();
        for app in &site.apps {
            names.register(app_label(&app.guest.name));
        }
        let enabled = self.server.is_some() || self.config_statsd.is_some();
        MeterSetup { counters: self.counters, slot, statsd: self.config_statsd.clone(), enabled }
    }

    /// Worker `pid` of `pool` now occupies `slot`.
    pub(super) fn worker_started(&self, slot: usize, pid: Pid, pool: &PoolKey) {
        let pool = match pool {
            PoolKey::Shared => 0,
            PoolKey::Dedicated(name) => self.counters.names().register(name),
        };
        self.counters.occupy(slot, pid.as_raw().unsigned_abs(), pool);
    }

    /// A worker was reaped: its counts join the retired totals and its exit is counted by reason. `current`:
    /// its generation still serves (so a retirement was a smaller pool, not a reload).
    pub(super) fn worker_left(&self, record: &WorkerRecord, status: WaitStatus, stopping: bool, current: bool) {
        let (pool, leaving) = self.counters.vacate(record.slot);
        self.counters.count_exit(pool, exit_reason(record, status, leaving, stopping, current));
    }

    /// Every pool has its workers booted, or not.
    pub(super) fn set_ready(&self, ready: bool) {
        self.counters.set_state(if ready { ServerState::Ready } else { ServerState::Starting });
    }

    pub(super) fn set_stopping(&self) {
        self.counters.set_state(ServerState::Stopping);
    }

    /// Once a turn of the loop: pushes the workers gauge when it changed, and (re)starts the metrics process.
    fn supervise(&mut self, context: ForkContext<'_>) {
        if let Some(statsd) = &self.statsd
            && self.last_workers_gauge != Some(context.workers)
        {
            statsd.gauge("wasmcorn.workers", context.workers as u64);
            self.last_workers_gauge = Some(context.workers);
        }
        let counters = self.counters;
        let Some(server) = &mut self.server else { return };
        if server.pid.is_some() || !server.retry.may_try(Instant::now()) {
            return;
        }
        if server.listener.is_none() {
            match bind(&server.spec) {
                Ok(listener) => {
                    log::info(format_args!("Serving metrics at: {}", listener.url()));
                    server.listener = Some(listener);
                }
                Err(_) => {
                    server.retry.failed(Instant::now());
                    return;
                }
            }
        }
        match server.start(counters, context) {
            Ok(pid) => server.pid = Some(pid),
            Err(err) => {
                let wait = server.retry.failed(Instant::now());
                log::error(format_args!(
                    "Cannot start the metrics process (trying again in {:.1} s): {err:#}",
                    wait.as_secs_f64()
                ));
            }
        }
    }

    /// Whether `pid` was the metrics process (then it is started again on a later turn).
    pub(super) fn reaped(&mut self, pid: Pid, status: WaitStatus) -> bool {
        let Some(server) = &mut self.server else { return false };
        if server.pid != Some(pid) {
            return false;
        }
        server.pid = None;
        let wait = server.retry.failed(Instant::now());
        log::warning(format_args!(
            "The metrics process (pid:{pid}) exited ({status:?}): starting it again in {:.1} s",
            wait.as_secs_f64()
        ));
        true
    }

    /// The descriptors a worker must not keep: the metrics socket.
    pub(super) fn own_fds(&self) -> Vec<RawFd> {
        let listener = self.server.as_ref().and_then(|server| server.listener.as_ref());
        listener.map(|listener| listener.fd().as_raw_fd()).into_iter().collect()
    }

    /// The server is done: the metrics process is killed and reaped, and a unix socket's file removed.
    pub(super) fn stop(&mut self) {
        let Some(server) = &mut self.server else { return };
        if let Some(pid) = server.pid.take() {
            let _ = kill(pid, Signal::SIGKILL);
            let _ = waitpid(pid, None);
        }
        if let Some(listener) = server.listener.take() {
            listener.remove_file();
        }
    }
}

impl MetricsServer {
    fn start(&self, counters: Counters, context: ForkContext<'_>) -> anyhow::Result<Pid> {
        let Some(listener) = &self.listener else { anyhow::bail!("the metrics address is not bound") };
        let arbiter = Pid::this();
        // SAFETY: the arbiter is single-threaded (it never starts threads), so the child is a consistent copy of
        // it. The child never returns into the arbiter's loop: it serves metrics and exits.
        match unsafe { fork() }.context("cannot fork the metrics process")? {
            ForkResult::Parent { child } => Ok(child),
            ForkResult::Child => {
                // The arbiter's objects owning these descriptors are never used again here (the child exits
                // below), so closing the numbers is safe.
                for fd in &context.close_in_child {
                    let _ = nix::unistd::close(*fd);
                }
                let scrape = Scrape {
                    counters,
                    heartbeats: context.heartbeats,
                    binds: &self.binds,
                    arbiter: arbiter.as_raw().unsigned_abs(),
                };
                std::process::exit(match prepare_child(&context, arbiter) {
                    Ok(()) => {
                        metrics_http::serve(listener, &scrape, arbiter);
                        0
                    }
                    Err(err) => {
                        log::error(format_args!("The metrics process failed to start: {err:#}"));
                        1
                    }
                });
            }
        }
    }
}

impl Arbiter {
    /// Keeps the metrics process running (it must not keep the app's listeners, the signal descriptor or the
    /// pools' channels) and pushes the workers gauge.
    pub(super) fn supervise_metrics(&mut self) {
        let mut close_in_child: Vec<_> = self.listeners.iter().map(|listener| listener.fd().as_raw_fd()).collect();
        close_in_child.extend(self.channels.values().flat_map(|channel| channel.raw_fds()));
        close_in_child.push(self.signals.raw_fd());
        let context = ForkContext {
            heartbeats: &self.heartbeats,
            close_in_child,
            user: self.config.user,
            group: self.config.group,
            workers: self.workers.count(),
        };
        self.metrics.supervise(context);
    }
}

/// Why a worker left: what the arbiter did to it, or what it said before leaving by itself (`leaving`).
fn exit_reason(
    record: &WorkerRecord,
    status: WaitStatus,
    leaving: Option<ExitReason>,
    stopping: bool,
    current: bool,
) -> ExitReason {
    if matches!(status, WaitStatus::Exited(_, BOOT_ERROR | REFUSED_ARTEFACT)) {
        return ExitReason::BootFailed;
    }
    if record.timed_out() {
        return ExitReason::Timeout;
    }
    if let Some(reason) = leaving {
        return reason;
    }
    if record.overdue() {
        ExitReason::GracefulTimeout
    } else if record.retired() {
        if current { ExitReason::Ttou } else { ExitReason::Reload }
    } else if stopping {
        ExitReason::Shutdown
    } else {
        ExitReason::Crash
    }
}

/// In the metrics process: default signals, no core dumps, the workers' credentials, and a life tied to the
/// arbiter's.
fn prepare_child(context: &ForkContext<'_>, arbiter: Pid) -> anyhow::Result<()> {
    SigSet::all().thread_unblock()?;
    process::set_title("wasmcorn: metrics");
    process::disable_core_dumps();
    process::drop_privileges(context.user, context.group)?;
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
    if nix::unistd::getppid() != arbiter {
        anyhow::bail!("the arbiter exited");
    }
    Ok(())
}

/// Binds the metrics address; a unix socket is created owner-only (under a umask of 077, never chmod-ed by name
/// afterwards), and an existing file at its path that is not a stale socket (a symlink, say) is refused.
fn bind(spec: &str) -> anyhow::Result<Listener> {
    let options = BindOptions { backlog: METRICS_BACKLOG, reuse_port: false };
    let previous = umask(Mode::from_bits_truncate(0o077));
    let bound = Listener::bind(spec, options);
    umask(previous);
    bound.with_context(|| format!("--metrics-bind {spec}"))
}

/// An app bind, as the metrics process finds its listen queue without holding it.
pub(super) struct Bind {
    pub url: String,
    pub unix: bool,
    /// The socket's inode.
    pub inode: Option<u64>,
}

impl Bind {
    fn of(listener: &Listener) -> Bind {
        let path = format!("/proc/self/fd/{}", listener.fd().as_raw_fd());
        let inode = std::fs::metadata(path).ok().map(|metadata| metadata.ino());
        Bind { url: listener.url(), unix: matches!(listener, Listener::Unix { .. }), inode }
    }
}
