//! Keep-alive: a connection whose response allows it carries the client's next request; `Connection: close`,
//! HTTP/1.0 without keep-alive, an unknown response framing, an unread or malformed body, the limits and the
//! stops close it, cleanly, between requests. An idle connection pins no worker: its next request, like a head
//! that completed while its worker ran a long request, is served by whichever worker of its pool is free.

mod client;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::Duration;

use nix::sys::signal::Signal;
use nix::unistd::Pid;

use crate::support::{Server, command, eventually, read_by_server, signal_pending, unread_by_server};
use client::{
    Client, End, assert_closing, assert_kept, group_by_holder, idle_connection_on_each, served_by, start_long_request,
    two_idle_connections_on_one_worker,
};

const MISBEHAVE: &str = env!("WASMCORN_GUEST_MISBEHAVE");

const WITH_PIDS: [&str; 4] = ["--access-logformat", "%(p)s %(r)s", "--keep-alive", "60"];

/// A keep-alive long enough that no idle connection of a test times out on a busy machine.
const PATIENT: [&str; 2] = ["--keep-alive", "60"];

/// For the stops: a worker that lingered with its idle connections would not be killed before the test gives up.
const LINGER_UNTIL_KILLED: [&str; 4] = ["--keep-alive", "300", "--graceful-timeout", "300"];

#[test]
fn requests_on_one_connection_are_answered_in_turn_and_logged_once_each() {
    let server = Server::start("sample:hello", 1, &PATIENT);
    let mut client = Client::connect(&server);
    for _ in 0..3 {
        let response = client.get("h", "/");
        assert_kept(&response, 200);
        assert_eq!(response.text(), "Hello, World!");
    }
    client.send(b"GET /last HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n");
    assert_closing(&client.response(), 200);
    assert_eq!(client.end(), End::Closed);
    assert_eq!(server.wait_for_count("\"GET / HTTP/1.1\" 200 13", 3).len(), 3);
    server.wait_for_line("\"GET /last HTTP/1.1\" 200 13");
}

#[test]
fn a_requests_instance_is_dropped_once_its_response_is_sent_though_the_connection_stays_idle() {
    // The guest leaves a connection to this listener open, which only dropping its instance closes. The worker
    // drops it after sending the response, not when the kept connection's next request comes.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let backend = listener.local_addr().unwrap().to_string();
    let server = Server::start(MISBEHAVE, 1, &["--keep-alive", "60", "--allow-net", &backend]);
    // Non-blocking, so that the thread gives up (and ends) when the guest never connects.
    listener.set_nonblocking(true).unwrap();
    let answering = std::thread::spawn(move || {
        let mut accepted = None;
        eventually("the guest's connection", || {
            accepted = listener.accept().ok();
            accepted.is_some()
        });
        let (mut stream, _) = accepted.unwrap();
        stream.set_nonblocking(false).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut ping = [0u8; 5];
        stream.read_exact(&mut ping).unwrap();
        stream.write_all(b"pong\n").unwrap();
        stream
    });
    let mut client = Client::connect(&server);
    let response = client.get("h", &format!("/connect-and-keep?addr={backend}"));
    assert_kept(&response, 200);
    assert_eq!(response.text(), format!("ok: connected to {backend}, read: pong\n"));
    let mut backend_side = answering.join().expect("the guest connected and said ping");
    let mut rest = [0u8; 16];
    let read = backend_side.read(&mut rest);
    assert!(matches!(read, Ok(0)), "the guest's connection is closed with its instance, the client idle: {read:?}");
    assert_kept(&client.get("h", "/count"), 200);
}

