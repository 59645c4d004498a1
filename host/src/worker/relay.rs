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

use std::os::fd::BorrowedFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};
use std::thread::Thread;
use std::time::{Duration, Instant};

use nix::sys::epoll::Epoll;

use super::handoff::{self, SendError};
use super::heads::Heads;
use crate::log;

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
            quit: AtomicBool::new(false),
            thread: OnceLock::new(),
        }
    }

    /// A guest run begins; the connections held may be relayed if it lasts (`allowed`: the worker holds some,
    /// and the pool's other workers are there to take them).
    pub(super) fn begin(&self, allowed: bool) {
        if !allowed {
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

    /// The relay thread: waits for runs, and relays what `heads` holds into `channel` from each that lasts.
    pub(super) fn run(&self, heads: &Mutex<Heads>, epoll: &Epoll, channel: BorrowedFd<'_>) {
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
            if self.current.load(Ordering::SeqCst) == run {
                relay_all(&mut lock(heads), epoll, channel);
                relayed_from = run;
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
