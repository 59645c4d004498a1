//! Worker processes: concurrency as the study measures it, replacement of a dead worker, failures that cost a
//! request and not a worker.

use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};

use crate::support::{Server, concurrently, eventually};

fn workload_lines(server: &Server, count: usize) -> Vec<String> {
    // The time printed is at least the IO_SECONDS asked; a busy machine may make it more.
    server.wait_for_count("[guest stdout] IO work: 100, CPU work: 0, time: ", count)
}

/// The pid in a log line's second bracket.
fn line_pid(line: &str) -> String {
    line.split("] [").nth(1).unwrap_or_default().to_string()
}

#[test]
fn one_worker_serves_io_bound_requests_one_after_another() {
    let server = Server::start("sample:workload", 1, &["--env", "IO_BOUND=100", "--env", "IO_SECONDS=0.2"]);
    let start = Instant::now();
    let responses = concurrently(5, |_| server.get("/"));
    let elapsed = start.elapsed();
    assert!(responses.iter().all(|response| response.status == 204 && response.body.is_empty()));
    assert!(elapsed >= Duration::from_secs(1), "5 x 0.2 s on one worker took only {elapsed:?}");
    let lines = workload_lines(&server, 5);
    assert!(lines.iter().all(|line| line_pid(line) == line_pid(&lines[0])), "one worker served all: {lines:#?}");
}

#[test]
fn five_workers_serve_io_bound_requests_at_once() {
    // Long enough that starting 5 clients and 5 first requests on a busy machine is small beside it.
    let server = Server::start("sample:workload", 5, &["--env", "IO_BOUND=100", "--env", "IO_SECONDS=2"]);
    let start = Instant::now();
    let responses = concurrently(5, |_| server.get("/"));
    let elapsed = start.elapsed();
    assert!(responses.iter().all(|response| response.status == 204));
    // One worker would take 10 s; under 8 s, at least two requests ran at once.
    assert!(elapsed < Duration::from_secs(8), "5 x 2 s on five workers took {elapsed:?}");
    let lines = workload_lines(&server, 5);
    let mut pids: Vec<String> = lines.iter().map(|line| line_pid(line)).collect();
    pids.sort();
    pids.dedup();
    assert!(pids.len() >= 2, "the requests overlapped on several workers: {lines:#?}");
}

#[test]
fn workload_percentages_that_do_not_sum_to_100_fail_every_request_with_the_reason() {
    let server = Server::start("sample:workload", 1, &["--env", "IO_BOUND=50", "--env", "CPU_BOUND=40"]);
    let workers = server.booted_worker_pids();
    for _ in 0..3 {
        let response = server.get("/");
        assert_eq!(response.status, 500);
        assert_eq!(response.text(), "Internal Server Error\n");
    }
    let errors = server.wait_for_count(
        "[ERROR] Error handling request GET / HTTP/1.1: IO_BOUND (50) and CPU_BOUND (40) must sum to 100",
        3,
    );
    assert_eq!(errors.len(), 3);
    assert_eq!(server.live_workers(), workers, "the worker survives");
}

#[test]
fn cpu_bound_workload_answers_and_reports_its_time() {
    let server = Server::start("sample:workload", 1, &["--env", "CPU_BOUND=100", "--env", "ITERATIONS=200000"]);
    assert_eq!(server.get("/").status, 204);
    server.wait_for_line("[guest stdout] IO work: 0, CPU work: 100, time: ");
}

#[test]
fn guest_stdout_goes_to_the_log_with_the_worker_pid() {
    let server = Server::start("sample:workload", 1, &["--env", "IO_BOUND=100", "--env", "IO_SECONDS=0"]);
    assert_eq!(server.get("/").status, 204);
    let worker = server.booted_worker_pids()[0];
    let line = server.wait_for_line("[guest stdout] IO work: 100");
    assert!(
        line.contains(&format!("] [{worker}] [INFO] [guest stdout] IO work: 100, CPU work: 0, time: 0.0 seconds")),
        "{line}"
    );
}

#[test]
fn worker_killed_with_sigkill_is_replaced_and_the_server_keeps_answering() {
    let server = Server::start("sample:hello", 2, &[]);
    let before = server.booted_worker_pids();
    kill(before[0], Signal::SIGKILL).unwrap();
    server.wait_for_count("Booting worker with pid", 3);
    let after = server.booted_worker_pids();
    assert!(!before.contains(&after[2]), "a new pid: {after:?}");
    eventually("two live workers, the killed one gone", || {
        let live = server.live_workers();
        live.len() == 2 && !live.contains(&before[0])
    });
    server.wait_for_line(&format!("Worker (pid:{}) was sent SIGKILL from outside wasmcorn", before[0]));
    for _ in 0..10 {
        assert_eq!(server.get("/").status, 200);
    }
}

#[test]
fn workers_are_children_of_the_arbiter() {
    let server = Server::start("sample:hello", 3, &[]);
    let mut booted = server.booted_worker_pids();
    booted.sort();
    assert_eq!(server.live_workers(), booted);
}
