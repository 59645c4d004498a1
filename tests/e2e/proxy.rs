//! Standard `wasi:http` proxy components (built with the `wasip2` crate in `guest-apps/proxy-*`) served by the
//! sync workers beside `wasmcorn:app` guests: the head and body through the worker's own parser and response
//! writer, the same sandbox (timeouts, traps, output to the log), outgoing HTTP only to granted authorities.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::support::{self, PATIENCE, Server, send};

const HELLO: &str = env!("WASMCORN_GUEST_PROXY_HELLO");
const ECHO: &str = env!("WASMCORN_GUEST_PROXY_ECHO");
const FETCH: &str = env!("WASMCORN_GUEST_PROXY_FETCH");
const MISBEHAVE: &str = env!("WASMCORN_GUEST_PROXY_MISBEHAVE");

fn connect(server: &Server) -> TcpStream {
    let stream = TcpStream::connect(("127.0.0.1", server.port)).expect("connect to wasmcorn");
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream
}

#[test]
fn proxy_hello_component_is_served_and_answers_head_without_a_body() {
    let server = Server::start(HELLO, 1, &[]);
    let response = server.get("/any/path?x=1");
    assert_eq!(response.status, 200);
    assert_eq!(response.text(), "Hello, World!");
    assert_eq!(response.header("content-type"), Some("text/plain"));
    assert_eq!(response.header("content-length"), Some("13"));
    assert_eq!(response.header("server"), Some("wasmcorn"));
    assert!(response.header("date").is_some());
    let head = server.request(b"HEAD / HTTP/1.1\r\nHost: test\r\n\r\n");
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), Some("13"));
    assert!(head.body.is_empty(), "{:?}", head.text());
    server.wait_for_line("\"HEAD / HTTP/1.1\" 200");
}

/// 10 MiB in and out at once: the response streams (chunked) while the body is still arriving, which only works
/// if the worker drains the guest's response body while the handler runs.
#[test]
fn proxy_echo_streams_a_10_mib_body_back_while_it_arrives() {
    let server = Server::start(ECHO, 1, &[]);
    let body: Vec<u8> = (0..10 << 20).map(|index: usize| (index % 251) as u8).collect();
    let mut stream = connect(&server);
    let mut writer = stream.try_clone().unwrap();
    let sent = body.clone();
    let sender = std::thread::spawn(move || {
        let head = format!("POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: {}\r\n\r\n", sent.len());
        writer.write_all(head.as_bytes()).unwrap();
        writer.write_all(&sent).unwrap();
    });
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    sender.join().unwrap();
    let response = support::parse_response(&raw);
    assert_eq!(response.status, 200);
    assert_eq!(response.header("transfer-encoding"), Some("chunked"));
    assert_eq!(response.body.len(), body.len());
    assert!(response.body == body, "the echoed body differs");
}

#[test]
fn proxy_echo_reads_a_chunked_upload() {
    let server = Server::start(ECHO, 1, &[]);
    let response = send(
        server.port,
        b"POST /e HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nhello \r\n6\r\nworld!\r\n0\r\n\r\n",
    );
    assert_eq!(response.status, 200);
    assert_eq!(response.text(), "hello world!");
}

#[test]
fn proxy_body_over_the_limit_is_413() {
    let server = Server::start(ECHO, 1, &["--limit-request-body", "10"]);
    let chunked = send(
        server.port,
        b"POST /big HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nhello \r\n6\r\nworld!\r\n0\r\n\r\n",
    );
    assert_eq!(chunked.status, 413);
    server.wait_for_line("\"POST /big HTTP/1.1\" 413");
    let fits = send(server.port, b"POST /fits HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\n0123456789");
    assert_eq!((fits.status, fits.text().as_str()), (200, "0123456789"));
}

#[test]
fn proxy_body_after_100_continue_and_a_body_gone_silent_is_408() {
    let server = Server::start(ECHO, 1, &["--client-timeout", "0.5"]);
    let mut stream = connect(&server);
    stream.write_all(b"POST /c HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n").unwrap();
    let mut interim = [0u8; 25];
    stream.read_exact(&mut interim).unwrap();
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n", "asked for the body when the guest read it");
    stream.write_all(b"hello").unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let response = support::parse_response(&raw);
    assert_eq!((response.status, response.text().as_str()), (200, "hello"));
    let mut silent = connect(&server);
    silent.write_all(b"POST /s HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\nabc").unwrap();
    let mut raw = Vec::new();
    silent.read_to_end(&mut raw).unwrap();
    assert_eq!(support::parse_response(&raw).status, 408);
    server.wait_for_line("\"POST /s HTTP/1.1\" 408");
}

