//! A worker process: after the fork it drops privileges, loads the app (its own engine, linker and
//! instance-pre), marks itself ready in the heartbeat table, then accepts one connection at a time and serves
//! it. It stops on SIGTERM (after its current request and the connections already queued), after
//! `--max-requests`, when its memory passes `--max-worker-memory`, or when the arbiter dies.

mod environ;
mod exchange;
pub mod heartbeat;
mod serve;

use std::io::ErrorKind;
use std::time::Duration;

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::unistd::{Gid, Pid, Uid};

use crate::guest::{App, Artefact, Runtime};
use crate::listener::Listener;
use crate::{log, process};
use exchange::HttpExchange;
use heartbeat::Slot;

/// The exit code of a worker that could not load its app (Gunicorn's WORKER_BOOT_ERROR).
pub const BOOT_ERROR: i32 = 3;

/// The epoll key of the signal descriptor; listeners use their index.
const SIGNAL_KEY: u64 = u64::MAX;

/// What a worker is given by the arbiter.
pub struct Setup<'a> {
    pub app: &'a App,
    pub artefact: &'a Artefact,
    pub listeners: &'a [Listener],
    /// The arbiter's pid: the worker stops when its parent is no longer the arbiter.
    pub arbiter: Pid,
    /// This worker's slot in the heartbeat table.
    pub slot: &'a Slot,
    /// The longest an idle worker waits between two heartbeats (half the arbiter's timeout, at most a second).
    pub heartbeat_interval: Duration,
    /// Leave after this many requests (jitter included); 0 means never.
    pub max_requests: u64,
    /// Leave when resident memory passes this many bytes.
    pub max_memory: Option<u64>,
    pub user: Option<Uid>,
    pub group: Option<Gid>,
    pub name: Option<&'a str>,
}

/// Runs the worker until it stops; returns its exit code.
pub fn run(setup: Setup<'_>) -> i32 {
    let title = match setup.name {
        Some(name) => format!("wasmcorn: worker [{name}]"),
        None => "wasmcorn: worker".to_string(),
    };
    process::set_title(&title);
    let signals = match prepare_process(&setup) {
        Ok(signals) => signals,
        Err(err) => {
            log::error(format_args!("Worker failed to boot: {err:#}"));
            return BOOT_ERROR;
        }
    };
    let runtime = match Runtime::<HttpExchange>::load(setup.app, &setup.artefact.path, log::guest_line)
        .and_then(|runtime| runtime.start_epoch_ticker().map(|()| runtime))
    {
        Ok(runtime) => runtime,
        Err(err) => {
            log::error(format_args!("Worker failed to boot: {err:#}"));
            return BOOT_ERROR;
        }
    };
    setup.slot.mark_ready();
    log::info(format_args!("Booting worker with pid: {}", std::process::id()));
    match accept_loop(&runtime, &setup, &signals) {
        Ok(()) => 0,
        Err(err) => {
            log::error(format_args!("Worker stopped on an error: {err:#}"));
            1
        }
    }
}

/// Sets the worker's signals (SIGTERM and SIGUSR1 read from a descriptor, SIGINT and SIGQUIT left to end it at
/// once), drops privileges, and ties its life to the arbiter's.
fn prepare_process(setup: &Setup<'_>) -> anyhow::Result<SignalFd> {
    let mut blocked = SigSet::empty();
    for signal in [
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGUSR1,
        Signal::SIGUSR2,
        Signal::SIGTTIN,
        Signal::SIGTTOU,
        Signal::SIGWINCH,
    ] {
        blocked.add(signal);
    }
    blocked.thread_set_mask()?;
    let mut handled = SigSet::empty();
    handled.add(Signal::SIGTERM);
    handled.add(Signal::SIGUSR1);
    let signals = SignalFd::with_flags(&handled, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)?;
    process::disable_core_dumps();
    process::drop_privileges(setup.user, setup.group)?;
    // After the privileges: changing credentials clears the parent-death signal.
    nix::sys::prctl::set_pdeathsig(Signal::SIGTERM)?;
    if nix::unistd::getppid() != setup.arbiter {
        anyhow::bail!("the arbiter exited before the worker started");
    }
    Ok(signals)
}

