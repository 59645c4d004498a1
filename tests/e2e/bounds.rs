//! What a client can make a worker hold, and the answers at the edges of a response: a chunked body trickled in
//! pieces that end inside its size lines costs no more memory than the same body with a Content-Length; heads
//! that never end, however fast they come, cannot take more than `--limit-pending-heads` of a worker, nor its time
//! from other clients;
//! `100 Continue` never follows a final response; a HEAD answer may declare a length and send no body.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

use nix::unistd::Pid;

use crate::support::{
    PATIENCE, Server, eventually, held_request, parse_response, peak_memory, read_response, send, unread_by_server,
};

const MISBEHAVE: &str = env!("WASMCORN_GUEST_MISBEHAVE");

/// The body of the uploads: 64 MiB.
const UPLOAD: usize = 64 << 20;

/// The one worker of `server`.
fn only_worker(server: &Server) -> Pid {
    let workers = server.booted_worker_pids();
    assert_eq!(workers.len(), 1, "one worker");
    workers[0]
}

/// Sends a POST to `/discard` whose body is `UPLOAD` bytes of `x`, with a Content-Length.
fn upload_with_content_length(port: u16) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to wasmcorn");
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    let head = format!("POST /discard HTTP/1.1\r\nHost: h\r\nContent-Length: {UPLOAD}\r\n\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    let piece = vec![b'x'; 64 * 1024];
    for _ in 0..UPLOAD / piece.len() {
        stream.write_all(&piece).unwrap();
    }
    let response = read_response(stream);
    assert_eq!(response.status, 200, "{}", response.text());
    response.text()
}

/// Sends the same body chunked, in chunks of 2000 bytes (`7d0`), each packet ending after the `7` of the next
/// size line, with a pause after every four packets: the worker, reading up to 16 KiB at a time, then reads whole
/// packets, and each read ends inside a size line.
fn upload_chunked_in_pieces(port: u16) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to wasmcorn");
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream.set_nodelay(true).unwrap();
    stream.write_all(b"POST /discard HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n7").unwrap();
    let chunks = UPLOAD / 2000;
    let mut packet = b"d0\r\n".to_vec();
    packet.extend(std::iter::repeat_n(b'x', 2000));
    packet.extend_from_slice(b"\r\n7");
    for index in 0..chunks {
        // The last packet ends with its chunk's CRLF: the rest of the body has a size line of its own.
        let cut = if index + 1 == chunks { packet.len() - 1 } else { packet.len() };
        stream.write_all(&packet[..cut]).unwrap();
        if index % 4 == 3 {
            std::thread::sleep(Duration::from_micros(50));
        }
    }
    let rest = UPLOAD - chunks * 2000;
    stream.write_all(format!("{rest:x}\r\n").as_bytes()).unwrap();
    stream.write_all(&vec![b'x'; rest]).unwrap();
    stream.write_all(b"\r\n0\r\n\r\n").unwrap();
    let response = read_response(stream);
    assert_eq!(response.status, 200, "{}", response.text());
    response.text()
}

#[test]
fn chunked_body_split_inside_size_lines_costs_what_a_content_length_body_costs() {
    // The upload is slow on purpose: the watchdog must not take it for a stuck worker.
    let server = Server::start(MISBEHAVE, 1, &["--timeout", "300"]);
    let worker = only_worker(&server);
    // The `7` that ends the head's packet is the first digit of the first size line.
    assert_eq!(upload_with_content_length(server.port), UPLOAD.to_string());
    let after_content_length = peak_memory(worker);
    assert_eq!(upload_chunked_in_pieces(server.port), UPLOAD.to_string());
    let after_chunked = peak_memory(worker);
    eprintln!(
        "worker peak: {} KiB after Content-Length, {} KiB after chunked",
        after_content_length >> 10,
        after_chunked >> 10
    );
    assert_eq!(only_worker(&server), worker, "the same worker served both");
    let margin = 8 << 20;
    assert!(
        after_chunked <= after_content_length + margin,
        "the chunked upload raised the worker's peak from {} KiB (Content-Length) to {} KiB",
        after_content_length >> 10,
        after_chunked >> 10
    );
}

