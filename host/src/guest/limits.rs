//! A request's store limits, watched: the limits `engine::store_limits` sets, plus the bound on all the store's
//! linear memories together (wasmtime's limit applies to each memory alone, and a component may define two), and a
//! note of whether the guest asked for more linear memory than it may have, so that a guest that then fails is
//! counted as over memory rather than as an ordinary trap.

use wasmtime::{ResourceLimiter, StoreLimits};

pub(super) struct WatchedLimits {
    limits: StoreLimits,
    /// The most bytes the store's linear memories may hold together: the app's memory limit.
    memory_total_max: usize,
    /// What they were allowed to hold so far. A growth that the allocator fails after it was allowed stays counted:
    /// the count errs on the strict side.
    memory_total: usize,
    /// A memory growth was refused (past the app's limit, or the allocator's).
    pub memory_refused: bool,
}

impl WatchedLimits {
    /// `limits` for each memory and the rest, and `memory_total_max` bytes for all the linear memories together.
    pub(super) fn new(limits: StoreLimits, memory_total_max: usize) -> Self {
        WatchedLimits { limits, memory_total_max, memory_total: 0, memory_refused: false }
    }

    /// The most bytes the store's linear memories may hold together.
    pub(super) fn memory_limit(&self) -> u64 {
        self.memory_total_max as u64
    }
}

impl ResourceLimiter for WatchedLimits {
    /// Called for each memory as it is created (`current` 0) and as it grows.
    fn memory_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        let total = self.memory_total.saturating_sub(current).saturating_add(desired);
        let allowed = if total > self.memory_total_max {
            Ok(false)
        } else {
            self.limits.memory_growing(current, desired, maximum)
        };
        match allowed {
            Ok(true) => self.memory_total = total,
            _ => self.memory_refused = true,
        }
        allowed
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.memory_refused = true;
        self.limits.memory_grow_failed(error)
    }

    fn table_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        self.limits.table_growing(current, desired, maximum)
    }

    fn table_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.limits.table_grow_failed(error)
    }

    fn instances(&self) -> usize {
        self.limits.instances()
    }

    fn tables(&self) -> usize {
        self.limits.tables()
    }

    fn memories(&self) -> usize {
        self.limits.memories()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guest::engine::store_limits;

    const MIB: usize = 1 << 20;

    #[test]
    fn the_memories_of_a_store_share_the_limit() {
        let mut limits = WatchedLimits::new(store_limits(64 * MIB), 64 * MIB);
        // Two memories created, then each grown: together they may not pass the limit.
        assert!(limits.memory_growing(0, MIB, None).unwrap());
        assert!(limits.memory_growing(0, MIB, None).unwrap());
        assert!(limits.memory_growing(MIB, 40 * MIB, None).unwrap());
        assert!(!limits.memory_refused);
        assert!(!limits.memory_growing(MIB, 40 * MIB, None).unwrap());
        assert!(limits.memory_refused);
        assert!(limits.memory_growing(MIB, 24 * MIB, None).unwrap());
        assert!(!limits.memory_growing(24 * MIB, 24 * MIB + 1, None).unwrap());
        // One memory alone keeps wasmtime's limit as well.
        let mut limits = WatchedLimits::new(store_limits(64 * MIB), 64 * MIB);
        assert!(limits.memory_growing(0, 64 * MIB, None).unwrap());
        assert!(!limits.memory_growing(64 * MIB, 64 * MIB + 1, None).unwrap());
    }
}
