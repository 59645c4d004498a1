//! The watchdog takes stuck workers, never busy ones: a worker moving a slow client's bytes is alive, and a guest
//! waiting in a host call (a sleep, a socket, the request body) is cut at its own deadline, which answers 503
//! and keeps the worker. Each test runs with `--timeout 3`, under which a worker silent for a few seconds
//! while serving would be killed (`WORKER TIMEOUT`: after 3 s with a guest timeout of 1 s, 4 s with 2 s), and lasts
//! longer than that. (`--timeout 1` gives the same limits to a busy worker, but an idle one only 0.5 s of slack
//! between its heartbeats, which a stalled CI machine can exceed.)

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use nix::sys::socket::{AddressFamily, SockFlag, SockType, SockaddrIn, connect, setsockopt, socket, sockopt};
use nix::unistd::Pid;

use crate::support::{PATIENCE, Server, parse_response, read_response, send};

const MISBEHAVE: &str = env!("WASMCORN_GUEST_MISBEHAVE");

/// Serves `app` on one worker with `--timeout 3` and the given guest timeout; returns it and its worker's pid.
fn one_worker(app: &str, guest_timeout: &str, args: &[&str]) -> (Server, Pid) {
    let mut all = vec!["--timeout", "3", "--guest-timeout", guest_timeout];
    all.extend_from_slice(args);
    let server = Server::start(app, 1, &all);
    let booted = server.booted_worker_pids();
    assert_eq!(booted.len(), 1, "one worker booted: {booted:?}");
    (server, booted[0])
}

/// The worker is still the one that booted, no WORKER TIMEOUT happened, and it serves the next request.
fn assert_worker_kept(server: &Server, worker: Pid, path: &str) {
    assert_eq!(server.get(path).status, 200, "the request after");
    assert_eq!(server.booted_worker_pids(), vec![worker], "no other worker booted");
    assert_eq!(server.live_workers(), vec![worker], "the worker is alive");
    assert!(!server.log_text().contains("WORKER TIMEOUT"), "no worker timeout:\n{}", server.log_text());
}

#[test]
fn guest_sleeping_past_its_timeout_gets_503_and_keeps_its_worker() {
    let (server, worker) = one_worker(MISBEHAVE, "1", &[]);
    // A 6 s sleep is a wait in wasi:io/poll, which epochs do not interrupt; the guest has 1 s.
    let response = server.get("/sleep?seconds=6");
    assert_eq!(response.status, 503, "{}", response.text());
    let line = server.wait_for_line("Guest timeout handling request GET /sleep?seconds=6 HTTP/1.1");
    assert!(line.contains("ran out while it waited in wasi:io/poll"), "{line}");
    assert_worker_kept(&server, worker, "/count");
}

/// `--timeout` shorter than the guest's time: a worker whose guest may still run is not taken for a stuck one (it
/// is given at least the guest timeout and 2 s), so a guest sleeping past `--timeout` but within its own time
/// answers, on the same worker.
#[test]
fn a_timeout_shorter_than_the_guests_time_does_not_kill_a_worker_whose_guest_runs() {
    let server = Server::start(MISBEHAVE, 1, &["--timeout", "1", "--guest-timeout", "4"]);
    let worker = server.booted_worker_pids()[0];
    let response = server.get("/sleep?seconds=2.5");
    assert_eq!((response.status, response.text().as_str()), (200, "slept 2.5 s"), "{}", server.log_text());
    assert_worker_kept(&server, worker, "/count");
}

#[test]
fn guest_waiting_on_a_silent_socket_gets_503_and_keeps_its_worker() {
    // A peer that accepts (the kernel does it for the listener) and never answers.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = silent.local_addr().unwrap().to_string();
    let (server, worker) = one_worker(MISBEHAVE, "1", &["--allow-net", &address]);
    // The guest waits up to 10 s for the reply (its socket's read timeout); it has 1 s.
    let response = server.get(&format!("/connect?addr={address}"));
    assert_eq!(response.status, 503, "{}", response.text());
    server.wait_for_line("Guest timeout handling request GET /connect");
    assert_worker_kept(&server, worker, "/count");
}

#[test]
fn silent_request_body_is_a_guest_timeout_not_a_dead_worker() {
    let (server, worker) = one_worker("sample:echo", "1", &[]);
    // The guest reads a body that never comes: the read ends at the guest's deadline, not the client timeout.
    let mut client = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    client.set_read_timeout(Some(PATIENCE)).unwrap();
    client.write_all(b"POST /silent HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\n").unwrap();
    let response = read_response(client);
    assert_eq!(response.status, 503, "{}", response.text());
    let line = server.wait_for_line("Guest timeout handling request POST /silent HTTP/1.1");
    assert!(line.contains("wasmcorn:app/request.read-body"), "{line}");
    assert!(!server.log_text().contains("Bad request body"), "the client is not blamed");
    assert_worker_kept(&server, worker, "/");
}

