//! A worker process: after the fork it drops privileges, loads its pool's apps (its own engine, linker and
//! instance-pres) and marks itself ready in the heartbeat table. Then it reads request heads side by side and
//! serves the requests one at a time. A shared-pool worker accepts from the listeners and routes every request;
//! a dedicated pool's worker takes the connections handed to its pool. It stops on SIGTERM: retired (a reload,
//! TTOU, a smaller pool: the listeners stay open for other workers), it accepts nothing more and finishes the
//! connections it holds; stopped with the server (or orphaned by the arbiter's death), it also serves the
//! connections the kernel had already queued. After `--max-requests`, or when its memory passes
//! `--max-worker-memory`, it leaves as a retired one does. Killed, it answers the connections it held but never
//! started 503 (`farewell`).

mod answers;
pub(crate) mod counters;
mod dispatch;
mod environ;
mod exchange;
mod farewell;
mod forwarded;
mod handoff;
mod heads;
pub(crate) mod heartbeat;
pub(crate) mod meter;
mod serve;
pub(crate) mod statsd;
mod watched;

use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::time::{Duration, Instant};

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::unistd::{Gid, Pid, Uid};

use crate::guest::{Artefact, Refusal, Runtime};
use crate::listener::Listener;
use crate::settings::HttpSettings;
use crate::site::{PoolKey, Site};
use crate::{log, process};
use dispatch::{Dispatch, Handled};
use exchange::HttpExchange;
pub(crate) use handoff::Channel;
use handoff::Inbox;
use heads::Heads;
use heartbeat::Slot;

/// The exit code of a worker that could not load its app (Gunicorn's WORKER_BOOT_ERROR).
pub(crate) const BOOT_ERROR: i32 = 3;
/// The exit code of a worker that refused a compiled artefact (wrong owner or mode, or not the bytes the compile
/// step wrote): the arbiter compiles the apps again instead of stopping the server.
pub(crate) const REFUSED_ARTEFACT: i32 = 5;

/// The memory a stopped app's stand-in worker sizes its (empty) engine for: one wasm page.
const STOPPED_MEMORY: usize = 64 * 1024;

/// The epoll key of the signal descriptor; listeners use their index, and connections whose head is still
/// arriving use keys from `FIRST_CONNECTION_KEY` up.
const SIGNAL_KEY: u64 = u64::MAX;
const FIRST_CONNECTION_KEY: u64 = 1 << 32;

/// What a worker is given by the arbiter.
pub(crate) struct Setup<'a> {
    pub site: &'a Site,
    /// The pool this worker belongs to.
    pub pool: &'a PoolKey,
    /// The pool's app is stopped (its workers failed to boot): this worker loads no app and answers every
    /// request handed to the pool with `503`.
    pub stopped: bool,
    /// Each app's compiled component, in the order of `site.apps`.
    pub artefacts: &'a [Artefact],
    pub listeners: &'a [Listener],
    /// The channels of the dedicated pools, by app name.
    pub channels: &'a BTreeMap<String, Channel>,
    pub http: &'a HttpSettings,
    /// The arbiter's pid: the worker stops when its parent is no longer the arbiter.
    pub arbiter: Pid,
    /// This worker's slot in the heartbeat table (which lives as long as the process).
    pub slot: &'static Slot,
    /// The longest an idle worker waits between two heartbeats (half the arbiter's timeout, at most a second).
    pub heartbeat_interval: Duration,
    /// Leave after this many requests (jitter included); 0 means never.
    pub max_requests: u64,
    /// Leave when resident memory passes this many bytes.
    pub max_memory: Option<u64>,
    pub user: Option<Uid>,
    pub group: Option<Gid>,
    pub name: Option<&'a str>,
    /// Where this worker counts its metrics (and pushes statsd lines).
    pub meter: meter::MeterSetup,
}

