//! The guest sandbox and its limits, shown with the `misbehave` guest: whatever a guest does, it costs its own
//! request and never the worker (same pid before and after, no new `Booting worker` line, the next request
//! answered), and it reaches only what the operator granted.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::mpsc;

use nix::unistd::Pid;

use crate::support::postgres::Postgres;
use crate::support::{Server, command, leave_room_for, peak_memory};

const MISBEHAVE: &str = env!("WASMCORN_GUEST_MISBEHAVE");
/// The same guest linked with a 64 KiB stack (its memory is rewritten in place between requests).
const MISBEHAVE_SMALL: &str = env!("WASMCORN_GUEST_MISBEHAVE_SMALL");

/// The misbehave guest on one worker, with small limits so that the tests run fast.
fn misbehave(args: &[&str]) -> Server {
    let mut all = vec!["--guest-timeout", "0.5", "--max-memory", "16"];
    all.extend_from_slice(args);
    Server::start(MISBEHAVE, 1, &all)
}

/// The worker's pid, checked to be the only one.
fn the_worker(server: &Server) -> Pid {
    let booted = server.booted_worker_pids();
    assert_eq!(booted.len(), 1, "one worker booted: {booted:?}");
    assert_eq!(server.live_workers(), booted);
    booted[0]
}

/// The same worker is alive, no other booted, and it answers the next request normally (from a fresh instance).
fn assert_worker_survived(server: &Server, worker: Pid, after: &str) {
    let next = server.get("/count");
    assert_eq!((next.status, next.text().as_str()), (200, "1"), "the request after {after}");
    assert_eq!(server.live_workers(), vec![worker], "the worker survives {after}");
    assert_eq!(server.booted_worker_pids(), vec![worker], "no worker was booted after {after}");
}

/// The largest number the log shows between `before` and `after` (0 if none).
fn largest_logged(server: &Server, before: &str, after: &str) -> u32 {
    server
        .log_lines()
        .iter()
        .filter_map(|line| line.split(before).nth(1)?.strip_suffix(after)?.parse().ok())
        .max()
        .unwrap_or(0)
}

#[test]
fn every_request_gets_a_fresh_instance() {
    let server = misbehave(&[]);
    let worker = the_worker(&server);
    for _ in 0..5 {
        let response = server.get("/count");
        assert_eq!((response.status, response.text().as_str()), (200, "1"), "the global starts at zero again");
    }
    assert_worker_survived(&server, worker, "five requests");
}

#[test]
fn guest_past_its_timeout_gets_503_and_a_logged_backtrace_and_the_worker_goes_on() {
    let server = misbehave(&[]);
    let worker = the_worker(&server);
    for _ in 0..2 {
        let response = server.get("/loop");
        assert_eq!(response.status, 503);
        assert_eq!(response.text(), "Service Unavailable\n");
    }
    let lines =
        server.wait_for_count("[ERROR] Guest timeout handling request GET /loop HTTP/1.1: wasm trap: interrupt", 2);
    assert!(lines[0].contains(&format!("] [{worker}] [ERROR]")), "the worker logs it: {}", lines[0]);
    let log = server.log_text();
    assert!(log.contains("misbehave.wasm!misbehave::spin"), "the wasm backtrace names the function:\n{log}");
    assert!(!log.contains("Stack backtrace"), "the host's own stack is not logged:\n{log}");
    assert_worker_survived(&server, worker, "/loop");
}

#[test]
fn a_small_stack_that_overflows_traps_out_of_bounds_and_the_worker_goes_on() {
    // The stack sits at the bottom of the linear memory: running out of it goes below address 0, which traps.
    let server = Server::start(MISBEHAVE_SMALL, 1, &["--log-level", "debug"]);
    server.wait_for_line("Linear memory kept resident between requests: 256 KiB");
    let worker = the_worker(&server);
    let response = server.get("/stack");
    assert_eq!(response.status, 500, "{}", server.log_text());
    server.wait_for_line("Guest failure handling request GET /stack HTTP/1.1: wasm trap: out of bounds memory access");
    server.wait_for_line("misbehave_small.wasm!misbehave_small::recurse");
    assert_worker_survived(&server, worker, "a stack overflow");
}

