//! The heartbeat table: one shared anonymous memory mapping, created by the arbiter before it forks, with a
//! slot per worker. A worker stores the time of its last sign of life, whether it has loaded its app, and what
//! request it is serving, with plain atomic stores: no system call, nothing that can block on a disk. The
//! arbiter reads the slots to find workers silent for longer than `--timeout`, and new workers that are ready.
//! The arbiter also marks a worker it retires there, and a dying worker records how many of its queued
//! connections it answered.

use std::num::NonZeroUsize;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use nix::sys::mman::{MapFlags, ProtFlags, mmap_anonymous};
use nix::time::{ClockId, clock_gettime};

/// How many workers the table can follow at once (all generations together).
pub(crate) const CAPACITY: usize = 1024;
const TEXT: usize = 112;

/// One worker's slot.
#[repr(C)]
pub(crate) struct Slot {
    heartbeat_ms: AtomicU64,
    /// When the current request started; 0 when idle.
    busy_since_ms: AtomicU64,
    ready: AtomicU32,
    text_len: AtomicU32,
    text: [AtomicU8; TEXT],
    /// Set by the arbiter before it sends SIGTERM to a worker it replaces while the listeners stay open.
    retiring: AtomicU32,
    /// How many queued connections the worker answered 503 when it was killed.
    answered_at_death: AtomicU32,
    /// Set by the arbiter when a reload kept the worker but changed the site: its routes are out of date.
    routes_stale: AtomicU32,
    /// Set by the arbiter before it stops the worker with the server: 1 when no other worker will take what the
    /// listeners queued, 2 when a successor arbiter (SIGUSR2) shares the listeners and its workers will.
    server_stopping: AtomicU32,
}

/// The shared table. It lives as long as the process and is inherited by every fork.
pub(crate) struct Heartbeats {
    slots: NonNull<Slot>,
}

// SAFETY: the table holds only atomics, which are safe to share between threads (and processes).
unsafe impl Send for Heartbeats {}
// SAFETY: as above.
unsafe impl Sync for Heartbeats {}

impl Heartbeats {
    /// Maps the table (zeroed). Call it in the arbiter, before forking any worker.
    pub(crate) fn new() -> anyhow::Result<Heartbeats> {
        let length = NonZeroUsize::new(CAPACITY * size_of::<Slot>()).context("the heartbeat table has no size")?;
        // SAFETY: a fresh anonymous mapping aliases no Rust object; MAP_SHARED makes it the same memory in
        // every forked worker, which is the point. Zeroed memory is a valid table of idle slots.
        let memory =
            unsafe { mmap_anonymous(None, length, ProtFlags::PROT_READ | ProtFlags::PROT_WRITE, MapFlags::MAP_SHARED) }
                .context("cannot map the heartbeat table")?;
        Ok(Heartbeats { slots: memory.cast() })
    }

    /// Slot `index`. It lives as long as the process: the mapping is never unmapped, even when the table is
    /// dropped, so a worker's socket can keep a reference to its slot.
    pub(crate) fn slot(&self, index: usize) -> &'static Slot {
        let index = index.min(CAPACITY - 1);
        // SAFETY: `index` is within the mapping, which is never unmapped (`Heartbeats` has no `Drop`), and holds
        // only atomics.
        unsafe { &*self.slots.as_ptr().add(index) }
    }
}

/// Milliseconds on the monotonic clock, which every process of the machine shares.
pub(crate) fn now_ms() -> u64 {
    clock_gettime(ClockId::CLOCK_MONOTONIC).map_or(0, |time| {
        u64::try_from(time.tv_sec()).unwrap_or(0) * 1000 + u64::try_from(time.tv_nsec()).unwrap_or(0) / 1_000_000
    })
}

impl Slot {
    /// Prepares the slot for a new worker (the arbiter, before forking it): alive now, not ready, idle.
    pub(crate) fn reset(&self) {
        self.heartbeat_ms.store(now_ms(), Ordering::Relaxed);
        self.busy_since_ms.store(0, Ordering::Relaxed);
        self.text_len.store(0, Ordering::Relaxed);
        self.retiring.store(0, Ordering::Relaxed);
        self.answered_at_death.store(0, Ordering::Relaxed);
        self.routes_stale.store(0, Ordering::Relaxed);
        self.server_stopping.store(0, Ordering::Relaxed);
        self.ready.store(0, Ordering::Release);
    }

    /// A sign of life.
    pub(crate) fn beat(&self) {
        self.heartbeat_ms.store(now_ms(), Ordering::Relaxed);
    }

    /// The worker has loaded its app and accepts connections.
    pub(crate) fn mark_ready(&self) {
        self.beat();
        self.ready.store(1, Ordering::Release);
    }

