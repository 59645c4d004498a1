//! What the compile step and the workers build alike: the engine configuration (pooling allocator sized for one request
//! at a time, how much of a linear memory it rewrites in place rather than unmaps between requests, epoch interruption,
//! a bounded wasm stack, no compiler in a worker), the bounds of one request's store, and the linker (WASI and the
//! wasmcorn interfaces) that checks a component is a wasmcorn app and pre-instantiates it. The artefact a compile step
//! writes is only valid for the same configuration.

use anyhow::{Context, bail};
use wasmtime::component::{Component, ComponentExportIndex, InstancePre, Linker};
use wasmtime::{
    Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, StoreLimits, StoreLimitsBuilder,
};

use super::bindings::lazy::LazyAppPre;
use super::bindings::returning::ReturningAppPre;
use super::bindings::{App as AppWorld, AppPre};
use super::exchange::Exchange;
use super::kind::{APP_EXPORT, LAZY_APP_EXPORT, RETURNING_APP_EXPORT};
use super::state::RequestState;
use super::{bounded_io, bounded_random, name_lookup};

/// The most native stack the guest's wasm code may use; deeper recursion traps.
const MAX_WASM_STACK: usize = 512 * 1024;
/// What one request's instance may create: core instances, tables and memories (the same bounds as the pool's
/// slots for one component), and elements per table.
const MAX_CORE_INSTANCES: usize = 32;
const MAX_TABLES: usize = 16;
const MAX_MEMORIES: usize = 2;
const MAX_TABLE_ELEMENTS: usize = 20_000;

/// The interface through which a guest reads the request (its body, and the environ it asks for).
const REQUEST_INTERFACE: &str = "wasmcorn:app/request";

/// A linear memory that starts at most this large (two wasm pages) is a small one: a guest built with a small
/// stack, such as `sample:proxy-hello` (64 KiB of stack and its data) or `sample:hello` (one page).
const SMALL_INITIAL_MEMORY: u64 = 128 << 10;
/// How much of each linear memory a pool of small-memory apps keeps resident between requests: reset by rewriting
/// it (zeroes, and the component's initial image) rather than by unmapping it, which then costs neither the
/// `madvise` and its TLB flush nor the page faults of the next request. Room for a small memory and two more
/// pages of heap.
const SMALL_MEMORY_KEPT_RESIDENT: usize = 256 << 10;

/// How much of each linear memory to keep resident in a pool whose apps' components start with linear memories of
/// `initial_memories` bytes (the largest of each component): all of a small memory when every app's is small;
/// none otherwise (and for no app). Rewriting a region costs for every byte of it, touched or not (about 20 us
/// for the 1.1 MiB of a Rust guest, measured), and most guests' touched pages lie above a 1 MiB stack (Rust's
/// default), so for them unmapping stays cheaper.
pub(super) fn resident_memory_bytes(initial_memories: impl IntoIterator<Item = u64>) -> usize {
    let mut initial_memories = initial_memories.into_iter().peekable();
    let some = initial_memories.peek().is_some();
    if some && initial_memories.all(|initial| initial <= SMALL_INITIAL_MEMORY) { SMALL_MEMORY_KEPT_RESIDENT } else { 0 }
}