#[test]
fn traps_get_500_and_a_logged_wasm_backtrace_and_the_worker_goes_on() {
    let server = misbehave(&[]);
    let worker = the_worker(&server);
    let cases = [
        ("/trap", "wasm trap: wasm `unreachable` instruction executed", "misbehave.wasm!handle"),
        ("/stack", "wasm trap: call stack exhausted", "misbehave.wasm!misbehave::recurse"),
        ("/panic", "wasm trap: wasm `unreachable` instruction executed", "::process::abort"),
        ("/alloc", "wasm trap: wasm `unreachable` instruction executed", "misbehave::hoard_memory"),
        // WASI 0.2 has no exit codes: `exit(3)` is a failed exit, status 1.
        ("/exit", "Exited with i32 exit status 1", "::process::exit"),
    ];
    for (route, cause, frame) in cases {
        let response = server.get(route);
        assert_eq!(response.status, 500, "{route}");
        assert_eq!(response.text(), "Internal Server Error\n", "{route}");
        let line =
            server.wait_for_line(&format!("[ERROR] Guest failure handling request GET {route} HTTP/1.1: {cause}"));
        assert!(line.contains(&format!("] [{worker}] [ERROR]")), "{line}");
        // The backtrace's lines follow the ERROR line; the log is read line by line, so wait for the frame.
        server.wait_for_line(frame);
        assert_worker_survived(&server, worker, route);
    }
    server.wait_for_line("[guest stderr] the misbehave guest panics on purpose");
    server.wait_for_line("[guest stderr] memory allocation of 1048576 bytes failed");
}

#[test]
fn memory_growth_stops_at_max_memory() {
    let server = misbehave(&[]);
    let worker = the_worker(&server);
    assert_eq!(server.get("/alloc").status, 500);
    server.wait_for_line("[guest stderr] memory allocation of 1048576 bytes failed");
    let most = largest_logged(&server, "[guest stdout] hoarded ", " MiB");
    // The guest's stack and data take a little of the 16 MiB; its heap gets the rest, and not one MiB more.
    assert!((8..16).contains(&most), "the guest hoarded {most} MiB under a 16 MiB cap");
    assert_worker_survived(&server, worker, "/alloc");
}

#[test]
fn resources_a_guest_holds_are_bounded() {
    let server = misbehave(&[]);
    let worker = the_worker(&server);
    assert_eq!(server.get("/handles").status, 500);
    server
        .wait_for_line("[ERROR] Guest failure handling request GET /handles HTTP/1.1: resource table has no free keys");
    let most = largest_logged(&server, "[guest stdout] holding ", " pollables");
    // Each pollable takes a host table entry or two; the table holds 10,000 (wasmtime's default is 1,000,000).
    assert!((1000..10_000).contains(&most), "the guest held {most} pollables");
    assert_worker_survived(&server, worker, "/handles");
}

