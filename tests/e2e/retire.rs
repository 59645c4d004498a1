//! Workers that leave: a retired worker (reload) accepts no more and loses no request, even with a full
//! backlog; a worker that must die (WORKER TIMEOUT, past the graceful timeout of a stop or a reload) loses none of
//! the connections it had queued but never started: its relay passed them to its pool's channel once its guest
//! run lasted, so the next worker of the pool serves them, and at the end of a stop the arbiter answers those no
//! worker took `503` (a connection still held by a dying worker is answered `503` by the worker: `farewell`, and
//! so is one still in the kernel's listen queue when the server stops), instead of resetting them.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};

use nix::sys::signal::Signal;

use crate::support::{
    PATIENCE, Response, Server, concurrently, connect_sending, established_to, eventually, is_alive, parse_response,
    read_by_server,
};

const MISBEHAVE: &str = env!("WASMCORN_GUEST_MISBEHAVE");

/// Sends `GET path` on a new connection and reads until the server closes; `None` when the connection was
/// refused, reset or closed without a whole response.
fn fetch(port: u16, path: &str) -> Option<Response> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(PATIENCE)).ok()?;
    stream.write_all(format!("GET {path} HTTP/1.1\r\nHost: h\r\n\r\n").as_bytes()).ok()?;
    whole_response(read_all(stream))
}

/// Everything the server sent until it closed (or reset) the connection.
fn read_all(mut stream: TcpStream) -> Vec<u8> {
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let _ = stream.shutdown(Shutdown::Both);
    raw
}

/// The response, if `raw` holds a whole one (its head and as many body bytes as its Content-Length says).
fn whole_response(raw: Vec<u8>) -> Option<Response> {
    let mut fields = [httparse::EMPTY_HEADER; 64];
    if !httparse::Response::new(&mut fields).parse(&raw).is_ok_and(|status| status.is_complete()) {
        return None;
    }
    let response = parse_response(&raw);
    let length: usize = response.header("content-length")?.parse().ok()?;
    (response.body.len() == length).then_some(response)
}

/// Clients whose connections the worker (`-w 1`) accepted, and then a request that holds it: each client sends
/// the start of its head, then `stuck` sends a whole request, which the worker accepts after them (the listen
/// queue is first in, first out) and starts serving. Once the worker has read `stuck`'s request, the clients
/// complete their heads: they are queued in that worker, not started. Returns the clients and `stuck`.
fn queue_behind_a_stuck_request(port: u16, clients: usize, stuck: &str) -> (Vec<TcpStream>, TcpStream) {
    let queued: Vec<TcpStream> =
        (0..clients).map(|_| connect_sending(port, b"GET /sleep?seconds=0 HTTP/1.1\r\nHost: h\r\n")).collect();
    let mut busy = TcpStream::connect(("127.0.0.1", port)).unwrap();
    busy.set_read_timeout(Some(PATIENCE)).unwrap();
    busy.write_all(format!("GET {stuck} HTTP/1.1\r\nHost: h\r\n\r\n").as_bytes()).unwrap();
    eventually("the worker reads the stuck request", || read_by_server(port, &busy));
    for mut client in &queued {
        client.write_all(b"\r\n").unwrap();
    }
    (queued, busy)
}

/// Clients that connect and send a whole request while the only worker is stuck: they wait in the kernel's listen
/// queue, never accepted. Returns once the kernel has them all.
fn queue_in_the_kernel(port: u16, clients: usize) -> Vec<TcpStream> {
    let before = established_to(port);
    let queued: Vec<TcpStream> =
        (0..clients).map(|_| connect_sending(port, b"GET /sleep?seconds=0 HTTP/1.1\r\nHost: h\r\n\r\n")).collect();
    eventually("the kernel holds the new connections", || established_to(port) >= before + clients);
    queued
}

