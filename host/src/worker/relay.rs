//! The relay: a thread beside a worker's loop that keeps a long guest run from holding other clients back. A
//! worker serves one request at a time, and while a guest runs it reads nothing else; yet it holds connections:
//! requests whose heads completed meanwhile, heads still arriving, idle keep-alive connections. When a guest run
//! lasts longer than `RELAY_AFTER`, the relay takes every one of them out of the worker's `Heads` and passes it,
//! with the bytes already read and its time left, into the pool's channel, where any idle worker of the pool
//! takes it (`Heads::admit_handed`). A run begun while the worker holds nothing else leaves the thread alone;
//! short runs, the usual case, cost no system call: the thread sleeps, or is parked while the worker is idle. A
//! connection the channel cannot take (its queue is full) stays here.
//! The relay is off while the server stops: the pool's other workers may be gone, and nothing received may be
//! lost.
//!
//! In a shared worker of a site with dedicated pools, the relay also keeps the front door open while a guest runs
//! longer than `RELAY_AFTER` (`FrontDoor`): every `RELAY_AFTER` it accepts new connections, reads the heads it holds,
//! and passes each complete request on (a dedicated pool's to that pool, a shared app's to the shared pool's channel, a
//! request no app takes answered `404`), until the worker is retired or the server stops. Without it, a tenant of the
//! shared pool whose requests held every shared worker (a guest that sleeps, a response read slowly) kept every other
//! app's requests, those of the dedicated pools included, in the listen queue.

use std::collections::BTreeMap;
use std::os::fd::BorrowedFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};
use std::thread::Thread;
use std::time::{Duration, Instant};

use nix::sys::epoll::{Epoll, EpollEvent};

use super::answers;
use super::dispatch;
use super::environ;
use super::farewell;
use super::handoff::{self, Channel, Handed, SendError, Stage};
use super::heads::{self, Arrived, Heads};
use super::heartbeat::Slot;
use super::inlet;
use crate::http::Connection;
use crate::listener::Listener;
use crate::log;
use crate::site::{PoolKey, Site};

/// What a shared worker's relay needs to keep the front door open (see the module's text).
pub(super) struct FrontDoor<'a> {
    pub listeners: &'a [Listener],
    pub site: &'a Site,
    pub channels: &'a BTreeMap<PoolKey, Channel>,
    /// The worker's slot: the arbiter marks it when it retires the worker or stops the server.
    pub slot: &'static Slot,
}

/// The most rounds of accepting, reading and routing in one turn of the front door: each takes at least one new
/// connection, so a turn every `RELAY_AFTER` routes up to about 13,000 connections a second.
const DOOR_ROUNDS: usize = 64;

/// How long a guest run may hold the connections its worker holds before they are relayed: long enough that a
/// fast request never pays for a relay, short against any delay a client would notice.
pub(super) const RELAY_AFTER: Duration = Duration::from_millis(5);

/// The heads of a worker, shared between its loop and its relay. The loop holds the lock except while a guest
/// runs; the relay takes it only then.
pub(super) fn lock(heads: &Mutex<Heads>) -> MutexGuard<'_, Heads> {
    heads.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What the worker's loop tells its relay.
pub(super) struct Relay {
    /// When this relay was made: run start times are counted from it.
    epoch: Instant,
    /// The number of the guest run under way that may be relayed from, or 0.
    current: AtomicU64,
    /// When that run started, in nanoseconds since `epoch`.
    started: AtomicU64,
    /// The number the next run gets.
    next: AtomicU64,
    /// The relay thread is parked, waiting for a run.
    parked: AtomicBool,
    /// The run under way may keep the front door open.
    door_open: AtomicBool,
    quit: AtomicBool,
    thread: OnceLock<Thread>,
}

impl Relay {
    pub(super) fn new() -> Relay {
        Relay {
            epoch: Instant::now(),
            current: AtomicU64::new(0),
            started: AtomicU64::new(0),
            next: AtomicU64::new(1),
            parked: AtomicBool::new(false),
            door_open: AtomicBool::new(false),
            quit: AtomicBool::new(false),
            thread: OnceLock::new(),
        }
    }

