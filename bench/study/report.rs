//! The study's files: `points.csv` and `memory.csv` (every measurement, rewritten after each point so that an
//! interrupted run keeps what it measured) and `report.md`, a Markdown report around the chart.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use serde::Serialize;

use crate::layout::HotLayout;
use crate::memory::Role;
use crate::options::{CpuSize, Settings};
use crate::points::{Contender, MemoryRow, Point};
use crate::server::ServerKind;

/// What the report says about the run besides its points.
pub(crate) struct Context<'a> {
    pub settings: &'a Settings,
    pub contenders: &'a [Contender],
    pub cores: usize,
    pub gunicorn_version: Option<String>,
    pub wasmcorn: &'a Path,
    pub hot_layout: Option<HotLayout>,
    pub duration: Duration,
}

pub(crate) fn write_csv<T: Serialize>(path: &Path, rows: &[T]) -> anyhow::Result<()> {
    let mut writer = csv::Writer::from_path(path).with_context(|| format!("cannot create {}", path.display()))?;
    for row in rows {
        writer.serialize(row).with_context(|| format!("cannot write {}", path.display()))?;
    }
    writer.flush().with_context(|| format!("cannot write {}", path.display()))
}

/// Writes `report.md` and returns its path.
pub(crate) fn write(
    out: &Path,
    context: &Context,
    points: &[Point],
    memory: &[MemoryRow],
    chart: &Path,
) -> anyhow::Result<PathBuf> {
    let mut text = String::new();
    setup(&mut text, context, chart);
    throughput(&mut text, context, points);
    memory_tables(&mut text, context, points, memory);
    let path = out.join("report.md");
    std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(String::new, |name| name.to_string_lossy().to_string())
}

/// What the report says of the binary's code layout (see `layout`).
fn layout_note(layout: Option<HotLayout>) -> String {
    match layout {
        Some(layout) if layout.for_this_build => {
            format!(", hot code laid out side by side (host/hot-symbols.txt names {} of its functions)", layout.found)
        }
        Some(layout) => format!(
            ", **without the hot-code layout** (host/hot-symbols.txt was written for another build: {} of its \
             {} names are in this one)",
            layout.found, layout.listed
        ),
        None => ", code layout unknown".to_string(),
    }
}

fn setup(text: &mut String, context: &Context, chart: &Path) {
    let settings = context.settings;
    let mode = if settings.quick { "A quick" } else { "A full" };
    let _ = writeln!(text, "# Sync workers under IO-bound, CPU-bound and blended load\n");
    let _ = writeln!(
        text,
        "{} run of `cargo bench --bench study` on {} UTC: {} cores ({}), took {:.0} s.\n",
        mode,
        chrono::Utc::now().format("%Y-%m-%d %H:%M"),
        context.cores,
        cpu_model(),
        context.duration.as_secs_f64()
    );
    let _ = writeln!(text, "![Throughput by number of workers]({})\n", file_name(chart));
    let _ = writeln!(
        text,
        "Every point: [points.csv](points.csv); every process's memory: [memory.csv](memory.csv); server logs \
         and hey's per-request CSVs: `logs/`.\n"
    );
    let _ = writeln!(text, "## Setup\n");
    let _ = writeln!(text, "| | {} |", names(context.contenders).join(" | "));
    let _ = writeln!(text, "|---|{}", "---|".repeat(context.contenders.len()));
    let cell = |describe: &dyn Fn(&Contender) -> String| -> String {
        context.contenders.iter().map(describe).collect::<Vec<_>>().join(" | ")
    };
    let _ = writeln!(
        text,
        "| server | {} |",
        cell(&|contender| match contender.kind {
            ServerKind::Wasmcorn => format!("`{}`{}", context.wasmcorn.display(), layout_note(context.hot_layout)),
            ServerKind::Gunicorn => format!(
                "{}, `--worker-class sync`",
                context.gunicorn_version.clone().unwrap_or_else(|| "gunicorn".into())
            ),
        })
    );
    let _ = writeln!(
        text,
        "| app | {} |",
        cell(&|contender| match contender.kind {
            ServerKind::Wasmcorn => crate::guest::describe(context.settings.guest).to_string(),
            ServerKind::Gunicorn => "`bench/gunicorn/workload.py`".to_string(),
        })
    );
    let _ = writeln!(
        text,
        "| IO part at `IO_BOUND=100` | {} |",
        cell(&|contender| format!("{} s of {}", contender.costs.io_seconds, contender.io_mode))
    );
    let _ = writeln!(
        text,
        "| CPU part at `CPU_BOUND=100` | {} |",
        cell(&|contender| format!(
            "`ITERATIONS={}`: {:.3} s of worker CPU time for a lone request (median of 5)",
            contender.costs.iterations, contender.costs.cpu_seconds
        ))
    );
    let sizing = match settings.cpu_size {
        CpuSize::Iterations(iterations) => format!("the same `ITERATIONS={iterations}` for every server"),
        CpuSize::Calibrate(seconds) => {
            format!("`ITERATIONS` calibrated per server so that a lone CPU request takes {seconds} s")
        }
    };
    let _ = writeln!(
        text,
        "\nLoad: `hey -n N -c {} -disable-keepalive` per point (one connection per request, as both servers \
         close it), N at least {}, whole rounds (a multiple of the workers and of hey's clients), at least 10 \
         requests per worker and 3 s of load; a fresh server for every point, the servers alternating from point \
         to point. CPU part: {}.\n",
        settings.concurrency, settings.requests, sizing
    );
    let _ = writeln!(
        text,
        "The ideal is what the workers and cores allow if nothing else cost anything: a request takes its IO \
         plus its CPU seconds, each worker serves one at a time, and at most {} CPU parts run at once: \
         min(workers / (io + cpu), cores / cpu). The CPU seconds of a request are those measured inside the \
         workers during the point's own load (the CPU time of their request threads over the requests served, \
         the column CPU ms/req): what a request cost at that minute, whose speed drifts on this machine. An IO \
         request counts no CPU: its ideal is workers / IO seconds.\n",
        context.cores
    );
}

