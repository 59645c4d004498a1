//! The `workload` sample: the app of the study wasmcorn grew from (Gunicorn's sync workers measured on IO-bound,
//! CPU-bound and blended work).
//!
//! Environment (set with `wasmcorn serve --env KEY=VALUE`):
//! - `IO_BOUND`, `CPU_BOUND`: percentages that must sum to 100; otherwise every request fails with that reason,
//!   as the study's app refuses to load.
//! - `IO_SECONDS` (default 1.0): the IO part waits, without using CPU, for `IO_BOUND`% of this many seconds
//!   through a WASI clock sleep.
//! - `DATABASE_URL` (`postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE`): when set, the IO part is a
//!   `SELECT pg_sleep(seconds)` on that PostgreSQL server instead, over `wasi:sockets` (grant the address with
//!   `--allow-net HOST:PORT`). Authentication: trust, cleartext password or MD5.
//! - `ITERATIONS` (default 5,000,000): the CPU part runs `CPU_BOUND`% of this many rounds of the study's loop
//!   `work = (work + 7 + work/2) % 1000` on f64.
//!
//! Each request prints the study's line (`IO work: .., CPU work: .., time: .. seconds`) to stdout and answers
//! `204 No Content`.

wit_bindgen::generate!({ path: "../../wit", world: "app" });

mod postgres;

use std::hint::black_box;
use std::time::{Duration, Instant};

use wasmcorn::app::response::start_response;

/// The workload's settings, read from the guest's environment.
struct Workload {
    io_percent: u32,
    cpu_percent: u32,
    io_seconds: f64,
    iterations: f64,
    /// Where the IO part waits, when not on a local clock.
    database_url: Option<String>,
}

impl Workload {
    fn from_env() -> Result<Self, String> {
        let io_percent = percent("IO_BOUND")?;
        let cpu_percent = percent("CPU_BOUND")?;
        if io_percent + cpu_percent != 100 {
            return Err(format!("IO_BOUND ({io_percent}) and CPU_BOUND ({cpu_percent}) must sum to 100"));
        }
        Ok(Workload {
            io_percent,
            cpu_percent,
            io_seconds: number("IO_SECONDS", 1.0)?,
            iterations: number("ITERATIONS", 5_000_000.0)?,
            database_url: std::env::var("DATABASE_URL").ok().filter(|url| !url.is_empty()),
        })
    }
}

fn percent(name: &str) -> Result<u32, String> {
    match std::env::var(name) {
        Err(_) => Ok(0),
        Ok(text) => text
            .trim()
            .parse::<u32>()
            .ok()
            .filter(|value| *value <= 100)
            .ok_or_else(|| format!("{name} must be a whole percentage from 0 to 100, not {text:?}")),
    }
}

fn number(name: &str, default: f64) -> Result<f64, String> {
    match std::env::var(name) {
        Err(_) => Ok(default),
        Ok(text) => text
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|value| value.is_finite() && *value >= 0.0)
            .ok_or_else(|| format!("{name} must be a non-negative number, not {text:?}")),
    }
}

/// The study's CPU loop. `black_box` on its input and output keeps the compiler from folding or removing it.
fn burn_cpu(max_iterations: f64) -> f64 {
    let max_iterations = black_box(max_iterations);
    let mut iterations_done = 0.0;
    let mut work: f64 = 15.0;
    while iterations_done < max_iterations {
        work = (work + 7.0 + work / 2.0) % 1000.0;
        iterations_done += 1.0;
    }
    black_box(work)
}

struct App;

impl Guest for App {
    fn handle(_environ: Vec<(String, String)>) -> Result<(), String> {
        let workload = Workload::from_env()?;
        let start = Instant::now();
        if workload.io_percent > 0 {
            let seconds = workload.io_seconds * f64::from(workload.io_percent) / 100.0;
            match &workload.database_url {
                Some(url) => postgres::sleep(url, seconds)?,
                None => std::thread::sleep(Duration::from_secs_f64(seconds)),
            }
        }
        if workload.cpu_percent > 0 {
            burn_cpu(workload.iterations * f64::from(workload.cpu_percent) / 100.0);
        }
        let duration = start.elapsed().as_secs_f64();
        println!("IO work: {}, CPU work: {}, time: {duration:.1} seconds", workload.io_percent, workload.cpu_percent);
        start_response("204 No Content", &[])
    }
}

export!(App);