/// Runs the worker until it stops; returns its exit code.
pub(crate) fn run(setup: Setup<'_>) -> i32 {
    // A dedicated pool's workers say whose they are, in their title and their boot line.
    let of_pool = match setup.pool {
        PoolKey::Dedicated(app) if setup.stopped => format!(" (app {app}, stopped)"),
        PoolKey::Dedicated(app) => format!(" (app {app})"),
        PoolKey::Shared => String::new(),
    };
    let name = setup.name.map(|name| format!(" [{name}]")).unwrap_or_default();
    process::set_title(&format!("wasmcorn: worker{name}{of_pool}"));
    let signals = match prepare_process(&setup) {
        Ok(signals) => signals,
        Err(err) => {
            log::error(format_args!("Worker failed to boot: {err:#}"));
            return BOOT_ERROR;
        }
    };
    let runs = if setup.stopped { Vec::new() } else { setup.site.apps_of(setup.pool) };
    let guests: Vec<_> = runs.iter().map(|id| (&setup.site.app(*id).guest, &setup.artefacts[id.index()])).collect();
    let max_memory = if setup.stopped { STOPPED_MEMORY } else { setup.site.max_memory_of(setup.pool) };
    let runtime = match Runtime::<HttpExchange>::load(&guests, max_memory, log::guest_line)
        .and_then(|runtime| runtime.start_epoch_ticker().map(|()| runtime))
    {
        Ok(runtime) => runtime,
        Err(err) if err.chain().any(|cause| cause.is::<Refusal>()) => {
            log::error(format_args!("Worker refused {err:#}"));
            return REFUSED_ARTEFACT;
        }
        Err(err) => {
            log::error(format_args!("Worker failed to boot: {err:#}"));
            return BOOT_ERROR;
        }
    };
    let inlet = match setup.pool {
        PoolKey::Shared => Inlet::Listeners(setup.listeners),
        PoolKey::Dedicated(name) => match setup.channels.get(name) {
            Some(channel) => Inlet::Inbox(Inbox::new(channel.receiver())),
            None => {
                log::error(format_args!("Worker failed to boot: the pool of app {name} has no channel"));
                return BOOT_ERROR;
            }
        },
    };
    let mut dispatch = Dispatch::new(setup.site, &runs, setup.channels);
    meter::install(&setup.meter);
    setup.slot.mark_ready();
    log::info(format_args!("Booting worker with pid: {}{of_pool}", std::process::id()));
    match accept_loop(&runtime, &mut dispatch, inlet, &setup, &signals) {
        Ok(()) => 0,
        Err(err) => {
            log::error(format_args!("Worker stopped on an error: {err:#}"));
            1
        }
    }
}