/// A head of about 780 KB (97 fields of 8000 bytes) that never ends.
fn endless_head() -> Vec<u8> {
    let mut head = b"GET /big HTTP/1.1\r\nHost: h\r\n".to_vec();
    for index in 0..97 {
        head.extend_from_slice(format!("X-Field-{index}: ").as_bytes());
        head.extend(std::iter::repeat_n(b'v', 8000));
        head.extend_from_slice(b"\r\n");
    }
    head
}

/// Writes `head` on `stream` (the server may close first) and returns the status it answered, if any.
fn status_after_sending(mut stream: TcpStream, head: &[u8]) -> Option<u16> {
    let _ = stream.write_all(head);
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    (!raw.is_empty()).then(|| parse_response(&raw).status)
}

#[test]
fn pending_heads_past_their_limit_are_refused_and_a_normal_client_is_served() {
    let limit: u64 = 4 << 20;
    let limit_text = limit.to_string();
    let server = Server::start("sample:hello", 1, &["--limit-pending-heads", &limit_text, "--client-timeout", "10"]);
    let worker = only_worker(&server);
    assert_eq!(server.get("/").status, 200);
    let before = peak_memory(worker);
    // 128 clients connect first, so that the normal client waits behind all of them in the listen queue.
    let streams: Vec<TcpStream> = (0..128)
        .map(|_| {
            let stream = TcpStream::connect(("127.0.0.1", server.port)).expect("connect to wasmcorn");
            stream.set_read_timeout(Some(PATIENCE)).unwrap();
            stream.set_write_timeout(Some(PATIENCE)).unwrap();
            stream
        })
        .collect();
    let head = endless_head();
    let statuses = std::thread::scope(|scope| {
        let senders: Vec<_> =
            streams.into_iter().map(|stream| scope.spawn(|| status_after_sending(stream, &head))).collect();
        let started = std::time::Instant::now();
        let normal = server.get("/");
        assert_eq!(normal.status, 200, "the normal client is served");
        eprintln!("the normal client was answered after {:?}", started.elapsed());
        senders.into_iter().map(|sender| sender.join().expect("sender thread")).collect::<Vec<_>>()
    });
    let after = peak_memory(worker);
    eprintln!("worker peak: {} KiB before the endless heads, {} KiB after", before >> 10, after >> 10);
    let margin = 12 << 20;
    assert!(
        after <= before + limit + margin,
        "the worker's peak went from {} KiB to {} KiB with --limit-pending-heads {} KiB",
        before >> 10,
        after >> 10,
        limit >> 10
    );
    assert!(
        statuses.iter().all(|status| matches!(status, Some(431 | 408) | None)),
        "the endless heads get 431 or 408 (or a reset after it): {statuses:?}"
    );
    assert!(statuses.contains(&Some(431)), "some endless heads were refused with 431: {statuses:?}");
    let refused = server.log_lines().iter().filter(|line| line.contains("(--limit-pending-heads)")).count();
    assert!(refused >= 100, "only {refused} heads were refused for the limit:\n{}", server.log_text());
    assert_eq!(only_worker(&server), worker, "no worker was replaced");
}

