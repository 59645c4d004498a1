//! The per-worker wasmtime runtime: one `Engine` (configured as `engine` says), one `Linker`, an `InstancePre`
//! for each app the worker hosts (apps built from the same artefact share one mapped component), and a fresh
//! `Store` and instance for every request, with the app's own environment, grants and limits. The guest's time is
//! a wall-clock deadline (see `deadline`): the epoch interrupts a guest that computes past it, and the host calls
//! that wait are bounded by it.

use std::collections::HashMap;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use wasmtime::component::{Component, ResourceTable};
use wasmtime::{Engine, Store, Trap, UpdateDeadline};

use super::app::Guest;
use super::artefact::Artefact;
use super::bindings::AppPre;
use super::capabilities::{DirGrant, NetGrant, wasi_ctx};
use super::deadline::{Deadline, GuestTimeout};
use super::engine::{engine_config, instance_pre_with, linker, store_limits};
use super::exchange::{Exchange, InstanceReport};
use super::limits::WatchedLimits;
use super::output::{GuestLine, GuestOutput};
use super::state::RequestState;
use super::trace::describe;
use super::trust;

/// How often the epoch advances; the guest timeout is counted in these ticks.
const EPOCH_TICK: Duration = Duration::from_millis(10);
/// The most bytes of stdout, and of stderr, one request may log; the rest is counted and dropped.
const OUTPUT_BUDGET: usize = 64 * 1024;
/// The most host resources (streams, sockets, pollables, files) and component handles one request may hold at
/// once; past it the host call fails and the guest traps.
const MAX_RESOURCES: usize = 10_000;

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
    pub fn load(apps: &[(&Guest, &Artefact)], max_memory_bytes: usize, log_line: GuestLine) -> anyhow::Result<Self> {
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
                    let checked = trust::verify(path, artefact.owner, &artefact.digest)
                        .with_context(|| format!("the compiled guest {}", path.display()))?;
                    // The checked file itself, through its descriptor: the name may point elsewhere by now.
                    let same_file = PathBuf::from(format!("/proc/self/fd/{}", checked.as_raw_fd()));
                    // SAFETY: `verify` just checked that the file and its folder belong to the compile step's user
                    // and no one else may write them, and that the file holds the very bytes our compile step
                    // wrote (its SHA-256) with this same engine configuration; `same_file` opens that very file
                    // (the one `checked` holds open), not the name again; wasmtime checks the header too.
                    let component = unsafe { Component::deserialize_file(&engine, &same_file) }
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
        let limits = WatchedLimits::new(store_limits(app.max_memory_bytes));
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
        let creating = Instant::now();
        let instance = app.pre.instantiate(&mut store);
        let created_in = creating.elapsed();
        let result = instance.and_then(|instance| instance.call_handle(&mut store, environ));
        let outcome = match result {
            Ok(Ok(())) => Outcome::Completed,
            Ok(Err(message)) => Outcome::Refused(message),
            Err(err) if is_timeout(&err) => Outcome::TimedOut(describe(&err)),
            Err(err) => Outcome::Failed(describe(&err)),
        };
        let mut state = store.into_data();
        state.exchange.guest_deadline(None);
        state.exchange.instance_report(InstanceReport { created_in, memory_refused: state.limits.memory_refused });
        stdout.finish();
        stderr.finish();
        (state.exchange, outcome)
    }
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
