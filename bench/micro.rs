//! `cargo bench --bench micro`: criterion micro-benchmarks of the two costs every request pays inside a worker:
//! parsing the request head (`wasmcorn::http::parse_head`), and a fresh instance of the guest (instantiate the
//! `hello` sample, call its handler, drop the store) through `wasmcorn::guest::Runtime::handle`, with the
//! request's bytes kept in memory instead of a socket; the same call on an instance kept across requests
//! (`--instance-reuse`); and the same for `proxy-hello`, the same hello as a standard `wasi:http` component (its
//! call runs on the runtime's current-thread tokio runtime). Component files named in `WASMCORN_MICRO_GUESTS`
//! are timed the same way beside them, so that two builds of a guest compare in one run.

use std::hint::black_box;
use std::path::PathBuf;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use wasmcorn::guest::{
    AppSource, Capabilities, Exchange, Guest, Limits, Outcome, ProxyHead, ResponseHeaders, Runtime, prepare,
    prepare_folder, read_source,
};
use wasmcorn::http::{HeadLimits, parse_head};

/// What `hey` sends.
const HEY_HEAD: &[u8] = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nUser-Agent: hey/0.0.1\r\n\
Content-Type: text/html\r\nAccept-Encoding: gzip\r\n\r\n";

/// What a browser sends: more and longer fields.
const BROWSER_HEAD: &[u8] = b"GET /articles/2026/sync-workers?page=2&sort=new HTTP/1.1\r\n\
Host: example.test\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0\r\n\
Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n\
Accept-Language: en-GB,en;q=0.5\r\n\
Accept-Encoding: gzip, deflate, br, zstd\r\n\
Referer: https://example.test/articles/2026/\r\n\
Cookie: session=0123456789abcdef0123456789abcdef; theme=dark; consent=yes\r\n\
Upgrade-Insecure-Requests: 1\r\n\
Sec-Fetch-Dest: document\r\n\
Sec-Fetch-Mode: navigate\r\n\
Sec-Fetch-Site: same-origin\r\n\
Priority: u=0, i\r\n\r\n";

fn request_head(c: &mut Criterion) {
    let limits = HeadLimits::default();
    let mut group = c.benchmark_group("parse_head");
    for (name, head) in [("hey", HEY_HEAD), ("browser", BROWSER_HEAD)] {
        group.bench_function(name, |b| b.iter(|| parse_head(black_box(head), &limits)));
    }
    group.finish();
}

/// The request's side of a guest call, in memory: an empty body, and the response kept in a buffer.
#[derive(Default)]
struct MemoryExchange {
    status: Option<String>,
    body: Vec<u8>,
}

impl Exchange for MemoryExchange {
    fn read_body(&mut self, _max: usize) -> Result<Vec<u8>, String> {
        Ok(Vec::new())
    }

    fn start_response(&mut self, status: &str, _headers: ResponseHeaders) -> Result<(), String> {
        self.status = Some(status.to_string());
        Ok(())
    }

    fn write_body(&mut self, chunk: &[u8]) -> Result<(), String> {
        self.body.extend_from_slice(chunk);
        Ok(())
    }

    /// hey's request, as a `wasi:http` guest receives it.
    fn proxy_head(&self) -> Option<ProxyHead> {
        let header = |name: &str, value: &str| (name.to_string(), value.to_string());
        Some(ProxyHead {
            method: "GET".into(),
            scheme: "http".into(),
            authority: "127.0.0.1:8000".into(),
            path_with_query: "/".into(),
            headers: vec![header("Host", "127.0.0.1:8000"), header("User-Agent", "hey/0.0.1")],
        })
    }
}

fn discard_guest_line(_stream: &str, _line: &str) {}

/// Component files to time beside the samples (`:`-separated paths), each as `guest/file PATH: instantiate +
/// call + drop`; each must answer hey's request with `200`.
const GUEST_FILES_VAR: &str = "WASMCORN_MICRO_GUESTS";

