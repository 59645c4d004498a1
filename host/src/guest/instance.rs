//! One app's guest instance and its store, across the requests it serves: built for a request, instantiated
//! inside that request's deadline, and then either dropped or kept for the app's next request (instance reuse).
//! What belongs to one request is put in before each call and taken out after it: the exchange, the deadline,
//! the environ the guest may ask for (see `asked_environ`), the output budget (see `output`). What the instance
//! keeps between requests is the guest's own: its linear memory and globals (module state), and the host
//! resources it holds (its stdout handle, preopened folders, an open socket), counted against the same store
//! limits for its whole life.
//!
//! The host side of a store that holds nothing of a request (the WASI context: environment, granted folders,
//! socket rules; the output streams; the environ's emptied buffers) is built once per app and handed from each
//! dropped store to the next one, instead of being built again for every fresh instance. Its random generators
//! and insecure seed are new for every instance of an app that imports `wasi:random` (no other can read them).

use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::component::{Func, ResourceTable};
use wasmtime::{Engine, Store, Trap, UpdateDeadline};
use wasmtime_wasi::WasiCtx;
use wasmtime_wasi::random::WasiRandomCtx;

use super::asked_environ::AskedEnviron;
use super::bindings::returning::WholeResponse;
use super::capabilities::{DirGrant, NetGrant, wasi_ctx};
use super::deadline::{Deadline, GuestTimeout};
use super::engine::{AppEntry, HandlerForm, store_limits};
use super::exchange::{Exchange, InstanceReport};
use super::limits::WatchedLimits;
use super::output::{GuestLine, GuestOutput};
use super::runtime::Outcome;
use super::state::RequestState;
use super::trace::describe;

/// The most bytes of stdout, and of stderr, one request may log; the rest is counted and dropped.
pub(super) const OUTPUT_BUDGET: usize = 64 * 1024;
/// The most host resources (streams, sockets, pollables, files) and component handles one instance may hold at
/// once; past it the host call fails and the guest traps.
pub(super) const MAX_RESOURCES: usize = 10_000;

/// Bounds what a guest makes the host hold outside its store limits: its component handles, and the bytes one call
/// into the host copies out of it (wasmtime's hostcall fuel, 128 MiB by default). A call copies at most what the
/// guest's memory holds, unless it names the same bytes many times (a thousand headers pointing at one 8 MiB
/// string): with the app's memory limit as the bound, such a call costs the worker at most that much again.
pub(super) fn bound_host_side<T>(store: &mut Store<T>, max_memory_bytes: usize) {
    store.set_max_component_handles(MAX_RESOURCES);
    store.set_hostcall_fuel(max_memory_bytes);
}

/// What an app's instances are made from and run with.
pub(super) struct Blueprint {
    pub env: Arc<Vec<(String, String)>>,
    pub dirs: Vec<DirGrant>,
    pub net: Arc<NetGrant>,
    pub max_memory_bytes: usize,
    pub guest_timeout: Duration,
    /// Whether the app's component imports `wasi:random`: if not, its guests cannot read the generators, and an
    /// instance keeps those of the one before.
    pub reads_random: bool,
    /// How the log names the app's output streams.
    pub stdout: Arc<str>,
    pub stderr: Arc<str>,
}

/// The part of a store's state that holds nothing of a request or an instance: its WASI context, the output
/// streams that context writes to, and the (emptied) buffers of the environ a guest may ask for.
pub(super) struct HostSide {
    wasi: WasiCtx,
    stdout: GuestOutput,
    stderr: GuestOutput,
    environ: AskedEnviron,
}

impl HostSide {
    /// Builds it for `blueprint`'s app: opens the granted folders, captures the output streams.
    pub(super) fn new(blueprint: &Blueprint, log_line: GuestLine) -> anyhow::Result<Self> {
        let stdout = GuestOutput::new(Arc::clone(&blueprint.stdout), OUTPUT_BUDGET, log_line);
        let stderr = GuestOutput::new(Arc::clone(&blueprint.stderr), OUTPUT_BUDGET, log_line);
        let wasi = wasi_ctx(&blueprint.env, &blueprint.dirs, &blueprint.net, stdout.clone(), stderr.clone())?;
        Ok(HostSide { wasi, stdout, stderr, environ: AskedEnviron::default() })
    }
}

/// A store with the app's instance in it (once instantiated), and how many requests it has served.
pub(super) struct Instance<E: Exchange> {
    store: Store<RequestState<E>>,
    /// The guest's `handle`, once instantiated.
    handle: Option<Func>,
    stdout: GuestOutput,
    stderr: GuestOutput,
    pub served: u32,
}

