//! Listening sockets: several binds, unix sockets and the umask, inherited descriptors (fd://N and systemd
//! socket activation), readiness notification, backlog and SO_REUSEPORT.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::process::{Command, Stdio};

use crate::support::{PATIENCE, Server, command, parse_response, send};

fn get_over_unix(path: &std::path::Path) -> crate::support::Response {
    let mut stream = UnixStream::connect(path).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream.write_all(b"GET /unix HTTP/1.1\r\nHost: local\r\n\r\n").unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    parse_response(&raw)
}

/// A peer on a unix socket is a local proxy (nginx in front, as in Gunicorn): its `X-Forwarded-*` headers are
/// believed whatever `--forwarded-allow-ips` says, while the same headers over TCP from a peer not listed change
/// nothing.
#[test]
fn a_unix_socket_peer_is_trusted_for_forwarded_headers() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.sock");
    let bind = format!("unix:{}", path.display());
    let server = Server::start("sample:echo", 1, &["--bind", &bind, "--forwarded-allow-ips", ""]);
    let forwarded = "Host: h\r\nX-Forwarded-For: 203.0.113.7\r\nX-Forwarded-Proto: https\r\nConnection: close\r\n\r\n";
    let mut stream = UnixStream::connect(&path).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream.write_all(format!("GET / HTTP/1.1\r\n{forwarded}").as_bytes()).unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let environ = parse_response(&raw).json()["environ"].clone();
    assert_eq!(
        (environ["REMOTE_ADDR"].as_str(), environ["wsgi.url_scheme"].as_str()),
        (Some("203.0.113.7"), Some("https"))
    );
    let over_tcp = send(server.port, format!("GET / HTTP/1.1\r\n{forwarded}").as_bytes()).json()["environ"].clone();
    assert_eq!(
        (over_tcp["REMOTE_ADDR"].as_str(), over_tcp["wsgi.url_scheme"].as_str()),
        (Some("127.0.0.1"), Some("http"))
    );
}

/// A socket file the server cannot connect to for another reason than nobody listening there (another user's live
/// socket, mode 0700) is not taken for a stale one: the server, run as nobody in a folder of nobody's, leaves it
/// and stops in one line. (It removed the file, and the other server lost its address.)
#[test]
fn a_socket_it_may_not_connect_to_is_not_removed_as_stale() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let folder = dir.path().join("nobodys");
    let cache = folder.join("cache");
    std::fs::create_dir_all(&cache).unwrap();
    for owned in [&folder, &cache] {
        std::os::unix::fs::chown(owned, Some(65534), Some(65534)).unwrap();
    }
    let path = folder.join("s.sock");
    let live = std::os::unix::net::UnixListener::bind(&path).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700)).unwrap();
    let output = Command::new("timeout")
        .args(["30", "setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups", "--"])
        .arg(crate::support::binary())
        .args(["serve", "sample:hello", "--bind", &format!("unix:{}", path.display()), "--cache-dir"])
        .arg(&cache)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.trim_end().ends_with("cannot connect to it to tell (Permission denied (os error 13))"), "{stderr}");
    assert!(stderr.contains("may be in use"), "{stderr}");
    assert!(std::fs::symlink_metadata(&path).unwrap().file_type().is_socket(), "the socket file stays");
    UnixStream::connect(&path).expect("the other server still listens there");
    drop(live);
}

#[test]
fn several_binds_all_answer() {
    let server = Server::start("sample:hello", 1, &["--bind", "127.0.0.1:0"]);
    let lines = server.wait_for_count("Listening at: http://127.0.0.1:", 2);
    for line in lines {
        let port: u16 =
            line.split("127.0.0.1:").nth(1).and_then(|rest| rest.split(' ').next()).unwrap().parse().unwrap();
        assert_eq!(send(port, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n").status, 200);
    }
}

#[test]
fn unix_socket_replaces_a_stale_file_and_applies_the_umask() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wasmcorn.sock");
    // A stale socket file: bound once, nobody listens on it any more.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    let spec = format!("unix:{}", path.display());
    let server = Server::start("sample:echo", 1, &["--bind", &spec, "--umask", "077"]);
    server.wait_for_line(&format!("Listening at: {spec} ("));
    let metadata = std::fs::metadata(&path).unwrap();
    assert!(metadata.file_type().is_socket());
    assert_eq!(metadata.permissions().mode() & 0o777, 0o700);
    let response = get_over_unix(&path);
    assert_eq!(response.status, 200);
    let environ = &response.json()["environ"];
    assert_eq!(environ["PATH_INFO"], "/unix");
    assert_eq!(environ["REMOTE_ADDR"], "");
}

#[test]
fn unix_socket_in_use_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("busy.sock");
    let _busy = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let output = command(&["serve", "--bind", &format!("unix:{}", path.display())]).output().unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("in use by another server"));
}

