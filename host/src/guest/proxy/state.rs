//! The data of a `wasi:http` app's `Store` (one request's, or several when the app reuses instances): the guest's WASI context, its `wasi:http` context and the hooks
//! that send its outgoing requests, its limits, and the grant its name lookups are checked against.

use std::sync::Arc;

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use super::outgoing::GrantedHttp;
use crate::guest::bounded_random::RandomView;
use crate::guest::capabilities::NetGrant;
use crate::guest::limits::WatchedLimits;
use crate::guest::name_lookup::LookupView;

pub(in crate::guest) struct ProxyState {
    pub wasi: WasiCtx,
    pub http: WasiHttpCtx,
    pub table: ResourceTable,
    /// What the instance may create: memory, tables, instances.
    pub limits: WatchedLimits,
    /// The addresses and names the guest was granted, for its name lookups.
    pub net: Arc<NetGrant>,
    /// Where its outgoing HTTP requests may go.
    pub hooks: GrantedHttp,
}

impl WasiView for ProxyState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl WasiHttpView for ProxyState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView { ctx: &mut self.http, table: &mut self.table, hooks: &mut self.hooks }
    }
}

impl RandomView for ProxyState {
    fn memory_limit(&self) -> u64 {
        self.limits.memory_limit()
    }
}

impl LookupView for ProxyState {
    fn net_grant(&self) -> Arc<NetGrant> {
        Arc::clone(&self.net)
    }
}
