//! The recipes of `deploy/`, run as they are written: the systemd units pass `systemd-analyze verify`, and the
//! service's own command (its `ExecStart=`, read from the unit) serves through a socket handed over as systemd
//! hands it, survives a restart without losing a connection, and tells a test `NOTIFY_SOCKET` it is ready;
//! nginx (Debian's, a private instance) with `deploy/nginx/wasmcorn.conf` in front of wasmcorn's unix sockets
//! forwards the client's address and scheme, passes a 10 MiB upload, and loses no request while its two
//! wasmcorn servers restart one after the other under a steady load.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixDatagram, UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use nix::sys::signal::Signal;
use nix::sys::socket::{AddressFamily, SockFlag, SockType, SockaddrIn, bind, connect, socket};

use crate::support::nginx::{Nginx, free_port};
use crate::support::{PATIENCE, Response, Server, binary, cache_dir, eventually, parse_response, read_response};

/// A file of `deploy/`.
fn recipe(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy").join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|err| panic!("read {}: {err}", full.display()))
}

/// The value of a unit file's first `KEY=` line.
fn unit_value(unit: &str, key: &str) -> String {
    let prefix = format!("{key}=");
    let line = unit.lines().find_map(|line| line.trim().strip_prefix(&prefix));
    line.unwrap_or_else(|| panic!("the unit has no {key}= line")).trim().to_string()
}

/// `text` with `from` replaced by `to`; `from` must be there, so that a recipe that drifts fails the test.
fn replaced(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "the recipe no longer contains {from:?}: update the test with it");
    text.replace(from, to)
}

/// The service's `ExecStart=` arguments, with the unit's program, app and cache folder replaced by the test's.
fn service_command(app: &str) -> Vec<String> {
    let line = unit_value(&recipe("systemd/wasmcorn.service"), "ExecStart");
    assert!(!line.contains(['"', '\'', '\\']), "the test splits ExecStart= on spaces: keep it unquoted");
    let line = replaced(&line, "/usr/local/bin/wasmcorn ", &format!("{} ", binary()));
    let line = replaced(&line, " /srv/wasmcorn/app.wasm ", &format!(" {app} "));
    let line = replaced(&line, "${CACHE_DIRECTORY}", &cache_dir().display().to_string());
    line.split_whitespace().map(str::to_string).collect()
}

/// The value of `flag` in the service's command.
fn service_flag(flag: &str) -> String {
    let command = service_command("app");
    let at = command.iter().position(|word| word == flag).unwrap_or_else(|| panic!("ExecStart= has no {flag}"));
    command[at + 1].clone()
}

/// The socket unit's `ListenStream=` path, moved into `dir`.
fn socket_path(dir: &Path) -> PathBuf {
    let listen = unit_value(&recipe("systemd/wasmcorn.socket"), "ListenStream");
    PathBuf::from(replaced(&listen, "/run/wasmcorn/", &format!("{}/", dir.display())))
}

fn get_over_unix(path: &Path, target: &str) -> Response {
    let mut stream = UnixStream::connect(path).unwrap_or_else(|err| panic!("connect to {}: {err}", path.display()));
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream.write_all(format!("GET {target} HTTP/1.1\r\nHost: local\r\n\r\n").as_bytes()).unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    parse_response(&raw)
}

