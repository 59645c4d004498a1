//! The study's command line (`cargo bench --bench study -- [OPTIONS]`) and the settings it resolves to: the
//! full mode reproduces the original study (1-second requests, 1 to 10 workers), `--quick` is a smoke run.

use std::path::PathBuf;

use anyhow::bail;
use clap::Parser;

use crate::guest::Guest;
use crate::workload::Workload;

/// Reproduces the "Gunicorn sync workers" study against wasmcorn: requests/s and latency by worker count for
/// IO-bound, CPU-bound and blended requests, memory per process, and the study's chart.
#[derive(Debug, Parser)]
#[command(name = "study")]
pub(crate) struct Options {
    /// Shorter CPU requests (0.1 s), fewer points and requests: a run of a few minutes.
    #[arg(long)]
    pub quick: bool,
    /// Run Gunicorn's sync workers with the study's Python app side by side, its IO through pg_sleep on a
    /// private PostgreSQL.
    #[arg(long)]
    pub with_gunicorn: bool,
    /// Worker counts, comma-separated [default: 1,2,3,4,6,8,10; with --quick: 1,2,4,8].
    #[arg(long, value_delimiter = ',')]
    pub workers: Option<Vec<usize>>,
    /// Workloads, comma-separated [default: io,cpu,blend].
    #[arg(long, value_delimiter = ',')]
    pub workloads: Option<Vec<Workload>>,
    /// Requests per point, at least; a point also sends whole rounds, at least 10 per worker and 3 s of load
    /// [default: 60; with --quick: 20].
    #[arg(long)]
    pub requests: Option<usize>,
    /// Concurrent clients (hey -c); at most the number of requests.
    #[arg(long, default_value_t = 30)]
    pub concurrency: usize,
    /// Seconds of IO of a request at IO_BOUND=100 [default: 1].
    #[arg(long)]
    pub io_seconds: Option<f64>,
    /// ITERATIONS of the CPU loop at CPU_BOUND=100, the same for every server (instead of calibrating).
    #[arg(long, conflicts_with = "calibrate")]
    pub iterations: Option<u64>,
    /// Find, for each server, the ITERATIONS that make one lone CPU request take this many seconds
    /// [default: 1; with --quick: 0.1].
    #[arg(long)]
    pub calibrate: Option<f64>,
    /// Output folder, relative to the workspace root [default: target/study].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// The wasmcorn binary, relative to the workspace root [default: built now by `cargo build -p wasmcorn` with
    /// this bench's profile: `--release` under `cargo bench`].
    #[arg(long)]
    pub wasmcorn: Option<PathBuf>,
    /// The guest wasmcorn serves: `rust` (sample:workload) or `python` (bench/gunicorn/workload.py, the same file
    /// Gunicorn serves, packaged with `wasmcorn build python`).
    #[arg(long, value_enum, default_value = "rust")]
    pub guest: Guest,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    pub bench: bool,
}

/// How the CPU part is sized.
#[derive(Debug, Clone, Copy)]
pub(crate) enum CpuSize {
    /// The same ITERATIONS for every server.
    Iterations(u64),
    /// Per server, the ITERATIONS that make a lone CPU request take this many seconds.
    Calibrate(f64),
}

/// The resolved settings of one study.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub quick: bool,
    pub with_gunicorn: bool,
    pub workers: Vec<usize>,
    pub workloads: Vec<Workload>,
    pub requests: usize,
    pub concurrency: usize,
    pub io_seconds: f64,
    pub cpu_size: CpuSize,
    pub out: PathBuf,
    pub wasmcorn: Option<PathBuf>,
    pub guest: Guest,
}

impl Options {
    pub(crate) fn resolve(self, workspace: &std::path::Path) -> anyhow::Result<Settings> {
        // Quick mode keeps the study's second of IO. Each request also opens a PostgreSQL connection: a backend
        // the postmaster forks (one after the other) and that starts up in about 5 ms of CPU. The workers end
        // their requests together, so 8 of them connect in the same millisecond and a round loses 16 to 24 ms on
        // 2 cores: 3 to 5 % of half a second, under 2.5 % of a second. Quick mode saves time on requests instead.
        let (workers, target, requests) =
            if self.quick { (vec![1, 2, 4, 8], 0.1, 20) } else { (vec![1, 2, 3, 4, 6, 8, 10], 1.0, 60) };
        let io_seconds = 1.0;
        let workers = self.workers.unwrap_or(workers);
        if workers.is_empty() || workers.iter().any(|&count| count == 0 || count > 64) {
            bail!("--workers takes counts from 1 to 64");
        }
        let requests = self.requests.unwrap_or(requests);
        if !(1..=100_000).contains(&requests) {
            bail!("--requests takes 1 to 100000");
        }
        if !(1..=1000).contains(&self.concurrency) {
            bail!("--concurrency takes 1 to 1000");
        }
        let io_seconds = self.io_seconds.unwrap_or(io_seconds);
        if !(0.001..=60.0).contains(&io_seconds) {
            bail!("--io-seconds takes 0.001 to 60");
        }
        let cpu_size = match (self.iterations, self.calibrate) {
            (Some(iterations), _) if iterations > 0 => CpuSize::Iterations(iterations),
            (Some(_), _) => bail!("--iterations must be positive"),
            (None, Some(seconds)) if (0.001..=60.0).contains(&seconds) => CpuSize::Calibrate(seconds),
            (None, Some(_)) => bail!("--calibrate takes 0.001 to 60 seconds"),
            (None, None) => CpuSize::Calibrate(target),
        };
        let mut workloads = self.workloads.unwrap_or_else(|| Workload::ALL.to_vec());
        workloads.dedup();
        Ok(Settings {
            quick: self.quick,
            with_gunicorn: self.with_gunicorn,
            workers,
            workloads,
            requests,
            concurrency: self.concurrency.min(requests),
            io_seconds,
            cpu_size,
            // cargo runs a bench in its package's folder, not where it was called: relative paths are taken from
            // the workspace root.
            out: workspace.join(self.out.unwrap_or_else(|| PathBuf::from("target/study"))),
            wasmcorn: self.wasmcorn.map(|path| workspace.join(path)),
            guest: self.guest,
        })
    }
}
