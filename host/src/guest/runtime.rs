//! The per-worker wasmtime runtime: one `Engine` (pooling allocator sized for one request at a time, epoch
//! interruption, a bounded wasm stack), one `Linker`, an `InstancePre` for each app the worker hosts (apps built
//! from the same artefact share one mapped component), and a fresh `Store` and instance for every request, with
//! the app's own environment, grants and limits. The guest's time is a wall-clock deadline (see `deadline`): the
//! epoch interrupts a guest that computes past it, and the host calls that wait are bounded by it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{
    Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, StoreLimits,
    StoreLimitsBuilder, Trap, UpdateDeadline,
};

use super::bindings::{App as AppWorld, AppPre};
use super::capabilities::{DirGrant, NetGrant, wasi_ctx};
use super::deadline::{Deadline, GuestTimeout};
use super::output::{GuestLine, GuestOutput};
use super::state::RequestState;
use super::trace::describe;
use super::{App, Artefact, Exchange, bounded_io, name_lookup, trust};

/// How often the epoch advances; the guest timeout is counted in these ticks.
const EPOCH_TICK: Duration = Duration::from_millis(10);
/// The most bytes of stdout, and of stderr, one request may log; the rest is counted and dropped.
const OUTPUT_BUDGET: usize = 64 * 1024;
/// The most native stack the guest's wasm code may use; deeper recursion traps.
const MAX_WASM_STACK: usize = 512 * 1024;
/// What one request's instance may create: core instances, tables and memories (the same bounds as the pool's
/// slots for one component), and elements per table.
const MAX_CORE_INSTANCES: usize = 32;
const MAX_TABLES: usize = 16;
const MAX_MEMORIES: usize = 2;
const MAX_TABLE_ELEMENTS: usize = 20_000;
/// The most host resources (streams, sockets, pollables, files) and component handles one request may hold at
/// once; past it the host call fails and the guest traps.
const MAX_RESOURCES: usize = 10_000;