/// With the line limits off, one client sends a 64 MiB header field while the worker runs a guest, so that its
/// socket holds megabytes when the worker takes it: the worker stops reading once the head passes
/// `--limit-pending-heads`, and answers `431`. Before, it read on for as long as the socket had bytes, and looked
/// at the limit only then.
#[test]
fn a_fast_endless_line_is_refused_at_the_pending_heads_limit() {
    let limit: u64 = 64 << 10;
    let limit_text = limit.to_string();
    let server = Server::start(
        MISBEHAVE,
        1,
        &["--limit-pending-heads", &limit_text, "--limit-request-line", "0", "--limit-request-field_size", "0"],
    );
    let worker = only_worker(&server);
    assert_eq!(server.get("/sleep?seconds=0").status, 200);
    let before = peak_memory(worker);
    // The only worker is held in a guest, which waits for the body the test sends once the line has piled up.
    let mut held = held_request(server.port, "h");
    server.wait_for_line("[guest stdout] stashed");
    let (status, held) = std::thread::scope(|scope| {
        let stream = TcpStream::connect(("127.0.0.1", server.port)).expect("connect to wasmcorn");
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        let mut writer = stream.try_clone().unwrap();
        scope.spawn(move || {
            let _ = writer.write_all(b"GET / HTTP/1.1\r\nHost: h\r\nX-Long: ");
            let piece = vec![b'v'; 64 << 10];
            for _ in 0..1024 {
                if writer.write_all(&piece).is_err() {
                    return;
                }
            }
            let _ = writer.write_all(b"\r\n\r\n");
        });
        // More than the limit waits in the socket (about 110 KiB before its accept, megabytes more behind it in
        // the client's) when the worker takes it.
        let piled = || unread_by_server(server.port, &stream).is_some_and(|unread| unread as u64 > limit);
        eventually("the line to pile up in the socket", piled);
        held.write_all(b"x").unwrap();
        let mut raw = Vec::new();
        let _ = (&stream).read_to_end(&mut raw);
        let _ = stream.shutdown(Shutdown::Both);
        ((!raw.is_empty()).then(|| parse_response(&raw).status), read_response(held).status)
    });
    assert_eq!(held, 200);
    assert_eq!(status, Some(431), "the endless line is refused");
    let after = peak_memory(worker);
    let margin = 2 << 20;
    assert!(
        after <= before + 2 * limit + margin,
        "the worker's peak went from {} KiB to {} KiB with --limit-pending-heads {} KiB",
        before >> 10,
        after >> 10,
        limit >> 10
    );
}

#[test]
fn continue_is_never_sent_after_the_final_response() {
    let server = Server::start("sample:hello", 1, &[]);
    // The client waits for `100 Continue` before sending its body; hello answers without reading it.
    let mut stream = TcpStream::connect(("127.0.0.1", server.port)).expect("connect to wasmcorn");
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream.write_all(b"POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n").unwrap();
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let _ = stream.shutdown(Shutdown::Both);
    let text = String::from_utf8_lossy(&raw);
    assert!(text.starts_with("HTTP/1.1 200 "), "{text}");
    assert!(!text.contains("100 Continue"), "a 100 Continue after the final response: {text:?}");
    // A client that sent its body anyway gets the same single answer.
    let response =
        send(server.port, b"POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\nhello");
    assert_eq!(response.status, 200);
    assert!(!String::from_utf8_lossy(&response.raw).contains("100 Continue"), "{:?}", response.raw);
}

#[test]
fn continue_is_never_sent_inside_a_streamed_response() {
    let server = Server::start(MISBEHAVE, 1, &[]);
    // The guest streams 200 000 bytes, then reads the body: the client sends it once it has the response's start.
    let mut stream = TcpStream::connect(("127.0.0.1", server.port)).expect("connect to wasmcorn");
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    let head =
        "POST /reply-then-read?bytes=200000 HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n";
    stream.write_all(head.as_bytes()).unwrap();
    let mut raw = Vec::new();
    let mut buffer = [0u8; 64 * 1024];
    while raw.len() < 200_000 {
        match stream.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(count) => raw.extend_from_slice(&buffer[..count]),
        }
    }
    stream.write_all(b"hello").unwrap();
    let _ = stream.read_to_end(&mut raw);
    let response = parse_response(&raw);
    assert_eq!((response.status, response.body.len()), (200, 200_000));
    assert!(!String::from_utf8_lossy(&raw).contains("100 Continue"), "a 100 Continue inside the response");
    server.wait_for_line("\"POST /reply-then-read?bytes=200000 HTTP/1.1\" 200");
}

