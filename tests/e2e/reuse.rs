//! Instance reuse (`--instance-reuse N`, `instance_reuse` per app in a manifest): an instance serves up to N
//! requests of its app, keeping its module state (the misbehave guest's `/count` global) between them, and is
//! dropped at once after a trap, a timeout, a refused or a failed request; apps never share one, a reload picks up
//! a changed setting, and the default stays a fresh instance per request. The same for a standard `wasi:http`
//! guest (`proxy-misbehave`'s `/count`), whose kept instance is also dropped when it leaves its response body open.
//! Also: the guest's deadline timer makes no wakeups while no guest runs.

use std::time::Duration;

use nix::sys::signal::Signal;
use nix::unistd::Pid;

use crate::support::{Server, Site, command};

const MISBEHAVE: &str = env!("WASMCORN_GUEST_MISBEHAVE");
/// The same guest with a small linear memory, which the worker rewrites in place between requests.
const MISBEHAVE_SMALL: &str = env!("WASMCORN_GUEST_MISBEHAVE_SMALL");
const PROXY_MISBEHAVE: &str = env!("WASMCORN_GUEST_PROXY_MISBEHAVE");

/// The body of `GET path` (on `host`), which must answer `status`.
fn body(server: &Server, host: &str, path: &str, status: u16) -> String {
    let response = server.get_from(host, path);
    assert_eq!(response.status, status, "GET {path} on {host}: {}\n{}", response.text(), server.log_text());
    response.text()
}

/// `/count` on `host`, `times` times in a row: the values the guest's global took.
fn counts(server: &Server, host: &str, times: usize) -> Vec<String> {
    (0..times).map(|_| body(server, host, "/count", 200)).collect()
}

fn texts(values: &[&str]) -> Vec<String> {
    values.iter().map(ToString::to_string).collect()
}

#[test]
fn an_instance_keeps_its_state_for_n_requests_then_a_fresh_one_starts() {
    let server = Server::start(MISBEHAVE, 1, &["--instance-reuse", "3"]);
    assert_eq!(counts(&server, "localhost", 7), texts(&["1", "2", "3", "1", "2", "3", "1"]));
}

#[test]
fn a_wasi_http_instance_keeps_its_state_for_n_requests_and_is_dropped_after_a_failure() {
    let server = Server::start(PROXY_MISBEHAVE, 1, &["--instance-reuse", "3", "--guest-timeout", "1"]);
    assert_eq!(counts(&server, "localhost", 4), texts(&["1", "2", "3", "1"]));
    body(&server, "localhost", "/trap", 500);
    assert_eq!(counts(&server, "localhost", 2), texts(&["1", "2"]), "after a trap");
    body(&server, "localhost", "/loop", 503);
    assert_eq!(counts(&server, "localhost", 2), texts(&["1", "2"]), "after a timeout");
    body(&server, "localhost", "/no-answer", 500);
    assert_eq!(counts(&server, "localhost", 1), texts(&["1"]), "after a handler that set no response");
}

/// A handler that returns with its response body neither finished nor dropped (`/leave-open` keeps it in a
/// thread-local): wasi:http counts such a body as corrupt. `partial` waits in the writer (a short body gets a
/// Content-Length once it ends), so the client gets a 500, at once rather than at the deadline, and the instance
/// is dropped. A fresh instance's drop used to end the body as if it were complete (a 200 with `partial`, the
/// connection kept), and a kept one waited for the deadline (503).
#[test]
fn a_wasi_http_response_body_left_unfinished_is_a_failure_kept_instance_or_not() {
    let unfinished = "Guest failure handling request GET /leave-open HTTP/1.1: the handler returned with its response \
                      unfinished";
    let server = Server::start(PROXY_MISBEHAVE, 1, &["--instance-reuse", "100", "--guest-timeout", "30"]);
    assert_eq!(counts(&server, "localhost", 2), texts(&["1", "2"]));
    let started = std::time::Instant::now();
    body(&server, "localhost", "/leave-open", 500);
    assert!(started.elapsed() < std::time::Duration::from_secs(20), "answered before the guest's deadline");
    server.wait_for_line(unfinished);
    assert_eq!(counts(&server, "localhost", 1), texts(&["1"]), "after a body left open");
    drop(server);

    let server = Server::start(PROXY_MISBEHAVE, 1, &[]);
    let response = server.get_from("localhost", "/leave-open");
    assert_eq!(response.status, 500, "{}", server.log_text());
    assert!(!response.text().contains("partial"), "{}", response.text());
    server.wait_for_line(unfinished);
}

