//! Guests built outside the binary: a component file given by path is served like a sample.

use crate::support::Server;

#[test]
fn component_file_is_served_by_path() {
    let server = Server::start(env!("WASMCORN_GUEST_ECHO"), 1, &["--env", "GREETING=hi"]);
    let response = server.get("/file");
    assert_eq!(response.status, 200);
    assert_eq!(response.json()["environ"]["PATH_INFO"], "/file");
}

#[test]
fn compiled_guest_is_cached_and_reused() {
    let cache = tempfile::tempdir().unwrap();
    let cache_path = cache.path().to_str().unwrap().to_string();
    let first = Server::start("sample:hello", 1, &["--cache-dir", &cache_path]);
    drop(first);
    let entries: Vec<_> = std::fs::read_dir(cache.path()).unwrap().map(|entry| entry.unwrap().path()).collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert!(entries[0].extension().is_some_and(|ext| ext == "cwasm"));
    let modified = std::fs::metadata(&entries[0]).unwrap().modified().unwrap();
    let second = Server::start("sample:hello", 1, &["--cache-dir", &cache_path]);
    assert_eq!(second.get("/").status, 200);
    assert_eq!(std::fs::metadata(&entries[0]).unwrap().modified().unwrap(), modified, "the artefact was reused");
}

/// `sample:hello` brings its own allocator (it is built without Rust's `std`): an environ larger than the rest of
/// its first memory page, where its heap starts, makes the heap grow, and the request is served like any other,
/// on a fresh instance and on a reused one. A reused instance frees each request's environ: 40 of them (3.2 MB)
/// fit in a memory limit of 1 MiB.
#[test]
fn the_hello_sample_serves_a_head_larger_than_its_first_page() {
    let fields: String = (0..20).map(|field| format!("X-Big-{field}: {}\r\n", "v".repeat(4000))).collect();
    let request = format!("GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{fields}\r\n");
    for (reuse, requests) in [("1", 6), ("50", 40)] {
        let server = Server::start("sample:hello", 1, &["--instance-reuse", reuse, "--max-memory", "1"]);
        for request_number in 0..requests {
            let response = server.request(request.as_bytes());
            let answer = (response.status, response.text());
            assert_eq!(answer, (200, "Hello, World!".to_string()), "reuse {reuse}, request {request_number}");
        }
    }
}