    pub(crate) fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire) == 1
    }

    /// The worker starts serving what `parts` spell together (a request line); it is cut to the slot's size, on a
    /// character boundary.
    pub(crate) fn begin_request(&self, parts: &[&str]) {
        let mut length = 0;
        for part in parts {
            let mut taken = part.len().min(TEXT - length);
            while !part.is_char_boundary(taken) {
                taken -= 1;
            }
            for (cell, byte) in self.text[length..].iter().zip(&part.as_bytes()[..taken]) {
                cell.store(*byte, Ordering::Relaxed);
            }
            length += taken;
            if taken < part.len() {
                break;
            }
        }
        self.text_len.store(length as u32, Ordering::Relaxed);
        let now = now_ms();
        self.busy_since_ms.store(now, Ordering::Relaxed);
        self.heartbeat_ms.store(now, Ordering::Relaxed);
    }

    pub(crate) fn end_request(&self) {
        self.busy_since_ms.store(0, Ordering::Relaxed);
        self.beat();
    }

    /// The arbiter retires the worker (set before its SIGTERM): it must accept no more connections, since the
    /// listeners stay open for the workers that replace it.
    pub(crate) fn mark_retiring(&self) {
        self.retiring.store(1, Ordering::Release);
    }

    pub(crate) fn is_retiring(&self) -> bool {
        self.retiring.load(Ordering::Acquire) == 1
    }

    /// A reload kept the worker (its pool did not change) but not the rest of the site it was started with.
    pub(crate) fn mark_routes_stale(&self) {
        self.routes_stale.store(1, Ordering::Release);
    }

    /// Whether the worker's site is older than the arbiter's: it then routes nothing itself.
    pub(crate) fn routes_stale(&self) -> bool {
        self.routes_stale.load(Ordering::Acquire) == 1
    }

    /// The arbiter stops the worker with the server (set before its signal); `successor`: a new arbiter shares
    /// the listeners.
    pub(crate) fn mark_server_stopping(&self, successor: bool) {
        self.server_stopping.store(if successor { 2 } else { 1 }, Ordering::Release);
    }

    /// Read by a request whose guest ran meanwhile (its response then says `Connection: close`), and by a
    /// dedicated pool's worker waiting for the shared pool to leave.
    pub(crate) fn is_server_stopping(&self) -> bool {
        self.server_stopping.load(Ordering::Acquire) != 0
    }

    /// Whether the server stops while the successor of a `USR2` upgrade shares the listeners: its workers serve
    /// what waits in the listen queues.
    pub(crate) fn successor_shares_the_listeners(&self) -> bool {
        self.server_stopping.load(Ordering::Acquire) == 2
    }

    /// Whether what waits in the listen queues is left to nobody once this worker is gone: the server stops and no
    /// successor shares the listeners. Read by the worker's SIGABRT handler (a plain atomic load).
    pub(crate) fn leaves_the_listen_queues_to_nobody(&self) -> bool {
        self.server_stopping.load(Ordering::Acquire) == 1
    }

    /// Called from the worker's SIGABRT handler: a plain atomic store.
    pub(crate) fn record_answered_at_death(&self, count: u32) {
        self.answered_at_death.store(count, Ordering::Release);
    }

    pub(crate) fn answered_at_death(&self) -> u32 {
        self.answered_at_death.load(Ordering::Acquire)
    }

    /// How long the worker has given no sign of life.
    pub(crate) fn silence(&self) -> Duration {
        Duration::from_millis(now_ms().saturating_sub(self.heartbeat_ms.load(Ordering::Relaxed)))
    }

    /// What the worker is serving and for how long, if it is serving something.
    pub(crate) fn current_request(&self) -> Option<(String, Duration)> {
        let since = self.busy_since_ms.load(Ordering::Relaxed);
        if since == 0 {
            return None;
        }
        let length = (self.text_len.load(Ordering::Relaxed) as usize).min(TEXT);
        let bytes: Vec<u8> = self.text[..length].iter().map(|cell| cell.load(Ordering::Relaxed)).collect();
        Some((String::from_utf8_lossy(&bytes).into_owned(), Duration::from_millis(now_ms().saturating_sub(since))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_tracks_readiness_and_the_current_request() {
        let table = Heartbeats::new().unwrap();
        let slot = table.slot(3);
        slot.reset();
        assert!(!slot.is_ready());
        slot.mark_ready();
        assert!(slot.is_ready());
        assert!(slot.current_request().is_none());
        slot.begin_request(&["GET", " ", "/é", " ", "HTTP/1.1"]);
        assert_eq!(slot.current_request().unwrap().0, "GET /é HTTP/1.1");
        slot.end_request();
        assert!(slot.current_request().is_none());
        assert!(slot.silence() < Duration::from_secs(5));
    }

    #[test]
    fn a_new_worker_starts_neither_retiring_nor_with_answers_recorded() {
        let table = Heartbeats::new().unwrap();
        let slot = table.slot(5);
        slot.mark_retiring();
        slot.record_answered_at_death(3);
        assert!(slot.is_retiring());
        assert_eq!(slot.answered_at_death(), 3);
        slot.reset();
        assert!(!slot.is_retiring());
        assert_eq!(slot.answered_at_death(), 0);
    }

    #[test]
    fn long_request_text_is_cut_on_a_character_boundary() {
        let table = Heartbeats::new().unwrap();
        let slot = table.slot(0);
        let long = "é".repeat(100);
        slot.begin_request(&[&long]);
        let (text, _) = slot.current_request().unwrap();
        assert!(text.len() <= TEXT && long.starts_with(&text));
        // Cut in a later part: the parts before it are whole, and nothing after the cut is written.
        let target = format!("/{}", "é".repeat(TEXT));
        slot.begin_request(&["GET", " ", &target, " ", "HTTP/1.1"]);
        let (text, _) = slot.current_request().unwrap();
        assert_eq!(text.len(), TEXT - 1, "{text}");
        assert!(format!("GET {target}").starts_with(&text));
    }
}