/// The engine configuration of a pool whose apps use at most `max_memory_bytes` of linear memory. The compile
/// step and the workers must use the same one: the artefact records it and wasmtime refuses an artefact built
/// for another. Only the compile step compiles: a worker's engine has no compiler, so none of cranelift's code
/// is ever paged into a worker.
pub(crate) fn engine_config(max_memory_bytes: usize, compiles: bool) -> Config {
    let mut pool = PoolingAllocationConfig::new();
    // One request at a time: one component instance in use, one more while the previous is torn down.
    pool.total_component_instances(2)
        .total_core_instances(64)
        .max_core_instances_per_component(MAX_CORE_INSTANCES as u32)
        .total_memories(4)
        .max_memories_per_component(MAX_MEMORIES as u32)
        .total_tables(32)
        .max_tables_per_component(MAX_TABLES as u32)
        .total_stacks(0)
        .max_memory_size(max_memory_bytes)
        // A used memory is reset by unmapping all of it (`madvise(MADV_DONTNEED)`): the kernel then drops its
        // pages, swapped out or not, and the next request faults in zeroes or the component's initial image.
        // Never with PAGEMAP_SCAN: wasmtime 48 then rewrites only the dirty pages present in RAM, so a page
        // swapped out during a request would keep its data for the next one (wasmtime PR 14357). Without it,
        // keeping memory resident means rewriting every byte of it on each reset, dirty or not: for
        // sample:hello, 16 MiB kept cost 55-58 us of worker CPU per request, none kept 33-37 us (26-28 us
        // with PAGEMAP_SCAN). Tables are small: they are rewritten in place.
        .linear_memory_keep_resident(0)
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

/// What became of one request inside the guest.
#[derive(Debug)]
pub enum Outcome {
    /// The handler returned `ok`.
    Completed,
    /// The handler returned `err(message)`.
    Refused(String),
    /// The guest ran past the guest timeout, computing or waiting in a host call; the text holds the cause and
    /// the wasm backtrace.
    TimedOut(String),
    /// The guest trapped or could not be instantiated; the text holds the cause and the wasm backtrace.
    Failed(String),
}

/// A worker's loaded apps, ready to serve requests.
pub struct Runtime<E: Exchange> {
    engine: Engine,
    apps: Vec<Loaded<E>>,
    log_line: GuestLine,
}

/// One app in a worker: its pre-instantiated component and everything its requests run with.
struct Loaded<E: Exchange> {
    pre: AppPre<RequestState<E>>,
    env: Arc<Vec<(String, String)>>,
    dirs: Vec<DirGrant>,
    net: Arc<NetGrant>,
    max_memory_bytes: usize,
    guest_timeout: Duration,
    /// How the log names the app's output streams.
    stdout: Arc<str>,
    stderr: Arc<str>,
}

impl<E: Exchange> Runtime<E> {
    /// Builds the engine (sized for `max_memory_bytes`, the most any of the apps may use) and the linker, checks
    /// and maps each precompiled artefact once and pre-instantiates every app. `log_line` is where the guests'
    /// stdout and stderr lines go. An artefact that fails its checks is an error holding a `Refusal`.
    pub fn load(apps: &[(&App, &Artefact)], max_memory_bytes: usize, log_line: GuestLine) -> anyhow::Result<Self> {
        let engine = Engine::new(&engine_config(max_memory_bytes, false))
            .map_err(anyhow::Error::from)
            .context("cannot create the wasm engine")?;
        let linker = linker::<E>(&engine)?;
        let mut components: HashMap<PathBuf, Component> = HashMap::new();
        let mut loaded = Vec::with_capacity(apps.len());
        for (app, artefact) in apps {
            let path = artefact.path.as_path();
            let component = match components.get(path) {
                Some(component) => component.clone(),
                None => {
                    trust::verify(path, artefact.owner, &artefact.digest)
                        .with_context(|| format!("the compiled guest {}", path.display()))?;
                    // SAFETY: `verify` just checked that the file and its folder belong to the compile step's user
                    // and no one else may write them, and that the file holds the very bytes our compile step
                    // wrote (its SHA-256) with this same engine configuration; wasmtime checks the header too.
                    let component = unsafe { Component::deserialize_file(&engine, path) }
                        .map_err(anyhow::Error::from)
                        .with_context(|| format!("cannot load the compiled guest {}", path.display()))?;
                    components.insert(path.to_path_buf(), component.clone());
                    component
                }
            };
            let labels = |stream: &str| -> Arc<str> {
                if app.name.is_empty() { stream.into() } else { format!("{stream} app={}", app.name).into() }
            };
            loaded.push(Loaded {
                pre: instance_pre_with(&linker, &component)?,
                env: Arc::new(app.env.clone()),
                dirs: app.capabilities.dirs.clone(),
                net: Arc::new(app.capabilities.net.clone()),
                max_memory_bytes: app.limits.max_memory_bytes,
                guest_timeout: app.limits.guest_timeout,
                stdout: labels("stdout"),
                stderr: labels("stderr"),
            });
        }
        Ok(Runtime { engine, apps: loaded, log_line })
    }

    /// Starts the thread that advances the engine's epoch, which is what interrupts a guest past its
    /// deadline. Call it once, in the process that serves (threads do not survive `fork`).
    pub fn start_epoch_ticker(&self) -> anyhow::Result<()> {
        let engine = self.engine.weak();
        std::thread::Builder::new()
            .name("epoch-ticker".to_string())
            .spawn(move || {
                while let Some(engine) = engine.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(EPOCH_TICK);
                }
            })
            .context("cannot start the epoch ticker thread")?;
        Ok(())
    }

    /// Runs one request in a fresh instance of app `index` (its position in `load`'s list) and gives the
    /// exchange back with what became of it.
    pub fn handle(&self, index: usize, environ: &[(String, String)], mut exchange: E) -> (E, Outcome) {
        let Some(app) = self.apps.get(index) else {
            return (exchange, Outcome::Failed(format!("no app #{index} is loaded in this worker")));
        };
        let stdout = GuestOutput::new(Arc::clone(&app.stdout), OUTPUT_BUDGET, self.log_line);
        let stderr = GuestOutput::new(Arc::clone(&app.stderr), OUTPUT_BUDGET, self.log_line);
        let wasi = match wasi_ctx(&app.env, &app.dirs, &app.net, stdout.clone(), stderr.clone()) {
            Ok(wasi) => wasi,
            Err(err) => return (exchange, Outcome::Failed(format!("{err:#}"))),
        };
        let mut table = ResourceTable::new();
        table.set_max_capacity(MAX_RESOURCES);
        let limits = store_limits(app.max_memory_bytes);
        let deadline = Deadline::after(app.guest_timeout);
        exchange.guest_deadline(Some(deadline.clone()));
        let state = RequestState { wasi, table, limits, net: Arc::clone(&app.net), deadline, exchange };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| &mut state.limits);
        store.set_max_component_handles(MAX_RESOURCES);
        store.set_epoch_deadline(ticks(app.guest_timeout));
        // The epoch deadline is a first guess: the guest's real deadline moves when the host gives it back the
        // time it spent on the client, so it is checked when the epoch deadline comes.
        store.epoch_deadline_callback(|store| {
            let remaining = store.data().deadline.remaining();
            Ok(if remaining.is_zero() { UpdateDeadline::Interrupt } else { UpdateDeadline::Continue(ticks(remaining)) })
        });
        let result = app.pre.instantiate(&mut store).and_then(|instance| instance.call_handle(&mut store, environ));
        let outcome = match result {
            Ok(Ok(())) => Outcome::Completed,
            Ok(Err(message)) => Outcome::Refused(message),
            Err(err) if is_timeout(&err) => Outcome::TimedOut(describe(&err)),
            Err(err) => Outcome::Failed(describe(&err)),
        };
        let mut state = store.into_data();
        state.exchange.guest_deadline(None);
        stdout.finish();
        stderr.finish();
        (state.exchange, outcome)
    }
}

