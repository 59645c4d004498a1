//! `deploy/systemd/`: the units pass `systemd-analyze verify` (it judges unit files without systemd as PID 1),
//! and the service's own command (its `ExecStart=`, read from the unit, so that the test follows the unit)
//! serves through a socket handed over as systemd hands it: under `systemd-socket-activate`, telling a test
//! `NOTIFY_SOCKET` it is ready, and across a restart that keeps the socket, with no lost connection.

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixDatagram, UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use nix::sys::signal::Signal;

use super::{recipe, replaced};
use crate::support::debian::installed;
use crate::support::{PATIENCE, Response, Server, binary, cache_dir, parse_response};

/// The value of a unit file's first `KEY=` line.
fn unit_value(unit: &str, key: &str) -> String {
    let prefix = format!("{key}=");
    let line = unit.lines().find_map(|line| line.trim().strip_prefix(&prefix));
    line.unwrap_or_else(|| panic!("the unit has no {key}= line")).trim().to_string()
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
        let output = Command::new(installed("/usr/bin/systemd-analyze", "systemd"))
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
    let mut activator = Command::new(installed("/usr/bin/systemd-socket-activate", "systemd"));
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
