//! The `misbehave` guest: a test app that breaks every rule a guest can break, one route at a time, so that the
//! end-to-end tests can show that a misbehaving guest costs one request and never a worker. It is built with the
//! samples but not embedded; tests serve it by path (`WASMCORN_GUEST_MISBEHAVE`).
//!
//! Routes (query values are percent-decoded):
//! - `/loop`: spins forever. `/alloc`: grows its memory a MiB at a time without end, printing `hoarded N MiB`.
//!   `/trap`: executes `unreachable`. `/stack`: recurses without end. `/panic`: panics. `/exit`: calls `std::process::exit(3)`.
//! - `/read?path=P`, `/write?path=P`: reads or writes a file; `/connect?addr=HOST:PORT`: connects over TCP, sends
//!   `ping\n` and reads the reply (`/connect-and-keep?addr=HOST:PORT` leaves that connection open: only dropping the
//!   instance closes it). Each answers `200` with `ok: ...` or `error: ...` in the body.
//! - `/handles`: creates pollables without ever dropping them, printing `holding N pollables` every thousand.
//! - `/env`: the guest's environment, one `KEY=VALUE` a line. `/count`: increments a global and answers it.
//! - `/spew`: writes 100 MiB to stdout. `/big?bytes=N`: streams an N-byte body (`abc..z` repeated).
//! - Broken responses: `/bad-header` (a value with CR LF), `/bad-status`, `/hop-by-hop`, `/no-start`,
//!   `/body-before-start`. `/header?value=V`: an `X-Value: V` header, whatever V holds (a valid one is
//!   answered `200`).
//! - `/sleep?seconds=N`: sleeps N seconds (`std::thread::sleep`: a WASI clock and a blocking poll, a host call
//!   that epochs do not interrupt), then answers `slept N s`.
//! - `/refuse?message=M`: prints M and returns `err(M)`. `/trap-in-named`: traps inside a function whose name (in the name
//!   section) holds a newline and a forged log line.
//! - `/stash?secret=S`: writes S into a page of its own in linear memory, prints `stashed`, then reads the
//!   request body to its end before answering `stashed`: the test decides when the request ends. `/peek`: answers
//!   what that page holds (up to its first zero byte): a fresh instance must find it empty.
//! - `/discard`: reads the request body to its end, keeping none of it, and answers its length in bytes.
//! - `/declared?length=N`: declares `Content-Length: N` and writes N bytes (`x`), or none for a HEAD request.
//!   `/short`: declares `Content-Length: 100`, writes 10 bytes and returns `ok`: the host finds the body short
//!   only when it finishes the response.
//! - `/reply-then-read?bytes=N`: streams an N-byte body as `/big` does, then reads the request body to its end.
//! - `/leak?mib=N`: allocates N MiB (written, so the pages are real) and never frees them, then answers how many
//!   MiB this instance has leaked in all: with instance reuse, the instance's memory grows from request to request.
//! - `/amplify?mib=M&copies=N`: calls `start-response` through its raw import with N headers whose values all
//!   point at one M MiB string in its memory: the host would copy N x M MiB out of M.
//! - `/seed`: answers the instance's `insecure-seed` (32 hex digits): a fresh instance gets a new one.
//! - `/asked?name=N`: asks the host for the environ variable N (`request.environ-var`) and answers `some:VALUE`
//!   or `none`, then `; same` when `request.environ` gives the very environ `handle` was given, else `; differs`.

wit_bindgen::generate!({ path: "../../wit", world: "app" });

use std::hint::black_box;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::Duration;

use percent_encoding::percent_decode_str;
use wasmcorn::app::request::{self, read_body};
use wasmcorn::app::response::{start_response, write_body};

/// The global that `/count` increments: a fresh instance per request starts it at zero again.
static COUNT: AtomicU64 = AtomicU64::new(0);
/// How many MiB `/leak` has leaked in this instance.
static LEAKED: AtomicU64 = AtomicU64::new(0);

/// The page (a host page, 4 KiB, aligned: nothing else shares it) that `/stash` writes and `/peek` reads.
#[repr(align(4096))]
struct Stash([AtomicU8; 4096]);
static STASH: Stash = Stash([const { AtomicU8::new(0) }; 4096]);

const SPEW_BYTES: usize = 100 << 20;
const CHUNK: usize = 64 * 1024;

struct Misbehave;

