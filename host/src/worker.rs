//! A worker process: after the fork it loads the app (its own engine, linker and instance-pre), then accepts one
//! connection at a time and serves it, until SIGTERM (finish the current request, serve what is already queued,
//! exit) or the arbiter's death.

mod environ;
mod exchange;
mod serve;

use std::io::ErrorKind;

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::unistd::Pid;

use crate::guest::{App, Artefact, Runtime};
use crate::listener::Listener;
use crate::log;
use exchange::HttpExchange;

/// The exit code of a worker that could not load its app (Gunicorn's WORKER_BOOT_ERROR).
pub const BOOT_ERROR: i32 = 3;

/// The epoll key of the stop signal's descriptor; listeners use their index.
const STOP_KEY: u64 = u64::MAX;

/// What a worker is given by the arbiter.
pub struct Setup<'a> {
    pub app: &'a App,
    pub artefact: &'a Artefact,
    pub listeners: &'a [Listener],
    /// The arbiter's pid: the worker stops when its parent is no longer the arbiter.
    pub arbiter: Pid,
}

/// Runs the worker until it stops; returns its exit code.
pub fn run(setup: Setup<'_>) -> i32 {
    let stop = match prepare_process(setup.arbiter) {
        Ok(stop) => stop,
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
    log::info(format_args!("Booting worker with pid: {}", std::process::id()));
    match accept_loop(&runtime, setup.listeners, &stop) {
        Ok(()) => 0,
        Err(err) => {
            log::error(format_args!("Worker stopped on an error: {err:#}"));
            1
        }
    }
}

/// Sets the worker's signals (SIGTERM read from a descriptor, SIGINT and SIGQUIT left to end it at once) and
/// ties its life to the arbiter's.
fn prepare_process(arbiter: Pid) -> anyhow::Result<SignalFd> {
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
    let mut stop_set = SigSet::empty();
    stop_set.add(Signal::SIGTERM);
    let stop = SignalFd::with_flags(&stop_set, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)?;
    nix::sys::prctl::set_pdeathsig(Signal::SIGTERM)?;
    if nix::unistd::getppid() != arbiter {
        anyhow::bail!("the arbiter exited before the worker started");
    }
    Ok(stop)
}

fn accept_loop(runtime: &Runtime<HttpExchange>, listeners: &[Listener], stop: &SignalFd) -> anyhow::Result<()> {
    let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
    for (index, listener) in listeners.iter().enumerate() {
        // EPOLLEXCLUSIVE: a new connection wakes one idle worker, not all of them.
        epoll.add(listener.fd(), EpollEvent::new(EpollFlags::EPOLLIN | EpollFlags::EPOLLEXCLUSIVE, index as u64))?;
    }
    epoll.add(stop, EpollEvent::new(EpollFlags::EPOLLIN, STOP_KEY))?;
    let mut events = [EpollEvent::empty(); 8];
    loop {
        let served = accept_waiting(runtime, listeners);
        if stop_requested(stop) {
            // Serve what the kernel already accepted for us, then leave.
            while accept_waiting(runtime, listeners) {}
            return Ok(());
        }
        if !served {
            match epoll.wait(&mut events, EpollTimeout::from(1000u16)) {
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(err) => return Err(err.into()),
            }
        }
    }
}

/// Serves one waiting connection from each listener that has one; returns whether any was served.
fn accept_waiting(runtime: &Runtime<HttpExchange>, listeners: &[Listener]) -> bool {
    let mut served = false;
    for listener in listeners {
        match listener.accept() {
            Ok((stream, peer)) => {
                served = true;
                serve::connection(runtime, stream, peer, listener.address());
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

fn stop_requested(stop: &SignalFd) -> bool {
    matches!(stop.read_signal(), Ok(Some(_)))
}
