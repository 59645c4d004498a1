//! `cargo bench --bench study`: reproduces the study wasmcorn grew from ("Gunicorn sync
//! workers": requests/s by worker count for IO-bound, CPU-bound and blended requests) against the real `wasmcorn
//! serve sample:workload` binary (`cargo build --release`'s, which it builds first), optionally with Gunicorn side
//! by side, and writes a CSV, a Markdown report and the study's chart.
//!
//! Modules: `options` (command line), `binary` (the server's binary), `tools` (hey, fonts, PostgreSQL, the Gunicorn venv), `postgres` (a private
//! cluster), `server` (start, inspect, stop a server), `calibrate` (CPU request cost), `points` (one
//! measurement), `load` (hey), `memory` (smaps_rollup), `cputime` (the workers' CPU time), `workload` (the
//! ideal), `layout` (the binary's code layout), `report` and `chart` (output), `process` (pid-owned child processes
//! and ctrl-C).

mod binary;
mod calibrate;
mod chart;
mod cputime;
mod guest;
mod layout;
mod load;
mod memory;
mod options;
mod points;
mod postgres;
mod process;
mod report;
mod server;
mod tools;
mod workload;

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;

use crate::options::{CpuSize, Options, Settings};
use crate::points::{Contender, IoMode, LoadShape, MemoryRow, Point, run_point};
use crate::postgres::Postgres;
use crate::process::check_interrupt;
use crate::server::{Launchers, Server, ServerKind, timed_request};
use crate::workload::{RequestCosts, Workload};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("study: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let started = Instant::now();
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().context("bench/ has no parent")?.to_path_buf();
    let settings = Options::parse().resolve(&workspace)?;
    process::catch_interrupts()?;
    let wasmcorn = match &settings.wasmcorn {
        Some(path) => path.clone(),
        None => binary::build(&workspace)?,
    };
    eprintln!("study: measuring {}", wasmcorn.display());
    tools::ensure_load_and_font()?;

    let log_dir = settings.out.join("logs");
    std::fs::create_dir_all(&log_dir).with_context(|| format!("cannot create {}", log_dir.display()))?;
    std::fs::create_dir_all(&settings.out).with_context(|| format!("cannot create {}", settings.out.display()))?;
    let python_apps = workspace.join("bench").join("gunicorn");
    let wasmcorn_app =
        guest::app_for(settings.guest, &wasmcorn, &python_apps, &settings.out, &settings.out.join("cache"))?;
    let mut launchers = Launchers {
        wasmcorn,
        wasmcorn_app,
        gunicorn: None,
        gunicorn_control_socket: false,
        python_apps,
        cache_dir: settings.out.join("cache"),
        log_dir,
    };
    let hot_layout = layout::HotLayout::of(&launchers.wasmcorn, &workspace.join("host").join("hot-symbols.txt"));
    match hot_layout {
        Some(layout) if !layout.for_this_build => eprintln!(
            "study: warning: host/hot-symbols.txt was not written for {} (it has {} of the listed names): its \
             workers map more code than a release build should (regenerate the list with bench/hot-symbols.sh)",
            launchers.wasmcorn.display(),
            layout.found
        ),
        Some(_) => {}
        None => eprintln!("study: warning: cannot compare {} with host/hot-symbols.txt", launchers.wasmcorn.display()),
    }
    let mut gunicorn_version = None;
    let postgres = if settings.with_gunicorn {
        let gunicorn = tools::ensure_gunicorn(&workspace.join("target").join("bench").join("venv"))?;
        gunicorn_version = Some(tools::gunicorn_version(&gunicorn));
        launchers.gunicorn_control_socket = tools::gunicorn_has_control_socket(&gunicorn);
        launchers.gunicorn = Some(gunicorn);
        let postgres = Postgres::start(&tools::ensure_postgres()?)?;
        eprintln!("study: PostgreSQL on 127.0.0.1:{} (pid {})", postgres.port, postgres.pid());
        Some(postgres)
    } else {
        None
    };

    let contenders = contenders(&settings, &launchers, postgres.as_ref())?;
    let shape = LoadShape {
        requests: settings.requests,
        concurrency: settings.concurrency,
        cores: std::thread::available_parallelism().map_or(1, |cores| cores.get()),
    };
    eprintln!("study: about {:.0} s of load to go", expected_load_seconds(&settings, &contenders, shape));

    let mut points: Vec<Point> = Vec::new();
    let mut memory: Vec<MemoryRow> = Vec::new();
    let mut reversed = false;
    for &workload in &settings.workloads {
        for &workers in &settings.workers {
            // Alternate the order of the servers from point to point, so that drift hits both.
            let mut order: Vec<&Contender> = contenders.iter().collect();
            if reversed {
                order.reverse();
            }
            reversed = !reversed;
            for contender in order {
                check_interrupt()?;
                let (point, rows) = run_point(contender, workload, workers, shape, &launchers)?;
                eprintln!(
                    "study: {:<8} {:<14} {workers:>2} workers: {:>8.2} req/s (ideal {:.2}, {:.1} %), {:.1} ms CPU per request, p50 {:.0} ms, p99 {:.0} ms{}",
                    point.server.to_string(),
                    workload.label(),
                    point.requests_per_second,
                    point.ideal_requests_per_second,
                    point.ratio_to_ideal * 100.0,
                    point.worker_cpu_ms_per_request,
                    point.p50_ms,
                    point.p99_ms,
                    if point.failed > 0 { format!(", {} FAILED", point.failed) } else { String::new() },
                );
                points.push(point);
                memory.extend(rows);
                report::write_csv(&settings.out.join("points.csv"), &points)?;
                report::write_csv(&settings.out.join("memory.csv"), &memory)?;
            }
        }
    }
    drop(postgres);

    let chart = chart::draw(&settings.out, &points, shape.cores)?;
    let context = report::Context {
        settings: &settings,
        contenders: &contenders,
        cores: shape.cores,
        gunicorn_version,
        wasmcorn: &launchers.wasmcorn,
        hot_layout,
        duration: started.elapsed(),
    };
    let report = report::write(&settings.out, &context, &points, &memory, &chart)?;
    eprintln!("study: done in {:.0} s", started.elapsed().as_secs_f64());
    println!("{}", report.display());
    println!("{}", settings.out.join("points.csv").display());
    println!("{}", chart.display());
    Ok(())
}