#[test]
fn head_answer_may_declare_a_length_and_send_no_body() {
    let server = Server::start(MISBEHAVE, 1, &[]);
    for length in [1234, 200_000] {
        let head = send(server.port, format!("HEAD /declared?length={length} HTTP/1.1\r\nHost: h\r\n\r\n").as_bytes());
        assert_eq!(head.status, 200, "HEAD with Content-Length {length}: {}", head.text());
        assert_eq!(head.header("content-length"), Some(length.to_string().as_str()));
        assert!(head.body.is_empty(), "no body after a HEAD answer");
        let get = server.get(&format!("/declared?length={length}"));
        assert_eq!((get.status, get.body.len()), (200, length), "GET gets the body");
    }
    assert!(!server.log_text().contains("Invalid response from the guest"), "{}", server.log_text());
}

/// A silent connection is closed at its client timeout even while every worker keeps running guests longer than
/// the relay's 5 ms. It then crosses the pool's channel, and a worker took from the listeners before the channel:
/// under steady load it always found a new connection there, so what waited in the channel (this connection,
/// and any request a busy worker relayed) waited as long as the load lasted.
#[test]
fn a_silent_connection_times_out_while_the_pool_stays_busy() {
    let server = Server::start(MISBEHAVE, 2, &["--client-timeout", "2", "--keep-alive", "2"]);
    let port = server.port;
    let done = std::sync::atomic::AtomicBool::new(false);
    let waited = std::thread::scope(|scope| {
        for _ in 0..3 {
            scope.spawn(|| {
                while !done.load(std::sync::atomic::Ordering::SeqCst) {
                    let request = b"GET /sleep?seconds=0.3 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n";
                    assert_eq!(send(port, request).status, 200);
                }
            });
        }
        // Let the load begin, then connect and say nothing.
        std::thread::sleep(Duration::from_millis(500));
        let mut silent = TcpStream::connect(("127.0.0.1", port)).unwrap();
        silent.set_read_timeout(Some(Duration::from_secs(12))).unwrap();
        let started = std::time::Instant::now();
        let mut answer = Vec::new();
        let read = silent.read_to_end(&mut answer);
        let waited = started.elapsed();
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        assert!(read.is_ok(), "no answer within 12 s under load: {read:?}");
        assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 408 "), "{answer:?}");
        waited
    });
    // Its timeout is 2 s; the loose bound only keeps a busy machine from failing the test.
    assert!(waited < Duration::from_secs(8), "closed after {waited:?}, past its 2 s client timeout");
}

#[test]
fn a_worker_out_of_descriptors_pauses_accepting_instead_of_spinning() {
    // At most 40 descriptors: the worker's own and its connections take them all before its limits do.
    let mut command = std::process::Command::new("prlimit");
    command.args(["--nofile=40", "--", crate::support::binary(), "serve", "sample:hello", "-b", "127.0.0.1:0"]);
    command.env("WASMCORN_CACHE_DIR", crate::support::cache_dir()).env_remove("WEB_CONCURRENCY");
    let server = Server::spawn(command);
    server.wait_for_line("Booting worker with pid");
    // Silent connections, more than the worker may open: the rest wait in the listen queue.
    let silent: Vec<TcpStream> =
        (0..60).map(|_| TcpStream::connect(("127.0.0.1", server.port)).expect("connect")).collect();
    server.wait_for_line("Too many open files (os error 24)");
    std::thread::sleep(Duration::from_secs(3));
    // One line a second at most; a worker that kept the listener watched woke for it, and logged, without end.
    let failures = server.log_lines().iter().filter(|line| line.contains("accept failed")).count();
    assert!(failures <= 6, "{failures} accept failures logged in about 3 s");
    drop(silent);
    let response = send(server.port, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(response.status, 200, "served again once the silent clients left");
}
