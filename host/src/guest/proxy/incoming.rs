//! The guest's incoming request, built from the head the worker parsed, with a body that reads through the
//! exchange: the worker's body reader (its limit, chunked decoding, `100 Continue`, the client timeout) does the
//! reading, a chunk at a time, when the guest asks for it.

use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use anyhow::Context as _;
use bytes::Bytes;
use http_body::{Body, Frame};
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;

use crate::guest::exchange::{Exchange, ProxyHead};

/// The most bytes one read of the request body asks the exchange for.
const READ_CHUNK: usize = 64 * 1024;

/// The request's exchange, shared by the guest's request body (inside the store) and the response drain (outside
/// it). One thread uses both, one after the other: the lock is never contended nor held across a wait.
pub(super) type SharedExchange<E> = Arc<Mutex<Option<E>>>;

/// Runs `action` on the shared exchange; `None` once it was taken back.
pub(super) fn with_exchange<E, R>(shared: &SharedExchange<E>, action: impl FnOnce(&mut E) -> R) -> Option<R> {
    let mut guard = shared.lock().unwrap_or_else(PoisonError::into_inner);
    guard.as_mut().map(action)
}

/// The scheme and the request a `wasi:http` guest receives for `head`, its body read through `exchange`.
pub(super) fn request<E: Exchange>(
    head: &ProxyHead,
    exchange: SharedExchange<E>,
) -> anyhow::Result<(Scheme, http::Request<ExchangeBody<E>>)> {
    let scheme = if head.scheme == "https" { Scheme::Https } else { Scheme::Http };
    let uri = http::Uri::builder()
        .scheme(head.scheme.as_str())
        .authority(head.authority.as_str())
        .path_and_query(head.path_with_query.as_str())
        .build()
        .with_context(|| {
            format!(
                "the request's authority {:?} or target {:?} is not a valid URI",
                head.authority, head.path_with_query
            )
        })?;
    let mut builder = http::Request::builder().method(head.method.as_str()).uri(uri);
    for (name, value) in &head.headers {
        // Values arrive Latin-1 decoded: each char is one byte of the original.
        let bytes: Vec<u8> = value.chars().map(|char| u8::try_from(u32::from(char)).unwrap_or(b'?')).collect();
        let value = http::HeaderValue::from_bytes(&bytes).with_context(|| format!("the value of header {name:?}"))?;
        builder = builder.header(name.as_str(), value);
    }
    let request = builder.body(ExchangeBody { exchange, done: false }).context("cannot build the request")?;
    Ok((scheme, request))
}

/// The request body as the guest reads it: each frame is one read of the exchange, done when asked.
pub(super) struct ExchangeBody<E> {
    exchange: SharedExchange<E>,
    done: bool,
}

impl<E: Exchange> Body for ExchangeBody<E> {
    type Data = Bytes;
    type Error = wasmtime_wasi_http::Error;

    fn poll_frame(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.done {
            return Poll::Ready(None);
        }
        let read = with_exchange(&self.exchange, |exchange| exchange.read_body(READ_CHUNK));
        let frame = match read {
            Some(Ok(bytes)) if !bytes.is_empty() => Some(Ok(Frame::data(Bytes::from(bytes)))),
            Some(Ok(_)) | None => None,
            Some(Err(message)) => Some(Err(wasmtime_wasi_http::Error::InternalError(Some(message)))),
        };
        if !matches!(frame, Some(Ok(_))) {
            self.done = true;
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }
}