#[test]
fn every_wasi_http_request_gets_a_fresh_instance_by_default() {
    let server = Server::start(PROXY_MISBEHAVE, 1, &[]);
    assert_eq!(counts(&server, "localhost", 3), texts(&["1", "1", "1"]));
}

#[test]
fn every_request_gets_a_fresh_instance_by_default() {
    for guest in [MISBEHAVE, MISBEHAVE_SMALL] {
        let server = Server::start(guest, 1, &[]);
        assert_eq!(counts(&server, "localhost", 3), texts(&["1", "1", "1"]), "{guest}");
    }
}

#[test]
fn every_fresh_instance_gets_a_new_insecure_seed_and_a_reused_one_keeps_its_own() {
    // The host side of a store (its WASI context) is handed from instance to instance; its random state is not.
    let server = Server::start(MISBEHAVE, 1, &[]);
    let seeds: Vec<String> = (0..3).map(|_| body(&server, "localhost", "/seed", 200)).collect();
    assert!(seeds.iter().all(|seed| seed.len() == 32), "{seeds:?}");
    assert!(seeds[0] != seeds[1] && seeds[1] != seeds[2] && seeds[0] != seeds[2], "{seeds:?}");
    drop(server);
    let server = Server::start(MISBEHAVE, 1, &["--instance-reuse", "2"]);
    let seeds: Vec<String> = (0..3).map(|_| body(&server, "localhost", "/seed", 200)).collect();
    assert_eq!(seeds[0], seeds[1], "one instance, one seed");
    assert_ne!(seeds[1], seeds[2], "the next instance has a new seed");
}

#[test]
fn a_trap_a_timeout_a_refusal_or_a_failed_response_drops_the_instance() {
    let server = Server::start(MISBEHAVE, 1, &["--instance-reuse", "100", "--guest-timeout", "1"]);
    assert_eq!(counts(&server, "localhost", 2), texts(&["1", "2"]));
    body(&server, "localhost", "/trap", 500);
    assert_eq!(counts(&server, "localhost", 2), texts(&["1", "2"]), "after a trap");
    body(&server, "localhost", "/loop", 503);
    assert_eq!(counts(&server, "localhost", 2), texts(&["1", "2"]), "after a timeout");
    body(&server, "localhost", "/refuse?message=no", 500);
    assert_eq!(counts(&server, "localhost", 2), texts(&["1", "2"]), "after a refused request");
    // The handler returns `ok` but never started a response: the request failed all the same.
    body(&server, "localhost", "/no-start", 500);
    assert_eq!(counts(&server, "localhost", 2), texts(&["1", "2"]), "after a response that broke the contract");
    body(&server, "localhost", "/bad-header", 500);
    assert_eq!(counts(&server, "localhost", 2), texts(&["1", "2"]), "after a header the host refused");
    // A body shorter than its Content-Length, found only when the host finishes the response: a 500 all the same.
    body(&server, "localhost", "/short", 500);
    assert_eq!(counts(&server, "localhost", 1), texts(&["1"]), "after a body shorter than it declared");
}

#[test]
fn a_reused_instance_gets_a_fresh_deadline_and_output_budget_for_each_request() {
    let server = Server::start(MISBEHAVE, 1, &["--instance-reuse", "100", "--guest-timeout", "4"]);
    assert_eq!(counts(&server, "localhost", 1), texts(&["1"]));
    // Each sleep takes most of the guest's four seconds (1.5 s left for a busy machine): the second would time out
    // on the first's deadline.
    for round in 0..2 {
        assert_eq!(body(&server, "localhost", "/sleep?seconds=2.5", 200), "slept 2.5 s", "sleep {round}");
    }
    // Each request may log 64 KiB: the second spew is logged within its own budget, not the first's leftovers.
    body(&server, "localhost", "/spew", 200);
    body(&server, "localhost", "/spew", 200);
    let dropped = server.wait_for_count("more bytes dropped: the request's output budget is spent]", 2);
    // The lines' timestamps may differ by a second: compare what follows them.
    let counted: Vec<_> =
        dropped.iter().map(|line| line.split_once("[guest stdout]").map(|(_, count)| count)).collect();
    assert!(counted[0].is_some(), "{dropped:?}");
    assert_eq!(counted[0], counted[1], "both requests logged the same share of their output");
    assert_eq!(counts(&server, "localhost", 1), texts(&["2"]), "the same instance served them all");
}

/// A manifest of three misbehave apps on the shared pool: `a` and `b` reuse their instances (`a` through the
/// manifest's `a_reuse`), `c` takes the server's default.
fn manifest(a_reuse: u32) -> String {
    format!(
        r#"
[[app]]
name = "a"
component = "misbehave.wasm"
hosts = ["a.test"]
instance_reuse = {a_reuse}

[[app]]
name = "b"
component = "misbehave.wasm"
hosts = ["b.test"]
instance-reuse = 4

[[app]]
name = "c"
component = "misbehave.wasm"
hosts = ["c.test"]
"#
    )
}

