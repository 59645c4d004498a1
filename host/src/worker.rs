//! A worker process: after the fork it drops privileges, loads its pool's apps (its own engine, linker and
//! instance-pres) and marks itself ready in the heartbeat table. Then it reads request heads side by side and
//! serves the requests one at a time. A shared-pool worker accepts from the listeners and routes every request;
//! a dedicated pool's worker takes the connections handed to its pool. Both also take from their pool's channel
//! the connections a busy worker of the pool relays (`relay`), and keep a connection whose response allowed it
//! for its next request (keep-alive), idle among the heads. It stops on SIGTERM: retired (a reload, TTOU, a
//! smaller pool: the listeners stay open for other workers), it accepts nothing more, closes its idle
//! connections and finishes the requests it holds; stopped with the server (or orphaned by the arbiter's death),
//! it also serves the connections the kernel had already queued and those waiting in its pool's channel. After
//! `--max-requests`, or when its memory passes `--max-worker-memory`, it leaves as a retired one does. Killed, it
//! answers the connections it held but never started 503 (`farewell`).

mod answers;
pub(crate) mod counters;
mod descriptors;
mod dispatch;
mod environ;
mod exchange;
mod farewell;
mod fence;
pub(crate) use farewell::DEADLY as SIGNALS_THAT_END_A_WORKER;
mod forwarded;
mod handoff;
mod heads;
pub(crate) mod heartbeat;
mod inlet;
pub(crate) mod meter;
mod proxy_head;
mod relay;
mod serve;
pub(crate) mod statsd;
mod watched;

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};
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
pub(crate) use farewell::CAPACITY as FAREWELL_CAPACITY;
pub(crate) use handoff::Channel;
use handoff::Inbox;
use heads::Heads;
use heartbeat::Slot;
use inlet::{Inlet, Woken, continue_reading};
use relay::{FrontDoor, Relay, lock};

/// The exit code of a worker that could not load its app (Gunicorn's WORKER_BOOT_ERROR).
pub(crate) const BOOT_ERROR: i32 = 3;
/// The exit code of a worker that refused a compiled artefact (wrong owner or mode, or not the bytes the compile
/// step wrote): the arbiter compiles the apps again instead of stopping the server.
pub(crate) const REFUSED_ARTEFACT: i32 = 5;

/// The memory a stopped app's stand-in worker sizes its (empty) engine for: one wasm page.
const STOPPED_MEMORY: usize = 64 * 1024;

/// The epoll keys of the signal descriptor and of the pool's channel; listeners use their index, and connections
/// whose head is still arriving use keys from `FIRST_CONNECTION_KEY` up.
const SIGNAL_KEY: u64 = u64::MAX;
const CHANNEL_KEY: u64 = u64::MAX - 1;
const FIRST_CONNECTION_KEY: u64 = 1 << 32;

/// The relay thread's stack: it only moves descriptors and writes a log line.
const RELAY_STACK: usize = 128 * 1024;

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
    /// The channels of the pools.
    pub channels: &'a BTreeMap<PoolKey, Channel>,
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
    crate::guest::start_ambient_runtime();
    let Some(channel) = setup.channels.get(setup.pool) else {
        log::error(format_args!("Worker failed to boot: {} has no channel", setup.pool));
        return BOOT_ERROR;
    };
    // A dedicated pool's workers were given no listeners.
    let inlet = Inlet::new(setup.listeners, Inbox::new(channel.receiver()));
    let mut dispatch = Dispatch::new(setup.site, &runs, setup.channels, setup.pool);
    meter::install(&setup.meter);
    setup.slot.mark_ready();
    log::info(format_args!("Booting worker with pid: {}{of_pool}", std::process::id()));
    log::write(
        log::Level::Debug,
        format_args!("Linear memory kept resident between requests: {} KiB", runtime.resident_memory_bytes() >> 10),
    );
    match accept_loop(&runtime, &mut dispatch, inlet, channel, &setup, &signals) {
        Ok(()) => 0,
        Err(err) => {
            log::error(format_args!("Worker stopped on an error: {err:#}"));
            1
        }
    }
}

