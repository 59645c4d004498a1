//! The seam between a guest instance and whatever moves a request's bytes: the worker implements it over the
//! client's connection, benchmarks in memory.

use std::time::Duration;

use super::deadline::Deadline;

/// What one request's instance cost, told to the exchange once the guest is done (for the metrics).
#[derive(Debug, Clone, Copy, Default)]
pub struct InstanceReport {
    /// How long creating the instance took.
    pub created_in: Duration,
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
    fn start_response(&mut self, status: &str, headers: Vec<(String, String)>) -> Result<(), String>;
    /// The guest's `write-body`.
    fn write_body(&mut self, chunk: &[u8]) -> Result<(), String>;
    /// What the request's instance cost, once the guest is done.
    fn instance_report(&mut self, _report: InstanceReport) {}
}