#[test]
fn proxy_guest_past_its_timeout_gets_503_and_the_worker_goes_on() {
    let server = Server::start(MISBEHAVE, 1, &["--guest-timeout", "1"]);
    for path in ["/loop", "/sleep?seconds=600"] {
        let response = server.get(path);
        assert_eq!(response.status, 503, "{path}");
    }
    server.wait_for_line("[ERROR] Guest timeout handling request GET /loop HTTP/1.1: wasm trap: interrupt");
    server.wait_for_line("[ERROR] Guest timeout handling request GET /sleep?seconds=600 HTTP/1.1");
    assert_eq!(server.get("/request").status, 200, "the same worker serves the next request");
    assert_eq!(server.booted_worker_pids().len(), 1, "no worker was replaced");
}

#[test]
fn proxy_trap_and_missing_response_are_500_with_the_cause_in_the_log() {
    let server = Server::start(MISBEHAVE, 1, &[]);
    assert_eq!(server.get("/trap").status, 500);
    let trap = server.wait_for_line("Guest failure handling request GET /trap HTTP/1.1");
    assert!(trap.contains("wasm `unreachable` instruction executed"), "{trap}");
    server.wait_for_line("proxy_misbehave.wasm!wasi:http/incoming-handler@0.2.12#handle");
    assert_eq!(server.get("/no-answer").status, 500);
    server.wait_for_line(
        "Guest failure handling request GET /no-answer HTTP/1.1: the handler returned without setting its response",
    );
    assert_eq!(server.get("/alloc").status, 500, "memory past --max-memory fails the request");
    assert_eq!(server.booted_worker_pids().len(), 1, "no worker was replaced");
}

/// The header maps a `wasi:http` guest creates and keeps live in the worker's heap, outside its linear memory: 256
/// of them at most under `--max-memory 32` (wasmtime's defaults let it keep 10,000 of 128 KiB each, about 1.2 GiB,
/// whatever the limit). Here each holds a header of 100 KiB.
#[test]
fn the_header_maps_a_proxy_guest_keeps_cost_the_worker_at_most_its_memory_limit() {
    let grown = peak_growth_until_the_resources_run_out("/fields?kib=100", "");
    assert!(grown < 64 << 20, "the worker's peak memory grew by {} MiB", grown >> 20);
}

/// The bodies of outgoing requests a `wasi:http` guest writes and never sends live in the worker's heap, outside its
/// linear memory: each takes at most two writes of 64 KiB (wasmtime's default, two of 1 MiB, let a guest keep a
/// few hundred MiB whatever `--max-memory` said).
#[test]
fn the_unsent_bodies_a_proxy_guest_keeps_cost_the_worker_at_most_its_memory_limit() {
    let grown = peak_growth_until_the_resources_run_out("/unsent", "");
    assert!(grown < 48 << 20, "the worker's peak memory grew by {} MiB", grown >> 20);
}

/// A copy of a header map (`fields.clone`) shares it until its first change, which copies the map's entries, not
/// its bytes (names and values are shared buffers): copies of a large received head, each changed, up to the
/// resource count cost the worker a few MiB (a 600 KiB head, 75 fields of 8,000 bytes, within the default limits,
/// copied until the 256 resources of `--max-memory 32` run out); deep copies would hold about 150 MiB.
#[test]
fn copies_of_a_large_received_head_share_its_bytes() {
    let fields: String = (0..75).map(|field| format!("x-big-{field}: {}\r\n", "v".repeat(8000))).collect();
    let grown = peak_growth_until_the_resources_run_out("/clones", &fields);
    assert!(grown < 16 << 20, "the worker's peak memory grew by {} MiB", grown >> 20);
}

