//! The CPU time a process has run, every thread counted, from `/proc/PID/task/TID/schedstat` (the nanoseconds
//! the scheduler ran each thread; `/proc/PID/stat` counts 10 ms ticks instead). Read before and after a load, it
//! tells what the requests cost inside the server's workers: the study's "CPU time per request". A thread that
//! exits between the two reads takes its time with it; a worker's request thread lives as long as the worker.

use std::time::Duration;

/// The CPU time `pid` has run so far; `None` when it is gone or its threads cannot be read.
pub fn of(pid: i32) -> Option<Duration> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut nanos: u64 = 0;
    for task in tasks {
        let path = task.ok()?.path().join("schedstat");
        let text = std::fs::read_to_string(path).ok()?;
        nanos += text.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(Duration::from_nanos(nanos))
}

/// The CPU time of several processes together; `None` if any of them cannot be read.
pub fn total(pids: &[i32]) -> Option<Duration> {
    pids.iter().map(|&pid| of(pid)).sum()
}