#[test]
fn apps_in_one_worker_never_share_an_instance_and_each_has_its_own_setting() {
    let site = Site::new(&manifest(3));
    let server = site.serve(1, 1, &[]);
    let mut seen = Vec::new();
    for _ in 0..4 {
        for host in ["a.test", "b.test", "c.test"] {
            seen.push(format!("{host}={}", body(&server, host, "/count", 200)));
        }
    }
    let expected = [
        "a.test=1", "b.test=1", "c.test=1", "a.test=2", "b.test=2", "c.test=1", "a.test=3", "b.test=3", "c.test=1",
        "a.test=1", "b.test=4", "c.test=1",
    ];
    assert_eq!(seen, texts(&expected));
}

#[test]
fn the_flag_is_the_default_of_the_apps_that_do_not_set_it() {
    let site = Site::new(&manifest(1));
    let server = site.serve(1, 1, &["--instance-reuse", "2"]);
    assert_eq!(counts(&server, "a.test", 2), texts(&["1", "1"]), "a sets 1");
    assert_eq!(counts(&server, "c.test", 3), texts(&["1", "2", "1"]), "c takes --instance-reuse 2");
}

#[test]
fn a_reload_picks_up_a_changed_instance_reuse() {
    let site = Site::new(&manifest(1));
    let server = site.serve(1, 1, &[]);
    assert_eq!(counts(&server, "a.test", 2), texts(&["1", "1"]));
    site.write(&manifest(5));
    server.signal(Signal::SIGHUP);
    server.wait_for_line("Reload complete");
    assert_eq!(counts(&server, "a.test", 3), texts(&["1", "2", "3"]));
}

#[test]
fn a_bad_instance_reuse_is_one_line_and_a_non_zero_exit() {
    let output = command(&["serve", "--instance-reuse", "0", "--check-config"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("--instance-reuse must be at least 1"), "{stderr}");
}

/// The voluntary context switches of every thread of `pid` but its main one: how often they woke.
fn helper_thread_wakeups(pid: Pid) -> u64 {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).unwrap();
    tasks
        .filter_map(Result::ok)
        .filter(|task| task.file_name().to_str() != Some(&pid.to_string()))
        .filter_map(|task| std::fs::read_to_string(task.path().join("status")).ok())
        .filter_map(|status| {
            let line = status.lines().find(|line| line.starts_with("voluntary_ctxt_switches:"))?.to_string();
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .sum()
}

#[test]
fn no_thread_of_an_idle_worker_wakes_to_keep_time() {
    let server = Server::start(MISBEHAVE, 1, &["--guest-timeout", "1"]);
    let worker = server.booted_worker_pids()[0];
    // A request arms the guest's deadline timer; it may wake once at that deadline, a second later, and then
    // has nothing to wait for.
    assert_eq!(counts(&server, "localhost", 1), texts(&["1"]));
    std::thread::sleep(Duration::from_millis(1500));
    let before = helper_thread_wakeups(worker);
    std::thread::sleep(Duration::from_secs(2));
    let woke = helper_thread_wakeups(worker) - before;
    // A thread ticking every 10 ms would have woken about 200 times.
    assert!(woke <= 4, "an idle worker's helper threads woke {woke} times in 2 s");
}

#[test]
fn max_memory_bounds_a_reused_instance_over_all_its_requests() {
    let server = Server::start(MISBEHAVE, 1, &["--instance-reuse", "100", "--max-memory", "8"]);
    // Each request leaks 2 MiB more; the instance's memory may never pass 8 MiB, so its fourth request at the
    // latest (8 MiB leaked, plus the guest's own) fails, and the instance goes with it.
    let mut leaked = Vec::new();
    loop {
        let response = server.get("/leak?mib=2");
        if response.status == 500 {
            break;
        }
        assert_eq!(response.status, 200, "{}", response.text());
        leaked.push(response.text());
        assert!(leaked.len() < 4, "the instance leaked past --max-memory: {leaked:?}");
    }
    assert!(leaked.len() >= 2, "the instance kept its memory between requests: {leaked:?}");
    let expected: Vec<String> = (1..=leaked.len()).map(|n| (2 * n).to_string()).collect();
    assert_eq!(leaked, expected);
    server.wait_for_line("[guest stderr] memory allocation of 1048576 bytes failed");
    assert_eq!(body(&server, "localhost", "/leak?mib=2", 200), "2", "a fresh instance after the failure");
}
