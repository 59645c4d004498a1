//! The study's three workloads and the throughput each would reach on ideal hardware: IO waits in parallel
//! across workers, CPU work is limited by the cores.

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Workload {
    /// 100 % IO: the request waits on the database (or a clock sleep).
    Io,
    /// 100 % CPU: the request runs the study's arithmetic loop.
    Cpu,
    /// 90 % IO, 10 % CPU.
    Blend,
}

impl Workload {
    pub(crate) const ALL: [Workload; 3] = [Workload::Io, Workload::Cpu, Workload::Blend];

    pub(crate) fn io_percent(self) -> u32 {
        match self {
            Workload::Io => 100,
            Workload::Cpu => 0,
            Workload::Blend => 90,
        }
    }

    pub(crate) fn cpu_percent(self) -> u32 {
        100 - self.io_percent()
    }

    /// How the chart and the report name it.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Workload::Io => "IO 100 %",
            Workload::Cpu => "CPU 100 %",
            Workload::Blend => "IO 90 / CPU 10",
        }
    }

    /// Seconds of IO and of CPU one request of this workload takes, given the full-size parts.
    pub(crate) fn parts(self, costs: &RequestCosts) -> (f64, f64) {
        let io = costs.io_seconds * f64::from(self.io_percent()) / 100.0;
        let cpu = costs.cpu_seconds * f64::from(self.cpu_percent()) / 100.0;
        (io, cpu)
    }

    /// Requests per second with `workers` sync workers on `cores` cores if nothing else cost anything: each
    /// worker serves one request of io + cpu seconds at a time, and at most `cores` CPU parts run at once.
    pub(crate) fn ideal_throughput(self, workers: usize, cores: usize, costs: &RequestCosts) -> f64 {
        let (io, cpu) = self.parts(costs);
        ideal(workers, cores, io, cpu)
    }
}

/// The ideal throughput of sync workers whose requests each wait `io` seconds and compute `cpu` seconds:
/// min(workers / (io + cpu), cores / cpu).
pub(crate) fn ideal(workers: usize, cores: usize, io: f64, cpu: f64) -> f64 {
    let by_workers = workers as f64 / (io + cpu);
    let by_cores = if cpu > 0.0 { cores as f64 / cpu } else { f64::INFINITY };
    by_workers.min(by_cores)
}

/// What a full-size request costs on one server: `IO_SECONDS` of waiting, and the CPU time one request at
/// `CPU_BOUND=100` takes alone (measured, or calibrated to a target). The ideal of a point that computes uses
/// the CPU time measured in its own load instead; this one sizes the loads.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RequestCosts {
    pub io_seconds: f64,
    pub cpu_seconds: f64,
    pub iterations: u64,
}