/// Runs `wasmcorn serve ARGS`, which must fail in one line and leave no file at `socket`.
fn assert_start_fails_leaving_no_socket_file(args: &[&str], socket: &std::path::Path) {
    let mut all = vec!["serve"];
    all.extend_from_slice(args);
    let output = command(&all).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success() && stderr.lines().count() == 1, "{stderr}");
    assert!(!socket.exists(), "the socket file stayed: {stderr}");
}

#[test]
fn a_start_that_fails_after_binding_leaves_no_socket_file() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("app.sock");
    // A pid file naming a live process (this test's): the start fails once the sockets are bound.
    let pidfile = dir.path().join("live.pid");
    std::fs::write(&pidfile, std::process::id().to_string()).unwrap();
    let bind = format!("unix:{}", socket.display());
    assert_start_fails_leaving_no_socket_file(&["--bind", &bind, "--pid", pidfile.to_str().unwrap()], &socket);
}

#[test]
fn a_start_that_fails_to_bind_leaves_no_socket_file_of_the_binds_before() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("first.sock");
    let busy = TcpListener::bind("127.0.0.1:0").unwrap();
    let busy_address = format!("127.0.0.1:{}", busy.local_addr().unwrap().port());
    let first = format!("unix:{}", socket.display());
    assert_start_fails_leaving_no_socket_file(&["--bind", &first, "--bind", &busy_address], &socket);
}

#[test]
fn an_upgrade_that_fails_leaves_the_running_servers_socket_file() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("app.sock");
    let pidfile = dir.path().join("wasmcorn.pid");
    // The new arbiter's pid file names a live process (this test's): its start fails.
    std::fs::write(dir.path().join("wasmcorn.pid.2"), std::process::id().to_string()).unwrap();
    let bind = format!("unix:{}", socket.display());
    let server = Server::start("sample:hello", 1, &["--bind", &bind, "--pid", pidfile.to_str().unwrap()]);
    server.signal(nix::sys::signal::Signal::SIGUSR2);
    server.wait_for_line("already running on pid");
    assert!(socket.exists(), "the running server's socket file is gone:\n{}", server.log_text());
    assert_eq!(get_over_unix(&socket).status, 200);
}

#[test]
fn stopping_the_new_arbiter_of_an_upgrade_leaves_the_old_ones_socket_file() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("app.sock");
    let pidfile = dir.path().join("wasmcorn.pid");
    let bind = format!("unix:{}", socket.display());
    let mut server = Server::start("sample:hello", 1, &["--bind", &bind, "--pid", pidfile.to_str().unwrap()]);
    server.signal(nix::sys::signal::Signal::SIGUSR2);
    let successor = server.successor_pid();
    server.also_stop(successor);
    server.wait_for_count("Booting worker with pid", 2);
    // The upgrade is rolled back: the new arbiter stops, and the old one serves on through the same file.
    nix::sys::signal::kill(successor, nix::sys::signal::Signal::SIGTERM).unwrap();
    crate::support::eventually("the new arbiter gone", || !crate::support::is_alive(successor));
    assert!(socket.exists(), "the running server's socket file is gone:\n{}", server.log_text());
    assert_eq!(get_over_unix(&socket).status, 200);
}

/// Starts `wasmcorn serve --bind BIND` with a fresh listening socket as its descriptor 3: handed over as stdin
/// and moved by the shell, which runs `setup` first, as a supervisor would. Returns the server and the port of
/// the handed-over socket.
fn serve_with_descriptor_3(setup: &str, bind: &str) -> (Server, u16) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let fd: OwnedFd = listener.into();
    let script = format!("exec 3<&0 0</dev/null; {setup} exec \"$0\" \"$@\"");
    let mut command = Command::new("bash");
    command
        .args(["-c", &script, crate::support::binary(), "serve", "--bind", bind])
        .env("WASMCORN_CACHE_DIR", crate::support::cache_dir());
    let server = Server::spawn_with_stdin(command, Stdio::from(fd));
    server.wait_for_line("Booting worker");
    (server, port)
}