fn accept_loop(runtime: &Runtime<HttpExchange>, setup: &Setup<'_>, signals: &SignalFd) -> anyhow::Result<()> {
    let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
    for (index, listener) in setup.listeners.iter().enumerate() {
        // EPOLLEXCLUSIVE: a new connection wakes one idle worker, not all of them.
        epoll.add(listener.fd(), EpollEvent::new(EpollFlags::EPOLLIN | EpollFlags::EPOLLEXCLUSIVE, index as u64))?;
    }
    epoll.add(signals, EpollEvent::new(EpollFlags::EPOLLIN, SIGNAL_KEY))?;
    let mut events = [EpollEvent::empty(); 8];
    let mut served = 0u64;
    loop {
        setup.slot.beat();
        let accepted = accept_waiting(runtime, setup);
        served += accepted;
        if stop_requested(signals) {
            // Serve what the kernel already accepted for us, then leave.
            while accept_waiting(runtime, setup) > 0 {}
            return Ok(());
        }
        if setup.max_requests > 0 && served >= setup.max_requests {
            log::info(format_args!("Autorestarting worker after {served} requests (--max-requests)"));
            return Ok(());
        }
        if let Some(limit) = setup.max_memory.filter(|_| accepted > 0) {
            let resident = resident_memory();
            if resident > limit {
                log::info(format_args!(
                    "Autorestarting worker: resident memory {} MiB exceeds --max-worker-memory {} MiB",
                    resident >> 20,
                    limit >> 20
                ));
                return Ok(());
            }
        }
        if accepted == 0 {
            let wait = u16::try_from(setup.heartbeat_interval.as_millis()).unwrap_or(1000).max(10);
            match epoll.wait(&mut events, EpollTimeout::from(wait)) {
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(err) => return Err(err.into()),
            }
        }
    }
}

/// Serves one waiting connection from each listener that has one; returns how many were served.
fn accept_waiting(runtime: &Runtime<HttpExchange>, setup: &Setup<'_>) -> u64 {
    let mut served = 0;
    for listener in setup.listeners {
        match listener.accept() {
            Ok((stream, peer)) => {
                served += 1;
                setup.slot.begin_request("(reading the request)");
                serve::connection(runtime, stream, peer, listener.local(), setup.slot);
                setup.slot.end_request();
            }
            Err(err)
                if matches!(
                    err.kind(),
                    ErrorKind::WouldBlock | ErrorKind::Interrupted | ErrorKind::ConnectionAborted
                ) => {}
            Err(err) => log::warning(format_args!("accept failed on {}: {err}", listener.url())),
        }
    }
    served
}

/// Reads pending signals: SIGUSR1 reopens the log files; SIGTERM asks the worker to stop.
fn stop_requested(signals: &SignalFd) -> bool {
    let mut stop = false;
    while let Ok(Some(info)) = signals.read_signal() {
        match Signal::try_from(info.ssi_signo as i32) {
            Ok(Signal::SIGTERM) => stop = true,
            Ok(Signal::SIGUSR1) => log::reopen(),
            _ => {}
        }
    }
    stop
}

/// The worker's resident memory in bytes, from /proc/self/statm (0 if it cannot be read).
fn resident_memory() -> u64 {
    let Ok(statm) = std::fs::read_to_string("/proc/self/statm") else { return 0 };
    let pages: u64 = statm.split_whitespace().nth(1).and_then(|pages| pages.parse().ok()).unwrap_or(0);
    let page_size =
        nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE).ok().flatten().map_or(4096, |size| size as u64);
    pages * page_size
}
