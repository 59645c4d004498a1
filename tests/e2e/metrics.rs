//! Metrics and health: `/metrics` counts exactly the requests sent (a guest's answers, the host's own 404 and
//! 400, a guest timeout, a trap) and keeps them when a worker is replaced; `promtool check metrics` accepts the
//! exposition; the busy and idle gauges follow a request held open by the test; `/readyz` turns 503 on TERM;
//! scrape clients that never send or never read do not keep the arbiter from replacing a killed worker; statsd
//! lines reach a UDP listener in the test; a unix metrics socket is owner-only and never made through a symlink.

use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::os::unix::fs::{PermissionsExt, symlink};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};

use crate::support::{PATIENCE, Response, Server, command, established_to, eventually, is_alive, parse_response, send};

const MISBEHAVE: &str = env!("WASMCORN_GUEST_MISBEHAVE");

/// One app, `mis` (the misbehave guest) under `/mis`, with a one-second guest timeout: other paths are the
/// host's 404.
fn manifest() -> (tempfile::TempDir, PathBuf) {
    manifest_with("")
}

/// As `manifest`, with `extra` keys for the app.
fn manifest_with(extra: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("apps.toml");
    let text =
        format!("[[app]]\nname = \"mis\"\ncomponent = \"{MISBEHAVE}\"\nprefix = \"/mis\"\nguest_timeout = 1\n{extra}");
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

/// Starts the manifest's server with `workers` workers and metrics on a free port.
fn start_with_metrics(apps: &std::path::Path, workers: usize, extra: &[&str]) -> (Server, u16) {
    let workers_text = workers.to_string();
    let apps = apps.to_str().unwrap();
    let mut args = vec!["serve", "--apps", apps, "--bind", "127.0.0.1:0", "--workers", &workers_text];
    args.extend_from_slice(&["--metrics-bind", "127.0.0.1:0"]);
    args.extend_from_slice(extra);
    let server = Server::spawn(command(&args));
    server.wait_for_count("Booting worker with pid", workers);
    let port = metrics_port(&server);
    (server, port)
}

fn metrics_port(server: &Server) -> u16 {
    let line = server.wait_for_line("Serving metrics at: http://");
    line.rsplit(':').next().and_then(|port| port.trim().parse().ok()).expect("the metrics port")
}

fn get(port: u16, path: &str) -> Response {
    send(port, format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes())
}

fn scrape(port: u16) -> String {
    let response = get(port, "/metrics");
    assert_eq!(response.status, 200);
    assert_eq!(response.header("content-type"), Some("text/plain; version=0.0.4; charset=utf-8"));
    response.text()
}

/// The value of the sample `series` (name and labels exactly as exposed), if present.
fn sample(exposition: &str, series: &str) -> Option<f64> {
    exposition.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

fn request_count(exposition: &str, app: &str, method: &str, status: u16) -> Option<f64> {
    let series = format!(
        "http_server_request_duration_seconds_count{{app=\"{app}\",http_request_method=\"{method}\",\
         http_response_status_code=\"{status}\"}}"
    );
    sample(exposition, &series)
}

fn outcome(exposition: &str, outcome: &str) -> Option<f64> {
    sample(exposition, &format!("wasmcorn_guest_outcomes_total{{app=\"mis\",outcome=\"{outcome}\"}}"))
}

fn workers(exposition: &str, state: &str) -> Option<f64> {
    sample(exposition, &format!("wasmcorn_workers{{pool=\"shared\",state=\"{state}\"}}"))
}

/// The known mix, and what `/metrics` must show for it.
fn assert_the_mix(exposition: &str) {
    assert_eq!(request_count(exposition, "mis", "GET", 200), Some(2.0), "{exposition}");
    assert_eq!(request_count(exposition, "mis", "_OTHER", 200), Some(1.0), "{exposition}");
    assert_eq!(request_count(exposition, "", "GET", 404), Some(1.0), "the host's own 404\n{exposition}");
    assert_eq!(request_count(exposition, "", "_OTHER", 400), Some(1.0), "the host's own 400\n{exposition}");
    assert_eq!(request_count(exposition, "mis", "GET", 503), Some(1.0), "the guest timeout\n{exposition}");
    assert_eq!(request_count(exposition, "mis", "GET", 500), Some(1.0), "the trap\n{exposition}");
    let series = exposition.lines().filter(|line| line.starts_with("http_server_request_duration_seconds_count"));
    assert_eq!(series.count(), 6, "no other request series\n{exposition}");
    assert_eq!(outcome(exposition, "completed"), Some(3.0), "{exposition}");
    assert_eq!(outcome(exposition, "timed_out"), Some(1.0), "{exposition}");
    assert_eq!(outcome(exposition, "trapped"), Some(1.0), "{exposition}");
    assert_eq!(outcome(exposition, "refused"), Some(0.0), "{exposition}");
    assert_eq!(outcome(exposition, "over_memory"), Some(0.0), "{exposition}");
    assert_eq!(sample(exposition, "wasmcorn_instance_creation_seconds_count{app=\"mis\"}"), Some(5.0));
    // Every observation lies in a bucket: the +Inf bucket equals the count.
    let inf = "http_server_request_duration_seconds_bucket{app=\"mis\",http_request_method=\"GET\",\
               http_response_status_code=\"200\",le=\"+Inf\"}";
    assert_eq!(sample(exposition, inf), Some(2.0));
}

#[test]
fn a_known_mix_of_requests_is_counted_exactly_and_survives_a_killed_worker() {
    let (_dir, apps) = manifest();
    let (server, metrics) = start_with_metrics(&apps, 1, &[]);
    assert_eq!(server.get("/mis/count").status, 200);
    assert_eq!(server.get("/mis/count").status, 200);
    assert_eq!(server.request(b"BREW /mis/count HTTP/1.1\r\nHost: localhost\r\n\r\n").status, 200);
    assert_eq!(server.get("/elsewhere").status, 404);
    assert_eq!(server.request(b"GET /mis/count HTTP/1.1\r\nHost: localhost\r\nContent-Length: x\r\n\r\n").status, 400);
    assert_eq!(server.get("/mis/loop").status, 503);
    assert_eq!(server.get("/mis/trap").status, 500);
    let before = scrape(metrics);
    assert_the_mix(&before);
    // The worker marks itself idle just after closing the last connection.
    eventually("the worker is idle", || workers(&scrape(metrics), "idle") == Some(1.0));
    eventually("wasmcorn_ready is 1", || sample(&scrape(metrics), "wasmcorn_ready") == Some(1.0));
    assert!(sample(&before, "process_resident_memory_bytes").is_some_and(|bytes| bytes > 0.0));
    assert!(sample(&before, "process_open_fds").is_some_and(|fds| fds > 0.0));
    assert!(sample(&before, "wasmcorn_pool_resident_memory_bytes{pool=\"shared\"}").is_some_and(|b| b > 0.0));
    let bind = format!("wasmcorn_listen_queue_length{{bind=\"http://127.0.0.1:{}\"}}", server.port);
    assert_eq!(sample(&before, &bind), Some(0.0), "{before}");

    // A worker killed from outside: its counts join the retired totals, and its exit is counted.
    let worker = server.booted_worker_pids()[0];
    kill(worker, Signal::SIGKILL).unwrap();
    server.wait_for_count("Booting worker with pid", 2);
    let after = scrape(metrics);
    assert_the_mix(&after);
    assert_eq!(sample(&after, "wasmcorn_worker_exits_total{pool=\"shared\",reason=\"crash\"}"), Some(1.0));
    assert_eq!(sample(&after, "wasmcorn_worker_exits_total{pool=\"shared\",reason=\"timeout\"}"), Some(0.0));
}

#[test]
fn refusals_and_memory_overruns_are_told_from_traps_and_a_recycled_workers_counts_stay() {
    let (_dir, apps) = manifest_with("max_memory = 16\n");
    let (server, metrics) = start_with_metrics(&apps, 1, &["--max-requests", "3"]);
    assert_eq!(server.get("/mis/refuse?message=no").status, 500);
    assert_eq!(server.get("/mis/alloc").status, 500);
    assert_eq!(server.get("/mis/trap").status, 500);
    // Its third request recycles the worker: its counts are folded into the totals, its exit counted.
    server.wait_for_count("Booting worker with pid", 2);
    let max_requests = "wasmcorn_worker_exits_total{pool=\"shared\",reason=\"max_requests\"}";
    eventually("the exit is counted", || sample(&scrape(metrics), max_requests) == Some(1.0));
    let exposition = scrape(metrics);
    assert_eq!(outcome(&exposition, "refused"), Some(1.0), "{exposition}");
    assert_eq!(outcome(&exposition, "over_memory"), Some(1.0), "{exposition}");
    assert_eq!(outcome(&exposition, "trapped"), Some(1.0), "{exposition}");
    assert_eq!(outcome(&exposition, "completed"), Some(0.0), "{exposition}");
    assert_eq!(request_count(&exposition, "mis", "GET", 500), Some(3.0), "{exposition}");
    assert_eq!(sample(&exposition, "wasmcorn_worker_exits_total{pool=\"shared\",reason=\"crash\"}"), Some(0.0));
}

#[test]
fn worker_exits_are_counted_by_reason_and_a_reload_keeps_the_server_ready() {
    let server = Server::start("sample:hello", 2, &["--metrics-bind", "127.0.0.1:0", "--max-worker-memory", "1"]);
    let metrics = metrics_port(&server);
    let exits = |reason: &str| {
        sample(&scrape(metrics), &format!("wasmcorn_worker_exits_total{{pool=\"shared\",reason=\"{reason}\"}}"))
    };
    eventually("/readyz says 200", || get(metrics, "/readyz").status == 200);
    server.signal(Signal::SIGHUP);
    // While the new generation boots, the old one serves: the server stays ready throughout.
    eventually("the old generation's exits are counted as a reload", || {
        assert_eq!(get(metrics, "/readyz").status, 200, "ready during the reload");
        exits("reload") == Some(2.0)
    });
    server.signal(Signal::SIGTTOU);
    eventually("the TTOU exit is counted", || exits("ttou") == Some(1.0));
    assert_eq!(server.get("/").status, 200);
    server.wait_for_line("Autorestarting worker: resident memory");
    eventually("the recycled worker's exit is counted", || exits("max_memory") == Some(1.0));
    assert_eq!(exits("crash"), Some(0.0));
    assert_eq!(exits("reload"), Some(2.0));
    let exposition = scrape(metrics);
    assert_eq!(request_count(&exposition, "default", "GET", 200), Some(1.0), "{exposition}");
}

/// Installs are serialised: apt takes a lock anyway, and a second test should wait for the first install.
static INSTALL: Mutex<()> = Mutex::new(());

/// `promtool`, from Debian's `prometheus` package, installed when missing.
fn promtool() -> &'static str {
    let _installing = INSTALL.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let present = || Command::new("promtool").arg("--version").output().is_ok_and(|out| out.status.success());
    if !present() {
        let install = || {
            Command::new("apt-get")
                .args(["install", "-y", "--no-install-recommends", "prometheus"])
                .env("DEBIAN_FRONTEND", "noninteractive")
                .status()
                .is_ok_and(|status| status.success())
        };
        if !install() {
            let update = Command::new("apt-get").arg("update").status().expect("run apt-get update");
            assert!(update.success(), "apt-get update failed ({update})");
            assert!(install(), "apt-get install -y prometheus failed");
        }
        assert!(present(), "the prometheus package installs promtool");
    }
    "promtool"
}

#[test]
fn the_exposition_passes_promtool_check_metrics() {
    let (_dir, apps) = manifest();
    let (server, metrics) = start_with_metrics(&apps, 2, &[]);
    for path in ["/mis/count", "/elsewhere", "/mis/trap"] {
        server.get(path);
    }
    let exposition = scrape(metrics);
    let mut check = Command::new(promtool())
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    check.stdin.take().unwrap().write_all(exposition.as_bytes()).unwrap();
    let output = check.wait_with_output().unwrap();
    assert!(
        output.status.success() && output.stdout.is_empty() && output.stderr.is_empty(),
        "promtool check metrics: {}{}\n{exposition}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Sends the head of a `/mis/stash` request whose 5-byte body the test holds back: the guest waits for it.
fn hold_a_request(port: u16) -> TcpStream {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.write_all(b"POST /mis/stash?secret=s HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\n\r\n").unwrap();
    stream
}

fn release(mut stream: TcpStream) -> Response {
    stream.write_all(b"hello").unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    parse_response(&raw)
}

#[test]
fn busy_and_idle_gauges_follow_a_long_request() {
    let (_dir, apps) = manifest();
    let (server, metrics) = start_with_metrics(&apps, 2, &[]);
    // A worker logs its boot before it has loaded its app and before the arbiter may have counted it: a scrape
    // at that moment shows it booting or not yet there.
    eventually("both workers idle", || {
        let idle = scrape(metrics);
        (workers(&idle, "idle"), workers(&idle, "busy")) == (Some(2.0), Some(0.0))
    });
    let held = hold_a_request(server.port);
    server.wait_for_line("stashed");
    let busy = scrape(metrics);
    assert_eq!((workers(&busy, "idle"), workers(&busy, "busy")), (Some(1.0), Some(1.0)), "{busy}");
    assert_eq!(workers(&busy, "booting"), Some(0.0));
    assert_eq!(release(held).status, 200);
    eventually("the worker is idle again", || workers(&scrape(metrics), "busy") == Some(0.0));
    assert_eq!(workers(&scrape(metrics), "idle"), Some(2.0));
}

#[test]
fn listen_queues_show_the_connections_waiting_for_a_busy_worker() {
    let (dir, apps) = manifest();
    let socket = dir.path().join("app.sock");
    let unix_bind = format!("unix:{}", socket.display());
    let (server, metrics) = start_with_metrics(&apps, 1, &["--bind", "127.0.0.1:0", "--bind", &unix_bind]);
    let held = hold_a_request(server.port);
    server.wait_for_line("stashed");
    // The one worker is inside the guest: new connections wait in the kernel's queues.
    let _tcp: Vec<TcpStream> = (0..3).map(|_| TcpStream::connect(("127.0.0.1", server.port)).unwrap()).collect();
    let _unix: Vec<UnixStream> = (0..2).map(|_| UnixStream::connect(&socket).unwrap()).collect();
    // A TCP connect returns before the server's side joins the queue (the last ACK may still be on its way).
    eventually("the held and 3 queued connections", || established_to(server.port) >= 4);
    let exposition = scrape(metrics);
    let tcp = format!("wasmcorn_listen_queue_length{{bind=\"http://127.0.0.1:{}\"}}", server.port);
    assert_eq!(sample(&exposition, &tcp), Some(3.0), "{exposition}");
    let unix = format!("wasmcorn_listen_queue_length{{bind=\"{unix_bind}\"}}");
    assert_eq!(sample(&exposition, &unix), Some(2.0), "{exposition}");
    assert_eq!(release(held).status, 200);
}

#[test]
fn readyz_turns_503_on_term_while_healthz_stays_200() {
    let (_dir, apps) = manifest();
    let (mut server, metrics) = start_with_metrics(&apps, 1, &["--graceful-timeout", "60"]);
    // Ready once the arbiter has seen every pool's workers booted (on its next turn after the boot lines).
    eventually("/readyz says 200", || get(metrics, "/readyz").status == 200);
    assert_eq!(get(metrics, "/readyz").text(), "ready\n");
    assert_eq!(get(metrics, "/healthz").status, 200);
    let refused = send(metrics, b"POST /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!((refused.status, refused.header("allow")), (405, Some("GET, HEAD")), "RFC 9110 section 15.5.6");
    assert!(
        get(metrics, "/healthz").header("date").is_some_and(|date| date.ends_with(" GMT")),
        "RFC 9110 section 6.6.1"
    );
    // A head whose lines end in bare LFs is answered at once, as the server's own port answers it.
    assert_eq!(send(metrics, b"GET /healthz HTTP/1.1\n\n").status, 400);
    // A head that arrives in pieces, its end split between them, is read whole.
    let mut pieces = TcpStream::connect(("127.0.0.1", metrics)).unwrap();
    for piece in [&b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r"[..], b"\n"] {
        pieces.write_all(piece).unwrap();
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(crate::support::read_response(pieces).text(), "ok\n");
    let held = hold_a_request(server.port);
    server.wait_for_line("stashed");
    server.signal(Signal::SIGTERM);
    server.wait_for_line("Handling signal: term");
    eventually("/readyz says 503", || get(metrics, "/readyz").status == 503);
    assert_eq!(get(metrics, "/readyz").text(), "stopping\n");
    assert_eq!(get(metrics, "/healthz").status, 200, "the arbiter still runs");
    assert_eq!(sample(&scrape(metrics), "wasmcorn_ready"), Some(0.0));
    assert_eq!(release(held).status, 200, "the request in flight finishes");
    assert!(server.wait_exit().success());
}

#[test]
fn silent_scrape_clients_do_not_keep_the_arbiter_from_replacing_a_killed_worker() {
    let (_dir, apps) = manifest();
    let (server, metrics) = start_with_metrics(&apps, 1, &[]);
    // More clients than the metrics process serves at once: some never send a byte, one asks and never reads.
    let mut silent: Vec<TcpStream> = (0..40).map(|_| TcpStream::connect(("127.0.0.1", metrics)).unwrap()).collect();
    let mut never_reads = TcpStream::connect(("127.0.0.1", metrics)).unwrap();
    never_reads.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    silent.push(never_reads);
    let worker = server.booted_worker_pids()[0];
    kill(worker, Signal::SIGKILL).unwrap();
    server.wait_for_count("Booting worker with pid", 2);
    let replacement = server.booted_worker_pids()[1];
    assert!(is_alive(replacement));
    assert_eq!(server.get("/mis/count").status, 200);
    // The metrics process still answers a new client.
    assert_eq!(get(metrics, "/healthz").status, 200);
    assert_eq!(sample(&scrape(metrics), "wasmcorn_worker_exits_total{pool=\"shared\",reason=\"crash\"}"), Some(1.0));
    drop(silent);
}

#[test]
fn the_metrics_process_is_started_again_when_it_dies() {
    let (_dir, apps) = manifest();
    let (server, metrics) = start_with_metrics(&apps, 1, &[]);
    let process = crate::support::children_of(server.pid)
        .into_iter()
        .find(|pid| std::fs::read_to_string(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c.contains("metrics")))
        .expect("the metrics process");
    kill(process, Signal::SIGKILL).unwrap();
    server.wait_for_line("The metrics process");
    eventually("metrics are served again", || {
        TcpStream::connect(("127.0.0.1", metrics)).is_ok() && get(metrics, "/healthz").status == 200
    });
}

#[test]
fn statsd_lines_reach_a_udp_listener_with_gunicorns_names() {
    let listener = UdpSocket::bind("127.0.0.1:0").unwrap();
    listener.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let server = Server::start(
        "sample:hello",
        1,
        &["--statsd-host", &address, "--statsd-prefix", "svc", "--dogstatsd-tags", "env:test,team:web"],
    );
    assert_eq!(server.get("/").status, 200);
    let mut lines: Vec<String> = Vec::new();
    let deadline = Instant::now() + PATIENCE;
    let mut buffer = [0u8; 4096];
    let workers_gauge = "svc.wasmcorn.workers:1|g|#env:test,team:web".to_string();
    let requests = "svc.wasmcorn.requests:1|c|@1.0|#env:test,team:web".to_string();
    // The gauge is sent on the arbiter's turn after the worker started, maybe after the request's lines.
    while !(lines.contains(&workers_gauge) && lines.contains(&requests)) && Instant::now() < deadline {
        if let Ok(length) = listener.recv(&mut buffer) {
            lines.extend(String::from_utf8_lossy(&buffer[..length]).lines().map(str::to_string));
        }
    }
    assert!(lines.contains(&workers_gauge) && lines.contains(&requests), "{lines:?}");
    assert!(lines.contains(&"svc.wasmcorn.request.status.200:1|c|@1.0|#env:test,team:web".to_string()), "{lines:?}");
    let duration = lines.iter().find_map(|line| line.strip_prefix("svc.wasmcorn.request.duration:"));
    let milliseconds = duration.and_then(|rest| rest.strip_suffix("|ms|#env:test,team:web")?.parse::<f64>().ok());
    assert!(milliseconds.is_some_and(|ms| ms >= 0.0), "{lines:?}");
}

/// A reload that changes the statsd target or the bound addresses says, in a line each, that this takes a restart
/// (the statsd change went unnoticed), and both stay as they were: the lines go where they went, and the server
/// answers on its first address.
#[test]
fn a_reload_that_changes_the_metrics_settings_or_the_binds_says_they_stay() {
    let listener = UdpSocket::bind("127.0.0.1:0").unwrap();
    listener.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("wasmcorn.toml");
    std::fs::write(&file, format!("bind = [\"127.0.0.1:0\"]\nstatsd_host = \"{address}\"\n")).unwrap();
    let args = ["serve", "sample:hello", "--workers", "1", "--config", file.to_str().unwrap()];
    let server = Server::spawn(command(&args));
    server.wait_for_count("Booting worker with pid", 1);
    std::fs::write(&file, "bind = [\"127.0.0.2:0\"]\nstatsd_host = \"127.0.0.1:9\"\n").unwrap();
    server.signal(Signal::SIGHUP);
    let line = server.wait_for_line("The metrics settings changed");
    assert!(line.contains("needs a restart"), "{line}");
    server.wait_for_line("The --bind addresses changed: that needs a restart");
    server.wait_for_line("Reload complete");
    assert_eq!(server.get("/").status, 200);
    let requests = "wasmcorn.requests:1|c|@1.0".to_string();
    let deadline = Instant::now() + PATIENCE;
    let mut buffer = [0u8; 4096];
    let mut seen = false;
    while !seen && Instant::now() < deadline {
        if let Ok(length) = listener.recv(&mut buffer) {
            seen = String::from_utf8_lossy(&buffer[..length]).lines().any(|line| line == requests);
        }
    }
    assert!(seen, "the request after the reload was counted at the first address");
    // Left changed, the next reload says so again; changed back, the one after says nothing.
    server.signal(Signal::SIGHUP);
    server.wait_for_count("Reload complete", 2);
    assert_eq!(server.wait_for_count("The metrics settings changed", 2).len(), 2);
    assert_eq!(server.wait_for_count("The --bind addresses changed", 2).len(), 2);
    std::fs::write(&file, format!("bind = [\"127.0.0.1:0\"]\nstatsd_host = \"{address}\"\n")).unwrap();
    server.signal(Signal::SIGHUP);
    server.wait_for_count("Reload complete", 3);
    let log = server.log_text();
    assert_eq!(log.matches("The metrics settings changed").count(), 2, "{log}");
    assert_eq!(log.matches("The --bind addresses changed").count(), 2, "{log}");
}

/// The settings of the arbiter's own process (the pid file, the umask, the working folder, the name, daemon mode)
/// are applied at start only: a reload that changes them says so, and the pid file stays the one written, which
/// the arbiter removes when it stops. (They were kept silently, and an upgrade then moved the new name's pid file
/// while the old one stayed.)
#[test]
fn a_reload_that_changes_the_process_settings_says_they_stay() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("wasmcorn.toml");
    let (first, second) = (dir.path().join("a.pid"), dir.path().join("b.pid"));
    std::fs::write(&file, format!("bind = [\"127.0.0.1:0\"]\npid = {:?}\n", first.to_str().unwrap())).unwrap();
    let args = ["serve", "sample:hello", "--workers", "1", "--config", file.to_str().unwrap()];
    let mut server = Server::spawn(command(&args));
    server.wait_for_count("Booting worker with pid", 1);
    let settings = format!("bind = [\"127.0.0.1:0\"]\npid = {:?}\nname = \"other\"\n", second.to_str().unwrap());
    std::fs::write(&file, settings).unwrap();
    server.signal(Signal::SIGHUP);
    let line = server.wait_for_line("The process settings changed");
    assert!(line.contains("--pid") && line.contains("stay as they are"), "{line}");
    server.wait_for_line("Reload complete");
    assert_eq!(server.get("/").status, 200);
    assert!(first.exists() && !second.exists());
    server.signal(Signal::SIGTERM);
    assert_eq!(server.wait_exit().code(), Some(0));
    assert!(!first.exists(), "the pid file written at start is removed at the end");
}

#[test]
fn a_unix_metrics_socket_is_owner_only_and_never_made_through_a_symlink() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("metrics.sock");
    let bind = format!("unix:{}", path.display());
    let server = Server::start("sample:hello", 1, &["--metrics-bind", &bind]);
    server.wait_for_line("Serving metrics at: unix:");
    let mode = std::fs::symlink_metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o077, 0, "owner-only, not {mode:o}");
    let mut stream = UnixStream::connect(&path).unwrap();
    stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    assert_eq!(parse_response(&raw).status, 200);
    drop(server);

    let target = dir.path().join("elsewhere");
    std::fs::write(&target, "not a socket").unwrap();
    let link = dir.path().join("link.sock");
    symlink(&target, &link).unwrap();
    let bind = format!("unix:{}", link.display());
    let output = command(&["serve", "sample:hello", "--bind", "127.0.0.1:0", "--metrics-bind", &bind])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--metrics-bind") && stderr.contains("not a socket"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "not a socket", "the link's target is untouched");
}
