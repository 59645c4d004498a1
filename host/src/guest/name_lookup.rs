//! `wasi:sockets/ip-name-lookup` as wasmcorn offers it: wasmtime-wasi's resolver, behind a filter that lets
//! through only IP literals and the host names the operator listed with `--allow-net`. Without it a guest could
//! resolve any name, and a DNS query for a name it made up is a message to whoever serves that domain.

use std::sync::Arc;

use wasmtime::component::{HasData, Linker, Resource};
use wasmtime_wasi::WasiView;
use wasmtime_wasi::p2::bindings::io::error::Error as IoError;
use wasmtime_wasi::p2::bindings::sockets::ip_name_lookup::{
    self, Host, HostResolveAddressStream, ResolveAddressStream,
};
use wasmtime_wasi::p2::bindings::sockets::network::{self, ErrorCode, IpAddress, Network};
use wasmtime_wasi::p2::{DynPollable, SocketError};
use wasmtime_wasi::sockets::{WasiSocketsCtxView, WasiSocketsView};

use super::capabilities::NetGrant;

/// A request's state as the filtered resolver sees it.
pub(crate) trait LookupView: WasiView {
    /// The grant the guest's lookups are checked against.
    fn net_grant(&self) -> Arc<NetGrant>;
}

/// Replaces the resolver that `wasmtime_wasi::p2::add_to_linker_sync` linked with the filtered one.
pub(crate) fn add_to_linker<T: LookupView + 'static>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let result = ip_name_lookup::add_to_linker::<T, FilteredLookup>(linker, |state| FilteredView {
        grant: state.net_grant(),
        sockets: state.sockets(),
    });
    linker.allow_shadowing(false);
    result
}

struct FilteredLookup;

impl HasData for FilteredLookup {
    type Data<'a> = FilteredView<'a>;
}

pub(crate) struct FilteredView<'a> {
    grant: Arc<NetGrant>,
    sockets: WasiSocketsCtxView<'a>,
}

impl Host for FilteredView<'_> {
    fn resolve_addresses(
        &mut self,
        network: Resource<Network>,
        name: String,
    ) -> Result<Resource<ResolveAddressStream>, SocketError> {
        if !self.grant.may_resolve(&name) {
            return Err(ErrorCode::PermanentResolverFailure.into());
        }
        Host::resolve_addresses(&mut self.sockets, network, name)
    }
}

/// The error conversions the generated bindings need, unchanged.
impl network::Host for FilteredView<'_> {
    fn convert_error_code(&mut self, error: SocketError) -> wasmtime::Result<ErrorCode> {
        network::Host::convert_error_code(&mut self.sockets, error)
    }

    fn network_error_code(&mut self, error: Resource<IoError>) -> wasmtime::Result<Option<ErrorCode>> {
        network::Host::network_error_code(&mut self.sockets, error)
    }
}

impl network::HostNetwork for FilteredView<'_> {
    fn drop(&mut self, network: Resource<Network>) -> wasmtime::Result<()> {
        network::HostNetwork::drop(&mut self.sockets, network)
    }
}

impl HostResolveAddressStream for FilteredView<'_> {
    fn resolve_next_address(
        &mut self,
        stream: Resource<ResolveAddressStream>,
    ) -> Result<Option<IpAddress>, SocketError> {
        self.sockets.resolve_next_address(stream)
    }

    fn subscribe(&mut self, stream: Resource<ResolveAddressStream>) -> wasmtime::Result<Resource<DynPollable>> {
        HostResolveAddressStream::subscribe(&mut self.sockets, stream)
    }

    fn drop(&mut self, stream: Resource<ResolveAddressStream>) -> wasmtime::Result<()> {
        HostResolveAddressStream::drop(&mut self.sockets, stream)
    }
}
