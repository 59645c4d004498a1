//! The timer that interrupts a guest computing past its deadline: a thread that sleeps until the running
//! guest's deadline and then advances the engine's epoch once, which makes the guest's next epoch check call
//! the store's deadline callback. It replaces a ticker that advanced the epoch every 10 ms whether or not a
//! guest ran (about 3 ms of CPU per second per worker, idle or not).
//!
//! Arming costs the request a lock and no system call as long as the thread already sleeps until a moment no
//! later than the new deadline (requests of the same app come in deadline order); only a thread parked with
//! nothing to wait for, or waiting for a later moment, is woken. A parked thread costs nothing; a thread waiting
//! for a deadline wakes once, at it, and parks if no guest runs any more. A deadline that was given back time
//! (see `deadline`) is waited for again; one that has passed is signalled, then checked again every
//! `AFTER_DEADLINE` until the runtime disarms the timer (the guest may be inside a host call, which the
//! deadline bounds by itself).

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::Context;
use wasmtime::{Engine, EngineWeak};

use super::deadline::Deadline;

/// How often the epoch is advanced again while a guest is past its deadline and not yet stopped.
const AFTER_DEADLINE: Duration = Duration::from_millis(10);

/// A worker's deadline timer; clones share the same thread.
#[derive(Clone, Default)]
pub(super) struct DeadlineTimer {
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    state: Mutex<Armed>,
    wake: Condvar,
}

#[derive(Default)]
struct Armed {
    /// The deadline of the guest running now, if one runs.
    running: Option<Deadline>,
    /// When the thread wakes next by itself; `None` while it is parked (or not started).
    wakes_at: Option<Instant>,
}

impl DeadlineTimer {
    /// Starts the thread; call it once. Threads do not survive `fork`: call it in the process that serves. The
    /// thread ends when it finds the engine dropped at a deadline.
    pub(super) fn start(&self, engine: &Engine) -> anyhow::Result<()> {
        let shared = Arc::clone(&self.shared);
        let engine = engine.weak();
        std::thread::Builder::new()
            .name("deadline-timer".to_string())
            .spawn(move || while shared.wait_once(&engine) {})
            .context("cannot start the deadline timer thread")?;
        Ok(())
    }

    /// A guest starts running with `deadline`.
    pub(super) fn arm(&self, deadline: &Deadline) {
        let mut armed = self.shared.lock();
        // Woken when parked, or when the deadline falls due before the thread's next turn.
        let due = deadline.due();
        let wake = armed.wakes_at.is_none_or(|at| due.is_some_and(|due| at > due));
        armed.running = Some(deadline.clone());
        drop(armed);
        if wake {
            self.shared.wake.notify_one();
        }
    }

    /// The guest has stopped running. The thread is not woken: it finds nothing to do when it next wakes.
    pub(super) fn disarm(&self) {
        self.shared.lock().running = None;
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Armed> {
        // Nothing panics while holding the lock; a poisoned lock still holds consistent state.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// One turn of the thread: park while no guest runs; otherwise sleep until the guest's deadline, and advance
    /// the epoch once it has passed. False once the engine is gone.
    fn wait_once(&self, engine: &EngineWeak) -> bool {
        let mut armed = self.lock();
        let remaining = match &armed.running {
            None => {
                armed.wakes_at = None;
                drop(self.wake.wait(armed).unwrap_or_else(std::sync::PoisonError::into_inner));
                return true;
            }
            Some(deadline) => deadline.remaining(),
        };
        let sleep = if remaining.is_zero() {
            match engine.upgrade() {
                Some(engine) => engine.increment_epoch(),
                None => return false,
            }
            AFTER_DEADLINE
        } else {
            remaining
        };
        armed.wakes_at = Some(Instant::now() + sleep);
        drop(self.wake.wait_timeout(armed, sleep).unwrap_or_else(std::sync::PoisonError::into_inner));
        true
    }
}