#[test]
fn broken_responses_get_500_and_no_guest_byte_reaches_the_wire() {
    let server = misbehave(&[]);
    let worker = the_worker(&server);
    let cases = [
        ("/bad-header", "the value of header \"X-Evil\" contains a control character"),
        // Controls other than CR and LF: a vertical tab, an escape sequence, DEL.
        ("/header?value=a%0Bb", "the value of header \"X-Value\" contains a control character"),
        ("/header?value=%1B%5B2J", "the value of header \"X-Value\" contains a control character"),
        ("/header?value=a%7F", "the value of header \"X-Value\" contains a control character"),
        ("/bad-status", "invalid status \"200 OK\\r\\nX-Injected: 1\""),
        ("/hop-by-hop", "the guest may not set the \"Connection\" header"),
        ("/no-start", "the guest returned without calling start-response"),
        ("/body-before-start", "write-body was called before start-response"),
    ];
    for (route, reason) in cases {
        let response = server.get(route);
        assert_eq!(response.status, 500, "{route}");
        let raw = String::from_utf8_lossy(&response.raw);
        assert!(raw.ends_with("\r\n\r\nInternal Server Error\n"), "{route}: {raw:?}");
        for guest_text in
            ["X-Injected", "X-Evil", "X-Value", "keep-alive", "the host said", "a body before", "too late"]
        {
            assert!(!raw.contains(guest_text), "{route} leaked {guest_text:?}: {raw:?}");
        }
        let names: Vec<&str> = response.headers.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(names, ["Date", "Server", "Connection", "Content-Type", "Content-Length"], "{route}");
        let line = server.wait_for_line(&format!("[ERROR] Invalid response from the guest for GET {route} HTTP/1.1: "));
        assert!(line.contains(reason), "{route}: {line}");
        assert_worker_survived(&server, worker, route);
    }
    // What else a field value may hold goes out as the guest gave it: UTF-8 text, a tab.
    let response = server.get("/header?value=caf%C3%A9%09x");
    assert_eq!(response.status, 200);
    let raw = String::from_utf8_lossy(&response.raw);
    assert!(raw.contains("\r\nX-Value: caf\u{e9}\tx\r\n"), "{raw:?}");
}

/// Asks the guest of `server` (its only worker `worker`, a 16 MiB memory) for `/amplify`: 64 headers whose values
/// all point at one 4 MiB string, 256 MiB to copy out of a 16 MiB memory. The copy fails on wasmtime's hostcall
/// fuel, and the worker grows by the guest's 4 MiB and at most 16 MiB copied (wasmtime's default would have let
/// 128 MiB be copied).
fn assert_amplified_copy_is_bounded(server: &Server, worker: Pid) {
    assert_eq!(server.get("/count").status, 200);
    let before = peak_memory(worker);
    assert_eq!(server.get("/amplify?mib=4&copies=64").status, 500);
    server.wait_for_line("fuel allocated for hostcalls has been exhausted");
    let grown = peak_memory(worker).saturating_sub(before);
    assert!(grown < 48 << 20, "the worker's peak memory grew by {} MiB", grown >> 20);
}

#[test]
fn a_host_call_naming_the_same_bytes_many_times_costs_the_worker_at_most_the_memory_limit() {
    let server = misbehave(&[]);
    let worker = the_worker(&server);
    assert_amplified_copy_is_bounded(&server, worker);
    assert_worker_survived(&server, worker, "/amplify");
}

/// The same for the whole response a `returning-app` guest returns: lifting it out of the guest is bounded as a host
/// call is.
#[test]
fn a_returned_response_naming_the_same_bytes_many_times_costs_the_worker_at_most_the_memory_limit() {
    let server = Server::start(env!("WASMCORN_GUEST_RETURNING"), 1, &["--max-memory", "16"]);
    let worker = the_worker(&server);
    assert_amplified_copy_is_bounded(&server, worker);
    assert_eq!(server.get("/after").text(), "returned /after");
    assert_eq!(server.live_workers(), vec![worker], "the worker survives /amplify");
}

/// One `write-body` call of 40 MiB, streamed chunked: the worker holds the chunk it took out of the guest and no
/// other copy of it (it held three: the chunk, the response buffer it was appended to, and the chunk framed).
#[test]
fn one_large_write_costs_the_worker_one_copy_of_it() {
    let server = Server::start(MISBEHAVE, 1, &["--max-memory", "64"]);
    let worker = the_worker(&server);
    assert_eq!(server.get("/count").status, 200);
    let before = peak_memory(worker);
    let response = server.get("/one-chunk?mib=40");
    assert_eq!(response.status, 200);
    assert_eq!(response.header("transfer-encoding"), Some("chunked"));
    assert!(response.body.len() == 40 << 20 && response.body.iter().all(|byte| *byte == b'a'), "40 MiB of a");
    let grown = peak_memory(worker).saturating_sub(before);
    // The guest's 40 MiB in its memory and the 40 MiB copied out: 80 MiB, and some room.
    assert!(grown < 100 << 20, "the worker's peak memory grew by {} MiB", grown >> 20);
    assert_worker_survived(&server, worker, "/one-chunk");
}

