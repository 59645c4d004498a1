//! The metrics table: one shared anonymous memory mapping, made by the arbiter before it forks (beside the
//! heartbeat table), that the workers count into and the metrics process reads. Each heartbeat slot has a block
//! of series here with one writer, its worker, which counts with plain relaxed atomic loads and stores: no
//! system call, no lock. The arbiter alone writes the rest: the names of apps and pools (so that labels are
//! known and bounded), who occupies each slot, the server's state for `/readyz`, the worker exits by reason, and
//! a retired block into which it folds a dead worker's counts before the slot is reused, so that totals never go
//! down. That fold happens under a sequence lock (`seq`): a reader that saw it move reads again.

pub(crate) mod labels;
mod names;
pub(crate) mod series;

use std::num::NonZeroUsize;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering, fence};

use anyhow::Context;
use nix::sys::mman::{MapFlags, ProtFlags, mmap_anonymous};

use super::heartbeat::CAPACITY;
pub(crate) use names::{NAMES, Names};
use series::{Series, Values};

/// How many distinct series (app, method, status; app, outcome; ...) one worker's block holds.
const SLOT_SERIES: usize = 128;
/// One worker's block.
pub(crate) type Block = Series<SLOT_SERIES>;
/// How many the retired block holds: every worker that ever left, together.
const RETIRED_SERIES: usize = 2048;

/// Why a worker left, as counted in `wasmcorn_worker_exits_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub(crate) enum ExitReason {
    /// Silent past `--timeout`: killed.
    Timeout = 0,
    /// Recycled after `--max-requests` (or its app's `max_requests`).
    MaxRequests = 1,
    /// Recycled because its memory passed `--max-worker-memory`.
    MaxMemory = 2,
    /// Died on its own: a signal it was not sent by the arbiter, or an error exit.
    Crash = 3,
    /// Retired by a reload (HUP) for a new generation.
    Reload = 4,
    /// Retired because its pool shrank (TTOU, or a smaller pool after a reload).
    Ttou = 5,
    /// Stopped with the server.
    Shutdown = 6,
    /// Could not load its apps.
    BootFailed = 7,
    /// Still running past its graceful timeout: killed.
    GracefulTimeout = 8,
}

impl ExitReason {
    pub(crate) const ALL: [ExitReason; 9] = [
        ExitReason::Timeout,
        ExitReason::MaxRequests,
        ExitReason::MaxMemory,
        ExitReason::Crash,
        ExitReason::Reload,
        ExitReason::Ttou,
        ExitReason::Shutdown,
        ExitReason::BootFailed,
        ExitReason::GracefulTimeout,
    ];

    /// The label value.
    pub(crate) fn label(self) -> &'static str {
        match self {
            ExitReason::Timeout => "timeout",
            ExitReason::MaxRequests => "max_requests",
            ExitReason::MaxMemory => "max_memory",
            ExitReason::Crash => "crash",
            ExitReason::Reload => "reload",
            ExitReason::Ttou => "ttou",
            ExitReason::Shutdown => "shutdown",
            ExitReason::BootFailed => "boot_failed",
            ExitReason::GracefulTimeout => "graceful_timeout",
        }
    }

    fn from_raw(raw: u32) -> Option<ExitReason> {
        ExitReason::ALL.get(raw as usize).copied()
    }
}

/// What the server is doing, for `/readyz`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ServerState {
    /// Some pool lacks booted workers.
    Starting,
    /// Every pool has its workers booted.
    Ready,
    /// Stopping: no more traffic, please.
    Stopping,
}

/// Who occupies a heartbeat slot (written by the arbiter) and why it is leaving (written by its worker).
#[repr(C)]
struct Owner {
    /// The worker's pid; 0 when the slot is free.
    pid: AtomicU32,
    /// Its pool's name id (0: the shared pool).
    pool: AtomicU32,
    /// `ExitReason` + 1 when the worker decided to leave by itself; 0 otherwise.
    leaving: AtomicU32,
}

#[repr(C)]
struct Header {
    state: AtomicU32,
    /// Odd while the arbiter folds a slot into the retired block.
    seq: AtomicU64,
    /// Counts that found no room (a block full of distinct series): shown, so that a loss is never silent.
    dropped: AtomicU64,
}

