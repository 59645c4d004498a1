//! The state of one request's `Store`: the guest's WASI context, its limits, and the exchange its imports read
//! and write.

use std::sync::Arc;

use wasmtime::StoreLimits;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::Exchange;
use super::bindings::wasmcorn::app::{request, response};
use super::capabilities::NetGrant;
use super::name_lookup::LookupView;

/// The most bytes one `read-body` call returns, whatever the guest asks for.
const MAX_READ: usize = 1 << 20;

pub struct RequestState<E> {
    pub wasi: WasiCtx,
    pub table: ResourceTable,
    /// What the instance may create: memory, tables, instances.
    pub limits: StoreLimits,
    /// The addresses and names the guest was granted, for its name lookups.
    pub net: Arc<NetGrant>,
    pub exchange: E,
}

impl<E: Exchange> WasiView for RequestState<E> {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl<E: Exchange> LookupView for RequestState<E> {
    fn net_grant(&self) -> Arc<NetGrant> {
        Arc::clone(&self.net)
    }
}

impl<E: Exchange> request::Host for RequestState<E> {
    fn read_body(&mut self, max: u32) -> Result<Vec<u8>, String> {
        let max = usize::try_from(max).unwrap_or(MAX_READ).clamp(1, MAX_READ);
        self.exchange.read_body(max)
    }
}

impl<E: Exchange> response::Host for RequestState<E> {
    fn start_response(&mut self, status: String, headers: Vec<(String, String)>) -> Result<(), String> {
        self.exchange.start_response(&status, headers)
    }

    fn write_body(&mut self, chunk: Vec<u8>) -> Result<(), String> {
        self.exchange.write_body(&chunk)
    }
}
