//! The state of a guest instance's `Store`: the guest's WASI context, its limits, and, for the request it serves,
//! its deadline, its environ (for a guest that asks for it) and the exchange its imports read and write, and to
//! which a `returning-app` guest's returned response is delivered.

use std::sync::Arc;

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::asked_environ::AskedEnviron;
use super::bindings::returning::WholeResponse;
use super::bindings::wasmcorn::app::{request, response};
use super::bounded_io::{BoundedIo, DeadlineView};
use super::bounded_random::RandomView;
use super::capabilities::NetGrant;
use super::deadline::{Deadline, GuestTimeout};
use super::exchange::{Exchange, ResponseHeaders};
use super::limits::WatchedLimits;
use super::name_lookup::LookupView;

/// The most bytes one `read-body` call returns, whatever the guest asks for.
const MAX_READ: usize = 1 << 20;

pub(super) struct RequestState<E> {
    pub wasi: WasiCtx,
    pub table: ResourceTable,
    /// What the instance may create: memory, tables, instances.
    pub limits: WatchedLimits,
    /// The addresses and names the guest was granted, for its name lookups.
    pub net: Arc<NetGrant>,
    /// When the guest's time runs out, in the request it serves.
    pub deadline: Deadline,
    /// The environ of the request it serves; empty between requests.
    pub environ: AskedEnviron,
    /// The request it serves; none between requests.
    pub exchange: Option<E>,
}

impl<E> RequestState<E> {
    /// The request being served: the wasmcorn imports are only called during one.
    fn exchange(&mut self) -> Result<&mut E, String> {
        self.exchange.as_mut().ok_or_else(|| "no request is being served".to_string())
    }

    /// The guest's answer from a call on the client, unless the call failed because the guest's time ran out
    /// while it waited: then the call traps, as a guest timeout.
    fn unless_late<R>(&self, result: Result<R, String>, call: &'static str) -> wasmtime::Result<Result<R, String>> {
        if result.is_err() && self.deadline.has_passed() {
            return Err(wasmtime::Error::new(GuestTimeout { call }));
        }
        Ok(result)
    }
}

impl<E: Exchange> WasiView for RequestState<E> {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl<E: Exchange> RandomView for RequestState<E> {
    fn memory_limit(&self) -> u64 {
        self.limits.memory_limit()
    }
}

impl<E: Exchange> LookupView for RequestState<E> {
    fn net_grant(&self) -> Arc<NetGrant> {
        Arc::clone(&self.net)
    }
}

impl<E: Exchange> DeadlineView for RequestState<E> {
    fn bounded_io(&mut self) -> BoundedIo<'_> {
        BoundedIo { table: &mut self.table, deadline: &self.deadline }
    }
}

impl<E: Exchange> request::Host for RequestState<E> {
    fn read_body(&mut self, max: u32) -> wasmtime::Result<Result<Vec<u8>, String>> {
        let max = usize::try_from(max).unwrap_or(MAX_READ).clamp(1, MAX_READ);
        let result = self.exchange().and_then(|exchange| exchange.read_body(max));
        self.unless_late(result, "wasmcorn:app/request.read-body")
    }

    fn environ_var(&mut self, name: String) -> Option<String> {
        self.environ.value(&name).map(str::to_string)
    }

    fn environ(&mut self) -> Vec<(String, String)> {
        self.environ.variables().map(|(name, value)| (name.to_string(), value.to_string())).collect()
    }
}

impl<E: Exchange> RequestState<E> {
    /// Sends the whole response a `returning-app` guest's `respond` returned, as its `start-response` and one
    /// `write-body` would, under the same rules. An error says why the response broke the contract (an invalid
    /// status or header, a body longer than its `content-length` or one for a status that has none) or could not
    /// be sent (the client went away).
    pub(super) fn deliver(&mut self, response: WholeResponse) -> Result<(), String> {
        let WholeResponse { status, headers, body } = response;
        let exchange = self.exchange()?;
        exchange.start_response(&status, wire_headers(headers))?;
        exchange.write_body(&body)
    }
}

/// A guest's header fields as the exchange takes them: each value as its UTF-8 bytes.
fn wire_headers(headers: Vec<(String, String)>) -> ResponseHeaders {
    headers.into_iter().map(|(name, value)| (name, value.into_bytes())).collect()
}

impl<E: Exchange> response::Host for RequestState<E> {
    fn start_response(&mut self, status: String, headers: Vec<(String, String)>) -> Result<(), String> {
        self.exchange()?.start_response(&status, wire_headers(headers))
    }

    fn write_body(&mut self, chunk: Vec<u8>) -> wasmtime::Result<Result<(), String>> {
        let result = self.exchange().and_then(|exchange| exchange.write_body(&chunk));
        self.unless_late(result, "wasmcorn:app/response.write-body")
    }
}
