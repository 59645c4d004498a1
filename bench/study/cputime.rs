//! The CPU time of a worker's request thread, from `/proc/PID/schedstat` (the nanoseconds the scheduler ran the
//! process's main thread; `/proc/PID/stat` counts 10 ms ticks instead). Read before and after a load, it tells
//! what the requests cost inside the server: the study's "CPU time per request". Both servers run the request on
//! the worker's main thread; wasmcorn's worker also has an epoch-ticker thread (about 3 ms of CPU per second,
//! busy or idle), which is not counted: it is not what a request costs, and the CPU it takes shows as a loss.

use std::time::Duration;

/// The CPU time the main thread of `pid` has run so far; `None` when the process is gone.
pub(crate) fn of(pid: i32) -> Option<Duration> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/schedstat")).ok()?;
    let nanos = text.split_whitespace().next()?.parse::<u64>().ok()?;
    Some(Duration::from_nanos(nanos))
}

/// The CPU time of several processes together; `None` if any of them cannot be read.
pub(crate) fn total(pids: &[i32]) -> Option<Duration> {
    pids.iter().map(|&pid| of(pid)).sum()
}

/// The CPU time spent between two readings of `total`; `None` if either failed or no time passed.
pub(crate) fn spent(before: Option<Duration>, after: Option<Duration>) -> Option<Duration> {
    match (before, after) {
        (Some(before), Some(after)) if after > before => Some(after - before),
        _ => None,
    }
}
