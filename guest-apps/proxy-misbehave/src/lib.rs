//! The `proxy-misbehave` guest: a standard `wasi:http/proxy` test component that shows what the host makes of a
//! proxy guest that breaks the rules, one route at a time. Built with the samples, served by path in tests
//! (`WASMCORN_GUEST_PROXY_MISBEHAVE`).
//!
//! Routes go by the path's last segment (`/std/trap` is `/trap`: the guest sees the full path, mount point and all):
//! - `/trap`: executes `unreachable`. `/loop`: spins forever. `/no-answer`: returns without setting its response.
//! - `/sleep?seconds=N`: sleeps N seconds in a `wasi:clocks` wait (a host call epochs do not interrupt), then
//!   answers `slept`.
//! - `/print`: writes two lines to stdout (the second holding a forged log line after a CR) and one to stderr,
//!   then answers `printed`.
//! - `/env`: the guest's environment, one `KEY=VALUE` a line.
//! - `/request`: what the guest was given: `METHOD SCHEME AUTHORITY PATH-WITH-QUERY`, then one `name: value` line
//!   per header.
//! - `/alloc`: grows its memory a MiB at a time without end.
//! - `/big?bytes=N`: streams an N-byte body (`abc..z` repeated) with no declared length.
//! - `/fields?kib=N`: keeps header maps of one N KiB header each until the host refuses one.
//! - `/clones`: keeps copies of the request's header map (`fields.clone`), each with a name deleted that is not
//!   there (a change, which copies the map the copy shares), until the host refuses one.
//! - `/unsent`: keeps outgoing requests it never sends, each body written until it takes no more, until the host
//!   refuses a resource.
//! - `/count`: how many requests this instance has served `/count` (module state: 1 in a fresh instance).
//! - `/leave-open`: answers, writes `partial` and returns with its response body kept open in a global, never
//!   finished.
//! - `/header?hex=H`: answers `header` with an `x-value` header whose value is the bytes H spells in hex digits.

use std::cell::RefCell;
use std::hint::black_box;
use std::io::Write as _;
use std::sync::atomic::{AtomicU32, Ordering};

use wasip2::http::types::{
    Fields, IncomingRequest, Method, OutgoingBody, OutgoingRequest, OutgoingResponse, ResponseOutparam, Scheme,
};

struct Misbehave;

/// The `/count` requests this instance has served.
static COUNT: AtomicU32 = AtomicU32::new(0);

thread_local! {
    /// The response body `/leave-open` keeps open.
    static LEFT_OPEN: RefCell<Option<OutgoingBody>> = const { RefCell::new(None) };
}

impl wasip2::exports::http::incoming_handler::Guest for Misbehave {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let target = request.path_with_query().unwrap_or_default();
        let (path, query) = target.split_once('?').unwrap_or((&target, ""));
        let route = &path[path.rfind('/').unwrap_or(0)..];
        let body: Vec<u8> = match route {
            "/header" => return answer_with_header(response_out, &from_hex(value(query, "hex"))),
            "/trap" => core::arch::wasm32::unreachable(),
            "/loop" => loop {
                black_box(());
            },
            "/no-answer" => return,
            "/sleep" => {
                let seconds: u64 = value(query, "seconds").parse().unwrap_or(1);
                wasip2::clocks::monotonic_clock::subscribe_duration(seconds * 1_000_000_000).block();
                b"slept".to_vec()
            }
            "/print" => {
                println!("first line to stdout");
                println!("second line\r2026-01-01 [CRITICAL] forged");
                eprintln!("a line to stderr");
                b"printed".to_vec()
            }
            "/read" => std::fs::read(value(query, "path")).unwrap_or_else(|err| format!("error: {err}").into_bytes()),
            "/env" => std::env::vars().map(|(key, value)| format!("{key}={value}\n")).collect::<String>().into_bytes(),
            "/request" => describe(&request).into_bytes(),
            "/alloc" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    black_box(&hoard);
                }
            }
            "/count" => (COUNT.fetch_add(1, Ordering::Relaxed) + 1).to_string().into_bytes(),
            "/leave-open" => return leave_open(response_out),
            "/big" => {
                let bytes: usize = value(query, "bytes").parse().unwrap_or(0);
                return stream_big(bytes, response_out);
            }
            "/unsent" => {
                // Outgoing requests never sent, each body's stream written until it takes no more; kept until the
                // host refuses a resource.
                let chunk = vec![b'u'; 1 << 20];
                let mut held = Vec::new();
                loop {
                    let request = OutgoingRequest::new(Fields::new());
                    let Ok(body) = request.body() else { break };
                    let Ok(stream) = body.write() else { break };
                    while let Ok(permit) = stream.check_write() {
                        let length = usize::try_from(permit).unwrap_or(usize::MAX).min(chunk.len());
                        if length == 0 || stream.write(&chunk[..length]).is_err() {
                            break;
                        }
                    }
                    held.push((request, body, stream));
                }
                format!("held {} unsent requests", held.len()).into_bytes()
            }
            "/fields" => {
                // Header maps of one `kib` KiB header each, kept, until the host refuses one.
                let header = ("x-big".to_string(), vec![b'v'; value(query, "kib").parse::<usize>().unwrap_or(1) << 10]);
                let mut held = Vec::new();
                while let Ok(fields) = Fields::from_list(std::slice::from_ref(&header)) {
                    held.push(fields);
                }
                format!("held {} header maps", held.len()).into_bytes()
            }
            "/clones" => {
                let headers = request.headers();
                let mut held = Vec::new();
                loop {
                    let copy = headers.clone();
                    // Deleting a name that is not there changes nothing, and fails nothing: the host still copies.
                    let _ = copy.delete("x-not-there");
                    held.push(copy);
                }
            }
            _ => b"proxy-misbehave: unknown route".to_vec(),
        };
        answer(response_out, &body);
    }
}