    /// A guest run begins; the connections held may be relayed if it lasts (`allowed`: the worker holds some,
    /// and the pool's other workers are there to take them), and the front door kept open (`door`: the worker
    /// has one, and takes new connections).
    pub(super) fn begin(&self, allowed: bool, door: bool) {
        self.door_open.store(door, Ordering::Relaxed);
        if !allowed && !door {
            return;
        }
        let run = self.next.fetch_add(1, Ordering::Relaxed);
        let since = u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.started.store(since, Ordering::Relaxed);
        self.current.store(run, Ordering::SeqCst);
        if self.parked.load(Ordering::SeqCst) {
            self.wake();
        }
    }

    /// The guest run is over.
    pub(super) fn end(&self) {
        self.current.store(0, Ordering::SeqCst);
    }

    /// Ends the relay thread.
    pub(super) fn quit(&self) {
        self.quit.store(true, Ordering::SeqCst);
        self.wake();
    }

    /// Ends the relay thread when the returned guard is dropped.
    pub(super) fn quit_on_drop(&self) -> QuitOnDrop<'_> {
        QuitOnDrop(self)
    }

    fn wake(&self) {
        if let Some(thread) = self.thread.get() {
            thread.unpark();
        }
    }

    /// The relay thread: waits for runs, and relays what `heads` holds into `channel` from each that lasts (or,
    /// with `door` and a run that may, keeps the front door open while it lasts).
    pub(super) fn run(&self, heads: &Mutex<Heads>, epoll: &Epoll, channel: BorrowedFd<'_>, door: Option<&FrontDoor>) {
        let _ = self.thread.set(std::thread::current());
        let mut relayed_from = 0;
        while !self.quit.load(Ordering::SeqCst) {
            let run = self.current.load(Ordering::SeqCst);
            if run == 0 || run == relayed_from {
                if run == 0 {
                    self.parked.store(true, Ordering::SeqCst);
                    if self.current.load(Ordering::SeqCst) == 0 && !self.quit.load(Ordering::SeqCst) {
                        std::thread::park();
                    }
                    self.parked.store(false, Ordering::SeqCst);
                } else {
                    // Everything held was relayed from this run: nothing more arrives until it ends.
                    std::thread::park_timeout(RELAY_AFTER);
                }
                continue;
            }
            let started = self.epoch + Duration::from_nanos(self.started.load(Ordering::Relaxed));
            let due = started + RELAY_AFTER;
            let now = Instant::now();
            if now < due {
                std::thread::park_timeout(due - now);
                continue;
            }
            if self.current.load(Ordering::SeqCst) != run {
                continue;
            }
            let mut held = lock(heads);
            // The run may have ended while the lock was awaited: the loop takes the lock back when a run ends, and
            // gives it up again only in its next run, which may not relay at all (a stopping server's), and after
            // it may have closed its listeners. While the relay holds the lock, the loop cannot go on past the run.
            if self.current.load(Ordering::SeqCst) != run {
                continue;
            }
            match door.filter(|_| self.door_open.load(Ordering::Relaxed)) {
                // The server began to stop while the guest ran: the door closes, and the relay is off (what the
                // door took is served by this worker before it leaves).
                Some(door) if door.slot.is_server_stopping() => relayed_from = run,
                Some(door) if !door.slot.is_retiring() => {
                    farewell::RELAY_FENCE.pass(|| keep_the_door(&mut held, epoll, channel, door));
                    drop(held);
                    std::thread::park_timeout(RELAY_AFTER);
                }
                // Retired while the guest ran (a reload, TTOU): this worker's site may be the old one, and it takes
                // no more connections; what it holds goes to the pool's other workers, the new ones.
                _ => {
                    farewell::RELAY_FENCE.pass(|| relay_all(&mut held, epoll, channel));
                    relayed_from = run;
                }
            }
        }
    }
}