/// How much the worker's peak memory grows while proxy-misbehave's `route` keeps resources, under `--max-memory 32`,
/// until the host refuses one (`fields`: header lines the request carries, each ending with CRLF): the request is a
/// 500 whose cause is the full resource table, and the worker serves on.
fn peak_growth_until_the_resources_run_out(route: &str, fields: &str) -> u64 {
    let server = Server::start(MISBEHAVE, 1, &["--max-memory", "32"]);
    let worker = server.booted_worker_pids()[0];
    assert_eq!(server.get("/count").status, 200);
    // The peak is reset to what the worker holds now: its start may have peaked higher, hiding growth below that.
    std::fs::write(format!("/proc/{worker}/clear_refs"), "5").expect("reset the worker's peak memory");
    let before = support::peak_memory(worker);
    assert_eq!(
        server.request(format!("GET {route} HTTP/1.1\r\nHost: localhost\r\n{fields}\r\n").as_bytes()).status,
        500
    );
    server.wait_for_line(&format!(
        "Guest failure handling request GET {route} HTTP/1.1: resource table has no free keys"
    ));
    let grown = support::peak_memory(worker).saturating_sub(before);
    assert_eq!(server.get("/count").status, 200);
    assert_eq!(server.live_workers(), vec![worker], "the worker lives");
    grown
}

#[test]
fn proxy_guest_output_goes_to_the_log_one_line_each_and_env_is_its_own() {
    let server = Server::start(MISBEHAVE, 1, &["--env", "GREETING=hi"]);
    assert_eq!(server.get("/print").text(), "printed");
    server.wait_for_line("first line to stdout");
    let forged = server.wait_for_line("second line");
    assert!(forged.contains("second line\\r2026-01-01 [CRITICAL] forged"), "{forged}");
    assert!(!server.log_lines().iter().any(|line| line.starts_with("2026-01-01 [CRITICAL]")));
    server.wait_for_line("a line to stderr");
    let env = server.get("/env").text();
    assert_eq!(env, "GREETING=hi\n", "the guest sees --env and nothing of the host");
}

#[test]
fn proxy_guest_sees_the_full_target_the_authority_and_the_headers() {
    let server = Server::start(MISBEHAVE, 1, &[]);
    let response = send(
        server.port,
        b"PUT /a%20b/request?x=1&y HTTP/1.1\r\nHost: example.test:8080\r\nX-Thing: one\r\nContent-Length: 0\r\n\r\n",
    );
    let lines: Vec<&str> = std::str::from_utf8(&response.body).unwrap().lines().collect();
    assert_eq!(lines[0], "PUT http example.test:8080 /a%20b/request?x=1&y");
    assert!(lines.contains(&"x-thing: one"), "{lines:?}");
    // From a trusted proxy (127.0.0.1 is trusted by default), the scheme the client used.
    let forwarded = server.request(b"GET /request HTTP/1.1\r\nHost: h.test\r\nX-Forwarded-Proto: https\r\n\r\n");
    assert!(forwarded.text().starts_with("GET https h.test /request\n"), "{}", forwarded.text());
    // A byte the parser takes but a URI may not hold reaches the guest percent-encoded, not as a guest failure.
    let odd = server.get("/<a>/request?q=`1`");
    assert_eq!(odd.status, 200, "{}", server.log_text());
    assert!(odd.text().starts_with("GET http localhost /%3Ca%3E/request?q=%601%60\n"), "{}", odd.text());
}

#[test]
fn proxy_guest_header_values_go_out_as_the_bytes_it_gave() {
    let server = Server::start(MISBEHAVE, 1, &[]);
    // UTF-8 `café`; an `a`, a tab and a Latin-1 `é` (a byte above 0x7F that is not UTF-8): never re-encoded.
    let cases: [(&str, &[u8]); 2] =
        [("636166c3a9", b"\r\nx-value: caf\xc3\xa9\r\n"), ("6109e9", b"\r\nx-value: a\t\xe9\r\n")];
    for (hex, field) in cases {
        let response = server.get(&format!("/header?hex={hex}"));
        assert_eq!((response.status, response.text().as_str()), (200, "header"), "{hex}");
        let on_the_wire = response.raw.windows(field.len()).any(|window| window == field);
        assert!(on_the_wire, "{hex}: {:?}", String::from_utf8_lossy(&response.raw));
    }
}

/// A local HTTP server that answers `pong` to every request and counts its connections.
fn pong_server() -> (TcpListener, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let (serving, counter) = (listener.try_clone().unwrap(), Arc::clone(&accepted));
    std::thread::spawn(move || {
        for stream in serving.incoming() {
            let Ok(mut stream) = stream else { return };
            counter.fetch_add(1, Ordering::SeqCst);
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).is_ok_and(|read| read == 1) {
                head.push(byte[0]);
            }
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nConnection: close\r\n\r\npong");
        }
    });
    (listener, accepted)
}