/// The engine configuration of a pool whose apps use at most `max_memory_bytes` of linear memory, in a worker that
/// keeps up to `kept` instances between requests (one per app that reuses instances) and the first
/// `resident_bytes` of each linear memory resident (see `resident_memory_bytes`). The compile step and the
/// workers must use the same code settings: the artefact records them and wasmtime refuses an artefact built for
/// others (the pool's sizes are not among them). Only the compile step compiles: a worker's engine has no
/// compiler, so none of cranelift's code is ever paged into a worker.
pub(super) fn engine_config(max_memory_bytes: usize, compiles: bool, kept: usize, resident_bytes: usize) -> Config {
    let kept = u32::try_from(kept).unwrap_or(u32::MAX);
    let mut pool = PoolingAllocationConfig::new();
    // One request at a time: one component instance in use, one more while the previous is torn down, and the
    // instances kept for reuse.
    pool.total_component_instances(kept.saturating_add(2))
        .total_core_instances(kept.saturating_add(2).saturating_mul(MAX_CORE_INSTANCES as u32))
        .max_core_instances_per_component(MAX_CORE_INSTANCES as u32)
        .total_memories(kept.saturating_add(2).saturating_mul(MAX_MEMORIES as u32))
        .max_memories_per_component(MAX_MEMORIES as u32)
        .total_tables(kept.saturating_add(2).saturating_mul(MAX_TABLES as u32))
        .max_tables_per_component(MAX_TABLES as u32)
        // Async calls (a wasi:http guest's) run on a fiber stack: one in use, one being released.
        .total_stacks(2)
        .max_memory_size(max_memory_bytes)
        // A used memory is reset by unmapping it (`madvise(MADV_DONTNEED)`) past its first `resident_bytes`, which are
        // rewritten in place: the kernel drops the unmapped pages, swapped out or not, and the next request faults in
        // zeroes or the component's initial image. Never with PAGEMAP_SCAN: wasmtime 48 then rewrites only the dirty
        // pages present in RAM, so a page swapped out during a request would keep its data for the next one (wasmtime
        // PR 14357; fixed in 48.0.11 and 51.0.0, whose wasmtime-wasi the registry here lacks). Without it, the resident
        // part is rewritten whole on each reset, dirty or not: for sample:hello built with Rust's 1 MiB stack, 16 MiB
        // kept cost 55-58 us of worker CPU per request, none kept 33-37 us (26-28 us with PAGEMAP_SCAN); built with a
        // 64 KiB stack, its 192 KiB kept resident cost less than unmapping them (docs/benchmarks.md). Tables are small:
        // rewritten in place.
        .linear_memory_keep_resident(resident_bytes)
        .table_keep_resident(1 << 20)
        .pagemap_scan(Enabled::No);
    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .epoch_interruption(true)
        .enable_compiler(compiles)
        .parallel_compilation(compiles)
        .max_wasm_stack(MAX_WASM_STACK)
        .memory_reservation(max_memory_bytes as u64)
        .memory_reservation_for_growth(0)
        .memory_may_move(false)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    config
}

/// What one instance's store may create, over all the requests it serves.
pub(super) fn store_limits(max_memory_bytes: usize) -> StoreLimits {
    StoreLimitsBuilder::new()
        .memory_size(max_memory_bytes)
        .table_elements(MAX_TABLE_ELEMENTS)
        .instances(MAX_CORE_INSTANCES)
        .tables(MAX_TABLES)
        .memories(MAX_MEMORIES)
        .build()
}

/// A linker with WASI and the wasmcorn interfaces.
pub(super) fn linker<E: Exchange>(engine: &Engine) -> anyhow::Result<Linker<RequestState<E>>> {
    let mut linker = Linker::<RequestState<E>>::new(engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
        .and_then(|()| name_lookup::add_to_linker(&mut linker))
        .and_then(|()| bounded_io::add_to_linker(&mut linker))
        .and_then(|()| bounded_random::add_to_linker(&mut linker))
        .map_err(anyhow::Error::from)
        .context("cannot link WASI")?;
    AppWorld::add_to_linker::<_, wasmtime::component::HasSelf<_>>(&mut linker, |state| state)
        .map_err(anyhow::Error::from)
        .context("cannot link the wasmcorn interfaces")?;
    Ok(linker)
}

/// How a `wasmcorn:app` guest's handler is called: `handle` is given the environ, `handle-request` (the
/// `lazy-app` world) asks for what it needs of it, and so does `respond` (the `returning-app` world), which
/// returns its whole response instead of writing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum HandlerForm {
    GivenEnviron,
    AsksForEnviron,
    ReturnsResponse,
}