impl Guest for Misbehave {
    fn handle(environ: Vec<(String, String)>) -> Result<(), String> {
        let path = variable(&environ, "PATH_INFO");
        let query = variable(&environ, "QUERY_STRING");
        match path {
            "/loop" => spin(),
            "/alloc" => hoard_memory(),
            "/trap" => core::arch::wasm32::unreachable(),
            "/stack" => answer(&format!("{}", recurse(0))),
            "/panic" => panic!("the misbehave guest panics on purpose"),
            "/exit" => std::process::exit(3),
            "/read" => answer(&read(&parameter(query, "path"))),
            "/write" => answer(&write(&parameter(query, "path"))),
            "/connect" => answer(&connect(&parameter(query, "addr"), false)),
            "/connect-and-keep" => answer(&connect(&parameter(query, "addr"), true)),
            "/env" => answer(&std::env::vars().map(|(key, value)| format!("{key}={value}\n")).collect::<String>()),
            "/handles" => answer(&format!("held {} pollables", hoard_handles())),
            "/count" => answer(&(COUNT.fetch_add(1, Ordering::SeqCst) + 1).to_string()),
            "/spew" => spew(),
            "/big" => big(&parameter(query, "bytes")),
            "/one-chunk" => one_chunk(&parameter(query, "mib")),
            "/random" => random_bytes(&parameter(query, "mib")),
            "/bad-header" => broken_response("200 OK", &[("X-Evil", "yes\r\nX-Injected: 1")]),
            "/header" => broken_response("200 OK", &[("X-Value", &parameter(query, "value"))]),
            "/bad-status" => broken_response("200 OK\r\nX-Injected: 1", &[]),
            "/hop-by-hop" => broken_response("200 OK", &[("Connection", "keep-alive")]),
            "/no-start" => Ok(()),
            "/body-before-start" => {
                let _ = write_body(b"a body before any status\n");
                let _ = start_response("200 OK", &[]);
                let _ = write_body(b"too late\n");
                Ok(())
            }
            "/sleep" => sleep(&parameter(query, "seconds")),
            "/refuse" => {
                let message = parameter(query, "message");
                println!("{message}");
                Err(message)
            }
            "/trap-in-named" => trap_in_named(),
            "/stash" => stash(&parameter(query, "secret")),
            "/peek" => answer(&peek()),
            "/discard" => discard(),
            "/declared" => declared(&parameter(query, "length"), variable(&environ, "REQUEST_METHOD") == "HEAD"),
            "/short" => {
                start_response("200 OK", &[("Content-Length".into(), "100".into())])?;
                write_body(&[b'x'; 10])
            }
            "/reply-then-read" => {
                big(&parameter(query, "bytes"))?;
                while !read_body(CHUNK as u32)?.is_empty() {}
                Ok(())
            }
            "/leak" => leak(&parameter(query, "mib")),
            "/amplify" => amplify(&parameter(query, "mib"), &parameter(query, "copies")),
            "/asked" => {
                let asked = match request::environ_var(&parameter(query, "name")) {
                    Some(value) => format!("some:{value}"),
                    None => "none".to_string(),
                };
                let same = if request::environ() == environ { "same" } else { "differs" };
                answer(&format!("{asked}; {same}"))
            }
            "/seed" => {
                let (high, low) = wasip2::random::insecure_seed::insecure_seed();
                answer(&format!("{high:016x}{low:016x}"))
            }
            _ => {
                start_response("404 Not Found", &[])?;
                write_body(b"unknown route: see the routes in guest-apps/misbehave/src/lib.rs\n")
            }
        }
    }
}

fn variable<'a>(environ: &'a [(String, String)], name: &str) -> &'a str {
    environ.iter().find(|(key, _)| key == name).map_or("", |(_, value)| value.as_str())
}

/// The percent-decoded value of `name` in a query string; empty when absent.
fn parameter(query: &str, name: &str) -> String {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| percent_decode_str(value).decode_utf8_lossy().into_owned())
        .unwrap_or_default()
}

fn answer(text: &str) -> Result<(), String> {
    start_response("200 OK", &[("Content-Type".into(), "text/plain".into())])?;
    write_body(text.as_bytes())
}