#[test]
fn systemd_units_pass_systemd_analyze_verify() {
    // verify checks that ExecStart='s program exists: it is given the test's binary, and nothing else changes.
    let service = replaced(&recipe("systemd/wasmcorn.service"), "/usr/local/bin/wasmcorn ", &format!("{} ", binary()));
    let verify = |service: &str| {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("wasmcorn.socket"), recipe("systemd/wasmcorn.socket")).unwrap();
        std::fs::write(dir.path().join("wasmcorn.service"), service).unwrap();
        let output = Command::new("systemd-analyze")
            .arg("verify")
            .args([dir.path().join("wasmcorn.socket"), dir.path().join("wasmcorn.service")])
            .output()
            .expect("run systemd-analyze (the systemd package)");
        let said = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        (output.status.success(), said)
    };
    let (success, said) = verify(&service);
    assert!(success && said.is_empty(), "systemd-analyze verify: {said}");
    // systemd need not be PID 1 for verify to judge: a unit with a bad value is reported (exit 0, but it says so).
    let (_, broken) = verify(&replaced(&service, "Type=notify", "Type=notified"));
    assert!(broken.contains("Failed to parse service type"), "verify judged a broken unit: {broken:?}");

    let service = recipe("systemd/wasmcorn.service");
    assert_eq!(unit_value(&service, "Type"), "notify");
    assert_eq!(unit_value(&service, "KillMode"), "mixed", "TERM to the arbiter alone");
    let stop_timeout: u64 = unit_value(&service, "TimeoutStopSec").parse().unwrap();
    let graceful: u64 = service_flag("--graceful-timeout").parse().unwrap();
    assert!(stop_timeout > graceful, "TimeoutStopSec ({stop_timeout}) above --graceful-timeout ({graceful})");
}

#[test]
fn service_command_serves_through_the_activated_socket_and_tells_ready() {
    let dir = tempfile::tempdir().unwrap();
    let path = socket_path(dir.path());
    let notify_path = dir.path().join("notify");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut activator = Command::new("systemd-socket-activate");
    activator.arg("--listen").arg(&path).arg("-E").arg(format!("NOTIFY_SOCKET={}", notify_path.display()));
    activator.args(service_command("sample:echo"));
    let mut server = Server::launch(activator, Stdio::null());
    server.wait_for_line(&format!("Listening on {} as 3", path.display()));
    // The activator starts the service at the first connection, which waits in the socket's queue meanwhile.
    let response = get_over_unix(&path, "/activated");
    assert_eq!(response.status, 200);
    assert_eq!(response.json()["environ"]["PATH_INFO"], "/activated");
    server.wait_for_line(&format!("Listening at: unix:{} ({})", path.display(), server.pid));
    let mut message = [0u8; 256];
    let length = notify.recv(&mut message).expect("READY=1 on NOTIFY_SOCKET");
    assert_eq!(String::from_utf8_lossy(&message[..length]), format!("READY=1\nMAINPID={}", server.pid));
    let workers: usize = service_flag("--workers").parse().unwrap();
    assert_eq!(server.booted_worker_pids().len(), workers, "ready once the unit's --workers have booted");
    server.signal(Signal::SIGTERM);
    assert!(server.wait_exit().success());
    let kept = std::fs::symlink_metadata(&path).map(|metadata| metadata.file_type().is_socket());
    assert!(kept.unwrap_or(false), "the socket file is systemd's: a stopped service leaves it");
}

/// Runs the service's command with `socket` as descriptor 3 and `LISTEN_FDS=1 LISTEN_PID` set, as systemd
/// starts it, and waits until it serves.
fn start_activated(socket: &UnixListener) -> Server {
    let fd: OwnedFd = socket.try_clone().unwrap().into();
    let script = "exec 3<&0 0</dev/null; export LISTEN_FDS=1 LISTEN_PID=$$; exec \"$0\" \"$@\"";
    let mut command = Command::new("bash");
    command.arg("-c").arg(script).args(service_command("sample:echo"));
    let server = Server::launch(command, Stdio::from(fd));
    server.wait_for_line("Listening at: unix:");
    server.wait_for_count("Booting worker with pid", service_flag("--workers").parse().unwrap());
    server
}