/// A `wasmcorn:app` guest, pre-instantiated: what its instances are made from, its handler export and its form.
pub(super) struct AppEntry<E: 'static> {
    pub pre: InstancePre<RequestState<E>>,
    pub handler: ComponentExportIndex,
    pub form: HandlerForm,
    /// Whether it imports `wasmcorn:app/request`: only then can it ask for the environ, which its instances are
    /// then given a copy of for each request.
    pub may_ask_environ: bool,
}

impl<E> AppEntry<E> {
    /// Whether its instances read a request's environ: given it, or able to ask for it.
    pub(super) fn reads_environ(&self) -> bool {
        self.form == HandlerForm::GivenEnviron || self.may_ask_environ
    }
}

/// Checks that the component is a wasmcorn app and pre-instantiates it.
pub(super) fn instance_pre<E: Exchange>(engine: &Engine, component: &Component) -> anyhow::Result<AppEntry<E>> {
    instance_pre_with(&linker(engine)?, component)
}

/// The same with a linker made already. A component that exports more than one handler is called through the
/// first of `handle`, `handle-request` and `respond`.
pub(super) fn instance_pre_with<E: Exchange>(
    linker: &Linker<RequestState<E>>,
    component: &Component,
) -> anyhow::Result<AppEntry<E>> {
    let pre = linker
        .instantiate_pre(component)
        .map_err(anyhow::Error::from)
        .context("the component imports something wasmcorn does not provide (wasmcorn offers WASI 0.2 and the wasmcorn:app interfaces)")?;
    let (pre, handler, form) = if let Some(handler) = component.get_export_index(None, APP_EXPORT) {
        let checked = AppPre::new(pre)
            .map_err(anyhow::Error::from)
            .context("the component's `handle` is not the wasmcorn:app handler")?;
        (checked.instance_pre().clone(), handler, HandlerForm::GivenEnviron)
    } else if let Some(handler) = component.get_export_index(None, LAZY_APP_EXPORT) {
        let checked = LazyAppPre::new(pre)
            .map_err(anyhow::Error::from)
            .context("the component's `handle-request` is not the wasmcorn:app handler of the lazy-app world")?;
        (checked.instance_pre().clone(), handler, HandlerForm::AsksForEnviron)
    } else if let Some(handler) = component.get_export_index(None, RETURNING_APP_EXPORT) {
        let checked = ReturningAppPre::new(pre)
            .map_err(anyhow::Error::from)
            .context("the component's `respond` is not the wasmcorn:app handler of the returning-app world")?;
        (checked.instance_pre().clone(), handler, HandlerForm::ReturnsResponse)
    } else {
        bail!(
            "the component does not export the wasmcorn:app handler (`handle`, `handle-request` of the lazy-app \
             world or `respond` of the returning-app world)"
        );
    };
    // The interface's name, with its version or without.
    let may_ask_environ = imports_any(linker.engine(), component, |name| {
        name.strip_prefix(REQUEST_INTERFACE).is_some_and(|version| version.is_empty() || version.starts_with('@'))
    });
    Ok(AppEntry { pre, handler, form, may_ask_environ })
}

/// Whether `component` imports an interface whose name `matches` accepts.
pub(super) fn imports_any(engine: &Engine, component: &Component, matches: impl Fn(&str) -> bool) -> bool {
    component.component_type().imports(engine).any(|(name, _)| matches(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_pool_of_small_memories_keeps_memory_resident() {
        assert_eq!(resident_memory_bytes([SMALL_INITIAL_MEMORY]), SMALL_MEMORY_KEPT_RESIDENT);
        assert_eq!(resident_memory_bytes([64 << 10, 0, SMALL_INITIAL_MEMORY]), SMALL_MEMORY_KEPT_RESIDENT);
        // Rust's default stack alone is 1 MiB: one such app, and the pool unmaps.
        assert_eq!(resident_memory_bytes([64 << 10, 17 << 16]), 0);
        assert_eq!(resident_memory_bytes([SMALL_INITIAL_MEMORY + 1]), 0);
        // A component whose needs are unknown counts as large; no app at all keeps nothing.
        assert_eq!(resident_memory_bytes([u64::MAX]), 0);
        assert_eq!(resident_memory_bytes([]), 0);
    }
}