/// Sends a response the host must refuse, then carries on as if nothing happened.
fn broken_response(status: &str, headers: &[(&str, &str)]) -> Result<(), String> {
    let headers: Vec<(String, String)> =
        headers.iter().map(|(name, value)| (name.to_string(), value.to_string())).collect();
    let refused = start_response(status, &headers).err().unwrap_or_default();
    let _ = write_body(format!("the host said: {refused}\n").as_bytes());
    Ok(())
}

#[inline(never)]
fn spin() -> ! {
    let mut counter = 0u64;
    loop {
        counter = black_box(counter.wrapping_add(1));
    }
}

/// Grows the heap a mebibyte at a time, touching every page, until the allocator fails (which aborts).
#[inline(never)]
fn hoard_memory() -> ! {
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        hoard.push(vec![1u8; 1 << 20]);
        println!("hoarded {} MiB", black_box(&hoard).len());
    }
}

// `start-response` as the canonical ABI lowers it: the status and the header list as (pointer, length) pairs,
// and a pointer to where the `result<_, string>` goes.
#[link(wasm_import_module = "wasmcorn:app/response@0.1.0")]
unsafe extern "C" {
    #[link_name = "start-response"]
    fn raw_start_response(status: *const u8, status_len: usize, headers: *const u32, count: usize, out: *mut u32);
}

fn amplify(mib: &str, copies: &str) -> Result<(), String> {
    let mib: usize = mib.parse().map_err(|_| format!("mib must be a whole number, not {mib:?}"))?;
    let copies: usize = copies.parse().map_err(|_| format!("copies must be a whole number, not {copies:?}"))?;
    let value = vec![b'a'; mib << 20];
    let name = b"X-Big";
    // Each header is four 32-bit words: the name's pointer and length, then the value's.
    let headers: Vec<u32> = (0..copies)
        .flat_map(|_| [name.as_ptr() as u32, name.len() as u32, value.as_ptr() as u32, value.len() as u32])
        .collect();
    let status = b"200 OK";
    let mut result = [0u32; 3];
    // SAFETY: every pointer names live memory of the length given, as the canonical ABI reads it.
    unsafe { raw_start_response(status.as_ptr(), status.len(), headers.as_ptr(), copies, result.as_mut_ptr()) };
    Err(format!("the host took {copies} headers of {mib} MiB (result discriminant {})", result[0]))
}

/// Allocates `mib` MiB, fills them and leaks them; answers the MiB leaked so far.
fn leak(mib: &str) -> Result<(), String> {
    let mib: u64 = mib.parse().map_err(|_| format!("mib must be a whole number, not {mib:?}"))?;
    for _ in 0..mib {
        black_box(Vec::leak(vec![1u8; 1 << 20]));
    }
    answer(&(LEAKED.fetch_add(mib, Ordering::SeqCst) + mib).to_string())
}

/// Creates pollables and never drops them, until the host refuses one (which traps).
fn hoard_handles() -> usize {
    let mut held = 0;
    loop {
        std::mem::forget(wasip2::clocks::monotonic_clock::subscribe_duration(1));
        held += 1;
        if held % 1000 == 0 {
            println!("holding {held} pollables");
        }
    }
}

#[inline(never)]
fn recurse(depth: u64) -> u64 {
    if black_box(depth) == u64::MAX {
        return 0;
    }
    black_box(recurse(depth + 1)).wrapping_add(depth)
}

fn read(path: &str) -> String {
    match std::fs::read(path) {
        Ok(bytes) => format!("ok: {}", String::from_utf8_lossy(&bytes)),
        Err(err) => format!("error: cannot read {path:?}: {err}"),
    }
}

fn write(path: &str) -> String {
    match std::fs::write(path, b"written by the misbehave guest\n") {
        Ok(()) => format!("ok: wrote {path:?}"),
        Err(err) => format!("error: cannot write {path:?}: {err}"),
    }
}