#[test]
fn fd_bind_adopts_an_inherited_socket() {
    let (server, port) = serve_with_descriptor_3("", "fd://3");
    assert_eq!(server.port, port);
    assert_eq!(send(port, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n").status, 200);
}

#[test]
fn systemd_socket_activation_is_used_instead_of_bind() {
    let (server, port) = serve_with_descriptor_3("export LISTEN_FDS=1 LISTEN_PID=$$;", "127.0.0.1:1");
    assert_eq!(server.port, port, "the activated socket, not --bind");
    assert_eq!(send(port, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n").status, 200);
}

/// `LISTEN_FDS=0` passes no socket: the server binds `--bind` as without it. A count that is not one (negative,
/// past what a descriptor number can be) is one line and a non-zero exit, never a server that listens on nothing
/// (or, in a build with overflow checks, a panic).
#[test]
fn listen_fds_of_zero_binds_as_usual_and_a_bad_count_is_refused() {
    let server = Server::spawn(with_listen_fds("0"));
    assert_eq!(send(server.port, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n").status, 200);
    for count in ["-3", "2147483647", "many"] {
        let output = with_listen_fds(count).stdin(Stdio::null()).output().unwrap();
        crate::support::assert_one_line_error(&output, &["LISTEN_FDS is not a number of descriptors"]);
    }
}

/// `wasmcorn serve --bind 127.0.0.1:0` started by a shell that sets `LISTEN_FDS=COUNT` and `LISTEN_PID` to the
/// server's pid (the shell's, which `exec` keeps), as a service manager would.
fn with_listen_fds(count: &str) -> Command {
    let setup = format!("export LISTEN_FDS={count} LISTEN_PID=$$; exec \"$0\" \"$@\"");
    let mut command = Command::new("bash");
    command
        .args(["-c", &setup, crate::support::binary(), "serve", "--bind", "127.0.0.1:0"])
        .env("WASMCORN_CACHE_DIR", crate::support::cache_dir());
    command
}

/// One inherited socket named twice would be adopted, and closed at the end, twice.
#[test]
fn an_inherited_socket_named_twice_is_refused() {
    let output = command(&["serve", "--bind", "fd://3", "--bind", "fd://03", "--check-config"]).output().unwrap();
    crate::support::assert_one_line_error(
        &output,
        &["--bind fd://03 is given twice: descriptor 3 can be adopted once"],
    );
}

#[test]
fn notify_socket_gets_ready_once_the_workers_are_up() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    socket.set_read_timeout(Some(PATIENCE)).unwrap();
    let server = Server::start_with_env("sample:hello", 2, &[], &[("NOTIFY_SOCKET", path.to_str().unwrap())]);
    let mut message = [0u8; 256];
    let length = socket.recv(&mut message).unwrap();
    let message = String::from_utf8_lossy(&message[..length]).into_owned();
    assert_eq!(message, format!("READY=1\nMAINPID={}", server.pid));
    assert_eq!(server.booted_worker_pids().len(), 2, "ready only after both workers booted");
}

#[test]
fn backlog_sets_the_listen_queue_length() {
    let server = Server::start("sample:hello", 1, &["--backlog", "7"]);
    let output = Command::new("ss").args(["-ltnH", &format!("sport = :{}", server.port)]).output().unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    // For a listening socket, ss shows the backlog as Send-Q (the third column).
    let send_q = text.split_whitespace().nth(2).unwrap_or_default();
    assert_eq!(send_q, "7", "{text}");
}

#[test]
fn reuse_port_lets_two_servers_share_an_address() {
    let first = Server::start("sample:hello", 1, &["--reuse-port"]);
    let address = format!("127.0.0.1:{}", first.port);
    let mut second_command = command(&["serve", "--bind", &address, "--reuse-port"]);
    second_command.env_remove("WEB_CONCURRENCY");
    let second = Server::spawn(second_command);
    assert_eq!(second.port, first.port);
    second.wait_for_line("Booting worker");
    let without = command(&["serve", "--bind", &address]).output().unwrap();
    assert!(!without.status.success(), "without --reuse-port the address is taken");
}
