//! A worker process: after the fork it loads the app (its own engine, linker and instance-pre), then accepts one
//! connection at a time and serves it, until SIGTERM (finish the current request, serve what is already queued,
//! exit) or the arbiter's death.

mod environ;
mod exchange;
mod forwarded;
mod heads;
mod serve;
mod settings;

use std::io::ErrorKind;
use std::time::{Duration, Instant};

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::unistd::Pid;

use crate::guest::{App, Artefact, Runtime};
use crate::listener::Listener;
use crate::log;
use exchange::HttpExchange;
pub use forwarded::TrustedProxies;
use heads::Heads;
pub use settings::HttpSettings;

/// The exit code of a worker that could not load its app (Gunicorn's WORKER_BOOT_ERROR).
pub const BOOT_ERROR: i32 = 3;

/// The epoll key of the stop signal's descriptor; listeners use their index, and connections whose head is
/// still arriving use keys from `FIRST_CONNECTION_KEY` up.
const STOP_KEY: u64 = u64::MAX;
const FIRST_CONNECTION_KEY: u64 = 1 << 32;
/// The longest the worker sleeps in epoll when nothing happens.
const IDLE_WAIT: Duration = Duration::from_secs(1);

/// What a worker is given by the arbiter.
pub struct Setup<'a> {
    pub app: &'a App,
    pub artefact: &'a Artefact,
    pub listeners: &'a [Listener],
    pub http: &'a HttpSettings,
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
    match accept_loop(&runtime, setup.listeners, setup.http, &stop) {
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

/// Accepts connections, reads their heads side by side, and serves the requests one at a time, in the order
/// their heads completed. On SIGTERM: take what the kernel already queued, finish those, leave.
fn accept_loop(
    runtime: &Runtime<HttpExchange>,
    listeners: &[Listener],
    settings: &HttpSettings,
    stop: &SignalFd,
) -> anyhow::Result<()> {
    let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
    epoll.add(stop, EpollEvent::new(EpollFlags::EPOLLIN, STOP_KEY))?;
    let mut heads = Heads::new(FIRST_CONNECTION_KEY, settings.head_limits, settings.client_timeout);
    let mut events = [EpollEvent::empty(); 64];
    let mut stopping = false;
    let mut listening = false;
    loop {
        if !stopping && stop_requested(stop) {
            stopping = true;
            // Take everything the kernel already accepted for us, then no more.
            while accept_waiting(&epoll, listeners, &mut heads, true) {}
        }
        if !stopping {
            accept_waiting(&epoll, listeners, &mut heads, false);
        }
        if let Some(arrived) = heads.pop_ready() {
            serve::request(runtime, settings, arrived);
            // Heads that arrived meanwhile are read before the next request is served.
            continue_reading(&epoll, &mut heads, &mut events, Duration::ZERO)?;
            continue;
        }
        if stopping && heads.is_empty() {
            return Ok(());
        }
        // Before sleeping, watch the listeners only if the worker would accept: a listener whose queue it leaves
        // alone would otherwise wake it again and again.
        let wants_more = !stopping && heads.wants_more(Instant::now());
        if wants_more != listening {
            watch_listeners(&epoll, listeners, wants_more)?;
            listening = wants_more;
        }
        let wait = heads.next_deadline(Instant::now()).map_or(IDLE_WAIT, |deadline| deadline.min(IDLE_WAIT));
        continue_reading(&epoll, &mut heads, &mut events, wait)?;
    }
}

/// Adds the listeners to the worker's epoll, or removes them.
fn watch_listeners(epoll: &Epoll, listeners: &[Listener], watch: bool) -> anyhow::Result<()> {
    for (index, listener) in listeners.iter().enumerate() {
        if watch {
            // EPOLLEXCLUSIVE: a new connection wakes one idle worker, not all of them.
            let flags = EpollFlags::EPOLLIN | EpollFlags::EPOLLEXCLUSIVE;
            epoll.add(listener.fd(), EpollEvent::new(flags, index as u64))?;
        } else {
            epoll.delete(listener.fd())?;
        }
    }
    Ok(())
}

/// Waits up to `wait` for sockets to become readable, reads the heads that progressed, and answers the heads
/// that are late.
fn continue_reading(epoll: &Epoll, heads: &mut Heads, events: &mut [EpollEvent], wait: Duration) -> anyhow::Result<()> {
    // Round up, so that a deadline a fraction of a millisecond away is not a busy loop.
    let millis = u16::try_from(wait.as_micros().div_ceil(1000)).unwrap_or(u16::MAX);
    let count = match epoll.wait(events, EpollTimeout::from(millis)) {
        Ok(count) => count,
        Err(nix::errno::Errno::EINTR) => 0,
        Err(err) => return Err(err.into()),
    };
    for event in &events[..count] {
        if heads.owns(event.data()) {
            heads.on_readable(epoll, event.data());
        }
    }
    heads.expire(epoll, Instant::now());
    Ok(())
}

/// Accepts waiting connections while the worker wants more (or, when `all`, every one queued); returns whether
/// any was accepted.
fn accept_waiting(epoll: &Epoll, listeners: &[Listener], heads: &mut Heads, all: bool) -> bool {
    let mut accepted = false;
    for listener in listeners {
        while all || heads.wants_more(Instant::now()) {
            match listener.accept() {
                Ok((stream, peer)) => {
                    accepted = true;
                    heads.admit(epoll, stream, peer, listener.address());
                }
                Err(err)
                    if matches!(
                        err.kind(),
                        ErrorKind::WouldBlock | ErrorKind::Interrupted | ErrorKind::ConnectionAborted
                    ) =>
                {
                    break;
                }
                Err(err) => {
                    log::warning(format_args!("accept failed on {}: {err}", listener.url()));
                    break;
                }
            }
        }
    }
    accepted
}

fn stop_requested(stop: &SignalFd) -> bool {
    matches!(stop.read_signal(), Ok(Some(_)))
}
