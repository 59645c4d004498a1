//! HTTP through the real server: the hello and echo samples, request framing and response headers.

use crate::support::{Server, concurrently, send};

#[test]
fn hello_answers_get_with_date_server_and_close() {
    let server = Server::start("sample:hello", 1, &[]);
    // A client that asks to close gets `Connection: close` (keep-alive is the default: see keepalive.rs).
    let response = server.request(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    assert_eq!(response.status, 200);
    assert_eq!(response.text(), "Hello, World!");
    assert_eq!(response.header("content-type"), Some("text/plain"));
    assert_eq!(response.header("content-length"), Some("13"));
    assert_eq!(response.header("connection"), Some("close"));
    assert_eq!(response.header("server"), Some("wasmcorn"));
    assert!(response.header("date").is_some_and(|date| date.ends_with(" GMT")));
}

#[test]
fn two_workers_answer_fifty_concurrent_requests() {
    let server = Server::start("sample:hello", 2, &[]);
    let responses = concurrently(50, |_| server.get("/"));
    assert!(responses.iter().all(|response| response.status == 200 && response.text() == "Hello, World!"));
    assert_eq!(server.wait_for_count("\"GET / HTTP/1.1\" 200 13", 50).len(), 50);
}

#[test]
fn access_log_uses_gunicorn_default_format() {
    let server = Server::start("sample:hello", 1, &[]);
    server.request(
        b"GET /where?x=1 HTTP/1.1\r\nHost: h\r\nReferer: http://r.test/\r\nUser-Agent: tester \"quoted\"\r\n\r\n",
    );
    let line = server.wait_for_line("GET /where?x=1");
    let (start, rest) = line.split_once(" - - [").expect("h l u");
    assert_eq!(start, "127.0.0.1");
    let (_time, rest) = rest.split_once("] ").expect("time");
    assert_eq!(rest, "\"GET /where?x=1 HTTP/1.1\" 200 13 \"http://r.test/\" \"tester \\\"quoted\\\"\"");
}

#[test]
fn echo_round_trips_method_path_query_and_headers() {
    let server = Server::start("sample:echo", 1, &[]);
    let response = server.request(b"DELETE /some%20where/deep?a=1&b=%20x HTTP/1.1\r\nHost: example.test:9000\r\nX-Custom: one\r\nX-Custom: two\r\nAccept: */*\r\n\r\n");
    assert_eq!(response.status, 200);
    assert_eq!(response.header("content-type"), Some("application/json"));
    let json = response.json();
    let environ = &json["environ"];
    assert_eq!(environ["REQUEST_METHOD"], "DELETE");
    assert_eq!(environ["PATH_INFO"], "/some where/deep");
    assert_eq!(environ["QUERY_STRING"], "a=1&b=%20x");
    assert_eq!(environ["RAW_URI"], "/some%20where/deep?a=1&b=%20x");
    assert_eq!(environ["SCRIPT_NAME"], "");
    assert_eq!(environ["SERVER_NAME"], "example.test");
    assert_eq!(environ["SERVER_PORT"], "9000");
    assert_eq!(environ["SERVER_PROTOCOL"], "HTTP/1.1");
    assert_eq!(environ["REMOTE_ADDR"], "127.0.0.1");
    assert!(environ["REMOTE_PORT"].as_str().is_some_and(|port| port.parse::<u16>().is_ok()));
    assert_eq!(environ["HTTP_X_CUSTOM"], "one,two");
    assert_eq!(environ["HTTP_ACCEPT"], "*/*");
    assert_eq!(environ["HTTP_HOST"], "example.test:9000");
    assert_eq!(environ["wsgi.url_scheme"], "http");
    assert_eq!(json["body_length"], 0);
}

/// A 1 MiB body of varied printable bytes, so that any reordering or loss shows.
fn big_body() -> Vec<u8> {
    (0..1 << 20).map(|index: u32| b'!' + (index.wrapping_mul(7919) % 90) as u8).collect()
}

#[test]
fn echo_round_trips_a_one_mebibyte_body_with_content_length() {
    let server = Server::start("sample:echo", 1, &[]);
    let body = big_body();
    let mut request = format!(
        "POST /upload HTTP/1.1\r\nHost: h\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(&body);
    let response = server.request(&request);
    assert_eq!(response.status, 200);
    assert_eq!(response.header("transfer-encoding"), Some("chunked"), "a large answer is streamed");
    let json = response.json();
    assert_eq!(json["body_length"], body.len());
    assert_eq!(json["body"].as_str().unwrap().as_bytes(), body.as_slice());
    assert_eq!(json["environ"]["CONTENT_LENGTH"], body.len().to_string());
    assert_eq!(json["environ"]["CONTENT_TYPE"], "application/octet-stream");
}

#[test]
fn echo_round_trips_a_one_mebibyte_chunked_body() {
    let server = Server::start("sample:echo", 1, &[]);
    let body = big_body();
    let mut request = b"POST /upload HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for chunk in body.chunks(40_000) {
        request.extend_from_slice(format!("{:x};ext=1\r\n", chunk.len()).as_bytes());
        request.extend_from_slice(chunk);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\nX-Trailer: yes\r\n\r\n");
    let response = server.request(&request);
    assert_eq!(response.status, 200);
    let json = response.json();
    assert_eq!(json["body_length"], body.len());
    assert_eq!(json["body"].as_str().unwrap().as_bytes(), body.as_slice());
}

#[test]
fn head_answer_has_headers_and_no_body() {
    let server = Server::start("sample:hello", 1, &[]);
    let response = server.request(b"HEAD / HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(response.status, 200);
    assert_eq!(response.header("content-length"), Some("13"));
    assert!(response.body.is_empty());
}

/// The host's own answer to a HEAD request (here a 500 for a guest that traps) is its head alone: a client that
/// trusts HEAD's framing would take body bytes for the start of the next response.
#[test]
fn the_hosts_own_answer_to_head_has_no_body() {
    let server = Server::start(env!("WASMCORN_GUEST_MISBEHAVE"), 1, &[]);
    let raw = head_exchange(server.port, "/trap", "h");
    assert!(raw.starts_with("HTTP/1.1 500 "), "{raw}");
    assert!(raw.contains("Content-Length: 22\r\n") && raw.ends_with("\r\n\r\n"), "a head alone: {raw:?}");
    let line = server.wait_for_line("\"HEAD /trap HTTP/1.1\" 500 ");
    assert!(line.contains("\"HEAD /trap HTTP/1.1\" 500 - "), "no body bytes logged: {line}");
}

/// A HEAD request refused while its head is read (here `417` for an expectation the server does not know) gets
/// the head of the answer alone too.
#[test]
fn a_head_request_refused_while_it_is_read_gets_no_body() {
    use std::io::Read;
    let server = Server::start("sample:hello", 1, &[]);
    let request = b"HEAD / HTTP/1.1\r\nHost: h\r\nExpect: magic\r\n\r\n";
    let mut stream = crate::support::connect_sending(server.port, request);
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let raw = String::from_utf8_lossy(&raw);
    assert!(raw.starts_with("HTTP/1.1 417 ") && raw.ends_with("\r\n\r\n"), "a head alone: {raw:?}");
}

/// Sends `HEAD PATH` with `Host: HOST` and reads until the server closes; the raw bytes.
pub(crate) fn head_exchange(port: u16, path: &str, host: &str) -> String {
    use std::io::Read;
    let request = format!("HEAD {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    let mut stream = crate::support::connect_sending(port, request.as_bytes());
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    String::from_utf8_lossy(&raw).into_owned()
}

#[test]
fn expect_continue_gets_100_before_the_body_is_read() {
    let server = Server::start("sample:echo", 1, &[]);
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    use std::io::{Read, Write};
    stream.write_all(b"PUT / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n").unwrap();
    let mut interim = [0u8; 25];
    stream.read_exact(&mut interim).unwrap();
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    stream.write_all(b"hello").unwrap();
    let response = crate::support::read_response(stream);
    assert_eq!(response.json()["body"], "hello");
    // `Expect` is a list whose empty elements count for nothing: an empty one expects nothing.
    let response = send(server.port, b"PUT / HTTP/1.1\r\nHost: h\r\nExpect:\r\nContent-Length: 2\r\n\r\nhi");
    assert_eq!((response.status, response.json()["body"].as_str()), (200, Some("hi")));
    assert!(!response.raw.starts_with(b"HTTP/1.1 100"), "no interim answer to an empty Expect");
}

#[test]
fn malformed_requests_get_their_status_and_the_worker_goes_on() {
    let server = Server::start("sample:hello", 1, &[]);
    let worker = server.booted_worker_pids();
    let cases: &[(&[u8], u16)] = &[
        (b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\n\r\n", 400),
        (b"GET / HTTP/2.0\r\nHost: h\r\n\r\n", 505),
        (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501),
        (b"GET\0 / HTTP/1.1\r\nHost: h\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: h\r\nExpect: tea\r\n\r\n", 417),
    ];
    for (request, status) in cases {
        let response = send(server.port, request);
        assert_eq!(response.status, *status, "{}", String::from_utf8_lossy(request));
        assert_eq!(response.header("connection"), Some("close"));
    }
    assert_eq!(server.get("/").status, 200);
    assert_eq!(server.booted_worker_pids(), worker, "no worker was replaced");
}

#[test]
fn bytes_after_the_request_are_never_executed() {
    let server = Server::start("sample:echo", 1, &[]);
    // After a request that closes its connection (keep-alive answers pipelined requests: see keepalive.rs).
    let response = server
        .request(b"GET /first HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\nGET /second HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(response.json()["environ"]["PATH_INFO"], "/first");
    assert_eq!(response.raw.windows(13).filter(|window| window == b"HTTP/1.1 200 ").count(), 1, "one response only");
    // The single worker serves connections in order: once a later request is logged, the first is over.
    server.get("/later");
    server.wait_for_line("GET /later");
    assert!(!server.log_text().contains("/second"));
}

#[test]
fn trusted_proxy_sets_remote_addr_and_scheme() {
    let server = Server::start("sample:echo", 1, &[]);
    let response = server.request(
        b"GET / HTTP/1.1\r\nHost: example.test\r\nX-Forwarded-For: 6.6.6.6, 203.0.113.9\r\nX-Forwarded-Proto: https\r\n\r\n",
    );
    let environ = &response.json()["environ"];
    assert_eq!(environ["REMOTE_ADDR"], "203.0.113.9", "the last address, the one the proxy added");
    assert_eq!(environ["wsgi.url_scheme"], "https");
    assert_eq!(environ["SERVER_PORT"], "443");
    let contradiction =
        server.request(b"GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Ssl: off\r\n\r\n");
    assert_eq!(contradiction.status, 400);
}

#[test]
fn untrusted_peer_cannot_set_remote_addr_or_scheme() {
    let server = Server::start("sample:echo", 1, &["--forwarded-allow-ips", "10.0.0.1, 192.168.0.0/16"]);
    let response = server
        .request(b"GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 203.0.113.9\r\nX-Forwarded-Proto: https\r\n\r\n");
    let environ = &response.json()["environ"];
    assert_eq!(environ["REMOTE_ADDR"], "127.0.0.1");
    assert_eq!(environ["wsgi.url_scheme"], "http");
    assert_eq!(environ["HTTP_X_FORWARDED_FOR"], "203.0.113.9", "the header itself still reaches the guest");
}

#[test]
fn script_name_flag_mounts_the_app() {
    let server = Server::start("sample:echo", 1, &["--script-name", "/app"]);
    let environ = server.get("/app/some%20where?x=1").json()["environ"].clone();
    assert_eq!((environ["SCRIPT_NAME"].as_str(), environ["PATH_INFO"].as_str()), (Some("/app"), Some("/some where")));
    assert_eq!(environ["RAW_URI"], "/app/some%20where?x=1");
    let outside = server.get("/application").json()["environ"].clone();
    assert_eq!(outside["PATH_INFO"], "/application", "the prefix must end at a segment");
}

#[test]
fn script_name_from_the_guest_env_mounts_the_app() {
    let server = Server::start("sample:echo", 1, &["--env", "SCRIPT_NAME=/mounted"]);
    let environ = server.get("/mounted/x").json()["environ"].clone();
    assert_eq!((environ["SCRIPT_NAME"].as_str(), environ["PATH_INFO"].as_str()), (Some("/mounted"), Some("/x")));
}

#[test]
fn absolute_form_target_and_header_mapping() {
    let server = Server::start("sample:echo", 1, &[]);
    let response = server.request(
        b"GET http://example.com:81/a%2Fb?q=1 HTTP/1.1\r\nHost: other\r\nX-Dup: 1\r\nX-Dup: 2\r\nX_Dup: evil\r\n\r\n",
    );
    let environ = &response.json()["environ"];
    assert_eq!(environ["PATH_INFO"], "/a/b");
    assert_eq!(environ["QUERY_STRING"], "q=1");
    assert_eq!(environ["RAW_URI"], "http://example.com:81/a%2Fb?q=1");
    assert_eq!((environ["SERVER_NAME"].as_str(), environ["SERVER_PORT"].as_str()), (Some("example.com"), Some("81")));
    // The target's authority replaces the Host header the client sent (RFC 9112 section 3.2.2).
    assert_eq!(environ["HTTP_HOST"], "example.com:81");
    assert_eq!(environ["HTTP_X_DUP"], "1,2", "repeated fields joined, the underscore one dropped");
}