/// A response head from an upstream is held to the size of a header map the guest builds (128 KiB under the default
/// `--max-memory`), so that the heads a guest keeps cost the worker at most its memory limit together, as the maps
/// it builds do: a larger one fails the request inside the guest (hyper took up to about 400 KiB).
#[test]
fn an_upstream_response_head_larger_than_a_header_map_fails_the_request() {
    let upstream = TcpListener::bind("127.0.0.1:0").unwrap();
    let at = upstream.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for stream in upstream.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).is_ok_and(|read| read == 1) {
                head.push(byte[0]);
            }
            let size = if head.starts_with(b"GET /big ") { 200 * 1024 } else { 100 };
            let answer = format!(
                "HTTP/1.1 200 OK\r\nX-Big: {}\r\nContent-Length: 4\r\nConnection: close\r\n\r\npong",
                "a".repeat(size)
            );
            let _ = stream.write_all(answer.as_bytes());
        }
    });
    let server = Server::start(FETCH, 1, &["--allow-http", &at]);
    assert_eq!(server.get(&format!("/?to={at}/small")).text(), "status 200: pong");
    let answer = server.get(&format!("/?to={at}/big")).text();
    assert!(answer.starts_with("error: ErrorCode::"), "{answer}");
    assert_eq!(server.get(&format!("/?to={at}/small")).text(), "status 200: pong", "the worker serves on");
}

/// A wasi:http guest's filesystem call that blocks past its deadline (opening a FIFO no one writes) is given up, a
/// `503`, and the worker serves on; the thread it blocks stays, but at most 16 of them: past it, the next calls wait
/// for a free thread within their own deadlines. (Each such request left one more thread, up to tokio's 512.)
#[test]
fn a_wasi_http_guest_stuck_in_a_filesystem_call_leaves_a_bounded_number_of_threads() {
    let granted = tempfile::tempdir().unwrap();
    let fifo = granted.path().join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
    std::fs::write(granted.path().join("file"), "contents").unwrap();
    let dir = format!("{}::/data", granted.path().display());
    let server = Server::start(MISBEHAVE, 1, &["--guest-timeout", "1", "--dir", &dir]);
    assert_eq!(server.get("/read?path=/data/file").text(), "contents");
    let worker = server.booted_worker_pids()[0];
    let threads = || crate::support::status_field(worker, "Threads:").parse::<usize>().unwrap();
    let before = threads();
    for _ in 0..20 {
        assert_eq!(server.get("/read?path=/data/fifo").status, 503);
    }
    let after = threads();
    assert!(after <= before + 16, "{before} threads before, {after} after 20 calls stuck on a FIFO");
    assert!(crate::support::is_alive(worker), "the same worker serves on");
    // Let the blocked opens return (a writer comes and goes), so that the worker can stop.
    drop(std::fs::OpenOptions::new().write(true).open(&fifo));
}

#[test]
fn proxy_outgoing_requests_reach_granted_authorities_only() {
    let (granted, granted_hits) = pong_server();
    let (refused, refused_hits) = pong_server();
    let granted_at = granted.local_addr().unwrap().to_string();
    let refused_at = refused.local_addr().unwrap().to_string();
    let server = Server::start(FETCH, 1, &["--allow-http", &granted_at]);
    let answer = server.get(&format!("/?to={granted_at}/ping")).text();
    assert_eq!(answer, "status 200: pong");
    assert_eq!(granted_hits.load(Ordering::SeqCst), 1);
    let answer = server.get(&format!("/?to={refused_at}/ping")).text();
    assert_eq!(answer, "error: ErrorCode::HttpRequestDenied");
    let answer = server.get(&format!("/?to=localhost:{}/ping", granted.local_addr().unwrap().port())).text();
    assert_eq!(answer, "error: ErrorCode::HttpRequestDenied", "another name for a granted address is refused");
    // Userinfo would go out in the Host header, which a shared ingress could route to a host never granted.
    let answer = server.get(&format!("/?to=admin.internal@{granted_at}/ping")).text();
    assert_eq!(answer, "error: ErrorCode::HttpRequestUriInvalid", "an authority with userinfo is refused");
    assert_eq!(granted_hits.load(Ordering::SeqCst), 1, "the request with userinfo never went out");
    assert_eq!(refused_hits.load(Ordering::SeqCst), 0, "the refused authority never saw a connection");
}