#[test]
fn connections_made_while_the_service_restarts_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let path = socket_path(dir.path());
    // The socket unit's socket: bound once, held across the service's restarts, as systemd holds it.
    let socket = UnixListener::bind(&path).unwrap();
    let mut first = start_activated(&socket);
    assert_eq!(get_over_unix(&path, "/first").status, 200);
    first.signal(Signal::SIGTERM);
    assert!(first.wait_exit().success());
    // No service runs: a client connects anyway, and its request waits in the queue.
    let mut waiting = UnixStream::connect(&path).expect("the socket file outlives the stopped service");
    waiting.set_read_timeout(Some(PATIENCE)).unwrap();
    waiting.write_all(b"GET /meanwhile HTTP/1.1\r\nHost: local\r\n\r\n").unwrap();
    let _second = start_activated(&socket);
    let mut raw = Vec::new();
    waiting.read_to_end(&mut raw).unwrap();
    let response = parse_response(&raw);
    assert_eq!(response.status, 200);
    assert_eq!(response.json()["environ"]["PATH_INFO"], "/meanwhile");
}

/// `wasmcorn serve APP --bind unix:SOCKET --workers N ARGS...`, started and booted.
fn serve_on_unix(socket: &Path, app: &str, workers: usize, args: &[&str]) -> Server {
    let bind = format!("unix:{}", socket.display());
    let workers_text = workers.to_string();
    let mut all = vec!["serve", app, "--bind", &bind, "--workers", &workers_text];
    all.extend_from_slice(args);
    let server = Server::launch(crate::support::command(&all), Stdio::null());
    server.wait_for_line(&format!("Listening at: {bind} ("));
    server.wait_for_count("Booting worker with pid", workers);
    server
}

/// nginx's ports: plain HTTP, and HTTPS with a self-signed certificate.
struct Ports {
    http: u16,
    https: u16,
}

/// `deploy/nginx/wasmcorn.conf` with one upstream server line per socket (the recipe's line, its path
/// replaced), listening on free loopback ports, with a fresh self-signed certificate; started.
fn nginx_in_front_of(dir: &Path, sockets: &[&Path]) -> (Nginx, Ports) {
    let (certificate, key) = (dir.join("wasmcorn.crt"), dir.join("wasmcorn.key"));
    let openssl = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=localhost", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&certificate)
        .output()
        .expect("run openssl");
    assert!(openssl.status.success(), "openssl: {}", String::from_utf8_lossy(&openssl.stderr));
    let ports = Ports { http: free_port(), https: free_port() };
    let site = recipe("nginx/wasmcorn.conf");
    let upstream_line = site.lines().find(|line| line.trim_start().starts_with("server unix:")).expect("upstream line");
    let upstream: Vec<String> = sockets
        .iter()
        .map(|socket| replaced(upstream_line, "/run/wasmcorn/wasmcorn.sock", &socket.display().to_string()))
        .collect();
    let site = replaced(&site, upstream_line, &upstream.join("\n"));
    let site = replaced(&site, "listen 80;", &format!("listen 127.0.0.1:{};", ports.http));
    let site = replaced(&site, "listen 443 ssl;", &format!("listen 127.0.0.1:{} ssl;", ports.https));
    let site = replaced(&site, "/etc/nginx/ssl/wasmcorn.crt", &certificate.display().to_string());
    let site = replaced(&site, "/etc/nginx/ssl/wasmcorn.key", &key.display().to_string());
    (Nginx::start(dir, &site, ports.http), ports)
}

/// Sends `bytes` to 127.0.0.1:`port` from the local address `from` (any 127.x.y.z is this machine), so that
/// the address the guest sees can only have come from the proxy's `X-Forwarded-For`.
fn send_from(from: [u8; 4], port: u16, bytes: &[u8]) -> Response {
    let fd = socket(AddressFamily::Inet, SockType::Stream, SockFlag::SOCK_CLOEXEC, None).unwrap();
    bind(fd.as_raw_fd(), &SockaddrIn::new(from[0], from[1], from[2], from[3], 0)).unwrap();
    connect(fd.as_raw_fd(), &SockaddrIn::new(127, 0, 0, 1, port)).unwrap();
    let mut stream = TcpStream::from(fd);
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream.write_all(bytes).unwrap();
    read_response(stream)
}