#[test]
fn slow_reader_of_a_large_response_gets_all_of_it_and_the_worker_lives() {
    // The guest writes 16 MiB to a client that takes it slowly for 6 s: past --timeout and past the guest's
    // own 2 s, but the bytes keep moving.
    let (server, worker) = one_worker(MISBEHAVE, "2", &[]);
    let total = 16 << 20;
    let mut client = small_window_client(server.port);
    client.write_all(format!("GET /big?bytes={total} HTTP/1.1\r\nHost: h\r\n\r\n").as_bytes()).unwrap();
    let mut raw = Vec::new();
    let mut piece = [0u8; 4096];
    let slow_until = Instant::now() + Duration::from_secs(6);
    while Instant::now() < slow_until {
        match client.read(&mut piece) {
            Ok(0) | Err(_) => break,
            Ok(count) => raw.extend_from_slice(&piece[..count]),
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = client.read_to_end(&mut raw);
    let response = parse_response(&raw);
    assert_eq!(response.status, 200);
    assert_eq!(response.body.len(), total, "the whole body arrived");
    assert!(response.body.iter().enumerate().all(|(index, byte)| *byte == b'a' + (index % 26) as u8));
    assert_worker_kept(&server, worker, "/count");
}

#[test]
fn slow_request_body_upload_is_served_and_the_worker_lives() {
    // 15 pieces, 0.4 s apart: 6 s of upload, past --timeout and past the guest's own 2 s, to a guest that reads
    // the body as it comes.
    let (server, worker) = one_worker("sample:echo", "2", &[]);
    let pieces: Vec<String> = (0..15).map(|index| format!("piece {index:02} of a slow upload\n")).collect();
    let length: usize = pieces.iter().map(String::len).sum();
    let mut client = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    client.set_read_timeout(Some(PATIENCE)).unwrap();
    client
        .write_all(format!("POST /upload HTTP/1.1\r\nHost: h\r\nContent-Length: {length}\r\n\r\n").as_bytes())
        .unwrap();
    for piece in &pieces {
        std::thread::sleep(Duration::from_millis(400));
        client.write_all(piece.as_bytes()).unwrap();
    }
    let response = read_response(client);
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.json()["body"], pieces.concat());
    assert_worker_kept(&server, worker, "/");
    // And a normal request on the same worker still works the usual way.
    assert_eq!(send(server.port, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n").status, 200);
}

#[test]
fn a_trickling_upload_gives_its_guest_back_no_more_than_the_client_timeout() {
    // A byte every 0.3 s to a guest that reads the body as it comes. Each byte gives the guest back the time it
    // waited, but at most --client-timeout (2 s) in all: its 1 s then runs out after about 3 s, long before the
    // 40 bytes are sent. Without the bound the upload would hold the guest, and its worker, for as long as the
    // client kept trickling.
    let (server, worker) = one_worker("sample:echo", "1", &["--client-timeout", "2"]);
    let mut client = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    client.set_read_timeout(Some(PATIENCE)).unwrap();
    client.write_all(b"POST /trickle HTTP/1.1\r\nHost: h\r\nContent-Length: 40\r\n\r\n").unwrap();
    let mut writer = client.try_clone().unwrap();
    let trickle = std::thread::spawn(move || {
        for _ in 0..40 {
            std::thread::sleep(Duration::from_millis(300));
            if writer.write_all(b"x").is_err() {
                break;
            }
        }
    });
    let response = read_response(client);
    trickle.join().unwrap();
    assert_eq!(response.status, 503, "{}", response.text());
    server.wait_for_line("Guest timeout handling request POST /trickle HTTP/1.1");
    assert_worker_kept(&server, worker, "/");
}

/// A client connection with a small receive buffer, so that the server's writes wait for it.
fn small_window_client(port: u16) -> TcpStream {
    let fd: OwnedFd = socket(AddressFamily::Inet, SockType::Stream, SockFlag::SOCK_CLOEXEC, None).unwrap();
    setsockopt(&fd, sockopt::RcvBuf, &4096).unwrap();
    connect(std::os::fd::AsRawFd::as_raw_fd(&fd), &SockaddrIn::new(127, 0, 0, 1, port)).unwrap();
    let stream = TcpStream::from(fd);
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream
}