/// How many connections the log says were answered 503 by dying workers and by the arbiter at the end.
fn answered_in_log(server: &Server) -> usize {
    let count_after = |line: &str, marker: &str| -> usize {
        line.split(marker).nth(1).and_then(|rest| rest.split(' ').next()).and_then(|n| n.parse().ok()).unwrap_or(0)
    };
    server
        .log_lines()
        .iter()
        .map(|line| count_after(line, "it answered its ") + count_after(line, "Answered the "))
        .sum()
}

/// Each client gets a whole 200 from the misbehave guest's `/sleep?seconds=0`.
fn assert_served(clients: Vec<TcpStream>) {
    for client in clients {
        let raw = read_all(client);
        let response = whole_response(raw.clone())
            .unwrap_or_else(|| panic!("a queued client got no whole answer: {:?}", String::from_utf8_lossy(&raw)));
        assert_eq!(response.status, 200, "{}", String::from_utf8_lossy(&raw));
        assert!(response.text().starts_with("slept"), "{}", response.text());
    }
}

fn assert_answered_503(clients: Vec<TcpStream>) {
    for client in clients {
        let raw = read_all(client);
        let response = whole_response(raw.clone())
            .unwrap_or_else(|| panic!("a queued client got no whole answer: {:?}", String::from_utf8_lossy(&raw)));
        assert_eq!(response.status, 503, "{}", String::from_utf8_lossy(&raw));
        assert_eq!(response.header("connection"), Some("close"));
        assert_eq!(response.text(), "Service Unavailable\n");
    }
}

#[test]
fn sighup_with_a_full_backlog_answers_every_queued_client() {
    let server = Server::start(MISBEHAVE, 2, &["--graceful-timeout", "3"]);
    let old = server.booted_worker_pids();
    let port = server.port;
    let answered = AtomicUsize::new(0);
    let responses: Vec<Option<Response>> = std::thread::scope(|scope| {
        let clients: Vec<_> = (0..40)
            .map(|_| {
                scope.spawn(|| {
                    let response = fetch(port, "/sleep?seconds=0.5");
                    answered.fetch_add(1, Ordering::SeqCst);
                    response
                })
            })
            .collect();
        // Reload while the kernel holds every connection: two are served, the rest wait in the listen queue. (A
        // connection served leaves the count: on a slow machine the last clients may connect after the first left.)
        eventually("40 connections made", || established_to(port) + answered.load(Ordering::SeqCst) >= 40);
        server.signal(Signal::SIGHUP);
        clients.into_iter().map(|client| client.join().expect("client thread")).collect()
    });
    let failed: Vec<usize> = responses
        .iter()
        .enumerate()
        .filter(|(_, response)| response.as_ref().is_none_or(|response| response.status != 200))
        .map(|(index, _)| index)
        .collect();
    assert_eq!(failed, Vec::<usize>::new(), "clients without a 200 across the reload");
    assert!(responses.iter().flatten().all(|response| response.text().starts_with("slept")));
    server.wait_for_line("Reload complete");
    server.wait_for_count("Worker retiring", 2);
    eventually("the old workers gone", || old.iter().all(|pid| !is_alive(*pid)));
    assert!(!server.log_text().contains("did not finish within the graceful timeout"), "no worker overran");
    let after = concurrently(4, |_| fetch(port, "/sleep?seconds=0").expect("an answer"));
    assert!(after.iter().all(|response| response.status == 200), "the new workers serve");
}