#[test]
fn http10_keeps_the_connection_only_when_it_asks() {
    let server = Server::start("sample:hello", 1, &PATIENT);
    let mut client = Client::connect(&server);
    client.send(b"GET / HTTP/1.0\r\n\r\n");
    assert_closing(&client.response(), 200);
    assert_eq!(client.end(), End::Closed);

    let mut client = Client::connect(&server);
    client.send(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n");
    assert_kept(&client.response(), 200);
    client.send(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    assert_kept(&client.response(), 200);
}

#[test]
fn keep_alive_zero_closes_every_connection() {
    let server = Server::start("sample:hello", 1, &["--keep-alive", "0"]);
    let mut client = Client::connect(&server);
    assert_closing(&client.get("h", "/"), 200);
    assert_eq!(client.end(), End::Closed);
}

#[test]
fn an_idle_connection_is_closed_cleanly_when_its_time_is_up() {
    let server = Server::start("sample:hello", 1, &["--keep-alive", "0.5"]);
    let mut client = Client::connect(&server);
    assert_kept(&client.get("h", "/"), 200);
    assert_eq!(client.end(), End::Closed, "a FIN, not a reset, and no 408");
    // The worker still serves.
    assert_eq!(server.get("/").status, 200);
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let server = Server::start(MISBEHAVE, 1, &PATIENT);
    let mut client = Client::connect(&server);
    let mut burst = Vec::new();
    for length in 1..=3 {
        burst.extend_from_slice(format!("GET /declared?length={length} HTTP/1.1\r\nHost: h\r\n\r\n").as_bytes());
    }
    client.send(&burst);
    for length in 1..=3 {
        let response = client.response();
        assert_kept(&response, 200);
        assert_eq!(response.text(), "x".repeat(length));
    }
}

#[test]
fn pipelined_requests_that_fill_the_workers_reads_exactly_are_all_answered() {
    // Each request takes exactly 128 bytes, so the worker's 16 KiB reads end between two requests: a read that
    // took the 128th leaves the next ones in the socket and nothing in the connection's buffer, and no new bytes
    // come to report them. A connection left to wait for them would be answered only at its --keep-alive.
    let server = Server::start("sample:hello", 1, &["--keep-alive", "300"]);
    let mut client = Client::connect(&server);
    let request = |index: usize| {
        let (start, end) = (format!("GET /?n={index} HTTP/1.1\r\nHost: h\r\nX-Pad: "), "\r\n\r\n");
        format!("{start}{}{end}", "p".repeat(128 - start.len() - end.len()))
    };
    let burst: Vec<u8> = (0..300).flat_map(|index| request(index).into_bytes()).collect();
    assert_eq!(burst.len(), 300 * 128);
    client.send(&burst);
    for index in 0..300 {
        let response = client.response();
        assert_kept(&response, 200);
        assert_eq!(response.text(), "Hello, World!", "response {index}");
    }
    server.wait_for_line("\"GET /?n=299 HTTP/1.1\" 200");
}

#[test]
fn a_request_smuggled_behind_a_malformed_one_is_never_served() {
    let server = Server::start(MISBEHAVE, 1, &PATIENT);
    // Conflicting framing: the second request's "body" holds a third request.
    let mut client = Client::connect(&server);
    client.send(
        b"GET /declared?length=1 HTTP/1.1\r\nHost: h\r\n\r\n\
          POST /discard HTTP/1.1\r\nHost: h\r\nContent-Length: 50\r\nTransfer-Encoding: chunked\r\n\r\n\
          0\r\n\r\nGET /declared?length=7 HTTP/1.1\r\nHost: h\r\n\r\n",
    );
    assert_kept(&client.response(), 200);
    assert_closing(&client.response(), 400);
    assert_eq!(client.end(), End::Closed);
    // Bad chunking: the body's end is unknown, so is where a next request would start.
    let mut client = Client::connect(&server);
    client.send(
        b"POST /discard HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n\
          5\r\nhello\r\nzz\r\nGET /declared?length=8 HTTP/1.1\r\nHost: h\r\n\r\n",
    );
    assert_closing(&client.response(), 400);
    assert_eq!(client.end(), End::Closed);
    server.wait_for_line("\"GET /declared?length=1 HTTP/1.1\" 200");
    server.wait_for_line("Bad request body for POST /discard HTTP/1.1");
    assert_eq!(server.get("/count").status, 200);
    server.wait_for_line("\"GET /count HTTP/1.1\" 200");
    let log = server.log_text();
    assert!(!log.contains("length=7") && !log.contains("length=8"), "a smuggled request was served:\n{log}");
}

#[test]
fn a_connect_request_ends_its_connection_with_the_response() {
    let server = Server::start(MISBEHAVE, 1, &PATIENT);
    // What a client sends after a 2xx to CONNECT is a tunnel's bytes, never a next request to serve (the guest
    // answers 404 here: it knows no empty path).
    let mut client = Client::connect(&server);
    client.send(
        b"CONNECT example.test:443 HTTP/1.1\r\nHost: example.test:443\r\n\r\n\
          GET /declared?length=9 HTTP/1.1\r\nHost: h\r\n\r\n",
    );
    assert_closing(&client.response(), 404);
    assert_eq!(client.end(), End::Closed);
    server.wait_for_line("\"CONNECT example.test:443 HTTP/1.1\" 404");
    assert_eq!(server.get("/count").status, 200);
    server.wait_for_line("\"GET /count HTTP/1.1\" 200");
    assert!(!server.log_text().contains("length=9"), "a request behind a CONNECT was served:\n{}", server.log_text());
}

#[test]
fn a_2xx_answer_to_connect_carries_no_length_and_ends_with_the_connection() {
    // RFC 9110 section 9.3.6: a server must not send Content-Length or Transfer-Encoding in a 2xx to CONNECT. The
    // echo guest answers every request 200 with a JSON body, which then ends with the connection.
    let server = Server::start("sample:echo", 1, &PATIENT);
    let response = server.request(b"CONNECT example.test:443 HTTP/1.1\r\nHost: example.test:443\r\n\r\n");
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.header("content-length"), None, "{}", String::from_utf8_lossy(&response.raw));
    assert_eq!(response.header("transfer-encoding"), None, "{}", String::from_utf8_lossy(&response.raw));
    assert_eq!(response.header("connection"), Some("close"));
    assert_eq!(response.json()["environ"]["REQUEST_METHOD"], "CONNECT");
    // A 2xx to any other method is framed as always (other answers to a CONNECT: the response writer's unit test).
    let get = server.get("/");
    assert_eq!(get.header("content-length").map(str::to_owned), Some(get.body.len().to_string()));
}

#[test]
fn an_unread_body_or_an_unframed_response_closes_the_connection() {
    let server = Server::start(MISBEHAVE, 1, &PATIENT);
    // The guest answers without reading the body: what is left of it must not be read as a next request.
    let mut client = Client::connect(&server);
    client.send(b"POST /declared?length=2 HTTP/1.1\r\nHost: h\r\nContent-Length: 44\r\n\r\n");
    client.send(b"GET /declared?length=9 HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_closing(&client.response(), 200);
    assert_eq!(client.end(), End::Closed);
    // A body read whole keeps it.
    let mut client = Client::connect(&server);
    client.send(b"POST /discard HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello");
    let response = client.response();
    assert_kept(&response, 200);
    assert_eq!(response.text(), "5");
    // Streamed to an HTTP/1.0 client without a length, the body ends with the connection.
    let mut client = Client::connect(&server);
    client.send(b"GET /big?bytes=100000 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    let response = client.response();
    assert_closing(&response, 200);
    assert_eq!(response.body.len(), 100_000);
    assert!(response.header("content-length").is_none());
    assert!(!server.log_text().contains("length=9"));
}

#[test]
fn a_request_on_an_idle_connection_is_served_by_a_free_worker_while_its_own_runs_a_long_request() {
    let mut args = vec!["--guest-timeout", "30"];
    args.extend(WITH_PIDS);
    let server = Server::start(MISBEHAVE, 2, &args);
    let workers = server.booted_worker_pids();
    // The idle connection and the one that runs the long request, both held by one worker.
    let (holder, mut idle, mut long) = two_idle_connections_on_one_worker(&server, &workers);
    start_long_request(&server, &mut long);
    // The idle connection's next request, while its worker runs the long one.
    let response = idle.get("h", "/count?idle=2");
    assert_kept(&response, 200);
    let other = served_by(&server, "GET /count?idle=2 HTTP/1.1");
    assert_ne!(other, holder, "the request waited for its busy worker:\n{}", server.log_text());
    assert!(!long.has_news(), "the long request is still running");
    long.send(b"x");
    assert_kept(&long.response(), 200);
    assert_eq!(served_by(&server, "POST /stash?secret=s HTTP/1.1"), holder);
}

#[test]
fn a_head_that_completes_while_its_worker_runs_a_long_request_is_served_by_a_free_worker() {
    let server = Server::start(MISBEHAVE, 2, &WITH_PIDS);
    let workers = server.booted_worker_pids();
    // The connection whose head comes next and the one that runs the long request, both held by one worker.
    let (holder, mut pending, mut long) = two_idle_connections_on_one_worker(&server, &workers);
    // The next head begins to arrive, and its worker reads that much before it starts the long request.
    pending.send(b"GET /count?pending=2 HTTP/1.1\r\n");
    eventually("the worker reads the start of the head", || read_by_server(server.port, &pending.stream));
    start_long_request(&server, &mut long);
    pending.send(b"Host: h\r\n\r\n");
    assert_kept(&pending.response(), 200);
    let other = served_by(&server, "GET /count?pending=2 HTTP/1.1");
    assert_ne!(other, holder, "the head waited for its busy worker:\n{}", server.log_text());
    assert!(!long.has_news(), "the long request is still running");
    long.send(b"x");
    assert_kept(&long.response(), 200);
    assert_eq!(served_by(&server, "POST /stash?secret=s HTTP/1.1"), holder);
}

#[test]
fn a_head_whose_time_ran_out_in_the_channel_is_answered_408_before_the_next_run() {
    // One worker. A head still arriving when the worker starts a long request is passed into the pool's channel
    // (the relay does so once a run lasts 5 ms), and its 1 s runs out there. The worker, once free, takes it back
    // with a second long request that came meanwhile: the late head is answered `408` at once, not relayed again to
    // wait for the second run.
    let server = Server::start(MISBEHAVE, 1, &["--client-timeout", "1", "--keep-alive", "60", "--guest-timeout", "30"]);
    let mut late = Client::connect(&server);
    late.send(b"GET /count?late=1 HTTP/1.1\r\n");
    eventually("the worker reads the start of the head", || read_by_server(server.port, &late.stream));
    let mut first = Client::connect(&server);
    first.send(b"GET /sleep?seconds=2 HTTP/1.1\r\nHost: h\r\n\r\n");
    eventually("the worker reads the first request", || read_by_server(server.port, &first.stream));
    let mut second = Client::connect(&server);
    second.send(b"GET /sleep?seconds=60 HTTP/1.1\r\nHost: h\r\n\r\n");
    eventually("the relay reads the second request", || read_by_server(server.port, &second.stream));
    assert_kept(&first.response(), 200);
    assert_closing(&late.response(), 408);
    // Had the late head been relayed again, its 408 would have come once the second run ended, at its 30 s guest
    // timeout (well within the client's patience), and the second client would have its 503 by then.
    assert!(!second.has_news(), "the late head waited for the second run");
    server.wait_for_line("\"GET /sleep?seconds=2 HTTP/1.1\" 200");
}

#[test]
fn clients_past_the_idle_limit_are_answered_then_closed() {
    let server = Server::start("sample:hello", 1, &["--max-idle-connections", "1", "--keep-alive", "60"]);
    let mut first = Client::connect(&server);
    assert_kept(&first.get("h", "/"), 200);
    let mut second = Client::connect(&server);
    assert_closing(&second.get("h", "/"), 200);
    assert_eq!(second.end(), End::Closed);
    assert_kept(&first.get("h", "/"), 200);
}

/// An idle connection that its busy worker hands over may reach a worker that holds its fill of idle connections
/// already: its next request is still answered there (that worker closes its own oldest idle connection instead).
#[test]
fn an_idle_connection_handed_to_a_worker_at_its_idle_limit_is_served() {
    let mut args = vec!["--max-idle-connections", "2", "--guest-timeout", "30"];
    args.extend(WITH_PIDS);
    let server = Server::start(MISBEHAVE, 2, &args);
    let workers = server.booted_worker_pids();
    // Two idle connections on each worker, the limit of both. Clients come two at a time, both requests sent before
    // either is read: a worker reading one young head takes no other connection, so the other worker takes the
    // second. One at a time, a busy machine could let the same worker take all of them.
    let mut held: HashMap<Pid, Vec<Client>> = HashMap::new();
    for attempt in 0..200 {
        if held.len() == 2 && held.values().all(|clients| clients.len() == 2) {
            break;
        }
        let mut pair = [Client::connect(&server), Client::connect(&server)];
        for (index, client) in pair.iter_mut().enumerate() {
            client.send(format!("GET /count?fill={attempt}.{index} HTTP/1.1\r\nHost: h\r\n\r\n").as_bytes());
        }
        let mut clients: Vec<Client> = held.into_values().flatten().collect();
        for mut client in pair {
            if client.response().header("connection") == Some("keep-alive") {
                clients.push(client);
            }
        }
        held = group_by_holder(&server, &workers, clients);
    }
    let counts: Vec<usize> = held.values().map(Vec::len).collect();
    assert!(counts == [2, 2], "each worker holds two: {counts:?}\n{}", server.log_text());
    let holder = *held.keys().next().expect("a worker");
    let mut at_holder = held.remove(&holder).expect("its connections");
    let (mut long, mut idle) = (at_holder.pop().expect("one"), at_holder.pop().expect("another"));
    start_long_request(&server, &mut long);
    // The other idle connection of the busy worker asks for its next request.
    let response = idle.get("h", "/count?handed=1");
    assert_eq!(response.status, 200, "{}", response.text());
    let other = served_by(&server, "GET /count?handed=1 HTTP/1.1");
    assert_ne!(other, holder, "the request waited for its busy worker:\n{}", server.log_text());
    long.send(b"x");
    assert_kept(&long.response(), 200);
    assert_eq!(served_by(&server, "POST /stash?secret=s HTTP/1.1"), holder);
}

/// A response that closes its connection reaches the client whole, even when the client pipelined more behind the
/// request: the worker discards what it will not answer and ends with a FIN, never a reset that would throw away
/// the part of the response still in its send buffer.
#[test]
fn a_closing_response_reaches_a_client_that_pipelined_more_whole() {
    let server = Server::start("sample:echo", 1, &["--keep-alive", "0"]);
    let body = vec![b'x'; 1 << 20];
    let mut client = Client::with_small_receive_buffer(&server);
    client.send(format!("POST /first HTTP/1.1\r\nHost: h\r\nContent-Length: {}\r\n\r\n", body.len()).as_bytes());
    client.send(&body);
    // Less than any socket buffer holds, so that the client is never stuck sending while the server writes.
    let pipelined = "GET /second HTTP/1.1\r\nHost: h\r\n\r\n".repeat(1000);
    client.send(pipelined.as_bytes());
    // The client reads a little later, as a busy one does: the worker has written all it could by then, and closed.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let response = client.response();
    assert_closing(&response, 200);
    // Streamed in chunks: whole when the last chunk came.
    assert!(response.raw.ends_with(b"\r\n0\r\n\r\n"), "the whole body, {} bytes came", response.raw.len());
    assert_eq!(response.json()["body_length"], 1 << 20);
    assert_eq!(client.end(), End::Closed);
    server.wait_for_line("\"POST /first HTTP/1.1\" 200");
    assert!(!server.log_text().contains("GET /second"), "nothing pipelined behind a closing response is served");
}

#[test]
fn max_requests_closes_with_the_last_response() {
    let server = Server::start("sample:hello", 1, &["--max-requests", "2", "--keep-alive", "60"]);
    let mut client = Client::connect(&server);
    assert_kept(&client.get("h", "/"), 200);
    assert_closing(&client.get("h", "/"), 200);
    assert_eq!(client.end(), End::Closed);
    server.wait_for_count("Booting worker with pid", 2);
}

#[test]
fn max_worker_memory_closes_with_the_last_response() {
    // A worker is always past 1 MiB: the request that finds it so is its last, and its response says so, rather
    // than promising the client another request and closing under it.
    let server = Server::start("sample:hello", 1, &["--max-worker-memory", "1", "--keep-alive", "60"]);
    let mut client = Client::connect(&server);
    assert_closing(&client.get("h", "/"), 200);
    assert_eq!(client.end(), End::Closed);
    server.wait_for_line("exceeds --max-worker-memory 1 MiB");
    server.wait_for_count("Booting worker with pid", 2);
}

#[test]
fn reload_closes_idle_connections_cleanly() {
    let server = Server::start("sample:hello", 1, &LINGER_UNTIL_KILLED);
    let mut client = Client::connect(&server);
    assert_kept(&client.get("h", "/"), 200);
    server.signal(Signal::SIGHUP);
    assert_eq!(client.end(), End::Closed);
    server.wait_for_count("Booting worker with pid", 2);
    assert_eq!(server.get("/").status, 200);
}

#[test]
fn a_response_finished_after_a_reload_retired_its_worker_says_close() {
    let server = Server::start(MISBEHAVE, 1, &PATIENT);
    let mut busy = Client::connect(&server);
    start_long_request(&server, &mut busy);
    server.signal(Signal::SIGHUP);
    server.wait_for_line("Reload complete");
    busy.send(b"x");
    let response = busy.response();
    assert_closing(&response, 200);
    assert_eq!(response.text(), "stashed");
    assert_eq!(busy.end(), End::Closed);
}

#[test]
fn ttou_closes_the_idle_connections_of_the_worker_it_retires() {
    let mut args = WITH_PIDS[..2].to_vec();
    args.extend(LINGER_UNTIL_KILLED);
    let server = Server::start(MISBEHAVE, 2, &args);
    // An idle connection on each worker: TTOU retires the oldest, whichever booted first.
    let mut idle = idle_connection_on_each(&server, &server.booted_worker_pids());
    server.signal(Signal::SIGTTOU);
    let line = server.wait_for_line("Worker retiring (pid: ");
    let retired = idle.iter().position(|(pid, _)| line.contains(&format!("(pid: {pid})"))).expect("a worker of ours");
    let (_, mut closed) = idle.remove(retired);
    assert_eq!(closed.end(), End::Closed);
    let (kept_by, mut kept) = idle.pop().expect("the other worker's connection");
    assert_kept(&kept.get("h", "/count?after=1"), 200);
    assert_eq!(served_by(&server, "GET /count?after=1 HTTP/1.1"), kept_by);
}

#[test]
fn term_closes_idle_connections_and_finishes_the_request_in_flight() {
    let mut server = Server::start(MISBEHAVE, 1, &LINGER_UNTIL_KILLED);
    let mut idle = Client::connect(&server);
    assert_kept(&idle.get("h", "/count"), 200);
    let mut busy = Client::connect(&server);
    busy.send(b"POST /stash?secret=s HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\n\r\n");
    server.wait_for_line("[guest stdout] stashed");
    let worker = server.booted_worker_pids()[0];
    server.signal(Signal::SIGTERM);
    // The worker knows once the SIGTERM reaches it: the arbiter logs `Handling signal: term` before it marks the
    // workers stopping and signals them, and a request finished in between would keep its connection.
    eventually("the worker to hold the SIGTERM", || signal_pending(worker, Signal::SIGTERM));
    busy.send(b"x");
    let response = busy.response();
    assert_eq!(response.text(), "stashed");
    // The response says the connection closes (it said keep-alive, then the connection closed).
    assert_closing(&response, 200);
    assert_eq!(busy.end(), End::Closed, "a clean close after the request in flight");
    assert_eq!(idle.end(), End::Closed, "a clean close between requests");
    assert!(server.wait_exit().success());
}

#[test]
fn connections_that_sent_nothing_do_not_hold_a_stop() {
    let mut args = vec!["--client-timeout", "300"];
    args.extend(LINGER_UNTIL_KILLED);
    let mut server = Server::start(MISBEHAVE, 2, &args);
    // Connections that send nothing (a browser's preconnects), or only the empty lines a server ignores before a
    // request: accepted, and no request under way.
    let silent: Vec<std::net::TcpStream> = (0..4)
        .map(|index| {
            let mut stream = std::net::TcpStream::connect(("127.0.0.1", server.port)).expect("connect");
            stream.set_read_timeout(Some(crate::support::PATIENCE)).unwrap();
            if index % 2 == 1 {
                std::io::Write::write_all(&mut stream, b"\r\n").unwrap();
            }
            stream
        })
        .collect();
    assert_eq!(server.get("/count").status, 200, "the silent connections were accepted before this request");
    server.signal(Signal::SIGTERM);
    // Before, each worker holding one waited for its first byte until the client or the graceful timeout.
    assert!(server.wait_exit().success(), "{}", server.log_text());
    assert!(!server.log_text().contains("SIGABRT"), "{}", server.log_text());
    for mut stream in silent {
        let mut rest = Vec::new();
        std::io::Read::read_to_end(&mut stream, &mut rest).expect("a clean close, not a reset");
        assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
    }
}

#[test]
fn a_request_on_a_connection_of_a_stopped_worker_is_answered_503_when_the_watchdog_ends_it() {
    // A watchdog patient enough that the idle worker, beating every second, is never taken for a stuck one on
    // a busy machine before the test stops it (it failed so under a full CI run with --timeout 1), and that the
    // test's request, sent after the SIGSTOP, is there before it (with --timeout 4 a full CI run once saw the
    // worker ended with nothing to answer).
    let server = Server::start(MISBEHAVE, 1, &["--keep-alive", "60", "--timeout", "10"]);
    let (worker, mut client) = stopped_with_a_request_waiting(&server);
    server.wait_for_line(&format!("WORKER TIMEOUT (pid:{worker})"));
    assert_eq!(client.response().status, 503, "{}", server.log_text());
    eventually("the stopped worker to be gone", || !crate::support::is_alive(worker));
    assert_eq!(server.get("/count").status, 200, "its replacement serves");
}

#[test]
fn a_quick_stop_ends_a_stopped_worker_at_once_and_answers_what_it_held() {
    // No watchdog: only the stop may end the worker.
    let mut args = vec!["--timeout", "0"];
    args.extend(LINGER_UNTIL_KILLED);
    let mut server = Server::start(MISBEHAVE, 1, &args);
    let (_, mut client) = stopped_with_a_request_waiting(&server);
    server.signal(Signal::SIGINT);
    assert_eq!(client.response().status, 503, "{}", server.log_text());
    assert!(server.wait_exit().success(), "{}", server.log_text());
}

/// The only worker of `server`, stopped (SIGSTOP: a debugger, a job control slip) with a request sent on its kept
/// connection, which it cannot read; and that connection's client.
fn stopped_with_a_request_waiting(server: &Server) -> (Pid, Client) {
    let worker = server.booted_worker_pids()[0];
    let mut client = Client::connect(server);
    assert_kept(&client.get("h", "/count"), 200);
    // Stopped only once it waits for work: stopped between the response and its loop's wait, it would still count
    // as serving that request, which the watchdog gives the guest's timeout, and the request is in flight.
    let waiting =
        || std::fs::read_to_string(format!("/proc/{worker}/wchan")).is_ok_and(|wchan| wchan == "do_epoll_wait");
    eventually("the worker to wait for work", waiting);
    assert!(!server.log_text().contains("WORKER TIMEOUT"), "{}", server.log_text());
    // A stopped worker runs no signal handler until it is continued.
    nix::sys::signal::kill(worker, Signal::SIGSTOP).expect("stop the worker");
    let request = b"GET /count HTTP/1.1\r\nHost: h\r\n\r\n";
    client.send(request);
    // Arrived, not only sent: on a busy machine loopback delivery can lag the send, and a request that reached the
    // socket after the worker's handler looked at it is, rightly, not answered (a FIN, then a reset).
    eventually("the request to wait in the worker's socket", || {
        unread_by_server(server.port, &client.stream) == Some(request.len())
    });
    (worker, client)
}

/// The tenants' manifest: `hello` on host a.test, `echo` under /echo, and `evil` (the misbehave guest) on
/// evil.test with a pool of its own.
const APPS: &str = r#"
[[app]]
name = "hello"
component = "sample:hello"
hosts = ["a.test"]

[[app]]
name = "echo"
component = "sample:echo"
prefix = "/echo"

[[app]]
name = "evil"
component = "MISBEHAVE"
hosts = ["evil.test"]
workers = 1
"#;

/// `APPS` served with `workers` workers in the shared pool, the access log naming the worker of each request; the
/// folder of its manifest goes with the first value.
fn serve_apps(workers: &str) -> (tempfile::TempDir, Server) {
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("apps.toml");
    std::fs::write(&manifest, APPS.replace("MISBEHAVE", MISBEHAVE)).unwrap();
    let mut args = vec!["serve", "--apps", manifest.to_str().unwrap(), "--bind", "127.0.0.1:0", "--workers", workers];
    args.extend(WITH_PIDS);
    let server = Server::spawn(command(&args));
    (dir, server)
}

#[test]
fn each_request_of_a_connection_is_routed_on_its_own() {
    let (_dir, server) = serve_apps("2");
    server.wait_for_count("Booting worker with pid", 3);
    let dedicated = server.booted_worker_pids_where(|line| line.ends_with("(app evil)"));

    let mut client = Client::connect(&server);
    let hello = client.get("a.test", "/");
    assert_kept(&hello, 200);
    assert_eq!(hello.text(), "Hello, World!");
    let echo = client.get("b.test", "/echo/x");
    assert_kept(&echo, 200);
    assert_eq!(echo.json()["environ"]["SCRIPT_NAME"], "/echo");
    // Handed over to the dedicated pool with the rest of the connection, which then comes back.
    let evil = client.get("evil.test", "/count?evil=1");
    assert_kept(&evil, 200);
    assert_eq!(evil.text(), "1");
    assert_eq!(vec![served_by(&server, "GET /count?evil=1 HTTP/1.1")], dedicated);
    let evil = client.get("evil.test", "/count?evil=2");
    assert_kept(&evil, 200);
    assert_eq!(vec![served_by(&server, "GET /count?evil=2 HTTP/1.1")], dedicated);
    let hello = client.get("a.test", "/again");
    assert_kept(&hello, 200);
    assert_eq!(hello.text(), "Hello, World!");
    assert!(!dedicated.contains(&served_by(&server, "GET /again HTTP/1.1")), "the shared pool served it");
    eventually("four access-log lines", || server.log_text().matches("> GET /").count() >= 4);
}

/// Two dedicated pools, `a` and `b`, beside the shared pool's `www`.
const TWO_POOLS: &str = "[[app]]\nname = \"www\"\ncomponent = \"sample:hello\"\n\n\
[[app]]\nname = \"a\"\ncomponent = \"sample:echo\"\nhosts = [\"a.test\"]\nworkers = 1\n\n\
[[app]]\nname = \"b\"\ncomponent = \"sample:hello\"\nhosts = [\"b.test\"]\nworkers = 1\n";

/// `manifest` served with one shared worker, `--graceful-timeout 1` and `--keep-alive 30`, once its three workers
/// have booted.
fn serve_two_pools(manifest: &std::path::Path) -> Server {
    let apps = manifest.to_str().unwrap();
    let timeouts = ["--graceful-timeout", "1", "--keep-alive", "30"];
    let server = Server::spawn(command(
        &[&["serve", "--apps", apps, "--bind", "127.0.0.1:0", "-w", "1"], &timeouts[..]].concat(),
    ));
    server.wait_for_count("Booting worker with pid", 3);
    server
}

#[test]
fn a_request_on_a_dedicated_workers_connection_for_another_pool_waits_for_no_shared_worker() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("apps.toml");
    // www, on the shared pool, is the misbehave guest.
    std::fs::write(&manifest, TWO_POOLS.replacen("sample:hello", MISBEHAVE, 1)).unwrap();
    let server = serve_two_pools(&manifest);
    // The shared pool's one worker runs a request that waits for its body.
    let mut busy = crate::support::held_request(server.port, "www.test");
    server.wait_for_line("stashed");
    let mut client = Client::connect(&server);
    // Handed to a's worker by the busy worker's front door, then from a's worker to b's.
    assert_kept(&client.get("a.test", "/"), 200);
    let b = client.get("b.test", "/");
    assert_kept(&b, 200);
    assert_eq!(b.text(), "Hello, World!");
    // Had b's request waited for the shared worker, it would have been served only once the held request's body
    // timed out (--client-timeout), and that request answered 503.
    busy.write_all(b"x").unwrap();
    assert_eq!(crate::support::read_response(busy).status, 200);
}

#[test]
fn a_request_on_a_dedicated_workers_connection_is_routed_by_the_site_a_reload_made() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("apps.toml");
    std::fs::write(&manifest, TWO_POOLS).unwrap();
    let server = serve_two_pools(&manifest);
    let mut client = Client::connect(&server);
    // Handed to a's worker, which keeps the connection.
    assert_kept(&client.get("a.test", "/"), 200);
    // b moves to the shared pool. a's pool is not replaced: its worker keeps the site it was started with.
    std::fs::write(&manifest, TWO_POOLS.replace("hosts = [\"b.test\"]\nworkers = 1\n", "hosts = [\"b.test\"]\n"))
        .unwrap();
    server.signal(Signal::SIGHUP);
    server.wait_for_line("Reload complete");
    // b's old pool's channel is watched, and what reaches it passed to the shared pool, only until the retired
    // workers are gone (the graceful timeout and 2 s). a's worker sent b's requests there: past that, 503.
    std::thread::sleep(std::time::Duration::from_millis(4500));
    let b = client.get("b.test", "/");
    assert_eq!((b.status, b.text().as_str()), (200, "Hello, World!"), "{}", server.log_text());
    assert!(!server.log_text().contains("connections waiting for"), "{}", server.log_text());
}

#[test]
fn a_connection_handed_to_another_pool_leaves_no_watch_in_the_worker_it_left() {
    let (_dir, server) = serve_apps("1");
    server.wait_for_count("Booting worker with pid", 2);
    let shared = server.booted_worker_pids_where(|line| !line.ends_with("(app evil)"));
    assert_eq!(shared.len(), 1, "{shared:?}");
    let mut client = Client::connect(&server);
    // The second request reaches the shared worker on a connection idle there (watched once, then spent) ...
    assert_kept(&client.get("a.test", "/"), 200);
    assert_kept(&client.get("a.test", "/again"), 200);
    // ... and the third takes the connection to the dedicated pool, which keeps it open.
    assert_kept(&client.get("evil.test", "/count"), 200);
    let stale = stale_watches(shared[0]);
    assert!(stale.is_empty(), "the shared worker still watches sockets it handed away: {stale:?}");
    assert_kept(&client.get("a.test", "/back"), 200);
}

/// The watches of `pid`'s epolls (`tfd` lines of /proc/PID/fdinfo) whose descriptor `pid` no longer has open, or
/// has open on another file: what a socket handed to another process leaves behind.
fn stale_watches(pid: Pid) -> Vec<String> {
    use std::os::unix::fs::MetadataExt;
    let mut stale = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().flatten() {
        let target = std::fs::read_link(entry.path()).unwrap_or_default();
        if target.as_os_str() != "anon_inode:[eventpoll]" {
            continue;
        }
        let info = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{}", entry.file_name().to_string_lossy()));
        for line in info.unwrap_or_default().lines().filter(|line| line.starts_with("tfd:")) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let watched = fields.iter().find_map(|field| field.strip_prefix("ino:"));
            let watched = watched.and_then(|hex| u64::from_str_radix(hex, 16).ok());
            let open = std::fs::metadata(format!("/proc/{pid}/fd/{}", fields[1])).map(|meta| meta.ino()).ok();
            if watched.is_none() || watched != open {
                stale.push(line.to_string());
            }
        }
    }
    stale
}

#[test]
fn the_request_that_reaches_an_apps_max_requests_closes() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("apps.toml");
    std::fs::write(&manifest, "[[app]]\nname = \"hello\"\ncomponent = \"sample:hello\"\nmax_requests = 2\n").unwrap();
    let mut args = vec!["serve", "--apps", manifest.to_str().unwrap(), "--bind", "127.0.0.1:0"];
    args.extend(PATIENT);
    let server = Server::spawn(command(&args));
    server.wait_for_count("Booting worker with pid", 1);
    let mut client = Client::connect(&server);
    assert_kept(&client.get("h", "/"), 200);
    assert_closing(&client.get("h", "/"), 200);
    assert_eq!(client.end(), End::Closed);
    server.wait_for_line("Autorestarting worker after 2 requests of app hello");
}