#[repr(C)]
struct Layout {
    header: Header,
    names: Names,
    owners: [Owner; CAPACITY],
    /// Worker exits by pool id and reason.
    exits: [[AtomicU64; ExitReason::ALL.len()]; NAMES],
    retired: Series<RETIRED_SERIES>,
    slots: [Series<SLOT_SERIES>; CAPACITY],
}

/// The shared table. It lives as long as the process (never unmapped) and is inherited by every fork.
#[derive(Clone, Copy)]
pub(crate) struct Counters {
    table: &'static Layout,
}

/// One slot as a reader sees it.
pub(crate) struct Occupant {
    pub slot: usize,
    pub pid: u32,
    pub pool: u32,
}

/// Everything a scrape reads at one moment.
pub(crate) struct Snapshot {
    pub state: ServerState,
    pub occupants: Vec<Occupant>,
    /// Every series, the retired block and the occupied slots summed.
    pub series: Vec<(u32, Values)>,
    pub exits: Vec<(u32, ExitReason, u64)>,
    pub dropped: u64,
}

impl Counters {
    /// Maps the table (zeroed). Call it in the arbiter, before forking any worker.
    pub(crate) fn new() -> anyhow::Result<Counters> {
        let length = NonZeroUsize::new(size_of::<Layout>()).context("the metrics table has no size")?;
        // SAFETY: a fresh anonymous mapping aliases no Rust object; MAP_SHARED makes it the same memory in every
        // forked process. Zeroed memory is a valid `Layout`: it holds only atomics. Pages untouched stay unbacked.
        let memory =
            unsafe { mmap_anonymous(None, length, ProtFlags::PROT_READ | ProtFlags::PROT_WRITE, MapFlags::MAP_SHARED) }
                .context("cannot map the metrics table")?;
        let memory: NonNull<Layout> = memory.cast();
        // SAFETY: the mapping is as large as `Layout`, page-aligned, zeroed (valid) and never unmapped.
        Ok(Counters { table: unsafe { memory.as_ref() } })
    }