/// The servers of this study, with the cost of their requests measured or calibrated.
fn contenders(
    settings: &Settings,
    launchers: &Launchers,
    postgres: Option<&Postgres>,
) -> anyhow::Result<Vec<Contender>> {
    let mut kinds = vec![ServerKind::Wasmcorn];
    if settings.with_gunicorn {
        kinds.push(ServerKind::Gunicorn);
    }
    let mut contenders = Vec::new();
    for kind in kinds {
        let (iterations, cpu_seconds) = match settings.cpu_size {
            CpuSize::Iterations(iterations) => (iterations, calibrate::cpu_seconds(kind, iterations, launchers)?),
            CpuSize::Calibrate(target) => calibrate::calibrate(kind, target, launchers)?,
        };
        eprintln!("study: {kind}: a lone CPU request ({iterations} iterations) takes {cpu_seconds:.3} s of CPU");
        let costs = RequestCosts { io_seconds: settings.io_seconds, cpu_seconds, iterations };
        let mut contender =
            Contender { kind, costs, io_mode: IoMode::ClockSleep, env: Vec::new(), extra_args: Vec::new() };
        if let Some(postgres) = postgres {
            let env = vec![("DATABASE_URL".to_string(), postgres.url())];
            let extra_args = match kind {
                ServerKind::Wasmcorn => vec!["--allow-net".to_string(), format!("127.0.0.1:{}", postgres.port)],
                ServerKind::Gunicorn => Vec::new(),
            };
            let candidate = Contender { io_mode: IoMode::PgSleep, env, extra_args, ..contender.clone() };
            match uses_database(&candidate, postgres, launchers) {
                Ok(()) => contender = candidate,
                Err(err) => {
                    let reason = format!("{err:#}").lines().map(str::trim).collect::<Vec<_>>().join(" ");
                    eprintln!("study: {kind} does not do its IO on PostgreSQL here ({reason}): clock sleep");
                }
            }
        }
        contenders.push(contender);
    }
    Ok(contenders)
}

/// Checks that a contender's IO request reaches PostgreSQL: one request, and the server logs a new connection.
fn uses_database(contender: &Contender, postgres: &Postgres, launchers: &Launchers) -> anyhow::Result<()> {
    let spec = contender.spec(Workload::Io, 1, "database-probe".to_string());
    let server = Server::start(&spec, launchers)?;
    let before = postgres.connections_received();
    let (status, _) = timed_request(server.port, Duration::from_secs(120))?;
    let log = server.log_path().display().to_string();
    server.stop();
    anyhow::ensure!((200..300).contains(&status), "an IO request got {status} (log: {log})");
    anyhow::ensure!(postgres.connections_received() > before, "PostgreSQL saw no connection from the request");
    Ok(())
}

/// The load time of the whole study if every point reached its ideal throughput.
fn expected_load_seconds(settings: &Settings, contenders: &[Contender], shape: LoadShape) -> f64 {
    let mut seconds = 0.0;
    for contender in contenders {
        for &workload in &settings.workloads {
            for &workers in &settings.workers {
                let ideal = workload.ideal_throughput(workers, shape.cores, &contender.costs);
                seconds += shape.requests_for(workers, ideal).0 as f64 / ideal;
            }
        }
    }
    seconds
}
