//! A `wasi:http` app's store and instance across the requests it serves: built with the app's own WASI context
//! (environment, granted folders and addresses, its output streams), its `wasi:http` context and the hooks that
//! send its outgoing requests, and then either dropped after its request or kept for the app's next one
//! (`--instance-reuse`). What belongs to one request is put in before each call: the deadline the epoch callback
//! checks and a clean note of refused memory growth.

use std::sync::Arc;

use wasmtime::component::ResourceTable;
use wasmtime::{Engine, Store, UpdateDeadline};
use wasmtime_wasi_http::WasiHttpCtx;
use wasmtime_wasi_http::p2::bindings::Proxy;

use super::outgoing::GrantedHttp;
use super::state::ProxyState;
use crate::guest::capabilities::{HttpGrant, wasi_ctx};
use crate::guest::deadline::Deadline;
use crate::guest::engine::store_limits;
use crate::guest::instance::{Blueprint, MAX_RESOURCES, OUTPUT_BUDGET, bound_host_side};
use crate::guest::limits::WatchedLimits;
use crate::guest::output::{GuestLine, GuestOutput};

/// The most bytes one `fields` resource a `wasi:http` guest builds may hold (wasmtime's default), and the least
/// (what a header map that copies an ordinary request head and adds to it needs).
const FIELD_SIZE_LIMIT: usize = 128 * 1024;
const MIN_FIELD_SIZE_LIMIT: usize = 64 * 1024;
/// The fewest resources a `wasi:http` guest may hold at once, whatever its memory limit: a request's own
/// (request, headers, bodies, streams, pollables, response) and many more.
const MIN_RESOURCES: usize = 256;

/// How many resources a `wasi:http` app's instance may hold at once, and how large each `fields` it builds may be:
/// the header maps it builds then hold at most its memory limit together (16 MiB under a smaller limit), outside
/// its linear memory. With wasmtime's defaults, 10,000 of 128 KiB: about 1.2 GiB of the worker's heap, whatever
/// `--max-memory` said. A copy of a received head (`fields.clone`) is not held to the size, only counted; a response
/// head an upstream sends is held to it (`GrantedHttp`).
fn resource_bounds(max_memory_bytes: usize) -> (usize, usize) {
    let field_size_limit = (max_memory_bytes / MIN_RESOURCES).clamp(MIN_FIELD_SIZE_LIMIT, FIELD_SIZE_LIMIT);
    let resources = (max_memory_bytes / field_size_limit).clamp(MIN_RESOURCES, MAX_RESOURCES);
    (resources, field_size_limit)
}

/// A store for a `wasi:http` app, with its instance once instantiated, and how many requests it has served.
pub(in crate::guest) struct ProxyInstance {
    pub store: Store<ProxyState>,
    pub proxy: Option<Proxy>,
    stdout: GuestOutput,
    stderr: GuestOutput,
    pub served: u32,
}

impl ProxyInstance {
    /// A new store for `blueprint`'s app, not instantiated yet (the request's call instantiates it inside its
    /// deadline).
    pub(in crate::guest) fn new(
        engine: &Engine,
        blueprint: &Blueprint,
        http: &Arc<HttpGrant>,
        log_line: GuestLine,
    ) -> anyhow::Result<Self> {
        let stdout = GuestOutput::new(Arc::clone(&blueprint.stdout), OUTPUT_BUDGET, log_line);
        let stderr = GuestOutput::new(Arc::clone(&blueprint.stderr), OUTPUT_BUDGET, log_line);
        let wasi = wasi_ctx(&blueprint.env, &blueprint.dirs, &blueprint.net, stdout.clone(), stderr.clone())?;
        let (resources, field_size_limit) = resource_bounds(blueprint.max_memory_bytes);
        let mut table = ResourceTable::new();
        table.set_max_capacity(resources);
        let mut http_ctx = WasiHttpCtx::new();
        http_ctx.set_field_size_limit(field_size_limit);
        let state = ProxyState {
            wasi,
            http: http_ctx,
            table,
            limits: WatchedLimits::new(store_limits(blueprint.max_memory_bytes), blueprint.max_memory_bytes),
            net: Arc::clone(&blueprint.net),
            hooks: GrantedHttp::new(Arc::clone(http), field_size_limit),
        };
        let mut store = Store::new(engine, state);
        store.limiter(|state| &mut state.limits);
        bound_host_side(&mut store, blueprint.max_memory_bytes);
        Ok(ProxyInstance { store, proxy: None, stdout, stderr, served: 0 })
    }

    /// Gets the store ready for a request that must end by `deadline`.
    pub(in crate::guest) fn begin(&mut self, deadline: &Deadline) {
        self.store.data_mut().limits.memory_refused = false;
        // The epoch advances only when a running guest's deadline has passed (see `timer`); the deadline may have
        // moved since (time given back for the client's bytes), so it is checked here.
        self.store.set_epoch_deadline(1);
        let deadline = deadline.clone();
        self.store.epoch_deadline_callback(move |_| {
            Ok(if deadline.has_passed() { UpdateDeadline::Interrupt } else { UpdateDeadline::Continue(1) })
        });
    }

    /// The instance's output streams, to be finished by the end of each request.
    pub(in crate::guest) fn output(&self) -> Output {
        Output { stdout: self.stdout.clone(), stderr: self.stderr.clone() }
    }
}

/// An instance's output streams.
pub(in crate::guest) struct Output {
    stdout: GuestOutput,
    stderr: GuestOutput,
}

impl Output {
    /// Logs what is left of the request's output and refills its budget for the next one.
    pub(in crate::guest) fn finish(&self) {
        self.stdout.finish();
        self.stderr.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1 << 20;

    #[test]
    fn the_header_maps_a_guest_may_create_hold_at_most_its_memory_limit() {
        assert_eq!(resource_bounds(128 * MIB), (1024, 128 * 1024));
        assert_eq!(resource_bounds(16 * MIB), (256, 64 * 1024));
        // Below 16 MiB, the least count and size: 16 MiB in all.
        assert_eq!(resource_bounds(4 * MIB), (256, 64 * 1024));
        // From about 1.2 GiB on, wasmtime's default count and size.
        assert_eq!(resource_bounds(4096 * MIB), (MAX_RESOURCES, 128 * 1024));
        for max_memory in [MIB, 16 * MIB, 100 * MIB, 128 * MIB, 1000 * MIB] {
            let (resources, field_size_limit) = resource_bounds(max_memory);
            assert!(resources * field_size_limit <= max_memory.max(16 * MIB), "{max_memory}");
        }
    }
}
