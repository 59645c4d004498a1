//! `deploy/nginx/wasmcorn.conf` run by Debian's nginx (a private instance, `support::nginx`) in front of
//! wasmcorn's unix sockets: the client's address and https reach the guest, a 10 MiB upload passes, and two
//! wasmcorn servers in one upstream restart one after the other under a steady load with no failed request.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use nix::sys::signal::Signal;
use nix::sys::socket::{AddressFamily, SockFlag, SockType, SockaddrIn, bind, connect, socket};

use super::{recipe, replaced};
use crate::support::debian::installed;
use crate::support::nginx::{Nginx, free_port};
use crate::support::{PATIENCE, Response, Server, eventually, parse_response, read_response};

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
    let openssl = Command::new(installed("/usr/bin/openssl", "openssl"))
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
    let curl = Command::new(installed("/usr/bin/curl", "curl"))
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
    let posted = AtomicUsize::new(0);
    let served_by = |name: &str| answered.lock().unwrap().get(name).copied().unwrap_or(0);
    std::thread::scope(|scope| {
        let _stop_load = StopOnDrop(&stop);
        for client in 0..4 {
            let (answered, failures, stop, posted) = (&answered, &failures, &stop, &posted);
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
                        Ok(response) if response.status == 200 && client % 2 == 1 && response.text() == "1000" => {
                            posted.fetch_add(1, Ordering::SeqCst);
                        }
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
            slow.set_read_timeout(Some(PATIENCE)).unwrap();
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
    let posted = posted.into_inner();
    eprintln!("GETs answered by each server: {answered:?}; POSTs answered: {posted}; refused connects: {refused}");
    let (failed, first_failures) = failures;
    assert_eq!(failed, 0, "failed requests; the first: {first_failures:?}");
    assert_eq!(answered.get("?"), None, "every answer named its server");
    assert_eq!(answered.len(), 4, "a1, b1, a2 and b2 all served: {answered:?}");
}
