//! wasmcorn's own corpus through the real binary: one named case per rule of RFC 9112 (and of Gunicorn's
//! limits) that wasmcorn enforces, each answered with its status and a closed connection, and the worker
//! going on to serve the next client.

use std::io::Write;
use std::net::{Shutdown, TcpStream};

use crate::support::{PATIENCE, Response, Server, read_response};

/// Sends a request and half-closes, so that a request cut short is seen as such at once.
fn send(port: u16, request: &[u8]) -> Response {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to wasmcorn");
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream.write_all(request).expect("send the request");
    let _ = stream.shutdown(Shutdown::Write);
    read_response(stream)
}

/// A rule, a request that breaks it, and the status that answers it.
struct Case {
    rule: &'static str,
    request: Vec<u8>,
    status: u16,
}

fn case(rule: &'static str, request: &[u8], status: u16) -> Case {
    Case { rule, request: request.to_vec(), status }
}

/// A chunked POST whose body is `chunks`.
fn chunked(chunks: &[u8]) -> Vec<u8> {
    [b"POST /chunked HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n".as_slice(), chunks].concat()
}

/// A GET with one extra field line.
fn with_field(field: &[u8]) -> Vec<u8> {
    [b"GET / HTTP/1.1\r\nHost: h\r\n".as_slice(), field, b"\r\n\r\n"].concat()
}