#[test]
fn nginx_forwards_the_client_address_and_https_over_a_unix_socket() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("wasmcorn.sock");
    let _wasmcorn = serve_on_unix(&socket, "sample:echo", 1, &[]);
    let (_nginx, ports) = nginx_in_front_of(dir.path(), &[&socket]);

    // Plain HTTP, from 127.0.0.5, with a forged client address and a forged scheme header.
    let forged = "GET /plain HTTP/1.1\r\nHost: www.example.test\r\nX-Forwarded-For: 203.0.113.9\r\n\
                  X-Forwarded-Ssl: on\r\nConnection: close\r\n\r\n";
    let response = send_from([127, 0, 0, 5], ports.http, forged.as_bytes());
    assert_eq!(response.status, 200, "{}", response.text());
    let environ = &response.json()["environ"];
    assert_eq!(environ["REMOTE_ADDR"], "127.0.0.5", "the last X-Forwarded-For address, the one nginx added");
    assert_eq!(environ["wsgi.url_scheme"], "http");
    assert_eq!(environ["PATH_INFO"], "/plain");
    assert_eq!(environ["HTTP_HOST"], "www.example.test");

    // HTTPS, from 127.0.0.6: nginx says so with X-Forwarded-Proto.
    let curl = Command::new("curl")
        .args(["--silent", "--show-error", "--insecure", "--interface", "127.0.0.6", "--max-time", "60"])
        .arg(format!("https://127.0.0.1:{}/secure", ports.https))
        .output()
        .expect("run curl");
    assert!(curl.status.success(), "curl: {}", String::from_utf8_lossy(&curl.stderr));
    let body: serde_json::Value = serde_json::from_slice(&curl.stdout).expect("echo's JSON");
    let environ = &body["environ"];
    assert_eq!(environ["REMOTE_ADDR"], "127.0.0.6");
    assert_eq!(environ["wsgi.url_scheme"], "https");
    assert_eq!(environ["PATH_INFO"], "/secure");
}

#[test]
fn nginx_passes_a_10_mib_upload() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("wasmcorn.sock");
    let _wasmcorn = serve_on_unix(&socket, env!("WASMCORN_GUEST_MISBEHAVE"), 1, &[]);
    let (_nginx, ports) = nginx_in_front_of(dir.path(), &[&socket]);
    let length = 10 << 20;
    let mut request =
        format!("POST /discard HTTP/1.1\r\nHost: h\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n")
            .into_bytes();
    request.extend(std::iter::repeat_n(b'u', length));
    let response = send_from([127, 0, 0, 1], ports.http, &request);
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.text(), length.to_string(), "the guest read every byte");
}

/// One request through nginx, with no panic on a connection that fails: the response, or what went wrong.
fn attempt(port: u16, request: &[u8]) -> Result<Response, String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).map_err(|err| format!("connect: {err}"))?;
    stream.set_read_timeout(Some(PATIENCE)).map_err(|err| err.to_string())?;
    stream.write_all(request).map_err(|err| format!("write: {err}"))?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).map_err(|err| format!("read: {err}"))?;
    if raw.is_empty() {
        return Err("closed with no response".into());
    }
    Ok(parse_response(&raw))
}

/// Counts a failed request, and keeps the first few for the test's message.
fn note_failure(failures: &Mutex<(usize, Vec<String>)>, failure: String) {
    let mut failures = failures.lock().unwrap();
    failures.0 += 1;
    if failures.1.len() < 5 {
        failures.1.push(failure);
    }
}

