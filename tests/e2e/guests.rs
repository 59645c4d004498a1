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

/// `sample:hello` is a guest of the `lazy-app` world: its handler is called without the environ, however large
/// the head, on a fresh instance and on a reused one, within a memory limit of 1 MiB (40 heads of 80 KB: 3.2 MB).
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

/// A guest asks the host for the request's environ (`request.environ-var`, `request.environ`, which `misbehave`'s
/// `/asked` compares with the environ its `handle` was given) and gets its own request's, on a fresh instance and
/// on a reused one: a variable the request before had is not there for the next.
#[test]
fn a_guest_that_asks_for_the_environ_gets_its_own_request_s() {
    for reuse in ["1", "10"] {
        let server = Server::start(env!("WASMCORN_GUEST_MISBEHAVE"), 1, &["--instance-reuse", reuse]);
        let ask = |name: &str, token: Option<&str>| {
            let header = token.map(|token| format!("X-Token: {token}\r\n")).unwrap_or_default();
            let request =
                format!("GET /asked?name={name} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{header}\r\n");
            let response = server.request(request.as_bytes());
            (response.status, response.text())
        };
        assert_eq!(ask("HTTP_X_TOKEN", Some("one")), (200, "some:one; same".to_string()), "reuse {reuse}");
        assert_eq!(ask("HTTP_X_TOKEN", None), (200, "none; same".to_string()), "reuse {reuse}");
        assert_eq!(ask("http_x_token", Some("two")), (200, "none; same".to_string()), "reuse {reuse}");
        assert_eq!(ask("QUERY_STRING", None), (200, "some:name=QUERY_STRING; same".to_string()), "reuse {reuse}");
        assert_eq!(ask("CONTENT_LENGTH", None), (200, "some:; same".to_string()), "reuse {reuse}");
    }
}

/// A guest of the `returning-app` world returns its whole response, and the host sends it as `start-response`
/// and `write-body` would: its status, headers and body, a body larger than the host buffers (streamed), none
/// for a `204` or a `HEAD`; the guest asks for the environ of its own request, on a fresh instance and on a
/// reused one.
#[test]
fn a_returned_response_is_sent_as_the_guest_returned_it() {
    for reuse in ["1", "10"] {
        let server = Server::start(env!("WASMCORN_GUEST_RETURNING"), 1, &["--instance-reuse", reuse]);
        for path in ["/", "/first", "/second"] {
            let response = server.get(path);
            let answer = (response.status, response.header("content-type"), response.text());
            assert_eq!(answer, (200, Some("text/plain"), format!("returned {path}")), "reuse {reuse}");
        }
        let big = server.get("/big?kib=300");
        assert_eq!((big.status, big.body.len()), (200, 300 << 10), "reuse {reuse}");
        assert!(big.body.iter().all(|&byte| byte == b'a'));
        let empty = server.get("/empty-204");
        assert_eq!((empty.status, empty.body.len()), (204, 0), "reuse {reuse}");
        let head = server.request(b"HEAD /head HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        let answer = (head.status, head.header("content-length"), head.body.len());
        assert_eq!(answer, (200, Some("14"), 0), "reuse {reuse}");
    }
}

/// A returned response that breaks the contract (a header name that is not a token, a body longer than its
/// `Content-Length` or one for a `204`) is answered `500` with nothing of it sent, and the reason is logged; so is
/// a returned `err` and a trap, as for the other handlers. The worker serves the next request.
#[test]
fn a_returned_response_that_breaks_the_contract_is_a_500_with_its_reason_logged() {
    let server = Server::start(env!("WASMCORN_GUEST_RETURNING"), 1, &[]);
    for (path, logged) in [
        ("/bad-header", "Error handling request GET /bad-header HTTP/1.1: its response: invalid header name"),
        (
            "/long",
            "Error handling request GET /long HTTP/1.1: its response: the body is longer than its Content-Length",
        ),
        ("/no-content", "Error handling request GET /no-content HTTP/1.1: its response: a 204 response has no body"),
        ("/err", "Error handling request GET /err HTTP/1.1: no response for you"),
        ("/trap", "Guest failure handling request GET /trap HTTP/1.1"),
    ] {
        let response = server.get(path);
        assert_eq!(response.status, 500, "{path}");
        assert!(!response.text().contains("never sent") && response.header("bad name").is_none(), "{path}");
        server.wait_for_line(logged);
    }
    assert_eq!(server.get("/after").text(), "returned /after");
}
