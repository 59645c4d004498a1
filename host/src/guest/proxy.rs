//! Standard `wasi:http` proxy components (the `wasi:http/proxy` world of WASI 0.2, what `wasmtime serve`, Spin,
//! jco and `componentize-py -w wasi:http/proxy` build), served through `wasmtime-wasi-http` in the same sync worker
//! as `wasmcorn:app` guests, with the same sandbox: a fresh store and instance per request (or one kept for up to
//! `--instance-reuse` requests), the guest timeout, the memory cap, `--env`, `--dir`, `--allow-net`, and output
//! to the log. `wasmtime-wasi-http` runs on tokio: each worker has one current-thread runtime (built after the
//! fork, see `runtime`), on which one request's guest call and the drain of its response body run side by side.
//!
//! `state` is a store's data, `instance` a store with its instance across the requests it serves, `incoming`
//! turns the worker's request into the guest's, `outgoing` sends the guest's own requests to the authorities the
//! operator granted, and `call` runs one request.

mod call;
mod incoming;
mod instance;
mod outgoing;
mod state;

use anyhow::Context;
use wasmtime::Engine;
use wasmtime::component::{Component, Linker};
use wasmtime_wasi_http::p2::bindings::ProxyPre;

use super::{bounded_random, name_lookup};
pub(super) use call::{ProxyCall, handle};
pub(super) use instance::ProxyInstance;
pub(super) use state::ProxyState;

/// A linker with WASI (the `wasi:cli` interfaces too: components built with Rust's std import them) and
/// `wasi:http`, all in their async form, and the filtered name lookup.
pub(super) fn linker(engine: &Engine) -> anyhow::Result<Linker<ProxyState>> {
    let mut linker = Linker::<ProxyState>::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)
        .and_then(|()| name_lookup::add_to_linker(&mut linker))
        .and_then(|()| bounded_random::add_to_linker(&mut linker))
        .and_then(|()| wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker))
        .map_err(anyhow::Error::from)
        .context("cannot link WASI and wasi:http")?;
    Ok(linker)
}

/// Checks that the component imports only what the host provides and exports the incoming handler, and
/// pre-instantiates it.
pub(super) fn instance_pre(engine: &Engine, component: &Component) -> anyhow::Result<ProxyPre<ProxyState>> {
    instance_pre_with(&linker(engine)?, component)
}

pub(super) fn instance_pre_with(
    linker: &Linker<ProxyState>,
    component: &Component,
) -> anyhow::Result<ProxyPre<ProxyState>> {
    let pre = linker.instantiate_pre(component).map_err(anyhow::Error::from).context(
        "the component imports something wasmcorn does not provide (wasmcorn offers WASI 0.2 and wasi:http 0.2)",
    )?;
    ProxyPre::new(pre)
        .map_err(anyhow::Error::from)
        .context("the component does not export a wasi:http/incoming-handler wasmcorn can call")
}