/// Compiles the app `source` into a temporary cache (fine here: this process never forks) and loads it, with
/// instances that serve `instance_reuse` requests each, and its deadline timer running.
fn guest_runtime(
    cache: &std::path::Path,
    source: AppSource,
    instance_reuse: u32,
) -> anyhow::Result<Runtime<MemoryExchange>> {
    let limits = Limits { guest_timeout: Duration::from_secs(30), max_memory_bytes: 128 << 20, instance_reuse };
    let app = Guest { name: String::new(), source, env: Vec::new(), limits, capabilities: Capabilities::default() };
    prepare_folder(cache)?;
    let artefact = prepare(&app, &read_source(&app.source)?, app.limits.max_memory_bytes, cache, false)?;
    let runtime = Runtime::load(&[(&app, &artefact)], app.limits.max_memory_bytes, discard_guest_line)?;
    // As a worker does once it has forked: with no timer thread waiting, arming it for each call would wake one
    // (a `futex` system call per call) that a worker never pays.
    runtime.start_epoch_ticker()?;
    Ok(runtime)
}

/// The environ a worker builds for hey's request (`HEY_HEAD`, from a client at 127.0.0.1:40000), in the order
/// `worker/environ.rs` builds it: `sample:echo` answered `HEY_HEAD` with these 17 variables. Each string is one
/// call into the guest's allocator when the host lowers the environ into a fresh instance.
fn environ() -> [(&'static str, &'static str); 17] {
    [
        ("REQUEST_METHOD", "GET"),
        ("SCRIPT_NAME", ""),
        ("PATH_INFO", "/"),
        ("QUERY_STRING", ""),
        ("RAW_URI", "/"),
        ("CONTENT_TYPE", "text/html"),
        ("CONTENT_LENGTH", ""),
        ("SERVER_NAME", "127.0.0.1"),
        ("SERVER_PORT", "8000"),
        ("SERVER_PROTOCOL", "HTTP/1.1"),
        ("SERVER_SOFTWARE", "wasmcorn/0.1.0"),
        ("REMOTE_ADDR", "127.0.0.1"),
        ("REMOTE_PORT", "40000"),
        ("wsgi.url_scheme", "http"),
        ("HTTP_HOST", "127.0.0.1:8000"),
        ("HTTP_USER_AGENT", "hey/0.0.1"),
        ("HTTP_ACCEPT_ENCODING", "gzip"),
    ]
}

/// One timed guest call: its name, the app, how many requests an instance serves, and the body the app must
/// answer hey's request with (any, for a file).
struct Case {
    name: String,
    source: AppSource,
    instance_reuse: u32,
    body: Option<&'static [u8]>,
}

fn cases() -> Vec<Case> {
    let sample = |name: &str, sample: &'static str, instance_reuse| Case {
        name: name.to_string(),
        source: AppSource::Sample(sample),
        instance_reuse,
        body: Some(b"Hello, World!"),
    };
    let mut cases = vec![
        sample("guest/hello: instantiate + call + drop", "hello", 1),
        sample("guest/hello: call on a reused instance", "hello", u32::MAX),
        sample("guest/proxy-hello: instantiate + call + drop", "proxy-hello", 1),
    ];
    let files = std::env::var_os(GUEST_FILES_VAR).unwrap_or_default();
    for path in std::env::split_paths(&files).filter(|path| !path.as_os_str().is_empty()) {
        let name = format!("guest/file {}: instantiate + call + drop", path.display());
        cases.push(Case { name, source: AppSource::File(PathBuf::from(&path)), instance_reuse: 1, body: None });
    }
    cases
}

fn guest_call(c: &mut Criterion) {
    for Case { name, source, instance_reuse, body } in cases() {
        let described = source.describe();
        let runtime = tempfile::tempdir().map_err(anyhow::Error::from).and_then(|cache| {
            let runtime = guest_runtime(cache.path(), source, instance_reuse)?;
            Ok((runtime, cache))
        });
        let (runtime, _cache) = match runtime {
            Ok(loaded) => loaded,
            Err(err) => {
                eprintln!("micro: skipping {name}: cannot load {described}: {err:#}");
                continue;
            }
        };
        let environ = environ();
        let (exchange, outcome) = runtime.handle(0, &environ, MemoryExchange::default());
        let answered = exchange.status.as_deref().is_some_and(|status| status.starts_with("200"))
            && body.is_none_or(|body| exchange.body == body);
        if !matches!(outcome, Outcome::Completed) || !answered {
            eprintln!("micro: skipping {name}: {described} answered {outcome:?}, {:?}", exchange.status);
            continue;
        }
        c.bench_function(&name, |b| b.iter(|| runtime.handle(0, black_box(&environ), MemoryExchange::default())));
    }
}

criterion_group!(benches, request_head, guest_call);
criterion_main!(benches);