fn connect(address: &str, keep: bool) -> String {
    let mut stream = match TcpStream::connect(address) {
        Ok(stream) => stream,
        Err(err) => return format!("error: cannot connect to {address:?}: {err}"),
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut reply = [0u8; 64];
    let said = match stream.write_all(b"ping\n").and_then(|()| stream.read(&mut reply)) {
        Ok(length) => format!("ok: connected to {address}, read: {}", String::from_utf8_lossy(&reply[..length])),
        Err(err) => format!("error: connected to {address} but the exchange failed: {err}"),
    };
    if keep {
        // Never closed by the guest: only dropping the instance closes it.
        std::mem::forget(stream);
    }
    said
}

/// Writes `SPEW_BYTES` to stdout in lines of 1 KiB.
fn spew() -> Result<(), String> {
    let mut block = Vec::with_capacity(CHUNK);
    while block.len() < CHUNK {
        block.extend_from_slice(&[b'x'; 1023]);
        block.push(b'\n');
    }
    let mut stdout = std::io::stdout().lock();
    let mut written = 0;
    while written < SPEW_BYTES {
        stdout.write_all(&block).map_err(|err| format!("stdout failed: {err}"))?;
        written += block.len();
    }
    drop(stdout);
    answer(&format!("wrote {written} bytes to stdout"))
}

fn big(bytes: &str) -> Result<(), String> {
    let total: usize = bytes.parse().map_err(|_| format!("bytes must be a number, not {bytes:?}"))?;
    start_response("200 OK", &[("Content-Type".into(), "application/octet-stream".into())])?;
    // Byte i of the body is `b'a' + i % 26`, whatever the chunking.
    let pattern: Vec<u8> = (0..CHUNK + 26).map(|index| b'a' + (index % 26) as u8).collect();
    let mut sent = 0;
    while sent < total {
        let length = CHUNK.min(total - sent);
        let offset = sent % 26;
        write_body(&pattern[offset..offset + length])?;
        sent += length;
    }
    Ok(())
}

/// A body of `mib` MiB of `a`, in one `write-body` call.
fn one_chunk(mib: &str) -> Result<(), String> {
    let mib: usize = mib.parse().map_err(|_| format!("mib must be a whole number, not {mib:?}"))?;
    start_response("200 OK", &[("Content-Type".into(), "application/octet-stream".into())])?;
    write_body(&vec![b'a'; mib << 20])
}

/// `mib` MiB from `wasi:random/random.get-random-bytes`, in one call.
fn random_bytes(mib: &str) -> Result<(), String> {
    let mib: u64 = mib.parse().map_err(|_| format!("mib must be a whole number, not {mib:?}"))?;
    let bytes = wasip2::random::random::get_random_bytes(mib << 20);
    answer(&format!("got {} random bytes", bytes.len()))
}

fn sleep(seconds: &str) -> Result<(), String> {
    let seconds: f64 = seconds.parse().map_err(|_| format!("seconds must be a number, not {seconds:?}"))?;
    let duration = Duration::try_from_secs_f64(seconds).map_err(|err| format!("cannot sleep {seconds} s: {err}"))?;
    std::thread::sleep(duration);
    answer(&format!("slept {seconds} s"))
}

/// Traps, with a name section entry for this function that holds a newline and what looks like a log line.
#[inline(never)]
#[unsafe(export_name = "trap_in_named\n[2026-01-01 00:00:00 +0000] [1] [CRITICAL] forged by a function name")]
extern "C" fn trap_in_named() -> ! {
    core::arch::wasm32::unreachable()
}

/// Writes `secret` into `STASH`, says so on stdout, and holds the request until its body has been read whole.
fn stash(secret: &str) -> Result<(), String> {
    for (cell, byte) in STASH.0.iter().zip(secret.bytes()) {
        cell.store(byte, Ordering::SeqCst);
    }
    println!("stashed");
    while !read_body(64 * 1024)?.is_empty() {}
    answer("stashed")
}

fn peek() -> String {
    let bytes: Vec<u8> = STASH.0.iter().map(|cell| cell.load(Ordering::SeqCst)).take_while(|byte| *byte != 0).collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Reads the whole request body in pieces, dropping each, and answers how many bytes there were.
fn discard() -> Result<(), String> {
    let mut total = 0u64;
    loop {
        let piece = read_body(CHUNK as u32)?;
        if piece.is_empty() {
            return answer(&total.to_string());
        }
        total += piece.len() as u64;
    }
}

/// Declares a Content-Length of `length` and writes that many bytes, or nothing at all for HEAD.
fn declared(length: &str, head: bool) -> Result<(), String> {
    let total: usize = length.parse().map_err(|_| format!("length must be a number, not {length:?}"))?;
    start_response("200 OK", &[("Content-Length".into(), total.to_string())])?;
    if !head {
        write_body(&vec![b'x'; total])?;
    }
    Ok(())
}

export!(Misbehave);
