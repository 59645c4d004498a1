//! Slow, silent, oversized and careless clients: the client timeout, the deadline for a whole request head,
//! many trickling clients at once, the body size limit, and a response that arrives whole although the guest
//! ignored the body.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

use crate::support::{PATIENCE, Server, parse_response, read_response, send};

fn connect(server: &Server) -> TcpStream {
    let stream = TcpStream::connect(("127.0.0.1", server.port)).expect("connect to wasmcorn");
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream.set_nodelay(true).unwrap();
    stream
}

#[test]
fn silent_client_gets_408_after_the_client_timeout() {
    let server = Server::start("sample:echo", 1, &["--client-timeout", "0.5"]);
    let mut silent = connect(&server);
    silent.write_all(b"GET / HTTP/1.1\r\nHo").unwrap();
    let response = read_response(silent);
    assert_eq!(response.status, 408);
    assert_eq!(server.get("/").status, 200, "the worker moved on");
}

#[test]
fn trickling_head_gets_408_at_its_deadline_not_per_read() {
    let server = Server::start("sample:echo", 1, &["--client-timeout", "0.5"]);
    let mut stream = connect(&server);
    let request = format!("GET /{} HTTP/1.1\r\nHost: h\r\n\r\n", "a".repeat(200));
    let start = Instant::now();
    // One byte every 100 ms: each read is well within the timeout, but the whole head would take 20 s. Stop
    // as soon as the answer is there, so that no byte lands on a closed socket.
    for byte in request.as_bytes() {
        if stream.write_all(&[*byte]).is_err() || start.elapsed() > Duration::from_secs(15) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        stream.set_nonblocking(true).unwrap();
        let answered = stream.peek(&mut [0u8; 1]).is_ok_and(|count| count > 0);
        stream.set_nonblocking(false).unwrap();
        if answered {
            break;
        }
    }
    let elapsed = start.elapsed();
    let response = read_response(stream);
    assert_eq!(response.status, 408);
    assert!(elapsed < Duration::from_secs(15), "the head deadline cut the trickle short: {elapsed:?}");
}

#[test]
fn body_silent_mid_way_gets_408() {
    let server = Server::start("sample:echo", 1, &["--client-timeout", "0.5"]);
    let mut stream = connect(&server);
    stream.write_all(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\nabc").unwrap();
    let response = read_response(stream);
    assert_eq!(response.status, 408);
    server.wait_for_line("\"POST / HTTP/1.1\" 408");
}

/// More silent clients than two workers read heads from (128 each): the ones that have waited longest are refused
/// `408` to make room, and a normal client arriving after them all is served, long before any client timeout
/// (before, it waited in the listen queue until the first of them timed out).
#[test]
fn past_the_heads_a_worker_reads_the_oldest_make_room_for_a_normal_client() {
    let server = Server::start("sample:hello", 2, &["--client-timeout", "300"]);
    let silent: Vec<TcpStream> = (0..300)
        .map(|_| {
            let mut stream = connect(&server);
            stream.write_all(b"G").expect("send a byte");
            stream
        })
        .collect();
    let response = server.get("/");
    assert_eq!(response.status, 200);
    assert_eq!(response.text(), "Hello, World!");
    // All 300 were accepted before it: at most 2 x 128 are still read.
    let displaced = server.wait_for_count("when a newer connection needed its place", 300 - 256);
    assert!(displaced.iter().all(|line| line.contains("Invalid request from 127.0.0.1:")), "{displaced:?}");
    drop(silent);
}

/// 50 connections that send a byte of their head now and then hold neither of the two workers: a normal client
/// arriving after them is served at once, while without head deadlines and side-by-side reading it would wait
/// for 25 of them per worker.
#[test]
fn fifty_trickling_clients_do_not_hold_two_workers() {
    let server = Server::start("sample:hello", 2, &["--client-timeout", "1"]);
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        let mut trickles: Vec<TcpStream> = (0..50).map(|_| connect(&server)).collect();
        let stop = &stop;
        scope.spawn(move || {
            let head = b"GET /slow HTTP/1.1\r\nHost: h\r\n";
            let mut sent = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && sent < head.len() {
                for stream in &mut trickles {
                    let _ = stream.write_all(&head[sent..sent + 1]);
                }
                sent += 1;
                std::thread::sleep(Duration::from_millis(200));
            }
        });
        std::thread::sleep(Duration::from_millis(300));
        let start = Instant::now();
        let response = server.get("/");
        let elapsed = start.elapsed();
        assert_eq!(response.status, 200);
        assert_eq!(response.text(), "Hello, World!");
        // Generous: the 50 trickles would hold the workers for 25 s if each held one for its timeout.
        assert!(elapsed < Duration::from_secs(10), "a normal client waited {elapsed:?}");
        // Every trickling client, still trickling, gets its 408 at its deadline.
        let timeouts = server.wait_for_count("within the client timeout", 50).len();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        assert_eq!(timeouts, 50);
    });
}

