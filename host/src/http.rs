//! HTTP/1.1, one request at a time on a connection: bytes in, a parsed request out, a validated response back,
//! and whether the connection may carry the next request. No processes and no wasm here; the worker hands in a
//! stream that is `Read + Write`.

mod body;
mod chunk_size;
mod connection;
mod error;
mod framing;
mod head;
mod lines;
mod request;
mod response;
mod target;

// The benchmarks time `parse_head`: it and what it takes and gives are public; the rest is the crate's.
pub use crate::settings::HeadLimits;
pub(crate) use body::BodyReader;
pub(crate) use connection::Connection;
pub(crate) use error::HttpError;
pub use head::{Framing, Version};
pub(crate) use request::read_request_part;
pub use request::{Request, parse_head};
pub(crate) use response::{ResponseWriter, Sent, error_body_length, error_response};

/// Parses a complete request head, for tests elsewhere in the crate.
#[cfg(test)]
pub(crate) fn request_for_tests(head: &[u8]) -> Request {
    request::parse_head(head, &HeadLimits::default()).unwrap().unwrap().0
}