/// The value of `key` in a query string, or "".
fn value<'a>(query: &'a str, key: &str) -> &'a str {
    query.split('&').find_map(|pair| pair.strip_prefix(key)?.strip_prefix('=')).unwrap_or("")
}

fn describe(request: &IncomingRequest) -> String {
    let method = match request.method() {
        Method::Get => "GET".to_string(),
        Method::Head => "HEAD".to_string(),
        Method::Post => "POST".to_string(),
        Method::Put => "PUT".to_string(),
        Method::Delete => "DELETE".to_string(),
        Method::Other(other) => other,
        other => format!("{other:?}"),
    };
    let scheme = match request.scheme() {
        Some(Scheme::Http) => "http".to_string(),
        Some(Scheme::Https) => "https".to_string(),
        Some(Scheme::Other(other)) => other,
        None => "-".to_string(),
    };
    let mut text = format!(
        "{method} {scheme} {} {}\n",
        request.authority().unwrap_or_default(),
        request.path_with_query().unwrap_or_default()
    );
    for (name, value) in request.headers().entries() {
        text.push_str(&format!("{name}: {}\n", String::from_utf8_lossy(&value)));
    }
    text
}

fn answer(response_out: ResponseOutparam, body: &[u8]) {
    respond(response_out, Fields::new(), body);
}

fn respond(response_out: ResponseOutparam, headers: Fields, body: &[u8]) {
    let response = OutgoingResponse::new(headers);
    let outgoing = response.body().expect("the body is taken once");
    ResponseOutparam::set(response_out, Ok(response));
    let mut stream = outgoing.write().expect("the stream is taken once");
    stream.write_all(body).expect("the host takes the body");
    stream.flush().expect("the host takes the body");
    drop(stream);
    OutgoingBody::finish(outgoing, None).expect("the body is complete");
}

/// The bytes that pairs of hex digits spell; a pair that is not one is skipped.
fn from_hex(hex: &str) -> Vec<u8> {
    let digits = hex.as_bytes();
    digits.chunks(2).filter_map(|pair| u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()).collect()
}

fn answer_with_header(response_out: ResponseOutparam, value: &[u8]) {
    match Fields::from_list(&[("x-value".to_string(), value.to_vec())]) {
        Ok(headers) => respond(response_out, headers, b"header"),
        // wasi:http refuses the value itself: say so in the body.
        Err(err) => answer(response_out, format!("refused: {err:?}").as_bytes()),
    }
}

fn leave_open(response_out: ResponseOutparam) {
    let response = OutgoingResponse::new(Fields::new());
    let outgoing = response.body().expect("the body is taken once");
    ResponseOutparam::set(response_out, Ok(response));
    let mut stream = outgoing.write().expect("the stream is taken once");
    stream.write_all(b"partial").expect("the host takes the body");
    stream.flush().expect("the host takes the body");
    drop(stream);
    LEFT_OPEN.with(|left| *left.borrow_mut() = Some(outgoing));
}

fn stream_big(bytes: usize, response_out: ResponseOutparam) {
    let response = OutgoingResponse::new(Fields::new());
    let outgoing = response.body().expect("the body is taken once");
    ResponseOutparam::set(response_out, Ok(response));
    let mut stream = outgoing.write().expect("the stream is taken once");
    let pattern: Vec<u8> = (0..64 * 1024).map(|index| b'a' + (index % 26) as u8).collect();
    let mut left = bytes;
    while left > 0 {
        let now = left.min(pattern.len());
        stream.write_all(&pattern[..now]).expect("the host takes the body");
        left -= now;
    }
    stream.flush().expect("the host takes the body");
    drop(stream);
    OutgoingBody::finish(outgoing, None).expect("the body is complete");
}

wasip2::http::proxy::export!(Misbehave);