/// `wasi:random` returns at most what the guest's memory may hold in one call: wasmtime-wasi's own bound, 64 MiB,
/// made the worker allocate and fill 48 MiB for a guest limited to 16 MiB.
#[test]
fn random_bytes_past_the_memory_limit_trap_before_the_worker_makes_them() {
    let server = misbehave(&[]);
    let worker = the_worker(&server);
    assert_eq!(server.get("/random?mib=1").text(), "got 1048576 random bytes");
    let before = peak_memory(worker);
    assert_eq!(server.get("/random?mib=48").status, 500);
    server.wait_for_line(
        "wasi:random/random.get-random-bytes: 50331648 bytes asked for, more than the app's memory limit (16777216 \
         bytes)",
    );
    let grown = peak_memory(worker).saturating_sub(before);
    assert!(grown < 24 << 20, "the worker's peak memory grew by {} MiB", grown >> 20);
    assert_worker_survived(&server, worker, "/random");
}

#[test]
fn a_guest_wait_in_a_worker_out_of_descriptors_costs_the_worker_nothing() {
    let server = Server::start(MISBEHAVE, 1, &["--keep-alive", "60"]);
    let worker = the_worker(&server);
    leave_room_for(worker, 3);
    // Kept connections take the room that is left.
    let mut kept: Vec<std::net::TcpStream> = Vec::new();
    for _ in 0..3 {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", server.port)).expect("connect");
        stream.set_read_timeout(Some(crate::support::PATIENCE)).unwrap();
        stream.write_all(b"GET /count HTTP/1.1\r\nHost: h\r\n\r\n").unwrap();
        // The whole response: its head, and the count of a fresh instance.
        let mut response = Vec::new();
        while !response.ends_with(b"\r\n\r\n1") {
            let mut byte = [0u8; 1];
            stream.read_exact(&mut byte).expect("a response");
            response.push(byte[0]);
        }
        assert!(response.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&response));
        kept.push(stream);
    }
    // A sleep waits in wasi:io/poll, in wasmtime-wasi's tokio runtime: built at that first wait, it found no
    // descriptor, panicked, and the worker aborted with every connection it held.
    let last = kept.last_mut().expect("a kept connection");
    let mut raw = Vec::new();
    last.write_all(b"GET /sleep?seconds=0.1 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n").unwrap();
    last.read_to_end(&mut raw).expect("a response");
    let response = crate::support::parse_response(&raw);
    assert_eq!((response.status, response.text().as_str()), (200, "slept 0.1 s"), "{}", server.log_text());
    assert_eq!(server.live_workers(), vec![worker], "the worker lives:\n{}", server.log_text());
}

/// The two-memories guest (guest-apps/two-memories: text, no compiler of ours makes a component with two
/// memories), compiled into a component in `dir`.
fn two_memories_component(dir: &Path) -> String {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest-apps/two-memories/two-memories.wat");
    let component = wat::parse_file(&source).expect("compile the two-memories guest");
    let path = dir.join("two-memories.wasm");
    std::fs::write(&path, component).expect("write the two-memories component");
    path.to_str().expect("a UTF-8 path").to_string()
}

