//! The seam between a guest instance and whatever moves a request's bytes: the worker implements it over the
//! client's connection, benchmarks in memory.

use std::time::Duration;

use super::deadline::Deadline;

/// A response's header fields as a guest sets them: each name, and its value as the bytes that go on the wire (a
/// `wasmcorn:app` guest's string in UTF-8; a `wasi:http` guest's field value as it gave it).
pub type ResponseHeaders = Vec<(String, Vec<u8>)>;

/// What one request's instance cost, told to the exchange once the guest is done (for the metrics).
#[derive(Debug, Clone, Copy, Default)]
pub struct InstanceReport {
    /// How long creating the instance took; `None` when the request ran in an instance kept from an earlier one.
    pub created_in: Option<Duration>,
    /// The guest asked for more linear memory than it may have.
    pub memory_refused: bool,
}

/// What a request's guest instance uses to read the request body and answer. The worker implements it over
/// the client's connection; benchmarks implement it in memory.
pub trait Exchange: Send + 'static {
    /// The guest starts, with `Some(deadline)`, or has finished (`None`). While it runs, a wait for the client
    /// should end at the deadline, and the time spent moving the client's bytes should be given back to it
    /// (`Deadline::extend`). A read or write cut short by the deadline makes the guest's call a guest timeout.
    fn guest_deadline(&mut self, _deadline: Option<Deadline>) {}
    /// Up to `max` bytes of the request body; empty at its end.
    fn read_body(&mut self, max: usize) -> Result<Vec<u8>, String>;
    /// The guest's `start-response`.
    fn start_response(&mut self, status: &str, headers: ResponseHeaders) -> Result<(), String>;
    /// The guest's `write-body`.
    fn write_body(&mut self, chunk: &[u8]) -> Result<(), String>;
    /// Whether the request failed on this side even though the guest's handler returned `ok`: a malformed
    /// body, a response that broke the contract, a client gone. An instance kept for reuse is then dropped.
    fn request_failed(&self) -> bool {
        false
    }

    /// The request as a standard `wasi:http` guest receives it; `None` where the exchange cannot tell it (a
    /// `wasi:http` guest then fails the request).
    fn proxy_head(&self) -> Option<ProxyHead> {
        None
    }

    /// What the request's instance cost, once the guest is done.
    fn instance_report(&mut self, _report: InstanceReport) {}
}

/// A request's head as a `wasi:http` guest sees it: the whole target (a `wasi:http` guest has no mount point),
/// the scheme the client used, the authority it asked for, and every header as received.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProxyHead {
    pub method: String,
    /// `http` or `https`.
    pub scheme: String,
    pub authority: String,
    /// The path and query as sent (origin-form), `*`, or the path and query of an absolute-form target.
    pub path_with_query: String,
    /// Names as sent, values as received (Latin-1 decoded, so each char is one byte).
    pub headers: Vec<(String, String)>,
}
