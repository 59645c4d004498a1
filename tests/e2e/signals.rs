//! Stopping the server with signals.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;

use nix::sys::signal::Signal;

use crate::support::{
    PATIENCE, Server, eventually, held_request, is_alive, read_by_server, read_response, signal_pending,
};

const MISBEHAVE: &str = env!("WASMCORN_GUEST_MISBEHAVE");

fn assert_stops_cleanly(signal: Signal) {
    let mut server = Server::start("sample:hello", 2, &[]);
    let workers = server.booted_worker_pids();
    assert_eq!(server.get("/").status, 200);
    server.signal(signal);
    let status = server.wait_exit();
    assert_eq!(status.code(), Some(0), "exit status; log:\n{}", server.log_text());
    for worker in workers {
        assert!(!is_alive(worker), "worker {worker} outlived the arbiter");
    }
    assert!(std::net::TcpStream::connect(("127.0.0.1", server.port)).is_err(), "nothing listens any more");
}

#[test]
fn sigterm_stops_with_exit_zero_and_no_worker_left() {
    assert_stops_cleanly(Signal::SIGTERM);
}

#[test]
fn sigint_stops_with_exit_zero_and_no_worker_left() {
    assert_stops_cleanly(Signal::SIGINT);
}

#[test]
fn sigquit_stops_with_exit_zero_and_no_worker_left() {
    assert_stops_cleanly(Signal::SIGQUIT);
}

/// One worker of the study's app, in a request whose guest waits `seconds` (the connection is returned once the
/// worker has read the request).
fn in_flight(seconds: &str) -> (Server, TcpStream) {
    let server =
        Server::start("sample:workload", 1, &["--env", "IO_BOUND=100", "--env", &format!("IO_SECONDS={seconds}")]);
    let mut inflight = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    inflight.set_read_timeout(Some(PATIENCE)).unwrap();
    inflight.write_all(b"GET /slow HTTP/1.1\r\nHost: h\r\n\r\n").unwrap();
    eventually("the worker to read the request", || read_by_server(server.port, &inflight));
    (server, inflight)
}

#[test]
fn sigterm_finishes_the_inflight_request() {
    // The request is in the guest, for a second.
    let (mut server, inflight) = in_flight("1");
    server.signal(Signal::SIGTERM);
    let response = read_response(inflight);
    assert_eq!(response.status, 204);
    assert_eq!(server.wait_exit().code(), Some(0));
}

/// A `HUP` or a `USR2` while a graceful stop waits for a request is ignored, in a line each: no new workers, and
/// no new arbiter (the listeners are closed by then: it would have listened on nothing, and taken the pid file
/// over).
#[test]
fn sighup_and_sigusr2_during_a_stop_are_ignored() {
    let (mut server, inflight) = in_flight("2");
    server.signal(Signal::SIGTERM);
    server.wait_for_line("Handling signal: term");
    server.signal(Signal::SIGHUP);
    server.wait_for_line("The server is stopping: this SIGHUP is ignored");
    server.signal(Signal::SIGUSR2);
    server.wait_for_line("The server is stopping: this SIGUSR2 is ignored");
    assert_eq!(read_response(inflight).status, 204, "the request in flight is finished");
    assert_eq!(server.wait_exit().code(), Some(0));
    assert_eq!(server.booted_worker_pids().len(), 1, "no new worker:\n{}", server.log_text());
    assert!(!server.log_text().contains("Started a new arbiter"), "{}", server.log_text());
}

#[test]
fn ttin_and_ttou_add_and_remove_a_worker() {
    let server = Server::start("sample:hello", 1, &[]);
    server.signal(Signal::SIGTTIN);
    server.wait_for_count("Booting worker with pid", 2);
    eventually("two workers", || server.live_workers().len() == 2);
    server.signal(Signal::SIGTTOU);
    server.wait_for_line("Number of workers: 1");
    eventually("one worker", || server.live_workers().len() == 1);
    assert_eq!(server.get("/").status, 200);
    server.signal(Signal::SIGTTOU);
    server.wait_for_count("Handling signal: ttou", 2);
    // The arbiter handles one signal after the other: once it handled a later one, the second TTOU is done with.
    server.signal(Signal::SIGUSR1);
    server.wait_for_line("Handling signal: usr1");
    // TTIN's "2" and the first TTOU's "1" only.
    let sizes = server.wait_for_count("Number of workers:", 2);
    assert_eq!(sizes.len(), 2, "never below one worker: {sizes:#?}");
    assert_eq!(server.live_workers().len(), 1, "never below one worker");
    assert_eq!(server.get("/").status, 200);
}

#[test]
fn sigint_stops_the_workers_even_when_the_server_was_started_with_it_ignored() {
    // A non-interactive shell starts background jobs with SIGINT and SIGQUIT ignored; the workers inherit that.
    let mut command = std::process::Command::new("sh");
    command.args(["-c", "trap '' INT QUIT; exec \"$0\" \"$@\""]).arg(crate::support::binary());
    command.args(["serve", "sample:hello", "--bind", "127.0.0.1:0", "--workers", "2", "--graceful-timeout", "600"]);
    command.env("WASMCORN_CACHE_DIR", crate::support::cache_dir()).env_remove("WEB_CONCURRENCY");
    let mut server = Server::spawn(command);
    server.wait_for_count("Booting worker with pid", 2);
    let workers = server.booted_worker_pids();
    server.signal(Signal::SIGINT);
    // Were the workers deaf to SIGINT, the arbiter would kill them only after the 600 s graceful timeout.
    assert_eq!(server.wait_exit().code(), Some(0), "{}", server.log_text());
    assert!(!server.log_text().contains("SIGKILL"), "{}", server.log_text());
    for worker in workers {
        assert!(!is_alive(worker));
    }
}

#[test]
fn a_stopping_server_refuses_new_connections_once_it_took_its_queue_instead_of_resetting_them_later() {
    let mut server = Server::start(MISBEHAVE, 1, &[]);
    // The only worker is busy with the first request; the second waits in the kernel's queue.
    let mut first = held_request(server.port, "localhost");
    server.wait_for_count("[guest stdout] stashed", 1);
    let mut second = held_request(server.port, "localhost");
    let worker = server.booted_worker_pids()[0];
    server.signal(Signal::SIGTERM);
    // Not the arbiter's `Handling signal: term` line, which comes before it signals the workers: a request finished
    // in between would be followed by `second` as in normal service, the listener still open.
    eventually("the worker to hold the SIGTERM", || signal_pending(worker, Signal::SIGTERM));
    first.write_all(b"x").unwrap();
    assert_eq!(read_response(first).status, 200);
    // The worker took the queued connection as it began to stop, and serves it.
    server.wait_for_count("[guest stdout] stashed", 2);
    // Nothing accepts from the listener any more: a connection made now must be refused at once, not queued and
    // then reset unanswered when the worker leaves.
    match TcpStream::connect(("127.0.0.1", server.port)) {
        Err(err) => assert_eq!(err.kind(), ErrorKind::ConnectionRefused, "{err}"),
        Ok(mut late) => {
            second.write_all(b"x").unwrap();
            assert_eq!(read_response(second).status, 200);
            let _ = late.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
            let mut answer = Vec::new();
            let read = late.read_to_end(&mut answer);
            panic!("a connection made during the stop was accepted by the kernel and then got {read:?} {answer:?}");
        }
    }
    second.write_all(b"x").unwrap();
    assert_eq!(read_response(second).status, 200);
    assert_eq!(server.wait_exit().code(), Some(0), "{}", server.log_text());
}
