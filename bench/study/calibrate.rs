//! What one CPU request costs on each server when it is alone: the CPU time the worker spends on a request at
//! `CPU_BOUND=100` (the median of a few, read from the worker's request thread as the load points read it), and
//! `--calibrate SECONDS`, which searches the `ITERATIONS` that make that time the target, as the original study
//! tuned its loop "to burn up 1 second on my machine". The ideal of a CPU point uses the CPU time measured in
//! that point's own load (see `points`): this machine's CPU speed drifts by several percent from minute to
//! minute, so a cost measured minutes earlier would make the ratio to the ideal measure the drift.

use std::time::Duration;

use anyhow::bail;

use crate::cputime;
use crate::server::{Launchers, Server, ServerKind, ServerSpec, timed_request};

/// The study's loop count, where a calibration starts.
pub(crate) const STUDY_ITERATIONS: u64 = 5_000_000;
/// Timed requests per measurement, after one warm-up request; the median counts.
const SAMPLES: usize = 5;
/// A calibration is done once within this fraction of the target.
const TOLERANCE: f64 = 0.05;
const MAX_ROUNDS: usize = 5;

/// The median CPU time the worker spends on a lone CPU request with `iterations` rounds, on one worker of `kind`
/// (the request's wall time where the worker's CPU time cannot be read).
pub(crate) fn cpu_seconds(kind: ServerKind, iterations: u64, launchers: &Launchers) -> anyhow::Result<f64> {
    let spec = ServerSpec {
        kind,
        workers: 1,
        env: vec![
            ("IO_BOUND".into(), "0".into()),
            ("CPU_BOUND".into(), "100".into()),
            ("ITERATIONS".into(), iterations.to_string()),
        ],
        extra_args: Vec::new(),
        request_seconds: 60.0,
        label: format!("calibrate-{iterations}"),
    };
    let mut server = Server::start(&spec, launchers)?;
    let workers = server.workers();
    let limit = Duration::from_secs(120);
    let mut times = Vec::with_capacity(SAMPLES);
    for sample in 0..=SAMPLES {
        let before = cputime::total(&workers);
        let (status, elapsed) = timed_request(server.port, limit)?;
        if !(200..300).contains(&status) {
            bail!("{kind} answered {status} to a CPU request (log: {})", server.log_path().display());
        }
        let spent = cputime::spent(before, cputime::total(&workers)).unwrap_or(elapsed);
        if sample > 0 {
            times.push(spent.as_secs_f64());
        }
    }
    server.stop();
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

/// The iterations that make a lone CPU request on `kind` take about `target` seconds, and the time measured
/// with them.
pub(crate) fn calibrate(kind: ServerKind, target: f64, launchers: &Launchers) -> anyhow::Result<(u64, f64)> {
    let mut iterations = STUDY_ITERATIONS;
    let mut seconds = cpu_seconds(kind, iterations, launchers)?;
    for _ in 1..MAX_ROUNDS {
        eprintln!("study: {kind}: {iterations} iterations take {seconds:.3} s (target {target} s)");
        if (seconds - target).abs() <= target * TOLERANCE {
            break;
        }
        // The loop's time is linear in its count; the clamp keeps one odd sample from running away.
        let scale = (target / seconds.max(1e-4)).clamp(0.01, 100.0);
        iterations = ((iterations as f64 * scale).round() as u64).max(1);
        seconds = cpu_seconds(kind, iterations, launchers)?;
    }
    Ok((iterations, seconds))
}
