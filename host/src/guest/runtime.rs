//! The per-worker wasmtime runtime: one `Engine` (configured as `engine` says), one `Linker`, an `InstancePre`
//! for each app the worker hosts (apps built from the same artefact share one mapped component), and for every
//! request a `Store` and instance (see `instance`) with the app's own environment, grants and limits: a fresh one,
//! or, for an app with `instance_reuse` above 1, the one its previous request left, while it may serve more. The
//! guest's time is a wall-clock deadline (see `deadline`): the deadline timer (see `timer`) makes the epoch
//! interrupt a guest that computes past it, and the host calls that wait are bounded by it. A `wasi:http` app
//! (see `proxy`) is served the same way, its calls made on a current-thread tokio runtime the worker builds here,
//! after the fork, when it hosts such an app.

use std::cell::Cell;
use std::collections::HashMap;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use wasmtime::Engine;
use wasmtime::component::Component;
use wasmtime_wasi_http::p2::bindings::ProxyPre;

use super::app::Guest;
use super::artefact::Artefact;
use super::capabilities::HttpGrant;
use super::deadline::Deadline;
use super::engine::{AppEntry, engine_config, imports_any, instance_pre_with, linker, resident_memory_bytes};
use super::exchange::Exchange;
use super::instance::{Blueprint, HostSide, Instance};
use super::kind::Kind;
use super::output::GuestLine;
use super::proxy::{self, ProxyCall, ProxyInstance, ProxyState};
use super::timer::DeadlineTimer;
use super::trust;

/// The most threads the worker's wasi:http runtime runs blocking calls on (a guest's filesystem calls). A call that
/// blocks past the guest's deadline (a FIFO no one writes, a hung network file system) is given up, and its thread
/// stays blocked; past this many, later calls wait for a free thread, within their own deadlines, instead of each
/// leaving one more thread behind (tokio's default allows 512).
const MAX_BLOCKING_THREADS: usize = 16;

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
    /// How much of each linear memory is rewritten in place between requests rather than unmapped.
    resident_memory_bytes: usize,
    apps: Vec<Loaded<E>>,
    log_line: GuestLine,
    timer: DeadlineTimer,
    /// The runtime `wasi:http` apps are called on, when the worker hosts one.
    tokio: Option<tokio::runtime::Runtime>,
    /// The instance the last request left to be dropped, with its app's position (see `retire_served`).
    served: Cell<Option<(usize, Instance<E>)>>,
}

/// An app's pre-instantiated component, as its kind calls it.
enum Pre<E: Exchange> {
    App(AppEntry<E>),
    Proxy(ProxyPre<ProxyState>),
}

/// One app in a worker: what its instances are made from, the instance kept for its next request, and the host
/// side the last dropped one left for the next.
struct Loaded<E: Exchange> {
    pre: Pre<E>,
    blueprint: Blueprint,
    /// Where a `wasi:http` app may send requests.
    http: Arc<HttpGrant>,
    /// How many requests one instance may serve (1: a fresh instance for every request).
    reuse: u32,
    kept: Cell<Option<Instance<E>>>,
    /// The same for a `wasi:http` app.
    kept_proxy: Cell<Option<ProxyInstance>>,
    spare: Cell<Option<HostSide>>,
}