/// Ends the relay thread when dropped (see `Relay::quit_on_drop`).
pub(super) struct QuitOnDrop<'a>(&'a Relay);

impl Drop for QuitOnDrop<'_> {
    fn drop(&mut self) {
        self.0.quit();
    }
}

/// One turn of the front door while the worker's guest runs: takes new connections, reads the heads held, and
/// passes each complete request on: to its app's dedicated pool, or into the shared pool's `channel` (`503` when
/// that pool's queue is full), or answers it `404`.
fn keep_the_door(heads: &mut Heads, epoll: &Epoll, channel: BorrowedFd<'_>, door: &FrontDoor) {
    let mut events = [EpollEvent::empty(); 16];
    // The heads take one fast client's connection at a time (see `Heads::wants_more`): rounds until none is left.
    for _ in 0..DOOR_ROUNDS {
        let accepted = inlet::accept_waiting(epoll, door.listeners, heads, false);
        // Reads what arrived on the heads' sockets, and refuses the late ones. Whatever else the wait saw (a
        // signal, the channel) stays readable for the worker's loop.
        if let Err(err) = inlet::continue_reading(epoll, heads, &mut events, Duration::ZERO) {
            log::warning(format_args!("the front door cannot read the connections it holds: {err}"));
            return;
        }
        pass_on_ready(heads, epoll, channel, door);
        if !accepted {
            return;
        }
    }
}

/// Passes each complete request on, or answers it (see `keep_the_door`).
fn pass_on_ready(heads: &mut Heads, epoll: &Epoll, channel: BorrowedFd<'_>, door: &FrontDoor) {
    while let Some(taken) = heads.take_ready_unanswered() {
        let Some(arrived) = taken else { continue };
        match dispatch::route(door.site, &arrived, &environ::decode_path(&arrived.request.path)) {
            None => arrived.answer(404, "-"),
            Some((app, script_name)) if door.site.pool_of(app) != PoolKey::Shared => {
                dispatch::hand_over(door.site, door.channels, &PoolKey::Shared, epoll, (app, &script_name), arrived);
            }
            Some((app, _)) => {
                // Routed again by the worker that takes it. When the shared pool's queue is full the client gets
                // 503 at once, as for a full dedicated pool; a head too large to cross is taken back, parsed
                // again, and waits for this worker.
                let Arrived { conn, request, peer, local, .. } = arrived;
                let (stream, bytes) = heads::leave(epoll, conn);
                match handoff::send(channel, &stream, &Stage::Unrouted, &bytes) {
                    Ok(()) => {}
                    Err(SendError::Busy(cause)) => {
                        let name = &door.site.app(app).guest.name;
                        log::warning(format_args!(
                            "The shared pool is full ({cause}): 503 for {} (app {name})",
                            request.request_line()
                        ));
                        answers::answer(Connection::with_bytes(stream, Vec::new()), &request, peer, 503, name);
                    }
                    Err(SendError::TooLarge) => {
                        heads.admit_handed(epoll, Handed { stream, peer, local, stage: Stage::Unrouted, bytes });
                        break;
                    }
                }
            }
        }
    }
}

/// Passes every connection `heads` holds into the pool's channel; one the channel refuses is taken back.
fn relay_all(heads: &mut Heads, epoll: &Epoll, channel: BorrowedFd<'_>) {
    let mut refused = Vec::new();
    while let Some(handed) = heads.take_one(epoll) {
        match handoff::send(channel, &handed.stream, &handed.stage, &handed.bytes) {
            // Our copy of the socket closes here; the worker that takes it has its own.
            Ok(()) => {}
            // More bytes read than a message carries: it stays, the others may still go.
            Err(SendError::TooLarge) => refused.push(handed),
            Err(SendError::Busy(err)) => {
                log::warning(format_args!("cannot relay connections to the pool's other workers: {err}"));
                refused.push(handed);
                break;
            }
        }
    }
    for handed in refused {
        heads.admit_handed(epoll, handed);
    }
}
