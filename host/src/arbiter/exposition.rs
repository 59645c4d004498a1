//! The Prometheus text exposition (format 0.0.4) of a moment of the metrics table: workers by pool and state,
//! the listen queues, the request-duration histogram, guest outcomes, instance creation times, worker exits,
//! each pool's resident memory and the arbiter's own process metrics. Every label value comes from a bounded
//! set: the apps and pools the arbiter named, fixed methods, outcomes, reasons and states, three-digit statuses.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::metrics::Bind;
use super::{procfs, sock_diag};
use crate::worker::counters::labels::{METHODS, OUTCOMES};
use crate::worker::counters::series::{self, FINITE_BUCKETS, INSTANCE_BOUNDS, Key, Kind, REQUEST_BOUNDS, Values};
use crate::worker::counters::{Counters, ExitReason, Names, ServerState, Snapshot};
use crate::worker::heartbeat::Heartbeats;

/// What a scrape reads besides the table.
pub(super) struct Scrape<'a> {
    pub counters: Counters,
    pub heartbeats: &'a Heartbeats,
    /// The app's binds.
    pub binds: &'a [Bind],
    pub arbiter: u32,
}

/// The exposition of the table now.
pub(super) fn render(scrape: &Scrape<'_>) -> String {
    let snapshot = scrape.counters.snapshot();
    let names = scrape.counters.names();
    let mut out = String::with_capacity(16 * 1024);
    workers(&mut out, &snapshot, scrape.heartbeats, names);
    listen_queues(&mut out, scrape.binds);
    requests(&mut out, &snapshot, names);
    outcomes(&mut out, &snapshot, names);
    instances(&mut out, &snapshot, names);
    exits(&mut out, &snapshot, names);
    arbiter(&mut out, &snapshot, scrape.arbiter);
    out
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// A label value, escaped as the format asks.
fn quoted(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn pool_label(names: &Names, pool: u32) -> String {
    if pool == 0 { "shared".to_string() } else { names.get(pool).unwrap_or_default() }
}

fn app_name(names: &Names, app: u32) -> String {
    quoted(&names.get(app).unwrap_or_default())
}

fn workers(out: &mut String, snapshot: &Snapshot, heartbeats: &Heartbeats, names: &Names) {
    let mut by_pool: BTreeMap<String, [u64; 3]> = BTreeMap::new();
    by_pool.insert("shared".to_string(), [0; 3]);
    let mut memory: BTreeMap<String, u64> = BTreeMap::new();
    for occupant in &snapshot.occupants {
        let pool = pool_label(names, occupant.pool);
        let slot = heartbeats.slot(occupant.slot);
        let state = if !slot.is_ready() {
            0
        } else if slot.current_request().is_some() {
            2
        } else {
            1
        };
        by_pool.entry(pool.clone()).or_default()[state] += 1;
        *memory.entry(pool).or_default() += procfs::resident_bytes(occupant.pid).unwrap_or(0);
    }
    family(out, "wasmcorn_workers", "gauge", "Worker processes by pool and state (booting, idle, busy).");
    for (pool, counts) in &by_pool {
        for (state, count) in ["booting", "idle", "busy"].iter().zip(counts) {
            let _ = writeln!(out, "wasmcorn_workers{{pool=\"{}\",state=\"{state}\"}} {count}", quoted(pool));
        }
    }
    family(
        out,
        "wasmcorn_pool_resident_memory_bytes",
        "gauge",
        "Resident memory of each pool's workers, summed (pages they share are counted in each).",
    );
    for pool in by_pool.keys() {
        let bytes = memory.get(pool).copied().unwrap_or(0);
        let _ = writeln!(out, "wasmcorn_pool_resident_memory_bytes{{pool=\"{}\"}} {bytes}", quoted(pool));
    }
}

fn listen_queues(out: &mut String, binds: &[Bind]) {
    family(out, "wasmcorn_listen_queue_length", "gauge", "Connections waiting to be accepted, by bind.");
    for bind in binds {
        let queue = if bind.unix { sock_diag::unix_listen_queue } else { sock_diag::tcp_listen_queue };
        if let Some(waiting) = bind.inode.and_then(queue) {
            let _ = writeln!(out, "wasmcorn_listen_queue_length{{bind=\"{}\"}} {waiting}", quoted(&bind.url));
        }
    }
}

fn requests(out: &mut String, snapshot: &Snapshot, names: &Names) {
    family(
        out,
        "http_server_request_duration_seconds",
        "histogram",
        "Duration of HTTP server requests, from a complete head to the response's end, by app, method and status.",
    );
    for (raw, values) in &snapshot.series {
        let key = Key::from_raw(*raw);
        if key.kind() != Some(Kind::Request) {
            continue;
        }
        let method = METHODS.get((key.field() / 1000) as usize).copied().unwrap_or("_OTHER");
        let labels = format!(
            "app=\"{}\",http_request_method=\"{method}\",http_response_status_code=\"{}\"",
            app_name(names, key.app()),
            key.field() % 1000
        );
        histogram_lines(out, "http_server_request_duration_seconds", &labels, values, &REQUEST_BOUNDS);
    }
}

fn instances(out: &mut String, snapshot: &Snapshot, names: &Names) {
    let name = "wasmcorn_instance_creation_seconds";
    family(out, name, "histogram", "Time to create a guest instance for a request, by app.");
    for (raw, values) in &snapshot.series {
        let key = Key::from_raw(*raw);
        if key.kind() == Some(Kind::Instance) {
            let labels = format!("app=\"{}\"", app_name(names, key.app()));
            histogram_lines(out, name, &labels, values, &INSTANCE_BOUNDS);
        }
    }
}

fn histogram_lines(out: &mut String, name: &str, labels: &str, values: &Values, bounds: &[f64; FINITE_BUCKETS]) {
    let mut cumulative = 0;
    for (bound, count) in bounds.iter().zip(values) {
        cumulative += count;
        if bound.is_finite() {
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{bound}\"}} {cumulative}");
        }
    }
    let count = series::observations(values);
    let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {count}");
    let _ = writeln!(out, "{name}_sum{{{labels}}} {}", series::sum_seconds(values));
    let _ = writeln!(out, "{name}_count{{{labels}}} {count}");
}

fn outcomes(out: &mut String, snapshot: &Snapshot, names: &Names) {
    family(out, "wasmcorn_guest_outcomes_total", "counter", "Requests run in a guest, by app and outcome.");
    let mut counts: BTreeMap<(String, usize), u64> = BTreeMap::new();
    for (raw, values) in &snapshot.series {
        let key = Key::from_raw(*raw);
        if key.kind() == Some(Kind::Outcome) {
            for outcome in 0..OUTCOMES.len() {
                counts.entry((app_name(names, key.app()), outcome)).or_default();
            }
            *counts.entry((app_name(names, key.app()), key.field() as usize)).or_default() += values[0];
        }
    }
    for ((app, outcome), count) in counts {
        let outcome = OUTCOMES.get(outcome).copied().unwrap_or("trapped");
        let _ = writeln!(out, "wasmcorn_guest_outcomes_total{{app=\"{app}\",outcome=\"{outcome}\"}} {count}");
    }
}

fn exits(out: &mut String, snapshot: &Snapshot, names: &Names) {
    family(out, "wasmcorn_worker_exits_total", "counter", "Workers that left, by pool and reason.");
    let mut pools: Vec<u32> = vec![0];
    pools.extend(snapshot.occupants.iter().map(|occupant| occupant.pool));
    pools.extend(snapshot.exits.iter().map(|(pool, _, _)| *pool));
    pools.sort_unstable();
    pools.dedup();
    for pool in pools {
        let label = quoted(&pool_label(names, pool));
        for reason in ExitReason::ALL {
            let count = snapshot
                .exits
                .iter()
                .find(|(known, why, _)| *known == pool && *why == reason)
                .map_or(0, |(_, _, count)| *count);
            let _ =
                writeln!(out, "wasmcorn_worker_exits_total{{pool=\"{label}\",reason=\"{}\"}} {count}", reason.label());
        }
    }
}

fn arbiter(out: &mut String, snapshot: &Snapshot, pid: u32) {
    let ready = u8::from(snapshot.state == ServerState::Ready);
    family(out, "wasmcorn_ready", "gauge", "1 when every pool has its workers booted and the server is not stopping.");
    let _ = writeln!(out, "wasmcorn_ready {ready}");
    family(out, "wasmcorn_metrics_dropped_total", "counter", "Counts lost because a worker's table was full.");
    let _ = writeln!(out, "wasmcorn_metrics_dropped_total {}", snapshot.dropped);
    let Some(stats) = procfs::process(pid) else { return };
    let gauges = [
        (
            "process_resident_memory_bytes",
            "gauge",
            "The arbiter's resident memory in bytes.",
            stats.resident_bytes as f64,
        ),
        ("process_virtual_memory_bytes", "gauge", "The arbiter's virtual memory in bytes.", stats.virtual_bytes as f64),
        (
            "process_cpu_seconds_total",
            "counter",
            "The arbiter's user and system CPU time in seconds.",
            stats.cpu_seconds,
        ),
        (
            "process_start_time_seconds",
            "gauge",
            "When the arbiter started, in seconds since the Unix epoch.",
            stats.start_time_seconds,
        ),
    ];
    for (name, kind, help, value) in gauges {
        family(out, name, kind, help);
        let _ = writeln!(out, "{name} {value}");
    }
    if let Some(open) = stats.open_fds {
        family(out, "process_open_fds", "gauge", "The arbiter's open file descriptors.");
        let _ = writeln!(out, "process_open_fds {open}");
    }
    if let Some(max) = stats.max_fds {
        family(out, "process_max_fds", "gauge", "The arbiter's limit on open file descriptors.");
        let _ = writeln!(out, "process_max_fds {max}");
    }
}
