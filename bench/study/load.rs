//! Drives a server with `hey` (as the original study did) and reads its per-request CSV (`hey -o csv`): exact
//! throughput and latency percentiles instead of the rounded summary.

use std::fs::File;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use nix::sys::signal::Signal;
use serde::Deserialize;

use crate::process::Spawned;

/// One load run.
#[derive(Debug, Clone)]
pub(crate) struct LoadSpec {
    pub url: String,
    pub requests: usize,
    pub concurrency: usize,
    /// hey's per-request timeout.
    pub request_timeout: Duration,
    /// The whole run is stopped past this.
    pub limit: Duration,
    /// Where hey's CSV is kept.
    pub output: PathBuf,
}

/// What a load run measured.
#[derive(Debug, Clone, Default)]
pub(crate) struct LoadResult {
    /// Requests that got a 2xx answer.
    pub succeeded: usize,
    /// Requests that got another status or no answer at all.
    pub failed: usize,
    /// From the first request sent to the last answer received.
    pub elapsed_seconds: f64,
    pub requests_per_second: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
}

/// One row of `hey -o csv`; times in seconds.
#[derive(Debug, Deserialize)]
struct HeyRow {
    #[serde(rename = "response-time")]
    response_time: f64,
    #[serde(rename = "status-code")]
    status_code: u16,
    /// When the request started, from the start of the run.
    offset: f64,
}

pub(crate) fn run_hey(spec: &LoadSpec) -> anyhow::Result<LoadResult> {
    let output = File::create(&spec.output).with_context(|| format!("cannot create {}", spec.output.display()))?;
    let mut command = Command::new("hey");
    command
        .args(["-n", &spec.requests.to_string(), "-c", &spec.concurrency.to_string()])
        .args(["-t", &spec.request_timeout.as_secs().max(1).to_string(), "-disable-keepalive", "-o", "csv"])
        .arg(&spec.url)
        .stdin(Stdio::null())
        .stdout(output);
    let mut hey = Spawned::start(command, "hey", Signal::SIGINT, Duration::from_secs(5))?;
    if !hey.wait_bounded(spec.limit)? {
        bail!("hey failed (output: {})", spec.output.display());
    }
    let rows = read_rows(spec)?;
    Ok(summarise(&rows, spec.requests))
}

fn read_rows(spec: &LoadSpec) -> anyhow::Result<Vec<HeyRow>> {
    let mut reader =
        csv::Reader::from_path(&spec.output).with_context(|| format!("cannot read {}", spec.output.display()))?;
    reader
        .deserialize()
        .collect::<Result<Vec<HeyRow>, _>>()
        .with_context(|| format!("unexpected hey output in {}", spec.output.display()))
}

/// hey lists only the requests that got an answer; the others count as failed.
fn summarise(rows: &[HeyRow], requested: usize) -> LoadResult {
    let succeeded = rows.iter().filter(|row| (200..300).contains(&row.status_code)).count();
    let first = rows.iter().map(|row| row.offset).fold(f64::INFINITY, f64::min);
    let last = rows.iter().map(|row| row.offset + row.response_time).fold(0.0, f64::max);
    let elapsed_seconds = if rows.is_empty() { 0.0 } else { last - first.min(last) };
    let mut latencies: Vec<f64> = rows.iter().map(|row| row.response_time * 1000.0).collect();
    latencies.sort_by(f64::total_cmp);
    LoadResult {
        succeeded,
        failed: requested.saturating_sub(succeeded),
        elapsed_seconds,
        requests_per_second: if elapsed_seconds > 0.0 { succeeded as f64 / elapsed_seconds } else { 0.0 },
        p50_ms: percentile(&latencies, 50.0),
        p90_ms: percentile(&latencies, 90.0),
        p99_ms: percentile(&latencies, 99.0),
    }
}

/// Nearest-rank percentile of sorted values (0 for none).
fn percentile(sorted: &[f64], percent: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (percent / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}