fn cases() -> Vec<Case> {
    let long_extension = format!("1;{}\r\na\r\n0\r\n\r\n", "x".repeat(9000));
    let many_fields: String = (0..101).map(|index| format!("X-{index}: v\r\n")).collect();
    vec![
        case(
            "content_length_with_transfer_encoding",
            b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            400,
        ),
        case(
            "differing_content_lengths",
            b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
            400,
        ),
        case("content_length_with_a_plus_sign", &with_field(b"Content-Length: +1"), 400),
        case("content_length_with_a_minus_sign", &with_field(b"Content-Length: -1"), 400),
        case("content_length_in_hex", &with_field(b"Content-Length: 0x1"), 400),
        case("content_length_with_a_space_inside", &with_field(b"Content-Length: 1 1"), 400),
        case("content_length_as_a_list", &with_field(b"Content-Length: 1, 1"), 400),
        case("content_length_that_overflows", &with_field(b"Content-Length: 99999999999999999999"), 400),
        case(
            "transfer_encoding_whose_last_coding_is_not_chunked",
            &with_field(b"Transfer-Encoding: chunked, gzip"),
            400,
        ),
        case("transfer_encoding_with_an_unknown_coding", &with_field(b"Transfer-Encoding: gzip, chunked"), 501),
        case("transfer_encoding_with_chunked_twice", &with_field(b"Transfer-Encoding: chunked, chunked"), 400),
        case("transfer_coding_after_a_no_break_space", &with_field(b"Transfer-Encoding: \xa0chunked"), 400),
        case("transfer_coding_with_a_space_inside", &with_field(b"Transfer-Encoding: chu nked"), 400),
        case("transfer_encoding_in_http10", b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
        case("whitespace_between_field_name_and_colon", &with_field(b"Content-Length : 0"), 400),
        case("malformed_chunk_size", &chunked(b"zz\r\nhello\r\n0\r\n\r\n"), 400),
        case("chunk_size_with_a_sign", &chunked(b"+5\r\nhello\r\n0\r\n\r\n"), 400),
        case("chunk_size_that_overflows", &chunked(b"10000000000000000\r\n"), 400),
        case("chunk_data_without_crlf", &chunked(b"5\r\nhelloXX0\r\n\r\n"), 400),
        case("unbounded_chunk_extension", &chunked(long_extension.as_bytes()), 400),
        case("chunk_extension_without_a_name", &chunked(b"2;\r\naa\r\n0\r\n\r\n"), 400),
        case("chunk_extension_name_that_is_no_token", &chunked(b"2;a@b\r\naa\r\n0\r\n\r\n"), 400),
        case("chunk_extension_with_an_empty_value", &chunked(b"2;a=\r\naa\r\n0\r\n\r\n"), 400),
        case(
            "chunk_extension_quoted_value_open_at_the_line_end",
            &chunked(b"5;a=\"abc;b=\"def; ghi\r\nhello\r\n0\r\n\r\n"),
            400,
        ),
        case("chunk_extension_quoted_value_never_closed", &chunked(b"5;a=\"abc\r\nhello\r\n0\r\n\r\n"), 400),
        case(
            "chunk_extension_quoted_value_with_a_control_byte",
            &chunked(b"5;a=\"a\x01b\"\r\nhello\r\n0\r\n\r\n"),
            400,
        ),
        case("chunked_body_cut_short", &chunked(b"5\r\nhello\r\n0\r\n"), 400),
        case("framing_field_in_a_trailer", &chunked(b"0\r\nContent-Length: 5\r\n\r\n"), 400),
        case("obs_fold", b"GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n b\r\n\r\n", 400),
        case("line_ending_in_a_bare_cr", b"GET / HTTP/1.1\rHost: h\r\n\r\n", 400),
        case("line_ending_in_a_bare_lf", b"GET / HTTP/1.1\nHost: h\n\n", 400),
        case("bare_lf_inside_a_field_value", b"GET / HTTP/1.1\r\nHost: h\r\nX: a\nGET /smuggled HTTP/1.1\r\n\r\n", 400),
        case("bare_cr_inside_a_field_value", &with_field(b"X: a\rb"), 400),
        case("nul_in_method", b"GE\0T / HTTP/1.1\r\nHost: h\r\n\r\n", 400),
        case("nul_in_target", b"GET /a\0b HTTP/1.1\r\nHost: h\r\n\r\n", 400),
        case("raw_utf8_in_target", b"GET /\xce\xb4\xc2\xb6/ HTTP/1.1\r\nHost: h\r\n\r\n", 400),
        case("raw_latin1_in_target", b"GET /caf\xe9 HTTP/1.1\r\nHost: h\r\n\r\n", 400),
        case("raw_utf8_in_query", b"GET /?q=\xc3\xa0 HTTP/1.1\r\nHost: h\r\n\r\n", 400),
        case("nul_in_version", b"GET / HTTP/1.1\0\r\nHost: h\r\n\r\n", 400),
        case("nul_in_field_name", &with_field(b"X\0Y: z"), 400),
        case("nul_in_field_value", &with_field(b"X: a\0b"), 400),
        case("non_ascii_in_field_name", &with_field(b"Content-Length\xc3\x9f: 0"), 400),
        case("control_byte_in_field_value", &with_field(b"X: a\x07b"), 400),
        case("lower_case_method", b"get / HTTP/1.1\r\nHost: h\r\n\r\n", 400),
        case("relative_target", b"GET foo/bar HTTP/1.1\r\nHost: h\r\n\r\n", 400),
        case("asterisk_target_for_get", b"GET * HTTP/1.1\r\nHost: h\r\n\r\n", 400),
        case("authority_target_for_get", b"GET example.com:443 HTTP/1.1\r\nHost: h\r\n\r\n", 400),
        case("http11_without_host", b"GET / HTTP/1.1\r\n\r\n", 400),
        case("http11_with_two_hosts", b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
        case("invalid_host_value", b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400),
        case("host_value_with_a_port_and_no_name", b"GET / HTTP/1.1\r\nHost: :80\r\n\r\n", 400),
        case("absolute_target_with_an_empty_host", b"GET http://:80/p HTTP/1.1\r\nHost: h\r\n\r\n", 400),
        case("dot_segment_in_the_path", b"GET /admin/../index.html HTTP/1.1\r\nHost: h\r\n\r\n", 400),
        case("encoded_dot_segment_in_the_path", b"GET /admin/%2e%2E/index.html HTTP/1.1\r\nHost: h\r\n\r\n", 400),
        case("two_content_types", &with_field(b"Content-Type: a/b\r\nContent-Type: c/d"), 400),
        case("malformed_version", b"GET / HTTP/1.1.1\r\nHost: h\r\n\r\n", 400),
        case("unsupported_version", b"GET / HTTP/2.0\r\nHost: h\r\n\r\n", 505),
        case("request_line_over_4094_bytes", format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(4094)).as_bytes(), 414),
        case("more_than_100_fields", format!("GET / HTTP/1.1\r\nHost: h\r\n{many_fields}\r\n").as_bytes(), 431),
        case("field_over_8190_bytes", &with_field(format!("X: {}", "a".repeat(8190)).as_bytes()), 431),
        case("expectation_other_than_100_continue", &with_field(b"Expect: 100-continue-please"), 417),
    ]
}

#[test]
fn every_rule_is_answered_with_its_status_and_a_close() {
    let server = Server::start("sample:echo", 1, &[]);
    let worker = server.booted_worker_pids();
    let mut failures = Vec::new();
    for case in cases() {
        let response = send(server.port, &case.request);
        if response.status != case.status || response.header("connection") != Some("close") {
            failures.push(format!("{}: {} (expected {})", case.rule, response.status, case.status));
        }
    }
    assert!(failures.is_empty(), "rules not enforced:\n{}", failures.join("\n"));
    assert_eq!(server.get("/").status, 200, "the worker goes on");
    assert_eq!(server.booted_worker_pids(), worker, "no worker was replaced");
}

#[test]
fn rejected_heads_never_reach_the_guest() {
    let server = Server::start("sample:echo", 1, &[]);
    for case in cases().iter().filter(|case| !case.request.starts_with(b"POST /chunked ")) {
        send(server.port, &case.request);
    }
    server.get("/after");
    // One worker serves in order: once /after is logged, every earlier connection is over.
    server.wait_for_line("\"GET /after HTTP/1.1\" 200");
    let access_lines = server.log_lines().into_iter().filter(|line| line.starts_with("127.0.0.1 - - [")).count();
    assert_eq!(access_lines, 1, "only /after ran the guest:\n{}", server.log_text());
}

#[test]
fn limits_follow_the_flags() {
    let server = Server::start(
        "sample:echo",
        1,
        &["--limit-request-line", "20", "--limit-request-fields", "3", "--limit-request-field-size", "20"],
    );
    assert_eq!(send(server.port, b"GET /0123456789 HTTP/1.1\r\nHost: h\r\n\r\n").status, 414);
    assert_eq!(send(server.port, b"GET / HTTP/1.1\r\nHost: h\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n").status, 431);
    assert_eq!(send(server.port, b"GET / HTTP/1.1\r\nHost: h\r\nX: 0123456789abcdef\r\n\r\n").status, 431);
    assert_eq!(send(server.port, b"GET / HTTP/1.1\r\nHost: h\r\nA: 1\r\nB: 2\r\n\r\n").status, 200);
}

#[test]
fn limits_of_zero_mean_no_limit() {
    let server = Server::start("sample:echo", 1, &["--limit-request-line", "0", "--limit-request-field_size", "0"]);
    let path = format!("/{}", "p".repeat(10_000));
    let value = "v".repeat(20_000);
    let response = send(server.port, format!("GET {path} HTTP/1.1\r\nHost: h\r\nX-Big: {value}\r\n\r\n").as_bytes());
    assert_eq!(response.status, 200);
    assert_eq!(response.json()["environ"]["PATH_INFO"], path);
    assert_eq!(response.json()["environ"]["HTTP_X_BIG"], value);

    // A line of 1 MiB trickling in, 1 KiB a write: each read's bytes are checked once (a long line was looked
    // through again at each read), and the head is still the same request.
    let value = "t".repeat(1 << 20);
    let head = format!("GET /trickle HTTP/1.1\r\nHost: h\r\nX-Big: {value}\r\nX-After: 1\r\n\r\n");
    let mut stream = TcpStream::connect(("127.0.0.1", server.port)).expect("connect to wasmcorn");
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream.set_nodelay(true).unwrap();
    for piece in head.as_bytes().chunks(1024) {
        stream.write_all(piece).expect("send a piece of the head");
    }
    let response = read_response(stream);
    assert_eq!(response.status, 200);
    assert_eq!(response.json()["environ"]["HTTP_X_BIG"], value);
    assert_eq!(response.json()["environ"]["HTTP_X_AFTER"], "1");
}