    pub(crate) fn names(&self) -> &'static Names {
        &self.table.names
    }

    /// The block of slot `slot`, which its worker alone writes.
    pub(crate) fn block(&self, slot: usize) -> &'static Block {
        &self.table.slots[slot.min(CAPACITY - 1)]
    }

    /// A count that found no room.
    pub(crate) fn dropped(&self) {
        let dropped = &self.table.header.dropped;
        dropped.fetch_add(1, Ordering::Relaxed);
    }

    /// In a worker: it leaves by itself, for `reason`.
    pub(crate) fn mark_leaving(&self, slot: usize, reason: ExitReason) {
        self.table.owners[slot.min(CAPACITY - 1)].leaving.store(reason as u32 + 1, Ordering::Relaxed);
    }

    /// In the arbiter: worker `pid` of pool `pool` now occupies `slot`, whose block is empty.
    pub(crate) fn occupy(&self, slot: usize, pid: u32, pool: u32) {
        let owner = &self.table.owners[slot.min(CAPACITY - 1)];
        owner.leaving.store(0, Ordering::Relaxed);
        owner.pool.store(pool, Ordering::Relaxed);
        owner.pid.store(pid, Ordering::Release);
    }

    /// In the arbiter, once the worker of `slot` is reaped: folds its counts into the retired block, empties the
    /// block and frees the slot. Returns the worker's pool id and why it said it was leaving, if it did.
    pub(crate) fn vacate(&self, slot: usize) -> (u32, Option<ExitReason>) {
        let slot = slot.min(CAPACITY - 1);
        let owner = &self.table.owners[slot];
        let pool = owner.pool.load(Ordering::Relaxed);
        let leaving = owner.leaving.load(Ordering::Relaxed).checked_sub(1).and_then(ExitReason::from_raw);
        let seq = &self.table.header.seq;
        let start = seq.load(Ordering::Relaxed);
        seq.store(start.wrapping_add(1), Ordering::Relaxed);
        fence(Ordering::Release);
        let block = &self.table.slots[slot];
        for (key, values) in block.entries() {
            if !self.table.retired.add_values(key, &values) {
                self.dropped();
            }
        }
        block.clear();
        owner.pid.store(0, Ordering::Relaxed);
        owner.leaving.store(0, Ordering::Relaxed);
        seq.store(start.wrapping_add(2), Ordering::Release);
        (pool, leaving)
    }

    /// In the arbiter: a worker of pool `pool` left for `reason`.
    pub(crate) fn count_exit(&self, pool: u32, reason: ExitReason) {
        let cell = &self.table.exits[(pool as usize).min(NAMES - 1)][reason as usize];
        cell.store(cell.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    }

    pub(crate) fn set_state(&self, state: ServerState) {
        let raw = match state {
            ServerState::Starting => 0,
            ServerState::Ready => 1,
            ServerState::Stopping => 2,
        };
        self.table.header.state.store(raw, Ordering::Relaxed);
    }

    pub(crate) fn state(&self) -> ServerState {
        match self.table.header.state.load(Ordering::Relaxed) {
            0 => ServerState::Starting,
            1 => ServerState::Ready,
            _ => ServerState::Stopping,
        }
    }

    /// Reads everything at one moment: when the arbiter folds a slot meanwhile, reads again (a few times).
    pub(crate) fn snapshot(&self) -> Snapshot {
        let seq = &self.table.header.seq;
        let mut attempt = 0;
        loop {
            let before = seq.load(Ordering::Acquire);
            let snapshot = self.read_once();
            fence(Ordering::Acquire);
            let after = seq.load(Ordering::Relaxed);
            attempt += 1;
            if (before == after && before.is_multiple_of(2)) || attempt >= 100 {
                return snapshot;
            }
            std::thread::yield_now();
        }
    }

    fn read_once(&self) -> Snapshot {
        let mut occupants = Vec::new();
        let mut series: Vec<(u32, Values)> = self.table.retired.entries().collect();
        for (slot, owner) in self.table.owners.iter().enumerate() {
            let pid = owner.pid.load(Ordering::Acquire);
            if pid == 0 {
                continue;
            }
            occupants.push(Occupant { slot, pid, pool: owner.pool.load(Ordering::Relaxed) });
            for (key, values) in self.table.slots[slot].entries() {
                match series.iter_mut().find(|(known, _)| *known == key) {
                    Some((_, total)) => series::add(total, &values),
                    None => series.push((key, values)),
                }
            }
        }
        series.sort_by_key(|(key, _)| *key);
        let mut exits = Vec::new();
        for (pool, reasons) in self.table.exits.iter().enumerate() {
            for (reason, count) in ExitReason::ALL.iter().zip(reasons) {
                let count = count.load(Ordering::Relaxed);
                if count > 0 {
                    exits.push((pool as u32, *reason, count));
                }
            }
        }
        Snapshot {
            state: self.state(),
            occupants,
            series,
            exits,
            dropped: self.table.header.dropped.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::series::{Key, Kind};
    use super::*;

    #[test]
    fn a_dead_workers_counts_stay_in_the_totals() {
        let counters = Counters::new().unwrap();
        let key = Key::new(Kind::Outcome, 3, 1).raw();
        counters.occupy(2, 100, 0);
        assert!(counters.block(2).count(key));
        assert!(counters.block(2).count(key));
        counters.occupy(5, 101, 0);
        assert!(counters.block(5).count(key));
        let total = |snapshot: &Snapshot| snapshot.series.iter().find(|(k, _)| *k == key).map(|(_, v)| v[0]);
        assert_eq!(total(&counters.snapshot()), Some(3));
        counters.mark_leaving(2, ExitReason::MaxRequests);
        assert_eq!(counters.vacate(2), (0, Some(ExitReason::MaxRequests)));
        let after = counters.snapshot();
        assert_eq!(total(&after), Some(3), "folded, not lost");
        assert_eq!(after.occupants.len(), 1);
        counters.occupy(2, 102, 0);
        assert_eq!(total(&counters.snapshot()), Some(3), "the new occupant starts from zero");
        assert_eq!(counters.vacate(2), (0, None));
    }

    #[test]
    fn exits_are_counted_by_pool_and_reason() {
        let counters = Counters::new().unwrap();
        counters.count_exit(0, ExitReason::Timeout);
        counters.count_exit(0, ExitReason::Timeout);
        counters.count_exit(4, ExitReason::Crash);
        let exits = counters.snapshot().exits;
        assert_eq!(exits, vec![(0, ExitReason::Timeout, 2), (4, ExitReason::Crash, 1)]);
    }
}