/// `--max-memory` bounds an instance's linear memories together: wasmtime's limit applies to each memory alone, and
/// a component may define two, which then held twice the limit. The guest grows each of its two memories to 41 MiB.
#[test]
fn the_memory_limit_bounds_all_the_memories_of_an_instance_together() {
    let dir = tempfile::tempdir().unwrap();
    let app = two_memories_component(dir.path());
    let server = Server::start(&app, 1, &["--max-memory", "64"]);
    let worker = the_worker(&server);
    assert_eq!(server.get("/").status, 500);
    server.wait_for_line("the second memory was refused");
    assert!(!server.log_text().contains("both memories grew"), "{}", server.log_text());
    assert_eq!(server.live_workers(), vec![worker], "the worker lives");
    assert_eq!(server.booted_worker_pids(), vec![worker], "no worker was booted");
    // With room for both, both grow: the limit refused the second memory, not the guest.
    let server = Server::start(&app, 1, &["--max-memory", "128"]);
    assert_eq!(server.get("/").status, 500);
    server.wait_for_line("both memories grew by 40 MiB");
}

#[test]
fn guest_output_is_logged_within_its_budget() {
    // No guest timeout of half a second: 100 MiB of output takes a busy machine longer.
    let server = Server::start(MISBEHAVE, 1, &["--max-memory", "16"]);
    let worker = the_worker(&server);
    let response = server.get("/spew");
    assert_eq!((response.status, response.text().as_str()), (200, "wrote 104857600 bytes to stdout"));
    // The budget of 64 KiB pays for 60 lines of 1 KiB (each costs its 1,023 bytes of text, and 64 for its line
    // break: the log line around it) and for the first 316 bytes of the next line, which the request leaves
    // unfinished and which is logged at its end; the other 100 MiB - 61,756 bytes are counted and dropped.
    server.wait_for_line("[guest stdout] [104795844 more bytes dropped: the request's output budget is spent]");
    let logged = server
        .log_lines()
        .iter()
        .filter(|line| line.contains(&format!("[{worker}] [INFO] [guest stdout] xxx")))
        .count();
    assert_eq!(logged, 61);
    assert_worker_survived(&server, worker, "/spew");
}

#[test]
fn big_bodies_stream_whole() {
    let server = misbehave(&[]);
    let worker = the_worker(&server);
    for bytes in [10usize, 1_000_000] {
        let response = server.get(&format!("/big?bytes={bytes}"));
        assert_eq!(response.status, 200);
        let expected: Vec<u8> = (0..bytes).map(|index| b'a' + (index % 26) as u8).collect();
        assert!(response.body == expected, "{bytes} bytes of the alphabet, got {} bytes", response.body.len());
    }
    assert_worker_survived(&server, worker, "/big");
}

#[test]
fn guest_environment_holds_only_what_env_gave() {
    let server = misbehave(&["--env", "GREETING=hello", "--env", "EMPTY=", "--env", "EQUATION=a=b"]);
    let worker = the_worker(&server);
    let response = server.get("/env");
    assert_eq!(response.status, 200);
    assert_eq!(response.text(), "GREETING=hello\nEMPTY=\nEQUATION=a=b\n");
    assert_worker_survived(&server, worker, "/env");
}

#[test]
fn without_dir_the_guest_sees_no_files() {
    let folder = tempfile::tempdir().unwrap();
    let secret = folder.path().join("secret.txt");
    std::fs::write(&secret, "top secret").unwrap();
    let server = misbehave(&[]);
    let worker = the_worker(&server);
    let secret = secret.to_str().unwrap();
    for route in [format!("/read?path={secret}"), "/read?path=/etc/passwd".into(), "/read?path=secret.txt".into()] {
        let response = server.get(&route);
        assert_eq!(response.status, 200);
        assert!(response.text().starts_with("error: cannot read"), "{route}: {}", response.text());
    }
    let written = folder.path().join("written.txt");
    let response = server.get(&format!("/write?path={}", written.display()));
    assert!(response.text().starts_with("error: cannot write"), "{}", response.text());
    assert!(!written.exists());
    assert_worker_survived(&server, worker, "reads and writes");
}

