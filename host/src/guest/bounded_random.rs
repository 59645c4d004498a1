//! `wasi:random` as wasmcorn offers it: wasmtime-wasi's generators, except that one call returns at most as many
//! bytes as the app's linear memory may hold. wasmtime-wasi's own bound is a fixed 64 MiB: a guest under a smaller
//! `--max-memory` made the worker allocate and fill up to 64 MiB in one call, outside the guest's memory, for
//! bytes that could never be copied into it. A larger request now traps before anything is allocated.

use wasmtime::bail;
use wasmtime::component::{HasData, Linker};
use wasmtime_wasi::p2::bindings::random::{insecure, random};
use wasmtime_wasi::random::WasiRandomCtx;
use wasmtime_wasi::{WasiCtxView, WasiView};

/// A request's state as the bounded generators see it.
pub(crate) trait RandomView: WasiView {
    /// The most bytes the guest's linear memories may hold together.
    fn memory_limit(&self) -> u64;
}

/// The guest's generators, and the most bytes one call may return.
pub(crate) struct BoundedRandom<'a> {
    random: &'a mut WasiRandomCtx,
    most: u64,
}

struct BoundedRandomData;

impl HasData for BoundedRandomData {
    type Data<'a> = BoundedRandom<'a>;
}

/// Replaces the `wasi:random/random` and `wasi:random/insecure` that `wasmtime_wasi::p2::add_to_linker_*` linked
/// with the bounded ones.
pub(crate) fn add_to_linker<T: RandomView + 'static>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let result = random::add_to_linker::<T, BoundedRandomData>(linker, bounded::<T>)
        .and_then(|()| insecure::add_to_linker::<T, BoundedRandomData>(linker, bounded::<T>));
    linker.allow_shadowing(false);
    result
}

fn bounded<T: RandomView>(state: &mut T) -> BoundedRandom<'_> {
    let most = state.memory_limit();
    let WasiCtxView { ctx, .. } = state.ctx();
    BoundedRandom { random: ctx.random(), most }
}

impl BoundedRandom<'_> {
    fn check(&self, len: u64, call: &str) -> wasmtime::Result<()> {
        if len > self.most {
            bail!("{call}: {len} bytes asked for, more than the app's memory limit ({} bytes)", self.most);
        }
        Ok(())
    }
}

impl random::Host for BoundedRandom<'_> {
    fn get_random_bytes(&mut self, len: u64) -> wasmtime::Result<Vec<u8>> {
        self.check(len, "wasi:random/random.get-random-bytes")?;
        random::Host::get_random_bytes(self.random, len)
    }

    fn get_random_u64(&mut self) -> wasmtime::Result<u64> {
        random::Host::get_random_u64(self.random)
    }
}

impl insecure::Host for BoundedRandom<'_> {
    fn get_insecure_random_bytes(&mut self, len: u64) -> wasmtime::Result<Vec<u8>> {
        self.check(len, "wasi:random/insecure.get-insecure-random-bytes")?;
        insecure::Host::get_insecure_random_bytes(self.random, len)
    }

    fn get_insecure_random_u64(&mut self) -> wasmtime::Result<u64> {
        insecure::Host::get_insecure_random_u64(self.random)
    }
}