impl<E: Exchange> Instance<E> {
    /// A new store for `blueprint`'s app, with an empty resource table and `host`, not instantiated yet:
    /// `serve` instantiates it inside the request's deadline, `deadline` (which `serve` is given again).
    pub(super) fn new(engine: &Engine, blueprint: &Blueprint, host: HostSide, deadline: Deadline) -> Self {
        let HostSide { mut wasi, stdout, stderr, environ } = host;
        // New generators and a new insecure seed for every instance, as a context built afresh would have: what
        // one instance could learn of them (its hash seed) says nothing about the next.
        if blueprint.reads_random {
            *wasi.random() = WasiRandomCtx::default();
        }
        let mut table = ResourceTable::new();
        table.set_max_capacity(MAX_RESOURCES);
        let state = RequestState {
            wasi,
            table,
            limits: WatchedLimits::new(store_limits(blueprint.max_memory_bytes), blueprint.max_memory_bytes),
            net: Arc::clone(&blueprint.net),
            deadline,
            environ,
            exchange: None,
        };
        let mut store = Store::new(engine, state);
        store.limiter(|state| &mut state.limits);
        bound_host_side(&mut store, blueprint.max_memory_bytes);
        // The epoch advances only when a running guest's deadline has passed (see `timer`); the deadline may have
        // moved since (time given back for the client's bytes), so it is checked here.
        store.epoch_deadline_callback(|store| {
            Ok(if store.data().deadline.has_passed() { UpdateDeadline::Interrupt } else { UpdateDeadline::Continue(1) })
        });
        Instance { store, handle: None, stdout, stderr, served: 0 }
    }

    /// Drops the store, with the instance, its memory and every resource it held, and gives back its host side
    /// for the app's next instance.
    pub(super) fn retire(self) -> HostSide {
        let Instance { store, stdout, stderr, .. } = self;
        let RequestState { wasi, environ, .. } = store.into_data();
        HostSide { wasi, stdout, stderr, environ }
    }

    /// Runs one request: puts its exchange, deadline and environ (if the app can ask for it) in the store,
    /// instantiates the app if it is not yet, calls its handler (the export `app` checked: `handle`, given
    /// `environ`, or `handle-request` or `respond`, which ask for it; `respond`'s returned response is then
    /// delivered to the exchange), and takes the exchange back and the environ out. The
    /// guest's output of this request is logged by the end and its budget refilled for the next one.
    pub(super) fn serve(
        &mut self,
        app: &AppEntry<E>,
        environ: &[(&str, &str)],
        deadline: Deadline,
        exchange: E,
    ) -> (E, Outcome) {
        let state = self.store.data_mut();
        state.deadline = deadline;
        if app.may_ask_environ {
            state.environ.fill(environ);
        }
        state.exchange = Some(exchange);
        state.limits.memory_refused = false;
        self.store.set_epoch_deadline(1);
        let mut created_in = None;
        let func = match self.handle {
            Some(func) => Ok(func),
            None => {
                let creating = Instant::now();
                let instantiated = app.pre.instantiate(&mut self.store);
                created_in = Some(creating.elapsed());
                instantiated.and_then(|instance| {
                    let func = instance.get_func(&mut self.store, app.handler);
                    func.ok_or_else(|| wasmtime::Error::msg("the component exports no handler"))
                })
            }
        };
        let result = func.and_then(|func| {
            self.handle = Some(func);
            match app.form {
                // Lowered from borrowed strings: the generated `call_handle` wants them as owned `String`s.
                HandlerForm::GivenEnviron => {
                    let typed = func.typed::<(&[(&str, &str)],), (Result<(), String>,)>(&self.store)?;
                    typed.call(&mut self.store, (environ,)).map(|(returned,)| returned)
                }
                HandlerForm::AsksForEnviron => {
                    let typed = func.typed::<(), (Result<(), String>,)>(&self.store)?;
                    typed.call(&mut self.store, ()).map(|(returned,)| returned)
                }
                // The response is sent once the guest has returned it: an error in it is the guest's, as the
                // error of a `start-response` or `write-body` it would have passed on.
                HandlerForm::ReturnsResponse => {
                    let typed = func.typed::<(), (Result<WholeResponse, String>,)>(&self.store)?;
                    let (returned,) = typed.call(&mut self.store, ())?;
                    Ok(returned.and_then(|response| {
                        self.store.data_mut().deliver(response).map_err(|reason| format!("its response: {reason}"))
                    }))
                }
            }
        });
        self.served = self.served.saturating_add(1);
        let outcome = match result {
            Ok(Ok(())) => Outcome::Completed,
            Ok(Err(message)) => Outcome::Refused(message),
            Err(err) if is_timeout(&err) => Outcome::TimedOut(describe(&err)),
            Err(err) => Outcome::Failed(describe(&err)),
        };
        self.stdout.finish();
        self.stderr.finish();
        // `serve` put it there and nothing else takes it out.
        let state = self.store.data_mut();
        state.environ.clear();
        let mut exchange = state.exchange.take().expect("the exchange of the request just served");
        exchange.instance_report(InstanceReport { created_in, memory_refused: state.limits.memory_refused });
        (exchange, outcome)
    }
}

/// Whether the guest ran out of time: interrupted by the epoch while computing, or cut short while it waited in
/// a host call.
pub(super) fn is_timeout(err: &wasmtime::Error) -> bool {
    err.downcast_ref::<Trap>() == Some(&Trap::Interrupt) || err.downcast_ref::<GuestTimeout>().is_some()
}