/// Where a worker's connections come from: the listeners (the shared pool), or its pool's channel.
enum Inlet<'a> {
    Listeners(&'a [Listener]),
    Inbox(Inbox<'a>),
}

/// Sets the worker's signals (SIGTERM and SIGUSR1 read from a descriptor; SIGABRT, SIGINT and SIGQUIT end it at
/// once, after answering its queued connections), drops privileges, and ties its life to the arbiter's.
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
    // SIGINT and SIGQUIT must end the worker even when the server was started with them ignored (a shell starts
    // background jobs so), since the arbiter's quick stop sends SIGINT: `farewell` handles them, as SIGABRT.
    farewell::install(setup.slot)?;
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

/// Accepts connections, reads their heads side by side, and serves the requests one at a time, in the order
/// their heads completed. On SIGTERM: retired, accept nothing more; stopped with the server, take what the
/// kernel already queued; then finish what is held, and leave.
fn accept_loop(
    runtime: &Runtime<HttpExchange>,
    dispatch: &mut Dispatch<'_>,
    mut inlet: Inlet<'_>,
    setup: &Setup<'_>,
    signals: &SignalFd,
) -> anyhow::Result<()> {
    let settings = setup.http;
    let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
    epoll.add(signals, EpollEvent::new(EpollFlags::EPOLLIN, SIGNAL_KEY))?;
    let mut heads =
        Heads::new(FIRST_CONNECTION_KEY, settings.head_limits, settings.client_timeout, settings.pending_heads_limit);
    let mut events = [EpollEvent::empty(); 64];
    let mut stopping = false;
    let mut listening = false;
    let mut served = 0u64;
    loop {
        setup.slot.beat();
        if !stopping && stop_requested(signals) {
            stopping = true;
            if setup.slot.is_retiring() {
                // The listeners stay open: what the kernel queued is for the workers that replace this one.
                log::info(format_args!(
                    "Worker retiring (pid: {}): accepting no more, finishing the {} connections it holds",
                    std::process::id(),
                    heads.held()
                ));
            } else if let Inlet::Listeners(listeners) = &inlet {
                // The server stops: take everything the kernel already accepted for us, then no more.
                // (A pool's channel is left to the pool's other workers.)
                while accept_waiting(&epoll, listeners, &mut heads, true) {}
            }
        }
        if !stopping {
            match &mut inlet {
                Inlet::Listeners(listeners) => {
                    accept_waiting(&epoll, listeners, &mut heads, false);
                }
                Inlet::Inbox(inbox) => receive_waiting(inbox, &mut heads),
            }
        }
        if let Some(arrived) = heads.pop_ready() {
            let handled = dispatch.handle(runtime, settings, arrived, setup.slot);
            setup.slot.end_request();
            // Only a request an app served here counts toward the limits; one handed over or answered by the host
            // does not.
            let Handled::Served { app } = handled else {
                continue_reading(&epoll, &mut heads, &mut events, Duration::ZERO)?;
                continue;
            };
            served += 1;
            let app_limit = !stopping && matches!(setup.pool, PoolKey::Shared) && dispatch.app_limit_reached(app);
            if app_limit {
                meter::leaving(counters::ExitReason::MaxRequests);
                log::info(format_args!(
                    "Autorestarting worker after {} requests of app {} (its max_requests)",
                    setup.site.app(app).max_requests,
                    setup.site.app(app).guest.name
                ));
            }
            if !stopping && (app_limit || recycle_now(setup, served)) {
                // Leave like a graceful stop: what was already accepted is still served.
                stopping = true;
            }
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
            watch_inlet(&epoll, &inlet, wants_more)?;
            listening = wants_more;
        }
        let idle = setup.heartbeat_interval;
        let wait = heads.next_deadline(Instant::now()).map_or(idle, |deadline| deadline.min(idle));
        continue_reading(&epoll, &mut heads, &mut events, wait)?;
    }
}

/// Adds the listeners (or the pool's channel) to the worker's epoll, or removes them.
fn watch_inlet(epoll: &Epoll, inlet: &Inlet<'_>, watch: bool) -> anyhow::Result<()> {
    let fds: Vec<_> = match inlet {
        Inlet::Listeners(listeners) => listeners.iter().map(Listener::fd).collect(),
        Inlet::Inbox(inbox) => vec![inbox.fd()],
    };
    for (index, fd) in fds.into_iter().enumerate() {
        if watch {
            // EPOLLEXCLUSIVE: a new connection wakes one idle worker, not all of them.
            let flags = EpollFlags::EPOLLIN | EpollFlags::EPOLLEXCLUSIVE;
            epoll.add(fd, EpollEvent::new(flags, index as u64))?;
        } else {
            epoll.delete(fd)?;
        }
    }
    Ok(())
}

/// Takes the connections handed to this worker's pool while the worker wants more.
fn receive_waiting(inbox: &mut Inbox<'_>, heads: &mut Heads) {
    while heads.wants_more(Instant::now()) {
        match inbox.receive() {
            Ok(Some(handed)) => heads.admit_handed(handed),
            Ok(None) => break,
            Err(err) => {
                log::warning(format_args!("cannot receive from the pool's channel: {err}"));
                break;
            }
        }
    }
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
                    heads.admit(epoll, stream, peer, listener.local());
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

/// Whether the worker has served its `--max-requests` or outgrown `--max-worker-memory`, and should be replaced.
fn recycle_now(setup: &Setup<'_>, served: u64) -> bool {
    if setup.max_requests > 0 && served >= setup.max_requests {
        log::info(format_args!("Autorestarting worker after {served} requests (--max-requests)"));
        meter::leaving(counters::ExitReason::MaxRequests);
        return true;
    }
    if let Some(limit) = setup.max_memory {
        let resident = resident_memory();
        if resident > limit {
            log::info(format_args!(
                "Autorestarting worker: resident memory {} MiB exceeds --max-worker-memory {} MiB",
                resident >> 20,
                limit >> 20
            ));
            meter::leaving(counters::ExitReason::MaxMemory);
            return true;
        }
    }
    false
}

/// The worker's resident memory in bytes, from /proc/self/statm (0 if it cannot be read).
fn resident_memory() -> u64 {
    let Ok(statm) = std::fs::read_to_string("/proc/self/statm") else { return 0 };
    let pages: u64 = statm.split_whitespace().nth(1).and_then(|pages| pages.parse().ok()).unwrap_or(0);
    let page_size =
        nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE).ok().flatten().map_or(4096, |size| size as u64);
    pages * page_size
}
