//! `wasi:io/poll` and `wasi:io/streams` as wasmcorn offers them: wasmtime-wasi's own implementation, except that
//! every call that waits (`poll`, `pollable.block`, and the streams' `blocking-*` calls) waits at most until the
//! request's guest deadline. Epochs do not interrupt a guest blocked in a host call, so without this a guest's
//! sleep, socket read or `poll` could hold its worker far past `--guest-timeout`. A wait cut short by the deadline
//! traps with `GuestTimeout`, which the runtime reports as a guest timeout. The calls that do not wait are
//! wasmtime-wasi's, unchanged.

use std::future::Future;
use std::time::Duration;

use wasmtime::component::{HasData, Linker, Resource, ResourceTable};
use wasmtime_wasi::p2::bindings::sync::io::{poll, streams};
use wasmtime_wasi::p2::{DynPollable, StreamError, StreamResult};
use wasmtime_wasi::runtime::in_tokio;
use wasmtime_wasi_io::bindings::wasi::io::poll as async_poll;
use wasmtime_wasi_io::bindings::wasi::io::streams::{
    HostInputStream as AsyncInputStream, HostOutputStream as AsyncOutputStream,
};
use wasmtime_wasi_io::streams::{DynInputStream, DynOutputStream};

use super::deadline::{Deadline, GuestTimeout};

/// A request's state as the bounded WASI I/O sees it.
pub(crate) trait DeadlineView: Send + 'static {
    fn bounded_io(&mut self) -> BoundedIo<'_>;
}

/// The resource table of a request and its deadline.
pub(crate) struct BoundedIo<'a> {
    pub table: &'a mut ResourceTable,
    pub deadline: &'a Deadline,
}

struct BoundedIoData;

impl HasData for BoundedIoData {
    type Data<'a> = BoundedIo<'a>;
}

/// Replaces the `wasi:io/poll` and `wasi:io/streams` that `wasmtime_wasi::p2::add_to_linker_sync` linked with
/// the bounded ones.
pub(crate) fn add_to_linker<T: DeadlineView>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let result = poll::add_to_linker::<T, BoundedIoData>(linker, T::bounded_io)
        .and_then(|()| streams::add_to_linker::<T, BoundedIoData>(linker, T::bounded_io));
    linker.allow_shadowing(false);
    result
}

/// Builds the tokio runtime `in_tokio` uses (wasmtime-wasi's ambient one) now: call it in a worker, after the fork
/// and once its signals are blocked (the runtime's threads inherit the mask). Built at a guest's first wait, as it
/// otherwise is, it panicked when the worker had no descriptor left, and the worker aborted with every connection
/// it held.
pub(crate) fn start_ambient_runtime() {
    in_tokio(async {});
}

/// Runs `future` (one of wasmtime-wasi's waits) for at most `remaining`.
fn within<R>(remaining: Duration, call: &'static str, future: impl Future<Output = R>) -> Result<R, GuestTimeout> {
    // The timer is made inside the runtime that `in_tokio` enters: tokio's timers need one.
    in_tokio(async move { tokio::time::timeout(remaining, future).await }).map_err(|_| GuestTimeout { call })
}

fn stream_trap(timeout: GuestTimeout) -> StreamError {
    StreamError::Trap(wasmtime::Error::new(timeout))
}

impl poll::Host for BoundedIo<'_> {
    fn poll(&mut self, pollables: Vec<Resource<DynPollable>>) -> wasmtime::Result<Vec<u32>> {
        let remaining = self.deadline.remaining();
        within(remaining, "wasi:io/poll.poll", async_poll::Host::poll(&mut *self.table, pollables))?
    }
}

impl poll::HostPollable for BoundedIo<'_> {
    fn ready(&mut self, pollable: Resource<DynPollable>) -> wasmtime::Result<bool> {
        poll::HostPollable::ready(&mut *self.table, pollable)
    }

    fn block(&mut self, pollable: Resource<DynPollable>) -> wasmtime::Result<()> {
        let remaining = self.deadline.remaining();
        within(remaining, "wasi:io/poll.pollable.block", async_poll::HostPollable::block(&mut *self.table, pollable))?
    }

    fn drop(&mut self, pollable: Resource<DynPollable>) -> wasmtime::Result<()> {
        poll::HostPollable::drop(&mut *self.table, pollable)
    }
}

impl streams::Host for BoundedIo<'_> {
    fn convert_stream_error(&mut self, err: StreamError) -> wasmtime::Result<streams::StreamError> {
        streams::Host::convert_stream_error(&mut *self.table, err)
    }
}

