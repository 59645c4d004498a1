//! Supervision: timeouts, graceful stops with requests in flight, reloads and upgrades under load, recycling,
//! boot errors. Every assertion reads real processes, signals and log lines.

use std::io::Write;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use nix::sys::signal::Signal;
use nix::unistd::Pid;

use crate::support::{Server, concurrently, eventually, is_alive, send};

/// Sets the flag when dropped, so that a load loop ends even when the test panics meanwhile.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Requests `GET /` in a loop on two threads until `stop` is set and at least `minimum` were sent; returns the
/// statuses that were not 200 (a refused or cut connection counts as status 0).
fn load_loop(port: u16, minimum: usize, stop: &AtomicBool, sent: &AtomicUsize) -> Vec<u16> {
    std::thread::scope(|scope| {
        let threads: Vec<_> = (0..2)
            .map(|_| {
                scope.spawn(|| {
                    let mut failures = Vec::new();
                    while !(stop.load(Ordering::SeqCst) && sent.load(Ordering::SeqCst) >= minimum) {
                        let status =
                            std::panic::catch_unwind(|| send(port, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n").status)
                                .unwrap_or(0);
                        if status != 200 {
                            failures.push(status);
                        }
                        sent.fetch_add(1, Ordering::SeqCst);
                    }
                    failures
                })
            })
            .collect();
        threads.into_iter().flat_map(|thread| thread.join().unwrap()).collect()
    })
}

#[test]
fn worker_stuck_past_timeout_is_killed_reported_and_replaced() {
    // A guest opening a FIFO that no one writes blocks in a host call that no deadline bounds (a file open runs
    // on a blocking thread): only the heartbeat timeout ends it. A busy worker is given at least the guest
    // timeout plus 2 s: 3 s here.
    let granted = tempfile::tempdir().unwrap();
    nix::unistd::mkfifo(&granted.path().join("fifo"), nix::sys::stat::Mode::S_IRWXU).unwrap();
    let dir = format!("{}::/data", granted.path().display());
    let misbehave = env!("WASMCORN_GUEST_MISBEHAVE");
    let server = Server::start(misbehave, 1, &["--timeout", "3", "--guest-timeout", "1", "--dir", &dir]);
    let stuck = server.booted_worker_pids()[0];
    let mut silent = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    silent.write_all(b"GET /read?path=/data/fifo HTTP/1.1\r\nHost: h\r\n\r\n").unwrap();
    let line = server.wait_for_line("WORKER TIMEOUT");
    let serving = format!("WORKER TIMEOUT (pid:{stuck}) serving GET /read?path=/data/fifo HTTP/1.1 for ");
    assert!(line.contains(&serving), "{line}");
    server.wait_for_line(&format!("Worker (pid:{stuck}) was killed with SIGABRT after WORKER TIMEOUT"));
    server.wait_for_count("Booting worker with pid", 2);
    for _ in 0..5 {
        assert_eq!(server.get("/count").status, 200);
    }
    assert!(!server.log_text().contains("out-of-memory"), "a timeout kill is not reported as an OOM kill");
    assert!(!is_alive(stuck));
}

#[test]
fn graceful_sigterm_lets_twenty_inflight_slow_requests_finish() {
    let mut server = Server::start("sample:workload", 5, &["--env", "IO_BOUND=100", "--env", "IO_SECONDS=1"]);
    let port = server.port;
    let pid = server.pid;
    let answered = AtomicUsize::new(0);
    let responses = std::thread::scope(|scope| {
        let requests = scope.spawn(|| {
            concurrently(20, |_| {
                let response = send(port, b"GET /slow HTTP/1.1\r\nHost: h\r\n\r\n");
                answered.fetch_add(1, Ordering::SeqCst);
                response
            })
        });
        // SIGTERM once the kernel holds all 20 connections (five being served, fifteen queued). A connection served
        // leaves the count: on a slow machine the last clients may connect after the first left.
        let made = || crate::support::established_to(port) + answered.load(Ordering::SeqCst);
        eventually("20 connections made", || made() >= 20);
        nix::sys::signal::kill(pid, Signal::SIGTERM).unwrap();
        requests.join().unwrap()
    });
    let statuses: Vec<u16> = responses.iter().map(|response| response.status).collect();
    assert_eq!(statuses, vec![204; 20]);
    assert_eq!(server.wait_exit().code(), Some(0));
}

#[test]
fn sighup_reload_under_load_fails_no_request_and_replaces_the_workers() {
    let server = Server::start("sample:hello", 2, &[]);
    let old = server.booted_worker_pids();
    let (stop, sent) = (AtomicBool::new(false), AtomicUsize::new(0));
    let failures = std::thread::scope(|scope| {
        let load = scope.spawn(|| load_loop(server.port, 2000, &stop, &sent));
        let _stop = StopOnDrop(&stop);
        eventually("some load before the reload", || sent.load(Ordering::SeqCst) > 300);
        server.signal(Signal::SIGHUP);
        server.wait_for_line("Reload complete");
        eventually("the old workers gone", || old.iter().all(|pid| !is_alive(*pid)));
        stop.store(true, Ordering::SeqCst);
        load.join().unwrap()
    });
    assert!(sent.load(Ordering::SeqCst) >= 2000);
    assert_eq!(failures, Vec::<u16>::new(), "no request failed across the reload");
    let live = server.live_workers();
    assert_eq!(live.len(), 2);
    assert!(live.iter().all(|pid| !old.contains(pid)), "a new generation serves: {live:?} vs {old:?}");
}

#[test]
fn sighup_rereads_the_config_file_and_the_app() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("wasmcorn.toml");
    std::fs::write(&config, "app = \"sample:hello\"\nworkers = 1\n").unwrap();
    let config_arg = config.to_str().unwrap();
    let mut command = crate::support::command(&["serve", "--bind", "127.0.0.1:0", "--config", config_arg]);
    command.env_remove("WASMCORN_CMD_ARGS");
    let server = Server::spawn(command);
    server.wait_for_count("Booting worker with pid", 1);
    assert_eq!(server.get("/").text(), "Hello, World!");
    std::fs::write(&config, "app = \"sample:echo\"\nworkers = 3\n").unwrap();
    server.signal(Signal::SIGHUP);
    server.wait_for_line("Reload complete");
    eventually("three workers", || server.live_workers().len() == 3);
    assert_eq!(server.get("/after").json()["environ"]["PATH_INFO"], "/after");
}

/// A SIGHUP that comes while a reload is under way is not lost: the files may have changed since that reload
/// read them, so they are read again once it ends. It was ignored, and the last edit never applied. The first
/// reload compiles a new app into an empty cache, so the second SIGHUP, sent as soon as the first is handled,
/// comes while it is under way.
#[test]
fn sighup_during_a_reload_reloads_again_when_it_ends() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("wasmcorn.toml");
    let write = |app: &str, value: &str| {
        std::fs::write(&config, format!("app = \"{app}\"\nworkers = 2\nenv = [\"V={value}\"]\n")).unwrap();
    };
    write("sample:echo", "one");
    let config_arg = config.to_str().unwrap();
    let cache = dir.path().join("cache");
    let cache_arg = cache.to_str().unwrap();
    let mut command =
        crate::support::command(&["serve", "--bind", "127.0.0.1:0", "--config", config_arg, "--cache-dir", cache_arg]);
    command.env_remove("WASMCORN_CMD_ARGS");
    let server = Server::spawn(command);
    server.wait_for_count("Booting worker with pid", 2);
    assert_eq!(server.get("/").json()["env"]["V"], "one");
    write("sample:workload", "two");
    server.signal(Signal::SIGHUP);
    server.wait_for_line("Handling signal: hup");
    write("sample:echo", "three");
    server.signal(Signal::SIGHUP);
    server.wait_for_line("this SIGHUP reloads again once it ends");
    server.wait_for_count("Reload complete", 2);
    eventually("only the last configuration's workers serve", || server.live_workers().len() == 2);
    for _ in 0..4 {
        assert_eq!(server.get("/").json()["env"]["V"], "three");
    }
}