/// An outgoing connection ends with the request that made it: an upstream that sends an endless body sees its
/// connection closed once the guest has answered (its read ran out of memory), not at the worker's next
/// `wasi:http` request, which here never comes.
#[test]
fn an_outgoing_connection_is_closed_when_its_request_ends() {
    let upstream = TcpListener::bind("127.0.0.1:0").unwrap();
    let upstream_at = upstream.local_addr().unwrap().to_string();
    let (closed_tx, closed_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let Ok((mut stream, _)) = upstream.accept() else { return };
        let mut head = [0u8; 4096];
        let _ = stream.read(&mut head);
        let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n");
        // An endless body: writing fails once the worker closes its end.
        let chunk = vec![b'y'; 64 * 1024];
        while stream.write_all(&chunk).is_ok() {}
        let _ = closed_tx.send(());
    });
    let server = Server::start(FETCH, 1, &["--allow-http", &upstream_at, "--max-memory", "64"]);
    let answer = server.get(&format!("/?to={upstream_at}/huge")).text();
    assert!(answer.starts_with("error: "), "{answer}");
    assert!(
        closed_rx.recv_timeout(PATIENCE).is_ok(),
        "the worker still holds the outgoing connection after its request ended"
    );
}

#[test]
fn manifest_mixes_both_kinds_and_the_proxy_guest_sees_the_full_path() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("apps.toml");
    let text = format!(
        "[[app]]\nname = \"classic\"\ncomponent = \"sample:echo\"\nprefix = \"/classic\"\n\n\
         [[app]]\nname = \"standard\"\ncomponent = \"{MISBEHAVE}\"\nprefix = \"/std\"\nenv = {{ WHO = \"standard\" }}\n\n\
         [[app]]\nname = \"hello\"\ncomponent = \"{HELLO}\"\n"
    );
    std::fs::write(&manifest, text).unwrap();
    let path = manifest.to_str().unwrap();
    let server = Server::spawn(support::command(&["serve", "--apps", path, "--bind", "127.0.0.1:0", "--workers", "1"]));
    server.wait_for_line("Booting worker with pid");
    let classic = server.get("/classic/x");
    assert_eq!(classic.status, 200);
    assert_eq!(classic.json()["environ"]["SCRIPT_NAME"], "/classic");
    let standard = server.get("/std/request?q=1").text();
    assert!(standard.starts_with("GET http "), "{standard}");
    assert!(standard.lines().next().unwrap().ends_with(" /std/request?q=1"), "{standard}");
    assert_eq!(server.get("/std/env").text(), "WHO=standard\n");
    assert_eq!(server.get("/elsewhere").text(), "Hello, World!");
}

#[test]
fn component_exporting_neither_handler_is_one_line_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.wasm");
    // The smallest component: the header of a component binary and nothing else, so no exports.
    std::fs::write(&empty, b"\0asm\x0d\x00\x01\x00").unwrap();
    let output = support::command(&["serve", empty.to_str().unwrap(), "--bind", "127.0.0.1:0"]).output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let errors: Vec<&str> = stderr.lines().filter(|line| line.contains("exports neither")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(errors[0].contains("wasi:http/incoming-handler@0.2.x") && errors[0].contains("(it exports nothing)"));
}

/// A component whose `handle`, `handle-request` or `respond` is not of the contract's type (here each takes a `u32`)
/// is refused at start, in one line naming the export, rather than failing each request.
#[test]
fn component_whose_handler_has_the_wrong_type_is_one_line_at_start_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    for (export, refusal) in [
        ("handle", "the component's `handle` is not the wasmcorn:app handler"),
        ("handle-request", "the component's `handle-request` is not the wasmcorn:app handler of the lazy-app world"),
        ("respond", "the component's `respond` is not the wasmcorn:app handler of the returning-app world"),
    ] {
        let source = format!(
            r#"(component
                 (core module $m (func (export "f") (param i32)))
                 (core instance $i (instantiate $m))
                 (func $f (param "x" u32) (canon lift (core func $i "f")))
                 (export "{export}" (func $f)))"#
        );
        let path = dir.path().join(format!("{export}.wasm"));
        std::fs::write(&path, wat::parse_str(&source).unwrap()).unwrap();
        let command = support::command(&["serve", path.to_str().unwrap(), "--bind", "127.0.0.1:0"]);
        // Waited for within the tests' patience, and stopped when dropped: a server that started anyway fails here.
        let mut server = Server::launch(command, std::process::Stdio::null());
        assert!(!server.wait_exit().success(), "{}", server.log_text());
        let errors: Vec<String> = server.log_lines().into_iter().filter(|line| line.contains(refusal)).collect();
        assert_eq!(errors.len(), 1, "{}", server.log_text());
        assert!(!server.log_text().contains("Listening at"), "{}", server.log_text());
    }
}