/// Sets the flag when dropped, so that the load stops even when the test fails half-way.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[test]
fn rolling_restart_behind_nginx_loses_no_request() {
    let dir = tempfile::tempdir().unwrap();
    let sockets = [dir.path().join("a.sock"), dir.path().join("b.sock")];
    let start = |which: usize, name: &str| {
        let env = format!("SERVER={name}");
        serve_on_unix(&sockets[which], env!("WASMCORN_GUEST_MISBEHAVE"), 2, &["--env", &env])
    };
    let mut servers = [start(0, "a1"), start(1, "b1")];
    let (nginx, ports) = nginx_in_front_of(dir.path(), &[&sockets[0], &sockets[1]]);

    // Who answered each GET (its SERVER name); how many requests failed, and the first few failures.
    let answered: Mutex<BTreeMap<String, usize>> = Mutex::new(BTreeMap::new());
    let failures: Mutex<(usize, Vec<String>)> = Mutex::new((0, Vec::new()));
    let stop = AtomicBool::new(false);
    let served_by = |name: &str| answered.lock().unwrap().get(name).copied().unwrap_or(0);
    std::thread::scope(|scope| {
        let _stop_load = StopOnDrop(&stop);
        for client in 0..4 {
            let (answered, failures, stop) = (&answered, &failures, &stop);
            scope.spawn(move || {
                let body = "p".repeat(1000);
                let post = format!(
                    "POST /discard HTTP/1.1\r\nHost: h\r\nContent-Length: 1000\r\nConnection: close\r\n\r\n{body}"
                );
                let get = "GET /env HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n";
                // Half the clients send a POST, which nginx never sends twice once it reached a server.
                let request = if client % 2 == 0 { get.as_bytes() } else { post.as_bytes() };
                while !stop.load(Ordering::SeqCst) {
                    match attempt(ports.http, request) {
                        Ok(response) if response.status == 200 && client % 2 == 1 && response.text() == "1000" => {}
                        Ok(response) if response.status == 200 && client % 2 == 0 => {
                            let text = response.text();
                            let name = text.lines().find_map(|line| line.strip_prefix("SERVER=")).unwrap_or("?");
                            *answered.lock().unwrap().entry(name.to_string()).or_default() += 1;
                        }
                        Ok(response) => note_failure(failures, format!("{}: {}", response.status, response.text())),
                        Err(err) => note_failure(failures, err),
                    }
                }
            });
        }
        eventually("both servers to serve", || served_by("a1") > 0 && served_by("b1") > 0);
        // Restart each in turn, as an operator's script would: TERM, wait for the graceful exit, start it again
        // on the same socket, and once its workers have booted, go on to the next at once.
        for (which, restarted) in [(0, "a2"), (1, "b2")] {
            // A slow request that reached this server before its TERM must still be answered.
            let mut slow = UnixStream::connect(&sockets[which]).unwrap();
            slow.write_all(b"GET /sleep?seconds=1 HTTP/1.1\r\nHost: h\r\n\r\n").unwrap();
            servers[which].signal(Signal::SIGTERM);
            assert!(servers[which].wait_exit().success(), "a graceful stop exits 0");
            let mut raw = Vec::new();
            slow.read_to_end(&mut raw).unwrap();
            assert_eq!(parse_response(&raw).text(), "slept 1 s", "the request in flight at TERM was served");
            servers[which] = start(which, restarted);
        }
        eventually("a2 and b2 to serve", || served_by("a2") > 0 && served_by("b2") > 0);
    });
    let answered = answered.into_inner().unwrap();
    let failures = failures.into_inner().unwrap();
    let refused = nginx.error_log().lines().filter(|line| line.contains("connect() to unix:")).count();
    eprintln!("GETs answered by each server: {answered:?}; connections nginx saw refused: {refused}");
    let (failed, first_failures) = failures;
    assert_eq!(failed, 0, "failed requests; the first: {first_failures:?}");
    assert_eq!(answered.get("?"), None, "every answer named its server");
    assert_eq!(answered.len(), 4, "a1, b1, a2 and b2 all served: {answered:?}");
}