#[test]
fn sighup_with_a_broken_new_app_keeps_the_old_workers_serving() {
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("app.wasm");
    std::fs::copy(env!("WASMCORN_GUEST_HELLO"), &app).unwrap();
    let server = Server::start(app.to_str().unwrap(), 2, &[]);
    let before = server.live_workers();
    std::fs::write(&app, b"not wasm any more").unwrap();
    server.signal(Signal::SIGHUP);
    let line = server.wait_for_line("Reload failed");
    assert!(line.contains("not a WebAssembly component") && line.contains("app.wasm"), "{line}");
    assert_eq!(server.get("/").status, 200);
    assert_eq!(server.live_workers(), before, "the old generation keeps serving");
}

#[test]
fn sigusr2_then_term_upgrades_under_load_without_a_failed_request() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("wasmcorn.pid");
    let mut server = Server::start("sample:hello", 2, &["--pid", pidfile.to_str().unwrap()]);
    let old_pid = server.pid;
    assert_eq!(std::fs::read_to_string(&pidfile).unwrap().trim(), old_pid.to_string());
    let (stop, sent) = (AtomicBool::new(false), AtomicUsize::new(0));
    let upgrade_pidfile = dir.path().join("wasmcorn.pid.2");
    let mut new_pid = None;
    let failures = std::thread::scope(|scope| {
        let load = scope.spawn(|| load_loop(server.port, 2000, &stop, &sent));
        let _stop = StopOnDrop(&stop);
        eventually("some load before the upgrade", || sent.load(Ordering::SeqCst) > 300);
        server.signal(Signal::SIGUSR2);
        let text = crate::support::wait_for_file_line(&upgrade_pidfile, "");
        let pid = Pid::from_raw(text.trim().parse().unwrap());
        new_pid = Some(pid);
        // The new arbiter's workers are up once it has logged four boots in all.
        server.wait_for_count("Booting worker with pid", 4);
        server.signal(Signal::SIGTERM);
        eventually("the old arbiter gone", || !is_alive(old_pid));
        eventually("the new arbiter owns the pid file", || {
            std::fs::read_to_string(&pidfile).map(|text| text.trim() == pid.to_string()).unwrap_or(false)
        });
        stop.store(true, Ordering::SeqCst);
        load.join().unwrap()
    });
    let new_pid = new_pid.unwrap();
    server.also_stop(new_pid);
    assert_eq!(server.wait_exit().code(), Some(0), "the old arbiter exits 0");
    assert!(sent.load(Ordering::SeqCst) >= 2000);
    assert_eq!(failures, Vec::<u16>::new(), "no request failed across the upgrade");
    assert!(!upgrade_pidfile.exists(), "the .2 pid file was moved to the main name");
    assert!(is_alive(new_pid));
    assert_eq!(send(server.port, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n").status, 200);
    nix::sys::signal::kill(new_pid, Signal::SIGTERM).unwrap();
    eventually("the new arbiter stops", || !is_alive(new_pid));
    eventually("its pid file removed", || !pidfile.exists());
}

#[test]
fn a_successor_left_at_the_upgrade_pid_file_can_be_upgraded_in_turn() {
    // The successor of a USR2 upgrade writes `FILE.2` and moves it to `FILE` once the old arbiter has gone. When
    // `FILE` has become something else than a pid file meanwhile, the move is refused and the successor stays at
    // `FILE.2`: its own USR2 must then start the next arbiter, which takes `FILE.2` over, rather than be refused
    // for the pid it finds there (its own predecessor's), and gives it back if it stops first.
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("wasmcorn.pid");
    let upgrade_pidfile = dir.path().join("wasmcorn.pid.2");
    let mut server = Server::start("sample:hello", 1, &["--pid", pidfile.to_str().unwrap()]);
    server.signal(Signal::SIGUSR2);
    let successor = server.successor_pid();
    server.also_stop(successor);
    server.wait_for_count("Booting worker with pid", 2);
    std::fs::remove_file(&pidfile).unwrap();
    std::fs::write(&pidfile, "not a pid\n").unwrap();
    server.signal(Signal::SIGTERM);
    assert_eq!(server.wait_exit().code(), Some(0), "the old arbiter exits 0");
    server.wait_for_line("holds something other than a process id");
    assert_eq!(std::fs::read_to_string(&upgrade_pidfile).unwrap().trim(), successor.to_string());
    nix::sys::signal::kill(successor, Signal::SIGUSR2).unwrap();
    let line = server.wait_for_count("Started a new arbiter (pid:", 2).pop().unwrap();
    let next = line.split("(pid:").nth(1).and_then(|rest| rest.split(')').next()).and_then(|pid| pid.parse().ok());
    let next = Pid::from_raw(next.expect("a pid in the line"));
    server.also_stop(next);
    server.wait_for_count("Booting worker with pid", 3);
    eventually("the next arbiter holds the upgrade's pid file", || {
        std::fs::read_to_string(&upgrade_pidfile).is_ok_and(|text| text.trim() == next.to_string())
    });
    assert!(is_alive(next), "the next arbiter runs:\n{}", server.log_text());
    assert_eq!(send(server.port, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n").status, 200);
    // Stopped before its predecessor (the upgrade rolled back), the next arbiter gives the file back to it.
    nix::sys::signal::kill(next, Signal::SIGTERM).unwrap();
    eventually("the next arbiter stops", || !is_alive(next));
    assert_eq!(std::fs::read_to_string(&upgrade_pidfile).unwrap().trim(), successor.to_string());
    assert!(is_alive(successor));
}

/// The misbehave guest on one worker (with `extra` flags and a pid file in the returned folder), upgraded by `USR2`:
/// the server, the successor arbiter (stopped by the server's guard too), and the two workers' pids, the old
/// arbiter's first.
fn upgraded_misbehave(extra: &[&str]) -> (tempfile::TempDir, Server, Pid, Vec<Pid>) {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("wasmcorn.pid");
    let mut args = vec!["--pid", pidfile.to_str().unwrap()];
    args.extend_from_slice(extra);
    let mut server = Server::start(env!("WASMCORN_GUEST_MISBEHAVE"), 1, &args);
    server.signal(Signal::SIGUSR2);
    let successor = server.successor_pid();
    server.also_stop(successor);
    server.wait_for_count("Booting worker with pid", 2);
    let workers = server.booted_worker_pids();
    (dir, server, successor, workers)
}

#[test]
fn a_connection_queued_when_an_upgraded_arbiter_stops_is_left_to_its_successor() {
    // After USR2, both arbiters' workers run a request that waits for its body, and the next connection waits in
    // the listen queue the two share. The old arbiter stops: its worker, still in its request past the graceful
    // timeout, is aborted. It answered what waited in the listen queue 503 as it died, though the successor's
    // worker was there to serve it; that worker now does.
    let (_dir, mut server, successor, workers) = upgraded_misbehave(&["--graceful-timeout", "1"]);
    let held: Vec<TcpStream> = (0..2).map(|_| crate::support::held_request(server.port, "h")).collect();
    server.wait_for_count("stashed", 2);
    let queued = crate::support::connect_sending(server.port, b"GET /sleep?seconds=0 HTTP/1.1\r\nHost: h\r\n\r\n");
    server.signal(Signal::SIGTERM);
    eventually("the old arbiter's worker gone", || !is_alive(workers[0]));
    for mut stream in held {
        let _ = stream.write_all(b"x");
    }
    let response = crate::support::read_response(queued);
    assert_eq!((response.status, response.text().as_str()), (200, "slept 0 s"), "{}", server.log_text());
    assert_eq!(server.wait_exit().code(), Some(0), "{}", server.log_text());
    nix::sys::signal::kill(successor, Signal::SIGTERM).unwrap();
    eventually("the successor stops", || !is_alive(successor));
}

#[test]
fn a_connection_queued_when_an_upgraded_arbiter_stops_gracefully_is_served_by_its_successor() {
    // After USR2, each arbiter's one worker runs a request that waits for its body, and the next connection waits
    // in the listen queue the two share. The old arbiter stops gracefully; its worker, let go first, finishes its
    // request and leaves. It took every connection the listen queue held, to serve them alone, one at a time
    // (under load, those its graceful timeout left were answered 503); it now leaves them to the successor's
    // workers, and the successor's worker serves this one once its own request ends.
    let (_dir, mut server, successor, workers) = upgraded_misbehave(&["--access-logformat", "%(p)s %(r)s"]);
    let first = crate::support::held_request(server.port, "h");
    let stashed = server.wait_for_line("[guest stdout] stashed");
    let second = crate::support::held_request(server.port, "h");
    server.wait_for_count("[guest stdout] stashed", 2);
    let first_is_old = stashed.contains(&format!("] [{}] [", workers[0]));
    let (mut old_request, mut new_request) = if first_is_old { (first, second) } else { (second, first) };
    let queued = crate::support::connect_sending(server.port, b"GET /sleep?seconds=0 HTTP/1.1\r\nHost: h\r\n\r\n");
    server.signal(Signal::SIGTERM);
    // The worker reads SIGTERM from a descriptor once its request ends: until then it is pending.
    eventually("SIGTERM pending in the old arbiter's worker", || sigterm_pending(workers[0]));
    old_request.write_all(b"x").unwrap();
    assert_eq!(crate::support::read_response(old_request).status, 200);
    eventually("the old arbiter's worker gone", || !is_alive(workers[0]));
    new_request.write_all(b"x").unwrap();
    assert_eq!(crate::support::read_response(new_request).status, 200);
    let response = crate::support::read_response(queued);
    assert_eq!((response.status, response.text().as_str()), (200, "slept 0 s"), "{}", server.log_text());
    server.wait_for_line("GET /sleep?seconds=0");
    let served_by: Vec<String> = server
        .log_lines()
        .iter()
        .filter(|line| line.contains("GET /sleep?seconds=0"))
        .filter_map(|line| line.strip_prefix('<').and_then(|rest| rest.split_once('>')).map(|(pid, _)| pid.to_string()))
        .collect();
    assert_eq!(served_by, vec![workers[1].to_string()], "served by the successor's worker");
    assert_eq!(server.wait_exit().code(), Some(0), "{}", server.log_text());
    nix::sys::signal::kill(successor, Signal::SIGTERM).unwrap();
    eventually("the successor stops", || !is_alive(successor));
}

/// Whether SIGTERM is pending for process `pid` (`ShdPnd` in /proc/PID/status).
fn sigterm_pending(pid: Pid) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let pending = status.lines().find_map(|line| line.strip_prefix("ShdPnd:")).map(str::trim).unwrap_or("0");
    u64::from_str_radix(pending, 16).is_ok_and(|mask| mask & (1 << (Signal::SIGTERM as u64 - 1)) != 0)
}

/// Worker pids from access-log lines that start with `<pid>` (format `%(p)s %(r)s`).
fn pids_per_request(server: &Server) -> Vec<String> {
    server
        .log_lines()
        .iter()
        .filter_map(|line| line.strip_prefix('<').and_then(|rest| rest.split_once('>')).map(|(pid, _)| pid.to_string()))
        .collect()
}

fn counts(pids: &[String]) -> Vec<usize> {
    let mut counts: Vec<(String, usize)> = Vec::new();
    for pid in pids {
        match counts.iter_mut().find(|(seen, _)| seen == pid) {
            Some((_, count)) => *count += 1,
            None => counts.push((pid.clone(), 1)),
        }
    }
    counts.into_iter().map(|(_, count)| count).collect()
}

#[test]
fn max_requests_replaces_each_worker_after_ten_requests() {
    let server = Server::start("sample:hello", 1, &["--max-requests", "10", "--access-logformat", "%(p)s %(r)s"]);
    for _ in 0..35 {
        assert_eq!(server.get("/").status, 200);
    }
    server.wait_for_count("Autorestarting worker after 10 requests", 3);
    // A worker logs a request after answering it: wait for every line before counting.
    server.wait_for_count("> GET / HTTP/1.1", 35);
    assert_eq!(counts(&pids_per_request(&server)), vec![10, 10, 10, 5]);
    assert_eq!(server.booted_worker_pids().len(), 4);
}

#[test]
fn max_requests_jitter_keeps_each_worker_within_its_range() {
    let server = Server::start(
        "sample:hello",
        1,
        &["--max-requests", "4", "--max-requests-jitter", "3", "--access-logformat", "%(p)s %(r)s"],
    );
    for _ in 0..40 {
        assert_eq!(server.get("/").status, 200);
    }
    server.wait_for_count("> GET / HTTP/1.1", 40);
    let counts = counts(&pids_per_request(&server));
    let finished = &counts[..counts.len() - 1];
    assert!(finished.len() >= 5, "{counts:?}");
    assert!(finished.iter().all(|count| (4..=7).contains(count)), "{counts:?}");
}

/// The largest counts are accepted and mean "never": their sum overflowed, and the arbiter panicked after it had
/// said it was listening.
#[test]
fn max_requests_and_jitter_at_their_largest_never_recycle_and_never_panic() {
    let most = u64::MAX.to_string();
    let mut server = Server::start("sample:hello", 1, &["--max-requests", &most, "--max-requests-jitter", &most]);
    let worker = server.booted_worker_pids()[0];
    for _ in 0..3 {
        assert_eq!(server.get("/").status, 200);
    }
    assert_eq!(server.live_workers(), vec![worker]);
    server.signal(Signal::SIGTERM);
    assert_eq!(server.wait_exit().code(), Some(0), "{}", server.log_text());
    assert!(!server.log_text().contains("panicked"), "{}", server.log_text());
}

#[test]
fn max_worker_memory_recycles_a_worker_after_its_request() {
    let server = Server::start("sample:hello", 1, &["--max-worker-memory", "1"]);
    let first = server.booted_worker_pids()[0];
    assert_eq!(server.get("/").status, 200);
    server.wait_for_line("exceeds --max-worker-memory 1 MiB");
    server.wait_for_count("Booting worker with pid", 2);
    eventually("the first worker gone", || !is_alive(first));
    assert_eq!(server.get("/").status, 200);
}

#[test]
fn worker_that_cannot_load_the_app_stops_the_server_with_exit_code_3() {
    // The compile step and the workers run as nobody, with a cache folder of nobody's. Then the folder becomes
    // root's: a new worker refuses the artefact in it, and the compile step cannot write there to repair it.
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let cache = dir.path().join("cache");
    std::fs::create_dir(&cache).unwrap();
    std::os::unix::fs::chown(&cache, Some(65534), Some(65534)).unwrap();
    let mut server = Server::start("sample:hello", 2, &["--user", "nobody", "--cache-dir", cache.to_str().unwrap()]);
    std::os::unix::fs::chown(&cache, Some(0), Some(0)).unwrap();
    nix::sys::signal::kill(server.live_workers()[0], Signal::SIGKILL).unwrap();
    assert_eq!(server.wait_exit().code(), Some(3));
    let log = server.log_text();
    assert!(log.contains("Cannot compile the apps again") && log.contains("belongs to uid 0"), "{log}");
    assert!(log.contains("Worker failed to boot: shutting down"), "{log}");
    assert!(log.lines().filter(|line| line.contains("Worker refused")).count() == 1, "no respawn storm: {log}");
}