/// A component that exports more than one handler is called through the first of `handle`, `handle-request` and
/// `respond`: here `handle-request` (which returns `ok` without a response, a 500) is called, and the `respond`
/// beside it, of the wrong type, is never looked at.
#[test]
fn a_component_exporting_two_handlers_is_called_through_the_first() {
    let source = r#"(component
         (core module $m
           (memory (export "memory") 1)
           (func (export "handle-request") (result i32) i32.const 0)
           (func (export "respond") (param i32)))
         (core instance $i (instantiate $m))
         (alias core export $i "memory" (core memory $memory))
         (func $handle (result (result (error string)))
           (canon lift (core func $i "handle-request") (memory $memory)))
         (func $respond (param "x" u32) (canon lift (core func $i "respond")))
         (export "handle-request" (func $handle))
         (export "respond" (func $respond)))"#;
    served_without_a_response(source);
}

/// The same with all three: `handle` is called, given the environ (lowered into the guest's memory through its
/// `realloc`), and returns `ok` without a response, a 500; the `handle-request` and `respond` beside it, both of
/// the wrong type, are never looked at (either one looked at first would refuse the component at start).
#[test]
fn a_component_exporting_all_three_handlers_is_called_through_handle() {
    let source = r#"(component
         (core module $m
           (memory (export "memory") 2)
           (global $next (mut i32) (i32.const 1024))
           ;; A bump allocator: (old pointer, old size, alignment, size) -> the aligned block's address.
           (func (export "realloc") (param i32 i32 i32 i32) (result i32)
             (local $block i32)
             (local.set $block
               (i32.and
                 (i32.add (global.get $next) (i32.sub (local.get 2) (i32.const 1)))
                 (i32.sub (i32.const 0) (local.get 2))))
             (global.set $next (i32.add (local.get $block) (local.get 3)))
             (local.get $block))
           (func (export "handle") (param i32 i32) (result i32) i32.const 0)
           (func (export "handle-request") (param i32))
           (func (export "respond") (param i32)))
         (core instance $i (instantiate $m))
         (alias core export $i "memory" (core memory $memory))
         (alias core export $i "realloc" (core func $realloc))
         (func $handle (param "environ" (list (tuple string string))) (result (result (error string)))
           (canon lift (core func $i "handle") (memory $memory) (realloc $realloc)))
         (func $handle_request (param "x" u32) (canon lift (core func $i "handle-request")))
         (func $respond (param "x" u32) (canon lift (core func $i "respond")))
         (export "handle" (func $handle))
         (export "handle-request" (func $handle_request))
         (export "respond" (func $respond)))"#;
    served_without_a_response(source);
}

/// Serves the component written as `source` (WAT) and checks that its handler is called: it returns `ok` without
/// a response, which the client gets as a 500 and the log says.
fn served_without_a_response(source: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("handlers.wasm");
    std::fs::write(&path, wat::parse_str(source).unwrap()).unwrap();
    let server = Server::start(path.to_str().unwrap(), 1, &[]);
    assert_eq!(server.get("/").status, 500);
    server.wait_for_line("the guest returned without calling start-response");
}

#[test]
fn component_importing_what_the_host_lacks_is_one_line_at_start_naming_it() {
    let spin_like = env!("WASMCORN_GUEST_PROXY_UNLINKABLE");
    let output = support::command(&["serve", spin_like, "--bind", "127.0.0.1:0"]).output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let errors: Vec<&str> = stderr.lines().filter(|line| line.contains("does not provide")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(errors[0].contains("fermyon:spin/key-value"), "{stderr}");
}

#[test]
fn proxy_hello_is_embedded_as_a_sample() {
    let server = Server::start("sample:proxy-hello", 1, &[]);
    assert_eq!(server.get("/").text(), "Hello, World!");
}

#[test]
fn head_request_to_a_streaming_proxy_guest_has_no_body() {
    let server = Server::start(MISBEHAVE, 1, &[]);
    let mut stream = connect(&server);
    stream.write_all(b"HEAD /big?bytes=200000 HTTP/1.1\r\nHost: h\r\n\r\n").unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw);
    assert!(text.starts_with("HTTP/1.1 200 "), "{text}");
    assert!(text.ends_with("\r\n\r\n"), "nothing follows the head: {text:?}");
    let get = server.get("/big?bytes=200000");
    assert_eq!(get.body.len(), 200_000);
}

