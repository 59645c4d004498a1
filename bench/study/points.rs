//! One point of the study: a server with N workers under one workload, started fresh, measured idle, loaded by
//! `hey`, measured again, stopped. Also the server set-ups ("contenders") the points are run for, and how many
//! requests a point sends.
//!
//! The ideal of a point that computes (CPU, blend) takes the CPU time per request measured inside the workers
//! during that very load (the CPU time of their request threads over the requests served): what a request
//! costs on this machine at that minute, under hey's connections. The ratio to the ideal then says how much of
//! the cores the sync workers turned into requests, and not how far the CPU's speed drifted since the
//! calibration. An IO point's ideal is workers / IO seconds, as the study defines it.

use std::fmt;
use std::thread::sleep;
use std::time::Duration;

use serde::Serialize;

use crate::cputime;
use crate::load::{LoadSpec, run_hey};
use crate::memory::{Memory, Role, Snapshot};
use crate::server::{Launchers, Server, ServerKind, ServerSpec};
use crate::workload::{self, RequestCosts, Workload};

/// How long a freshly started server is left alone before its idle memory is read.
const SETTLE: Duration = Duration::from_millis(500);
/// Every worker serves at least this many requests in a point. All workers start together, so the first round
/// is the costliest of an IO point (every worker opens its PostgreSQL connection in the same millisecond, and
/// the postmaster forks their backends one after the other); ten rounds keep it from weighing on the result.
const MIN_ROUNDS: usize = 10;
/// A point lasts at least this long at its ideal: a short CPU point ends unevenly (one worker finishes its last
/// request while the other core is already idle) and that tail would weigh on it.
const MIN_SECONDS: f64 = 3.0;

/// How a server does the IO part of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IoMode {
    /// `SELECT pg_sleep(x)` on the study's PostgreSQL, a connection per request.
    PgSleep,
    /// A sleep on the clock (wasmcorn: a WASI clock sleep; Gunicorn: `time.sleep`).
    ClockSleep,
}

impl fmt::Display for IoMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IoMode::PgSleep => "pg_sleep",
            IoMode::ClockSleep => "clock sleep",
        })
    }
}

/// A server as the study runs it: what its requests cost and how it does IO.
#[derive(Debug, Clone)]
pub(crate) struct Contender {
    pub kind: ServerKind,
    pub costs: RequestCosts,
    pub io_mode: IoMode,
    /// Added to the app's environment (DATABASE_URL).
    pub env: Vec<(String, String)>,
    /// Added to the server's flags (wasmcorn's --allow-net).
    pub extra_args: Vec<String>,
}

impl Contender {
    pub(crate) fn spec(&self, workload: Workload, workers: usize, label: String) -> ServerSpec {
        let mut env = vec![
            ("IO_BOUND".to_string(), workload.io_percent().to_string()),
            ("CPU_BOUND".to_string(), workload.cpu_percent().to_string()),
            ("IO_SECONDS".to_string(), self.costs.io_seconds.to_string()),
            ("ITERATIONS".to_string(), self.costs.iterations.to_string()),
        ];
        // Every workload gets the database settings, CPU 100 % too: the seed's app imports psycopg2 and holds its
        // connection settings whatever the mix, and a worker's memory should be measured with them.
        env.extend(self.env.iter().cloned());
        let (io, cpu) = workload.parts(&self.costs);
        ServerSpec {
            kind: self.kind,
            workers,
            env,
            extra_args: self.extra_args.clone(),
            request_seconds: io + cpu,
            label,
        }
    }
}

/// One row of `points.csv`. Memory in KiB; worker memory is the mean over the workers.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Point {
    pub server: ServerKind,
    pub workload: Workload,
    pub workers: usize,
    pub io_mode: String,
    pub io_seconds: f64,
    /// The CPU time of a lone request at `CPU_BOUND=100`, from the calibration.
    pub cpu_seconds: f64,
    pub iterations: u64,
    /// The requests hey sent, and its clients.
    pub requests: usize,
    pub concurrency: usize,
    pub succeeded: usize,
    pub failed: usize,
    pub elapsed_s: f64,
    pub requests_per_second: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    /// The workers' CPU time over the load divided by the requests served (0 if it could not be read).
    pub worker_cpu_ms_per_request: f64,
    /// The parts of one request of this workload the ideal is computed from: IO seconds, and CPU seconds (measured
    /// in this load when the workload computes, the calibrated share otherwise).
    pub io_part_s: f64,
    pub cpu_part_s: f64,
    pub ideal_requests_per_second: f64,
    pub ratio_to_ideal: f64,
    pub arbiter_pss_idle_kib: u64,
    pub arbiter_pss_loaded_kib: u64,
    pub worker_uss_idle_kib: u64,
    pub worker_pss_idle_kib: u64,
    pub worker_rss_idle_kib: u64,
    pub worker_uss_loaded_kib: u64,
    pub worker_pss_loaded_kib: u64,
    pub worker_rss_loaded_kib: u64,
}

/// One row of `memory.csv`: one process at one moment, as `smem` lists it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct MemoryRow {
    pub server: ServerKind,
    pub workload: Workload,
    pub workers: usize,
    pub phase: &'static str,
    pub role: Role,
    pub pid: i32,
    pub uss_kib: u64,
    pub pss_kib: u64,
    pub rss_kib: u64,
}