impl<E: Exchange> Runtime<E> {
    /// Builds the engine (sized for `max_memory_bytes`, the most any of the apps may use) and the linker, checks
    /// and maps each precompiled artefact once and pre-instantiates every app. `log_line` is where the guests'
    /// stdout and stderr lines go. An artefact that fails its checks is an error holding a `Refusal`.
    pub fn load(apps: &[(&Guest, &Artefact)], max_memory_bytes: usize, log_line: GuestLine) -> anyhow::Result<Self> {
        let kept = apps.iter().filter(|(app, _)| app.limits.instance_reuse > 1).count();
        let resident = resident_memory_bytes(apps.iter().map(|(_, artefact)| artefact.initial_memory));
        let engine = Engine::new(&engine_config(max_memory_bytes, false, kept, resident))
            .map_err(anyhow::Error::from)
            .context("cannot create the wasm engine")?;
        let linker = linker::<E>(&engine)?;
        let serves_proxies = apps.iter().any(|(_, artefact)| artefact.kind == Kind::Proxy);
        let proxy_linker = if serves_proxies { Some(proxy::linker(&engine)?) } else { None };
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
            let pre = match (artefact.kind, &proxy_linker) {
                (Kind::Proxy, Some(proxy_linker)) => Pre::Proxy(proxy::instance_pre_with(proxy_linker, &component)?),
                _ => Pre::App(instance_pre_with(&linker, &component)?),
            };
            let blueprint = Blueprint {
                env: Arc::new(app.env.clone()),
                dirs: app.capabilities.dirs.clone(),
                net: Arc::new(app.capabilities.net.clone()),
                max_memory_bytes: app.limits.max_memory_bytes,
                guest_timeout: app.limits.guest_timeout,
                reads_random: imports_random(&engine, &component),
                stdout: labels("stdout"),
                stderr: labels("stderr"),
            };
            loaded.push(Loaded {
                pre,
                blueprint,
                http: Arc::new(app.capabilities.http.clone()),
                reuse: app.limits.instance_reuse.max(1),
                kept: Cell::new(None),
                kept_proxy: Cell::new(None),
                spare: Cell::new(None),
            });
        }
        // One current-thread runtime for the worker's wasi:http apps: no threads of its own (a blocking pool only
        // if a guest's WASI call needs one). Built here, in the worker, after the fork.
        let tokio = if serves_proxies {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .max_blocking_threads(MAX_BLOCKING_THREADS)
                .build();
            Some(runtime.context("cannot start the worker's tokio runtime")?)
        } else {
            None
        };
        Ok(Runtime {
            engine,
            resident_memory_bytes: resident,
            apps: loaded,
            log_line,
            timer: DeadlineTimer::default(),
            tokio,
            served: Cell::new(None),
        })
    }

    /// How much of each linear memory is rewritten in place between requests (the rest is unmapped): some only
    /// when every app's component starts with a small memory.
    pub fn resident_memory_bytes(&self) -> usize {
        self.resident_memory_bytes
    }

    /// Starts the thread that interrupts a guest computing past its deadline (see `timer`). Call it once, in the
    /// process that serves (threads do not survive `fork`).
    pub fn start_epoch_ticker(&self) -> anyhow::Result<()> {
        self.timer.start(&self.engine)
    }

    /// Whether app `index` reads its requests' environ: it is given it, or may ask for it (see `AppEntry`). A
    /// `wasi:http` app does not (it reads the proxy head).
    pub fn reads_environ(&self, index: usize) -> bool {
        self.apps.get(index).is_some_and(|app| matches!(&app.pre, Pre::App(entry) if entry.reads_environ()))
    }

    /// Whether app `index` is a standard `wasi:http` component (its requests need the exchange's proxy head).
    pub fn serves_proxy(&self, index: usize) -> bool {
        self.apps.get(index).is_some_and(|app| matches!(app.pre, Pre::Proxy(_)))
    }

    /// Runs one request in an instance of app `index` (its position in `load`'s list) and gives the exchange
    /// back with what became of it. The instance is a fresh one, or the one the app's previous request left when
    /// the app reuses instances; it is kept for the next request only if this one completed, the exchange saw
    /// nothing go wrong, and it has served fewer requests than the app's `instance_reuse`.
    ///
    /// An instance that is not kept is not dropped here: the caller sends the response first and then calls
    /// `retire_served`, so that the client does not wait for the store's teardown (the reset of the instance's
    /// memory and tables). `handle` retires it too, before anything else, so no instance outlives the request that
    /// follows its own.
    pub fn handle(&self, index: usize, environ: &[(&str, &str)], mut exchange: E) -> (E, Outcome) {
        self.retire_served();
        let Some(app) = self.apps.get(index) else {
            return (exchange, Outcome::Failed(format!("no app #{index} is loaded in this worker")));
        };
        let entry = match &app.pre {
            Pre::App(entry) => entry,
            Pre::Proxy(pre) => return self.handle_proxy(app, pre, exchange),
        };
        let deadline = Deadline::after(app.blueprint.guest_timeout);
        let mut instance = match app.kept.take() {
            Some(instance) => instance,
            None => match app.spare.take().map_or_else(|| HostSide::new(&app.blueprint, self.log_line), Ok) {
                Ok(host) => Instance::new(&self.engine, &app.blueprint, host, deadline.clone()),
                Err(err) => return (exchange, Outcome::Failed(format!("{err:#}"))),
            },
        };
        exchange.guest_deadline(Some(deadline.clone()));
        self.timer.arm(&deadline);
        let (mut exchange, outcome) = instance.serve(entry, environ, deadline, exchange);
        self.timer.disarm();
        exchange.guest_deadline(None);
        let reusable = matches!(outcome, Outcome::Completed) && !exchange.request_failed();
        if reusable && instance.served < app.reuse {
            app.kept.set(Some(instance));
        } else {
            self.served.set(Some((index, instance)));
        }
        (exchange, outcome)
    }

    /// Lets go of the instance app `index` kept for its next request, which is then dropped as `retire_served`
    /// drops one: its request failed as its response was finished (a body shorter than it declared, a client gone
    /// before a buffered response reached it), which `handle` could not know yet.
    pub fn discard_kept(&self, index: usize) {
        let Some(app) = self.apps.get(index) else { return };
        // `handle` left nothing in `served` when it kept this instance.
        if let Some(instance) = app.kept.take() {
            self.served.set(Some((index, instance)));
        }
        drop(app.kept_proxy.take());
    }

    /// Drops the instance the last request left (its store, with the instance's memory, tables and every
    /// resource it held) and gives its host side back to its app for the next one. Nothing when there is none.
    pub fn retire_served(&self) {
        if let Some((index, instance)) = self.served.take() {
            let host = instance.retire();
            if let Some(app) = self.apps.get(index) {
                app.spare.set(Some(host));
            }
        }
    }

    /// Runs one request in an instance of a `wasi:http` app: a fresh one, or the one its previous request left,
    /// kept on the same terms as `handle`'s.
    fn handle_proxy(&self, app: &Loaded<E>, pre: &ProxyPre<ProxyState>, exchange: E) -> (E, Outcome) {
        let Some(tokio) = &self.tokio else {
            return (exchange, Outcome::Failed("no runtime for wasi:http apps".into()));
        };
        let instance = match app.kept_proxy.take() {
            Some(instance) => instance,
            None => match ProxyInstance::new(&self.engine, &app.blueprint, &app.http, self.log_line) {
                Ok(instance) => instance,
                Err(err) => return (exchange, Outcome::Failed(format!("{err:#}"))),
            },
        };
        let deadline = Deadline::after(app.blueprint.guest_timeout);
        let keep = instance.served.saturating_add(1) < app.reuse;
        let call = ProxyCall { tokio, pre, deadline: deadline.clone(), keep };
        self.timer.arm(&deadline);
        let (exchange, outcome, kept) = proxy::handle(call, instance, exchange);
        self.timer.disarm();
        app.kept_proxy.set(kept);
        (exchange, outcome)
    }
}

/// Whether `component` imports an interface of `wasi:random`: only then can its guest read the generators of its
/// WASI context.
pub(super) fn imports_random(engine: &Engine, component: &Component) -> bool {
    imports_any(engine, component, |name| name.starts_with("wasi:random/"))
}

impl<E: Exchange> Drop for Runtime<E> {
    /// The tokio runtime is let go without waiting for its blocking threads: one may be stuck in a guest's file
    /// read (a FIFO, a hung mount) that the guest's deadline stopped waiting for, and the worker must still leave.
    fn drop(&mut self) {
        if let Some(tokio) = self.tokio.take() {
            tokio.shutdown_background();
        }
    }
}