fn names(contenders: &[Contender]) -> Vec<String> {
    contenders.iter().map(|contender| contender.kind.to_string()).collect()
}

fn throughput(text: &mut String, context: &Context, points: &[Point]) {
    let _ = writeln!(text, "## Throughput and latency\n");
    let mut header = String::from("| workload | workers |");
    let mut rule = String::from("|---|---:|");
    for name in names(context.contenders) {
        let _ = write!(header, " {name} req/s | ideal | % of ideal | CPU ms/req | p50 / p90 / p99 ms |");
        rule.push_str("---:|---:|---:|---:|---:|");
    }
    let _ = writeln!(text, "{header}\n{rule}");
    for &workload in &context.settings.workloads {
        for &workers in &context.settings.workers {
            let mut row = format!("| {} | {workers} |", workload.label());
            for contender in context.contenders {
                let found = points.iter().find(|point| {
                    point.server == contender.kind && point.workload == workload && point.workers == workers
                });
                match found {
                    Some(point) => {
                        let failed =
                            if point.failed > 0 { format!(" ({} failed)", point.failed) } else { String::new() };
                        let _ = write!(
                            row,
                            " {:.2}{failed} | {:.2} | {:.1} % | {:.1} | {:.0} / {:.0} / {:.0} |",
                            point.requests_per_second,
                            point.ideal_requests_per_second,
                            point.ratio_to_ideal * 100.0,
                            point.worker_cpu_ms_per_request,
                            point.p50_ms,
                            point.p90_ms,
                            point.p99_ms
                        );
                    }
                    None => row.push_str(" - | - | - | - | - |"),
                }
            }
            let _ = writeln!(text, "{row}");
        }
    }
    let _ = writeln!(text);
}

fn mib(kib: u64) -> String {
    format!("{:.1}M", kib as f64 / 1024.0)
}

fn memory_tables(text: &mut String, context: &Context, points: &[Point], memory: &[MemoryRow]) {
    let _ = writeln!(text, "## Memory\n");
    let _ = writeln!(
        text,
        "From `/proc/PID/smaps_rollup`, as `smem -k` shows it: USS (private pages), PSS (private plus a fair \
         share of shared pages: the best measure of what a process costs) and RSS. Idle is half a second after \
         the workers booted; loaded is right after the load. A file page that one process alone maps counts in \
         its USS: with a single worker, the engine's code and the compiled guest are private to it; with more \
         workers they are shared and move from USS to PSS.\n"
    );
    for contender in context.contenders {
        // The seed's table: the largest pool of the IO workload (or of the first workload measured).
        let Some(point) = points
            .iter()
            .filter(|point| point.server == contender.kind)
            .max_by_key(|point| (point.workers, point.workload == crate::workload::Workload::Io))
        else {
            continue;
        };
        let _ = writeln!(
            text,
            "### {}, {} workers, {}\n\n| PID | process | USS idle | PSS idle | RSS idle | USS loaded | PSS loaded | RSS loaded |\n|---:|---|---:|---:|---:|---:|---:|---:|",
            contender.kind,
            point.workers,
            point.workload.label()
        );
        let rows: Vec<&MemoryRow> = memory
            .iter()
            .filter(|row| {
                row.server == contender.kind && row.workload == point.workload && row.workers == point.workers
            })
            .collect();
        let mut pids: Vec<(Role, i32)> = rows.iter().map(|row| (row.role, row.pid)).collect();
        pids.sort_by_key(|(role, pid)| (*role == Role::Worker, *pid));
        pids.dedup();
        for (role, pid) in pids {
            let phase = |name: &str| rows.iter().find(|row| row.pid == pid && row.phase == name);
            let cells = |row: Option<&&MemoryRow>| match row {
                Some(row) => format!("{} | {} | {}", mib(row.uss_kib), mib(row.pss_kib), mib(row.rss_kib)),
                None => "- | - | -".to_string(),
            };
            let role = match role {
                Role::Arbiter => "arbiter",
                Role::Worker => "worker",
            };
            let _ = writeln!(text, "| {pid} | {role} | {} | {} |", cells(phase("idle")), cells(phase("loaded")));
        }
        let _ = writeln!(text);
    }
    let _ = writeln!(
        text,
        "### Per worker, every point\n\n| server | workload | workers | arbiter PSS loaded | worker PSS idle | worker PSS loaded | worker USS loaded | worker RSS loaded |\n|---|---|---:|---:|---:|---:|---:|---:|"
    );
    for point in points {
        let _ = writeln!(
            text,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            point.server,
            point.workload.label(),
            point.workers,
            mib(point.arbiter_pss_loaded_kib),
            mib(point.worker_pss_idle_kib),
            mib(point.worker_pss_loaded_kib),
            mib(point.worker_uss_loaded_kib),
            mib(point.worker_rss_loaded_kib)
        );
    }
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines().find_map(|line| {
                line.strip_prefix("model name").map(|rest| rest.trim_start_matches([' ', '\t', ':']).to_string())
            })
        })
        .unwrap_or_else(|| "unknown CPU".to_string())
}