/// Sets the worker's signals (SIGTERM and SIGUSR1 read from a descriptor; SIGABRT, SIGINT and SIGQUIT end it at
/// once, after answering its queued connections), drops privileges, and ties its life to the arbiter's.
fn prepare_process(setup: &Setup<'_>) -> anyhow::Result<SignalFd> {
    // SIGINT and SIGQUIT must end the worker even when the server was started with them ignored (a shell starts
    // background jobs so), since the arbiter's quick stop sends SIGINT: `farewell` handles them, as SIGABRT.
    // Installed before the mask below unblocks them: one sent since the fork is pending, blocked as the arbiter
    // blocks it, and would be delivered, and thrown away, under the ignoring action the worker inherited.
    farewell::install(setup.slot)?;
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

/// Accepts connections, reads their heads side by side, and serves the requests one at a time, in the order
/// their heads completed; beside it, the relay passes what this worker holds to the pool's idle workers when a
/// guest run lasts. On SIGTERM: retired, accept nothing more; stopped with the server, take what the kernel and
/// the pool's channel already queued; then close the idle connections, finish what is held, and leave.
fn accept_loop(
    runtime: &Runtime<HttpExchange>,
    dispatch: &mut Dispatch<'_>,
    inlet: Inlet<'_>,
    channel: &Channel,
    setup: &Setup<'_>,
    signals: &SignalFd,
) -> anyhow::Result<()> {
    let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
    epoll.add(signals, EpollEvent::new(EpollFlags::EPOLLIN, SIGNAL_KEY))?;
    let heads = Mutex::new(Heads::new(FIRST_CONNECTION_KEY, setup.http));
    let relay = Relay::new();
    let door = keeps_a_front_door(setup).then_some(FrontDoor {
        listeners: setup.listeners,
        site: setup.site,
        channels: setup.channels,
        slot: setup.slot,
    });
    std::thread::scope(|scope| {
        let relay_thread = std::thread::Builder::new()
            .name("relay".into())
            .stack_size(RELAY_STACK)
            .spawn_scoped(scope, || relay.run(&heads, &epoll, channel.sender(), door.as_ref()));
        if let Err(err) = &relay_thread {
            log::warning(format_args!("no relay thread ({err}): a long guest run holds this worker's connections"));
        }
        // The relay thread ends with the loop, however the loop ends (the scope waits for it).
        let _quit = relay.quit_on_drop();
        serve_loop(runtime, dispatch, inlet, setup, signals, &epoll, &heads, &relay)
    })
}

/// Whether this worker's relay keeps the front door open while its guest runs: a shared worker, holding the
/// listeners, of a site with dedicated pools (see `relay`).
fn keeps_a_front_door(setup: &Setup<'_>) -> bool {
    *setup.pool == PoolKey::Shared
        && !setup.listeners.is_empty()
        && setup.site.apps.iter().any(|app| app.pool.is_some())
}

/// The worker's loop (see `accept_loop`).
#[allow(clippy::too_many_arguments, reason = "the loop's parts, each borrowed from accept_loop")]
fn serve_loop(
    runtime: &Runtime<HttpExchange>,
    dispatch: &mut Dispatch<'_>,
    mut inlet: Inlet<'_>,
    setup: &Setup<'_>,
    signals: &SignalFd,
    epoll: &Epoll,
    heads: &Mutex<Heads>,
    relay: &Relay,
) -> anyhow::Result<()> {
    let settings = setup.http;
    let mut events = [EpollEvent::empty(); 64];
    let mut stopping = false;
    // Stopping with the server: the pool's other workers stop too, so nothing is relayed to them.
    let mut with_server = false;
    let mut served = 0u64;
    let mut woken = Woken::UNKNOWN;
    let front_door = keeps_a_front_door(setup);
    loop {
        setup.slot.beat();
        let mut held = lock(heads);
        // Signals are read whenever the wait reported them, stopping or not: the descriptor is level-triggered,
        // so one left unread would end every later wait at once (a busy loop until the worker leaves), and a
        // SIGUSR1 during a graceful stop still reopens the logs.
        let asked = if woken.signals { read_signals(signals) } else { Asked::default() };
        if !stopping && !asked.stop && asked.leave {
            // Like --max-requests: what was accepted is served, idle connections close, and the replacement is
            // forked from the arbiter with the log files it reopened.
            log::info("Worker leaving: its replacement writes to the log files the arbiter reopened");
            stopping = true;
            held.close_idle(epoll);
        }
        if !stopping && asked.stop {
            stopping = true;
            if setup.slot.is_retiring() {
                // The listeners stay open: what the kernel queued is for the workers that replace this one.
                log::info(format_args!(
                    "Worker retiring (pid: {}): accepting no more, finishing the {} connections it holds, closing {} \
                     idle ones",
                    std::process::id(),
                    held.held(),
                    held.idle_count()
                ));
            } else {
                // The server stops: take everything the kernel and the pool's channel already hold for us, then
                // no more; what the listen queues hold is left to the successor of an upgrade when one shares them
                // (it serves it with all its workers, where this one would serve it alone, one at a time, and
                // answer what its graceful timeout left 503).
                with_server = true;
                held.keep_every_head();
                if setup.slot.successor_shares_the_listeners() {
                    while inlet.take_channel_waiting(epoll, &mut held) {}
                } else {
                    while inlet.take_waiting(epoll, &mut held, true) {}
                }
                inlet.let_go_of_listeners(epoll)?;
            }
            held.close_idle(epoll);
        }
        // The server stops, and this worker, a dedicated pool's, is told to only once the shared pool has left:
        // meanwhile it serves what is handed to it, but keeps no connection idle (its next request could be for
        // the shared pool, which takes no more) and is not replaced (nothing would replace it).
        let awaiting_stop = !stopping && setup.slot.is_server_stopping();
        if awaiting_stop {
            held.close_idle(epoll);
        }
        if !stopping {
            inlet.take_new(epoll, &mut held, woken);
        }
        if let Some(arrived) = held.pop_ready() {
            // The response says whether the connection stays: not when this is the worker's last request, which
            // it is at its --max-requests, or when it has outgrown --max-worker-memory.
            let mut outgrown = if stopping { None } else { outgrown_memory(setup) };
            let last = outgrown.is_some() || (setup.max_requests > 0 && served + 1 >= setup.max_requests);
            let keep_alive = !stopping && !awaiting_stop && !last && held.has_idle_room();
            // Nothing reaches the heads while the guest runs: with none held now, the relay has nothing to pass
            // on and is not woken.
            let relayable = held.held() + held.idle_count() > 0;
            // The registration the connection keeps while it is served, if any: it comes back with it, or goes.
            let key = arrived.key;
            drop(held);
            relay.begin(!with_server && relayable, !stopping && front_door);
            let handled = dispatch.handle(runtime, settings, epoll, arrived, setup.slot, keep_alive);
            relay.end();
            setup.slot.end_request();
            let mut held = lock(heads);
            // Only a request an app served here counts toward the limits; one handed over or answered by the host
            // does not.
            let Handled::Served { app, kept } = handled else {
                held.forget(key);
                woken = continue_reading(epoll, &mut held, &mut events, Duration::ZERO)?;
                continue;
            };
            // A worker that outgrew its memory during a request leaves at once when that request's connection
            // closed. One whose response promised the client another request serves it first (the check above
            // makes it the last): closing now would meet that request on its way.
            if !stopping && outgrown.is_none() && kept.is_none() {
                outgrown = outgrown_memory(setup);
            }
            match kept {
                Some(kept) => held.readmit(epoll, kept.conn, kept.peer, kept.local, key),
                None => held.forget(key),
            }
            served += 1;
            // Read again: the server may have begun to stop while the guest ran.
            let awaiting_stop = !stopping && setup.slot.is_server_stopping();
            let app_limit =
                !stopping && !awaiting_stop && matches!(setup.pool, PoolKey::Shared) && dispatch.app_limit_reached(app);
            if app_limit {
                meter::leaving(counters::ExitReason::MaxRequests);
                log::info(format_args!(
                    "Autorestarting worker after {} requests of app {} (its max_requests)",
                    setup.site.app(app).max_requests,
                    setup.site.app(app).guest.name
                ));
            }
            if !stopping && !awaiting_stop && (app_limit || recycle_now(setup, served, outgrown)) {
                // Leave like a graceful stop: what was already accepted is still served; idle connections close.
                stopping = true;
            }
            if stopping {
                held.close_idle(epoll);
            }
            // Heads that arrived meanwhile are read before the next request is served.
            woken = continue_reading(epoll, &mut held, &mut events, Duration::ZERO)?;
            continue;
        }
        // A connection that has sent nothing holds no request: a stopping worker does not wait for it.
        let silent_grace = if stopping { held.close_silent(epoll, Instant::now()) } else { None };
        if stopping && held.is_empty() {
            return Ok(());
        }
        // Before sleeping, watch the listeners and the channel only if the worker would take more.
        inlet.watch(epoll, !stopping && held.wants_more(Instant::now()))?;
        let idle = setup.heartbeat_interval;
        // A pause for want of descriptors ends the wait when it ends, so that the inlet is watched again.
        let deadlines = [held.next_deadline(Instant::now()), descriptors::pause_left(), silent_grace];
        let wait = deadlines.into_iter().flatten().fold(idle, Duration::min);
        woken = continue_reading(epoll, &mut held, &mut events, wait)?;
    }
}

/// What the pending signals ask of the worker.
#[derive(Default)]
struct Asked {
    /// SIGTERM: stop.
    stop: bool,
    /// SIGUSR1, and the log files could not be reopened here (a worker running as `--user` may not open the
    /// arbiter's owner-only files): leave, so that a new worker inherits the files the arbiter reopened.
    leave: bool,
}

/// Reads pending signals: SIGUSR1 reopens the log files; SIGTERM asks the worker to stop.
fn read_signals(signals: &SignalFd) -> Asked {
    let mut asked = Asked::default();
    while let Ok(Some(info)) = signals.read_signal() {
        match Signal::try_from(info.ssi_signo as i32) {
            Ok(Signal::SIGTERM) => asked.stop = true,
            Ok(Signal::SIGUSR1) => asked.leave |= !log::reopen(),
            _ => {}
        }
    }
    asked
}

/// Whether the worker has served its `--max-requests`, or has outgrown `--max-worker-memory` (`outgrown`, its
/// resident memory then), and should be replaced.
fn recycle_now(setup: &Setup<'_>, served: u64, outgrown: Option<u64>) -> bool {
    if setup.max_requests > 0 && served >= setup.max_requests {
        log::info(format_args!("Autorestarting worker after {served} requests (--max-requests)"));
        meter::leaving(counters::ExitReason::MaxRequests);
        return true;
    }
    let (Some(resident), Some(limit)) = (outgrown, setup.max_memory) else { return false };
    log::info(format_args!(
        "Autorestarting worker: resident memory {} MiB exceeds --max-worker-memory {} MiB",
        resident >> 20,
        limit >> 20
    ));
    meter::leaving(counters::ExitReason::MaxMemory);
    true
}

/// The worker's resident memory when it exceeds `--max-worker-memory`.
fn outgrown_memory(setup: &Setup<'_>) -> Option<u64> {
    let limit = setup.max_memory?;
    Some(resident_memory()).filter(|&resident| resident > limit)
}

/// The worker's resident memory in bytes, from /proc/self/statm (0 if it cannot be read).
fn resident_memory() -> u64 {
    let Ok(statm) = std::fs::read_to_string("/proc/self/statm") else { return 0 };
    let pages: u64 = statm.split_whitespace().nth(1).and_then(|pages| pages.parse().ok()).unwrap_or(0);
    let page_size =
        nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE).ok().flatten().map_or(4096, |size| size as u64);
    pages * page_size
}