fn store_limits(max_memory_bytes: usize) -> StoreLimits {
    StoreLimitsBuilder::new()
        .memory_size(max_memory_bytes)
        .table_elements(MAX_TABLE_ELEMENTS)
        .instances(MAX_CORE_INSTANCES)
        .tables(MAX_TABLES)
        .memories(MAX_MEMORIES)
        .build()
}

/// A linker with WASI and the wasmcorn interfaces.
fn linker<E: Exchange>(engine: &Engine) -> anyhow::Result<Linker<RequestState<E>>> {
    let mut linker = Linker::<RequestState<E>>::new(engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
        .and_then(|()| name_lookup::add_to_linker(&mut linker))
        .and_then(|()| bounded_io::add_to_linker(&mut linker))
        .map_err(anyhow::Error::from)
        .context("cannot link WASI")?;
    AppWorld::add_to_linker::<_, wasmtime::component::HasSelf<_>>(&mut linker, |state| state)
        .map_err(anyhow::Error::from)
        .context("cannot link the wasmcorn interfaces")?;
    Ok(linker)
}

/// Checks that the component is a wasmcorn app and pre-instantiates it.
pub(crate) fn instance_pre<E: Exchange>(
    engine: &Engine,
    component: &Component,
) -> anyhow::Result<AppPre<RequestState<E>>> {
    instance_pre_with(&linker(engine)?, component)
}

fn instance_pre_with<E: Exchange>(
    linker: &Linker<RequestState<E>>,
    component: &Component,
) -> anyhow::Result<AppPre<RequestState<E>>> {
    let pre = linker
        .instantiate_pre(component)
        .map_err(anyhow::Error::from)
        .context("the component imports something wasmcorn does not provide (wasmcorn offers WASI 0.2 and the wasmcorn:app interfaces)")?;
    AppPre::new(pre)
        .map_err(anyhow::Error::from)
        .context("the component does not export the wasmcorn:app handler (`handle`)")
}

/// Whether the guest ran out of time: interrupted by the epoch while computing, or cut short while it waited in
/// a host call.
fn is_timeout(err: &wasmtime::Error) -> bool {
    err.downcast_ref::<Trap>() == Some(&Trap::Interrupt) || err.downcast_ref::<GuestTimeout>().is_some()
}

fn ticks(timeout: Duration) -> u64 {
    let ticks = timeout.as_nanos().div_ceil(EPOCH_TICK.as_nanos()).max(1);
    u64::try_from(ticks).unwrap_or(u64::MAX)
}