#[test]
fn dir_grants_one_folder_read_only_or_read_write() {
    let root = tempfile::tempdir().unwrap();
    let granted = root.path().join("granted");
    std::fs::create_dir(&granted).unwrap();
    std::fs::write(granted.join("in.txt"), "inside").unwrap();
    std::fs::write(root.path().join("outside.txt"), "outside").unwrap();
    let read_only = format!("{}::/data:ro", granted.display());
    let server = misbehave(&["--dir", &read_only]);
    let worker = the_worker(&server);
    assert_eq!(server.get("/read?path=/data/in.txt").text(), "ok: inside");
    for escape in ["/data/../outside.txt", &format!("{}/outside.txt", root.path().display()), "/outside.txt"] {
        let text = server.get(&format!("/read?path={escape}")).text();
        assert!(text.starts_with("error: cannot read"), "{escape}: {text}");
    }
    let text = server.get("/write?path=/data/new.txt").text();
    assert!(text.starts_with("error: cannot write"), "read-only: {text}");
    assert!(!granted.join("new.txt").exists());
    assert_worker_survived(&server, worker, "read-only access");
    drop(server);

    let read_write = format!("{}::/data", granted.display());
    let server = misbehave(&["--dir", &read_write]);
    assert_eq!(server.get("/write?path=/data/new.txt").text(), "ok: wrote \"/data/new.txt\"");
    assert_eq!(std::fs::read_to_string(granted.join("new.txt")).unwrap(), "written by the misbehave guest\n");
}

/// A TCP server that answers `pong` to whoever connects, and reports each connection.
fn pong_listener() -> (u16, mpsc::Receiver<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (connected, connections) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let _ = connected.send(());
            let mut ping = [0u8; 5];
            if stream.read_exact(&mut ping).is_ok() {
                let _ = stream.write_all(b"pong\n");
            }
        }
    });
    (port, connections)
}

#[test]
fn without_allow_net_the_guest_connects_nowhere() {
    let (port, connections) = pong_listener();
    let server = misbehave(&[]);
    let worker = the_worker(&server);
    for address in [format!("127.0.0.1:{port}"), format!("localhost:{port}")] {
        let text = server.get(&format!("/connect?addr={address}")).text();
        assert!(text.starts_with(&format!("error: cannot connect to {address:?}")), "{text}");
    }
    assert_eq!(connections.try_recv(), Err(mpsc::TryRecvError::Empty), "no connection reached the listener");
    assert_worker_survived(&server, worker, "refused connections");
}

#[test]
fn allow_net_grants_exactly_the_listed_addresses_and_names() {
    let (allowed, connections) = pong_listener();
    let (other, other_connections) = pong_listener();
    let by_address = format!("127.0.0.1:{allowed}");
    let server = misbehave(&["--allow-net", &by_address]);
    let worker = the_worker(&server);
    let text = server.get(&format!("/connect?addr={by_address}")).text();
    assert_eq!(text, format!("ok: connected to {by_address}, read: pong\n"));
    assert_eq!(connections.try_recv(), Ok(()));
    let text = server.get(&format!("/connect?addr=127.0.0.1:{other}")).text();
    assert!(text.starts_with("error: cannot connect"), "another port: {text}");
    // localhost resolves to the allowed address, but the name is not listed: the lookup itself is refused.
    let text = server.get(&format!("/connect?addr=localhost:{allowed}")).text();
    assert!(text.starts_with("error: cannot connect"), "an unlisted name: {text}");
    assert_eq!(connections.try_recv(), Err(mpsc::TryRecvError::Empty));
    assert_eq!(other_connections.try_recv(), Err(mpsc::TryRecvError::Empty));
    assert_worker_survived(&server, worker, "granted connections");
    drop(server);

    let by_name = format!("localhost:{allowed}");
    let server = misbehave(&["--allow-net", &by_name]);
    let text = server.get(&format!("/connect?addr={by_name}")).text();
    assert_eq!(text, format!("ok: connected to {by_name}, read: pong\n"));
}

