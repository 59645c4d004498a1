//! A request's store limits, watched: the limits `engine::store_limits` sets, plus a note of whether the guest
//! asked for more linear memory than it may have, so that a guest that then fails is counted as over memory
//! rather than as an ordinary trap.

use wasmtime::{ResourceLimiter, StoreLimits};

pub(super) struct WatchedLimits {
    limits: StoreLimits,
    /// A memory growth was refused (past the app's limit, or the allocator's).
    pub memory_refused: bool,
}

impl WatchedLimits {
    pub(super) fn new(limits: StoreLimits) -> Self {
        WatchedLimits { limits, memory_refused: false }
    }
}

impl ResourceLimiter for WatchedLimits {
    fn memory_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        let allowed = self.limits.memory_growing(current, desired, maximum);
        if !matches!(allowed, Ok(true)) {
            self.memory_refused = true;
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