#[test]
fn worker_timeout_loses_none_of_the_connections_it_queued() {
    // One worker, so every connection goes to it. The guest opens a FIFO that no one writes: a file call runs on
    // a blocking thread that its own deadline cannot cut short, so the arbiter kills the worker after the guest
    // timeout plus 2 s.
    let granted = tempfile::tempdir().unwrap();
    nix::unistd::mkfifo(&granted.path().join("fifo"), nix::sys::stat::Mode::S_IRWXU).unwrap();
    let dir = format!("{}::/data", granted.path().display());
    let server = Server::start(MISBEHAVE, 1, &["--timeout", "3", "--guest-timeout", "1", "--dir", &dir]);
    let stuck = server.booted_worker_pids()[0];
    let (queued, busy) = queue_behind_a_stuck_request(server.port, 3, "/read?path=/data/fifo");
    server.wait_for_line(&format!("WORKER TIMEOUT (pid:{stuck}) serving GET /read?path=/data/fifo HTTP/1.1"));
    // Relayed to the pool's channel while the guest was stuck: the new worker serves them.
    assert_served(queued);
    server.wait_for_line(&format!("Worker (pid:{stuck}) was killed with SIGABRT after WORKER TIMEOUT"));
    // The request in flight is cut; a connection still in the listen queue goes to the new worker.
    assert!(whole_response(read_all(busy)).is_none());
    let later = fetch(server.port, "/sleep?seconds=0").expect("the new worker answers");
    assert_eq!(later.status, 200);
    assert!(later.text().starts_with("slept"), "{}", later.text());
}

/// A worker stuck past `--graceful-timeout` after `signal` loses none of its queued connections, nor those the
/// kernel queued for it meanwhile: after a stop, the arbiter answers the first 503 and the dying worker the
/// others (they were reset when its listeners closed); after a reload, the new worker serves them all.
fn graceful_timeout_loses_no_queued_connection(signal: Signal) {
    let mut server = Server::start(MISBEHAVE, 1, &["--graceful-timeout", "2", "--guest-timeout", "60"]);
    let stuck = server.booted_worker_pids()[0];
    let (queued, busy) = queue_behind_a_stuck_request(server.port, 3, "/sleep?seconds=60");
    let in_the_kernel = queue_in_the_kernel(server.port, 2);
    server.signal(signal);
    server.wait_for_line(&format!("Worker (pid:{stuck}) did not finish within the graceful timeout"));
    if signal == Signal::SIGTERM {
        assert_answered_503(queued);
        assert_answered_503(in_the_kernel);
        server.wait_for_line("Answered the 3 connections left in the pools' channels 503");
        let aborted = format!("Worker (pid:{stuck}) was killed with SIGABRT after the graceful timeout");
        server.wait_for_line(&format!("{aborted}; it answered its 2 queued connections 503"));
    } else {
        assert_served(queued);
        assert_served(in_the_kernel);
    }
    server.wait_for_line(&format!("Worker (pid:{stuck}) was killed with SIGABRT after the graceful timeout"));
    assert!(whole_response(read_all(busy)).is_none());
    if signal == Signal::SIGTERM {
        assert_eq!(server.wait_exit().code(), Some(0));
    } else {
        let later = fetch(server.port, "/sleep?seconds=0").expect("the new worker answers");
        assert_eq!(later.status, 200);
    }
}

#[test]
fn sigterm_past_the_graceful_timeout_answers_queued_connections_503() {
    graceful_timeout_loses_no_queued_connection(Signal::SIGTERM);
}

#[test]
fn sighup_past_the_graceful_timeout_serves_queued_connections_in_the_new_worker() {
    graceful_timeout_loses_no_queued_connection(Signal::SIGHUP);
}

#[test]
fn quick_stop_answers_the_connections_a_worker_queued_503() {
    let mut server = Server::start(MISBEHAVE, 1, &["--guest-timeout", "60"]);
    let stuck = server.booted_worker_pids()[0];
    let (queued, busy) = queue_behind_a_stuck_request(server.port, 3, "/sleep?seconds=60");
    let in_the_kernel = queue_in_the_kernel(server.port, 2);
    server.signal(Signal::SIGINT);
    assert_answered_503(queued);
    assert_answered_503(in_the_kernel);
    server.wait_for_line(&format!("Worker (pid:{stuck}) stopped by SIGINT"));
    server.wait_for_line("Shutting down");
    // The worker answers what it still held and what the kernel queued on its listeners; what its relay had
    // passed to the pool's channel (once the guest ran for a few milliseconds), the arbiter answers at the end.
    assert_eq!(answered_in_log(&server), 5, "{}", server.log_text());
    assert!(whole_response(read_all(busy)).is_none());
    assert_eq!(server.wait_exit().code(), Some(0));
}