#[test]
fn content_length_over_the_body_limit_is_413_before_the_guest_runs() {
    let server = Server::start("sample:echo", 1, &["--limit-request-body", "10"]);
    let mut stream = connect(&server);
    let head = "POST /big HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 203.0.113.9\r\nExpect: 100-continue\r\n";
    stream.write_all(format!("{head}Content-Length: 11\r\n\r\n").as_bytes()).unwrap();
    let response = read_response(stream);
    assert_eq!(response.status, 413, "no 100 Continue first: {:?}", String::from_utf8_lossy(&response.raw));
    let fits = send(server.port, b"POST /fits HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\n0123456789");
    assert_eq!(fits.json()["body"], "0123456789");
    // Refused before the app saw it, the request still has its access-log line, naming the client the (trusted,
    // local) proxy forwarded for.
    let line = server.wait_for_line("\"POST /big HTTP/1.1\" 413 18 ");
    assert!(line.starts_with("203.0.113.9 - - ["), "{line}");
    assert_eq!(server.log_text().matches("\"POST /big ").count(), 1, "the guest never ran for /big");
}

#[test]
fn chunked_body_growing_past_the_limit_is_413() {
    let server = Server::start("sample:echo", 1, &["--limit-request-body", "10"]);
    let response = send(
        server.port,
        b"POST /big HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nhello \r\n6\r\nworld!\r\n0\r\n\r\n",
    );
    assert_eq!(response.status, 413);
    server.wait_for_line("\"POST /big HTTP/1.1\" 413");
}

/// `sample:hello` never reads the body: the worker drains it before closing, so the client gets the whole
/// response and no reset, every time.
#[test]
fn response_arrives_whole_when_the_guest_ignores_a_large_body() {
    let server = Server::start("sample:hello", 1, &[]);
    let body = vec![b'x'; 512 * 1024];
    for attempt in 0..5 {
        let mut stream = connect(&server);
        let mut writer = stream.try_clone().unwrap();
        let head = format!("POST /upload HTTP/1.1\r\nHost: h\r\nContent-Length: {}\r\n\r\n", body.len());
        let raw = std::thread::scope(|scope| {
            scope.spawn(|| {
                let _ = writer.write_all(head.as_bytes());
                let _ = writer.write_all(&body);
                let _ = writer.shutdown(Shutdown::Write);
            });
            let mut raw = Vec::new();
            let result = stream.read_to_end(&mut raw);
            assert!(result.is_ok(), "attempt {attempt}: the connection was reset: {result:?}");
            raw
        });
        let response = parse_response(&raw);
        assert_eq!((response.status, response.text().as_str()), (200, "Hello, World!"), "attempt {attempt}");
    }
}

/// The drain of a body the guest left unread ends one second after the response in all, not one second after
/// each byte: a client that keeps trickling the rest of a large body does not hold the worker, which serves the
/// next client long before the trickle would end.
#[test]
fn trickled_unread_body_holds_the_worker_no_longer_than_the_drain() {
    let server = Server::start("sample:hello", 1, &[]);
    let mut slow = connect(&server);
    let started = Instant::now();
    slow.write_all(b"POST /upload HTTP/1.1\r\nHost: h\r\nContent-Length: 1000000\r\n\r\n").unwrap();
    let mut writer = slow.try_clone().unwrap();
    let trickle = std::thread::spawn(move || {
        // A byte every 200 ms for 10 s, until the worker closes the connection.
        for _ in 0..50 {
            if writer.write_all(b"x").is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    });
    // The worker closes the connection once it gives up the drain.
    let mut raw = Vec::new();
    let _ = slow.read_to_end(&mut raw);
    let response = parse_response(&raw);
    assert_eq!((response.status, response.text().as_str()), (200, "Hello, World!"));
    assert_eq!(server.get("/").status, 200);
    let waited = started.elapsed();
    // Generous: the drain takes 1 s; the trickle would have held the worker for about 10 s.
    assert!(waited < Duration::from_secs(5), "the worker was held {waited:?} by the trickle");
    trickle.join().unwrap();
}

/// The CPU time a process has used, in clock ticks (user and system).
fn cpu_ticks(pid: nix::unistd::Pid) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read the worker's stat");
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or_default().split_whitespace().collect();
    // After the command: state is field 3, utime field 14 and stime field 15 (1-based, see proc(5)).
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// Silent clients, more than the worker takes at once: it leaves the rest in the listen queue and sleeps until
/// a head moves, a grace ends or a deadline passes, rather than spinning on a listener it will not accept from.
#[test]
fn worker_with_silent_clients_queued_sleeps() {
    let server = Server::start("sample:hello", 1, &["--client-timeout", "5"]);
    let worker = server.booted_worker_pids()[0];
    let silent: Vec<TcpStream> = (0..140).map(|_| connect(&server)).collect();
    std::thread::sleep(Duration::from_millis(500));
    let before = cpu_ticks(worker);
    std::thread::sleep(Duration::from_secs(2));
    let used = cpu_ticks(worker) - before;
    // Generous: a worker spinning for those 2 s would use most of them (100 ticks a second).
    assert!(used < 30, "the waiting worker used {used} ticks of CPU in 2 s");
    drop(silent);
}