/// componentize-py, installed from PyPI into a virtual environment cached under the target folder (installed
/// again if an earlier install did not finish).
fn componentize_py() -> std::path::PathBuf {
    let venv = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("componentize-py-0.25.1");
    let installed = venv.join("installed");
    if !installed.exists() {
        let _ = std::fs::remove_dir_all(&venv);
        let created = std::process::Command::new("python3").arg("-m").arg("venv").arg(&venv).status().unwrap();
        assert!(created.success(), "python3 -m venv {}", venv.display());
        let pip = std::process::Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet", "componentize-py==0.25.1"])
            .status()
            .unwrap();
        assert!(pip.success(), "pip install componentize-py==0.25.1");
        std::fs::write(&installed, b"").unwrap();
    }
    venv.join("bin/componentize-py")
}

/// A component from another toolchain, straight from the registries: Python built by componentize-py for the
/// standard wasi:http proxy world (`guest-apps/proxy-python`), served unchanged.
#[test]
fn component_built_by_componentize_py_is_served() {
    let sample = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest-apps/proxy-python");
    let out = tempfile::tempdir().unwrap();
    let component = out.path().join("proxy_python.wasm");
    let built = std::process::Command::new(componentize_py())
        .arg("-d")
        .arg(sample.join("wit"))
        .args(["-w", "app", "componentize", "-p"])
        .arg(&sample)
        .arg("app")
        .arg("-o")
        .arg(&component)
        .output()
        .unwrap();
    assert!(built.status.success(), "componentize-py: {}", String::from_utf8_lossy(&built.stderr));
    // Compiled into the tests' cache first, with no deadline: a CPython component takes cranelift a while on a
    // busy machine, longer than a server's start is waited for.
    let path = component.to_str().unwrap();
    let check = support::command(&["serve", path, "--check-config"]).output().unwrap();
    assert!(check.status.success(), "--check-config: {}", String::from_utf8_lossy(&check.stderr));
    let server = Server::start(path, 1, &[]);
    let response = server.get("/py/hello?x=1");
    assert_eq!(response.status, 200);
    assert_eq!(response.text(), "Hello from Python at /py/hello?x=1");
    server.wait_for_line("[guest stdout] python saw /py/hello?x=1");
}

/// A wasi:http app with a pool of its own and limits of its own, reloaded with a new environment on SIGHUP.
#[test]
fn proxy_app_in_a_dedicated_pool_keeps_its_own_limits_and_reloads() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("apps.toml");
    let write = |who: &str| {
        let text = format!(
            "[[app]]\nname = \"hello\"\ncomponent = \"sample:hello\"\n\n\
             [[app]]\nname = \"standard\"\ncomponent = \"{MISBEHAVE}\"\nprefix = \"/std\"\nworkers = 1\n\
             guest_timeout = 1\nenv = {{ WHO = \"{who}\" }}\n"
        );
        std::fs::write(&manifest, text).unwrap();
    };
    write("first");
    let path = manifest.to_str().unwrap();
    let server = Server::spawn(support::command(&["serve", "--apps", path, "--bind", "127.0.0.1:0", "--workers", "1"]));
    server.wait_for_count("Booting worker with pid", 2);
    assert_eq!(server.get("/std/env").text(), "WHO=first\n");
    assert_eq!(server.get("/std/loop").status, 503, "the app's own guest_timeout");
    server.wait_for_line("Guest timeout handling request GET /std/loop HTTP/1.1 (app standard)");
    write("second");
    server.signal(nix::sys::signal::Signal::SIGHUP);
    server.wait_for_line("Reloading: new workers for the pool of app standard");
    server.wait_for_line("Reload complete");
    support::eventually("the reloaded environment", || server.get("/std/env").text() == "WHO=second\n");
    assert_eq!(server.get("/").text(), "Hello, World!");
}