impl streams::HostOutputStream for BoundedIo<'_> {
    fn drop(&mut self, stream: Resource<DynOutputStream>) -> wasmtime::Result<()> {
        streams::HostOutputStream::drop(&mut *self.table, stream)
    }

    fn check_write(&mut self, stream: Resource<DynOutputStream>) -> StreamResult<u64> {
        streams::HostOutputStream::check_write(&mut *self.table, stream)
    }

    fn write(&mut self, stream: Resource<DynOutputStream>, bytes: Vec<u8>) -> StreamResult<()> {
        streams::HostOutputStream::write(&mut *self.table, stream, bytes)
    }

    fn blocking_write_and_flush(&mut self, stream: Resource<DynOutputStream>, bytes: Vec<u8>) -> StreamResult<()> {
        let remaining = self.deadline.remaining();
        let call = "wasi:io/streams.output-stream.blocking-write-and-flush";
        within(remaining, call, AsyncOutputStream::blocking_write_and_flush(&mut *self.table, stream, bytes))
            .map_err(stream_trap)?
    }

    fn blocking_write_zeroes_and_flush(&mut self, stream: Resource<DynOutputStream>, len: u64) -> StreamResult<()> {
        let remaining = self.deadline.remaining();
        let call = "wasi:io/streams.output-stream.blocking-write-zeroes-and-flush";
        within(remaining, call, AsyncOutputStream::blocking_write_zeroes_and_flush(&mut *self.table, stream, len))
            .map_err(stream_trap)?
    }

    fn subscribe(&mut self, stream: Resource<DynOutputStream>) -> wasmtime::Result<Resource<DynPollable>> {
        streams::HostOutputStream::subscribe(&mut *self.table, stream)
    }

    fn write_zeroes(&mut self, stream: Resource<DynOutputStream>, len: u64) -> StreamResult<()> {
        streams::HostOutputStream::write_zeroes(&mut *self.table, stream, len)
    }

    fn flush(&mut self, stream: Resource<DynOutputStream>) -> StreamResult<()> {
        streams::HostOutputStream::flush(&mut *self.table, stream)
    }

    fn blocking_flush(&mut self, stream: Resource<DynOutputStream>) -> StreamResult<()> {
        let remaining = self.deadline.remaining();
        let call = "wasi:io/streams.output-stream.blocking-flush";
        within(remaining, call, AsyncOutputStream::blocking_flush(&mut *self.table, stream)).map_err(stream_trap)?
    }

    fn splice(&mut self, dst: Resource<DynOutputStream>, src: Resource<DynInputStream>, len: u64) -> StreamResult<u64> {
        streams::HostOutputStream::splice(&mut *self.table, dst, src, len)
    }

    fn blocking_splice(
        &mut self,
        dst: Resource<DynOutputStream>,
        src: Resource<DynInputStream>,
        len: u64,
    ) -> StreamResult<u64> {
        let remaining = self.deadline.remaining();
        let call = "wasi:io/streams.output-stream.blocking-splice";
        within(remaining, call, AsyncOutputStream::blocking_splice(&mut *self.table, dst, src, len))
            .map_err(stream_trap)?
    }
}

impl streams::HostInputStream for BoundedIo<'_> {
    fn drop(&mut self, stream: Resource<DynInputStream>) -> wasmtime::Result<()> {
        streams::HostInputStream::drop(&mut *self.table, stream)
    }

    fn read(&mut self, stream: Resource<DynInputStream>, len: u64) -> StreamResult<Vec<u8>> {
        streams::HostInputStream::read(&mut *self.table, stream, len)
    }

    fn blocking_read(&mut self, stream: Resource<DynInputStream>, len: u64) -> StreamResult<Vec<u8>> {
        let remaining = self.deadline.remaining();
        let call = "wasi:io/streams.input-stream.blocking-read";
        within(remaining, call, AsyncInputStream::blocking_read(&mut *self.table, stream, len)).map_err(stream_trap)?
    }

    fn skip(&mut self, stream: Resource<DynInputStream>, len: u64) -> StreamResult<u64> {
        streams::HostInputStream::skip(&mut *self.table, stream, len)
    }

    fn blocking_skip(&mut self, stream: Resource<DynInputStream>, len: u64) -> StreamResult<u64> {
        let remaining = self.deadline.remaining();
        let call = "wasi:io/streams.input-stream.blocking-skip";
        within(remaining, call, AsyncInputStream::blocking_skip(&mut *self.table, stream, len)).map_err(stream_trap)?
    }

    fn subscribe(&mut self, stream: Resource<DynInputStream>) -> wasmtime::Result<Resource<DynPollable>> {
        streams::HostInputStream::subscribe(&mut *self.table, stream)
    }
}