#[test]
fn help_explains_the_sandbox_flags() {
    let output = command(&["serve", "--help"]).output().unwrap();
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for flag in ["--dir <HOST[::GUEST][:ro]>", "--allow-net <HOST:PORT>", "--guest-timeout", "--max-memory"] {
        assert!(help.contains(flag), "--help does not mention {flag}:\n{help}");
    }
}

#[test]
fn bad_dir_or_allow_net_is_a_one_line_error_at_start() {
    let cases: [(&[&str], &str); 4] = [
        (&["--dir", "/no/such/folder"], "Error: --dir /no/such/folder: cannot open the folder"),
        (&["--dir", "::/data"], "Error: --dir takes HOST[::GUEST][:ro]"),
        (&["--allow-net", "127.0.0.1"], "Error: --allow-net takes HOST:PORT"),
        (&["--allow-net", "no-such-host.invalid:80"], "Error: --allow-net no-such-host.invalid:80: cannot resolve"),
    ];
    for (flags, message) in cases {
        let mut args = vec!["serve", "sample:hello", "--bind", "127.0.0.1:0"];
        args.extend_from_slice(flags);
        let output = command(&args).output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{flags:?}");
        assert_eq!(stderr.lines().count(), 1, "{flags:?}: {stderr}");
        assert!(stderr.starts_with(message), "{flags:?}: {stderr}");
    }
}

/// A granted folder reached through a symlink in a folder others may change (such as /tmp) is refused at start:
/// whoever may change that folder could point the link anywhere, and the guest would read and write there (the
/// folder is opened by name in each worker). The same folder named without the link is granted.
#[test]
fn a_dir_reached_through_a_link_in_a_shared_folder_is_refused() {
    use std::os::unix::fs::symlink;
    let shared = crate::support::shared_folder();
    let real = tempfile::tempdir().expect("a temporary folder");
    let link = shared.path().join("data");
    symlink(real.path(), &link).expect("a symlink");
    let check = |host: &Path| {
        let spec = format!("{}::/data", host.display());
        command(&["serve", "--check-config", "sample:hello", "--dir", &spec]).output().expect("run wasmcorn")
    };
    let output = check(&link);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    let message = format!("the way to it passes through the symlink {}, in a folder others may change", link.display());
    assert!(stderr.contains(&message), "{stderr}");
    let output = check(real.path());
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
}

/// A link planted at a granted folder's name after the start is refused too: each worker opens the folder by name
/// when it first serves the app, and checks the way to it then. Here the second worker (`--max-requests 1`) finds
/// the folder replaced by a link to another one.
#[test]
fn a_link_planted_at_a_granted_folder_after_the_start_is_refused() {
    use std::os::unix::fs::symlink;
    let shared = crate::support::shared_folder();
    let granted = shared.path().join("data");
    std::fs::create_dir(&granted).expect("the granted folder");
    std::fs::write(granted.join("note.txt"), "granted").expect("a file");
    let elsewhere = tempfile::tempdir().expect("a temporary folder");
    std::fs::write(elsewhere.path().join("note.txt"), "elsewhere").expect("a file");
    let spec = format!("{}::/data", granted.display());
    let server = Server::start(MISBEHAVE, 1, &["--dir", &spec, "--max-requests", "1"]);
    assert_eq!(server.get("/read?path=/data/note.txt").text(), "ok: granted");
    server.wait_for_count("Booting worker with pid", 2);
    std::fs::rename(&granted, shared.path().join("moved")).expect("move the folder away");
    symlink(elsewhere.path(), &granted).expect("plant a link");
    let response = server.get("/read?path=/data/note.txt");
    assert_eq!(response.status, 500, "{}", response.text());
    server.wait_for_line("the way to it passes through the symlink");
}