/// The load settings shared by every point.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LoadShape {
    /// At least this many requests per point.
    pub requests: usize,
    /// hey's clients, at most `requests`.
    pub concurrency: usize,
    pub cores: usize,
}

impl LoadShape {
    /// The requests and hey clients of a point with `workers` workers whose ideal throughput is about `ideal`:
    /// at least `requests`, `MIN_ROUNDS` per worker and `MIN_SECONDS` of load, in whole rounds. A last round that
    /// only some workers serve would leave the others idle and measure the batch, not the server; and hey sends
    /// requests/concurrency per client, so the count is a multiple of both.
    pub(crate) fn requests_for(&self, workers: usize, ideal: f64) -> (usize, usize) {
        let concurrency = self.concurrency.min(self.requests).max(1);
        let round = lcm(workers, concurrency);
        let by_time = if ideal.is_finite() { (ideal * MIN_SECONDS).ceil() as usize } else { 0 };
        let wanted = self.requests.max(MIN_ROUNDS * workers).max(by_time);
        (wanted.div_ceil(round) * round, concurrency)
    }
}

/// Runs one point and returns its row and the memory of each process.
pub(crate) fn run_point(
    contender: &Contender,
    workload: Workload,
    workers: usize,
    shape: LoadShape,
    launchers: &Launchers,
) -> anyhow::Result<(Point, Vec<MemoryRow>)> {
    let label = format!("{workload:?}-w{workers}").to_lowercase();
    let spec = contender.spec(workload, workers, label.clone());
    let expected = workload.ideal_throughput(workers, shape.cores, &contender.costs);
    let (requests, concurrency) = shape.requests_for(workers, expected);
    let mut server = Server::start(&spec, launchers)?;
    sleep(SETTLE);
    let worker_pids = server.workers();
    let idle = Snapshot::take(server.arbiter_pid(), &worker_pids);
    let cpu_before = cputime::total(&worker_pids);
    // Generous bounds: five times the ideal duration, plus a minute.
    let limit = Duration::from_secs_f64(requests as f64 / expected * 5.0 + 60.0);
    let load = LoadSpec {
        url: server.url(),
        requests,
        concurrency,
        request_timeout: limit,
        limit,
        output: launchers.log_dir.join(format!("{}-{label}.hey.csv", contender.kind)),
    };
    let result = run_hey(&load)?;
    // A worker replaced during the load would take its CPU time with it: then the time is not known.
    let cpu_after = if server.workers() == worker_pids { cputime::total(&worker_pids) } else { None };
    let loaded = Snapshot::take(server.arbiter_pid(), &worker_pids);
    server.stop();
    let cpu_per_request = cputime::spent(cpu_before, cpu_after)
        .filter(|_| result.succeeded > 0)
        .map(|spent| spent.as_secs_f64() / result.succeeded as f64);
    let (io_part, lone_cpu_part) = workload.parts(&contender.costs);
    let cpu_part = if lone_cpu_part > 0.0 { cpu_per_request.unwrap_or(lone_cpu_part) } else { 0.0 };
    let ideal = workload::ideal(workers, shape.cores, io_part, cpu_part);

    let mut rows = Vec::new();
    for (phase, snapshot) in [("idle", &idle), ("loaded", &loaded)] {
        let row = |role, pid, memory: Memory| MemoryRow {
            server: contender.kind,
            workload,
            workers,
            phase,
            role,
            pid,
            uss_kib: memory.uss_kib,
            pss_kib: memory.pss_kib,
            rss_kib: memory.rss_kib,
        };
        rows.push(row(Role::Arbiter, snapshot.arbiter_pid, snapshot.arbiter));
        rows.extend(snapshot.workers.iter().map(|&(pid, memory)| row(Role::Worker, pid, memory)));
    }
    let (idle_workers, loaded_workers) = (idle.worker_mean(), loaded.worker_mean());
    let point = Point {
        server: contender.kind,
        workload,
        workers,
        io_mode: contender.io_mode.to_string(),
        io_seconds: contender.costs.io_seconds,
        cpu_seconds: contender.costs.cpu_seconds,
        iterations: contender.costs.iterations,
        requests,
        concurrency,
        succeeded: result.succeeded,
        failed: result.failed,
        elapsed_s: result.elapsed_seconds,
        requests_per_second: result.requests_per_second,
        p50_ms: result.p50_ms,
        p90_ms: result.p90_ms,
        p99_ms: result.p99_ms,
        worker_cpu_ms_per_request: cpu_per_request.map_or(0.0, |seconds| seconds * 1000.0),
        io_part_s: io_part,
        cpu_part_s: cpu_part,
        ideal_requests_per_second: ideal,
        ratio_to_ideal: result.requests_per_second / ideal,
        arbiter_pss_idle_kib: idle.arbiter.pss_kib,
        arbiter_pss_loaded_kib: loaded.arbiter.pss_kib,
        worker_uss_idle_kib: idle_workers.uss_kib,
        worker_pss_idle_kib: idle_workers.pss_kib,
        worker_rss_idle_kib: idle_workers.rss_kib,
        worker_uss_loaded_kib: loaded_workers.uss_kib,
        worker_pss_loaded_kib: loaded_workers.pss_kib,
        worker_rss_loaded_kib: loaded_workers.rss_kib,
    };
    Ok((point, rows))
}

fn lcm(a: usize, b: usize) -> usize {
    let (mut x, mut y) = (a, b);
    while y != 0 {
        (x, y) = (y, x % y);
    }
    a / x * b
}