/// A local user swaps, as fast as they can, a granted folder in a folder everyone may write with a symlink to a
/// folder of their choosing while workers open it (`--max-requests 1`: a new worker for each request). Checked by
/// name and then opened by name, a worker now and then saw the folder and opened the link: the guest read the
/// other folder. Each request now reads the granted folder, or is refused.
#[test]
fn a_link_swapped_in_at_a_granted_folder_while_workers_open_it_is_never_followed() {
    let shared = crate::support::shared_folder();
    let (granted, swapped) = (shared.path().join("data"), shared.path().join("swapped"));
    std::fs::create_dir(&granted).expect("the granted folder");
    std::fs::write(granted.join("note.txt"), "granted").expect("a file");
    let elsewhere = tempfile::tempdir().expect("a temporary folder");
    std::fs::write(elsewhere.path().join("note.txt"), "elsewhere").expect("a file");
    std::os::unix::fs::symlink(elsewhere.path(), &swapped).expect("a link to swap in");
    let spec = format!("{}::/data", granted.display());
    let server = Server::start(MISBEHAVE, 1, &["--dir", &spec, "--max-requests", "1"]);
    let (read, refused) = crate::support::while_swapping(&granted, &swapped, || {
        let (mut read, mut refused) = (0, 0);
        for _ in 0..60 {
            let response = server.get("/read?path=/data/note.txt");
            match (response.status, response.text()) {
                (200, text) if text == "ok: granted" => read += 1,
                (500, text) if text.is_empty() || !text.contains("elsewhere") => refused += 1,
                (status, text) => panic!("{status}: {text}"),
            }
        }
        (read, refused)
    });
    assert!(read > 0 && refused > 0, "both names were met: {read} read, {refused} refused");
    server.wait_for_line("the way to it passes through the symlink");
}

#[test]
fn workload_sleeps_on_a_real_postgres_through_wasi_sockets() {
    let postgres = Postgres::start();
    let address = format!("127.0.0.1:{}", postgres.port);
    for (user, seconds) in [("postgres", "0.11"), ("md5user:md5secret", "0.12"), ("pwuser:pwsecret", "0.13")] {
        let url = format!("DATABASE_URL=postgres://{user}@{address}/postgres");
        let io_seconds = format!("IO_SECONDS={seconds}");
        let server = Server::start(
            "sample:workload",
            1,
            &["--env", "IO_BOUND=100", "--env", &io_seconds, "--env", &url, "--allow-net", &address],
        );
        assert_eq!(server.get("/").status, 204, "{user}");
        server.wait_for_line("[guest stdout] IO work: 100, CPU work: 0, time: ");
        assert!(postgres.log().contains(&format!("statement: SELECT pg_sleep({seconds})")), "{user} ran pg_sleep");
    }

    let refused = [
        ("postgres://md5user:wrong@ADDRESS/postgres", "password authentication failed for user \"md5user\""),
        ("postgres://md5user@ADDRESS/postgres", "asks for a password (md5) and DATABASE_URL has none"),
        ("postgres://postgres@ADDRESS/nosuchdb", "database \"nosuchdb\" does not exist"),
        (
            "postgres://scramuser:scramsecret@ADDRESS/postgres",
            "asks for SASL (SCRAM-SHA-256) authentication, which this client does not support",
        ),
    ];
    for (url, reason) in refused {
        let url = format!("DATABASE_URL={}", url.replace("ADDRESS", &address));
        let server =
            Server::start("sample:workload", 1, &["--env", "IO_BOUND=100", "--env", &url, "--allow-net", &address]);
        assert_eq!(server.get("/").status, 500, "{url}");
        let line = server.wait_for_line(&format!("Error handling request GET / HTTP/1.1: PostgreSQL at {address} "));
        assert!(line.contains(reason), "{url}: {line}");
    }

    let url = format!("DATABASE_URL=postgres://postgres@{address}/postgres");
    let server = Server::start("sample:workload", 1, &["--env", "IO_BOUND=100", "--env", &url]);
    assert_eq!(server.get("/").status, 500, "without --allow-net");
    server.wait_for_line(&format!("Error handling request GET / HTTP/1.1: cannot connect to PostgreSQL at {address}"));
}
