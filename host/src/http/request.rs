//! Reads and checks a request head with httparse, and decides how its body is framed (RFC 9112).

use std::io::{Read, Write};
use std::mem::MaybeUninit;

use super::connection::Connection;
use super::error::HttpError;
use super::head::{Framing, Version};
use super::lines::LineScan;
use super::{framing, target};
use crate::settings::HeadLimits;

/// A parsed request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// The request target exactly as sent.
    pub target: String,
    /// The path of the target, still percent-encoded.
    pub path: String,
    /// What follows `?` in the target, as sent.
    pub query: String,
    /// The host (and port) of an absolute-form target, which takes the place of the Host header.
    pub authority: Option<String>,
    pub version: Version,
    /// Header fields in order: names as sent, values decoded as Latin-1 (as WSGI does).
    pub headers: Vec<(String, String)>,
    pub framing: Framing,
    /// The client sent `Expect: 100-continue`.
    pub expects_continue: bool,
}

impl Request {
    /// The first value of a header, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(field, _)| field.eq_ignore_ascii_case(name)).map(|(_, value)| value.as_str())
    }

    /// Whether the client asks to keep the connection open after the response: an HTTP/1.1 request unless its
    /// `Connection` header has the `close` option, an HTTP/1.0 one only when it has `keep-alive` (RFC 9112
    /// section 9.3). Never a CONNECT: what follows a 2xx answer to it is a tunnel's bytes (RFC 9110 section
    /// 9.3.6), which wasmcorn does not carry, so the connection ends with the response.
    pub fn wants_keep_alive(&self) -> bool {
        if self.method == "CONNECT" {
            return false;
        }
        let options = || {
            self.headers
                .iter()
                .filter(|(name, _)| name.eq_ignore_ascii_case("connection"))
                .flat_map(|(_, value)| value.split(','))
                .map(|option| option.trim_matches([' ', '\t']))
        };
        if options().any(|option| option.eq_ignore_ascii_case("close")) {
            return false;
        }
        match self.version {
            Version::Http11 => true,
            Version::Http10 => options().any(|option| option.eq_ignore_ascii_case("keep-alive")),
        }
    }

    /// The request line as the access log shows it.
    pub fn request_line(&self) -> String {
        self.request_line_parts().concat()
    }

    /// The request line in its parts, spaces included, for a reader that copies it without making it a string.
    pub fn request_line_parts(&self) -> [&str; 5] {
        [&self.method, " ", &self.target, " ", self.version.as_str()]
    }
}

/// Reads from the connection until a whole request head has arrived, and parses it (the tests' blocking reader;
/// a worker reads with `read_request_part`).
#[cfg(test)]
fn read_request<S: Read + Write>(conn: &mut Connection<S>, limits: &HeadLimits) -> Result<Request, HttpError> {
    loop {
        if let Some(request) = read_request_part(conn, limits)? {
            return Ok(request);
        }
    }
}

/// Reads once from the connection and parses the head if it is complete: `Ok(None)` while more must arrive. A
/// worker calls it each time the socket is readable, so that a slow client costs it a buffer, not its time.
pub(crate) fn read_request_part<S: Read + Write>(
    conn: &mut Connection<S>,
    limits: &HeadLimits,
) -> Result<Option<Request>, HttpError> {
    let was_empty = conn.buffered().is_empty();
    let fresh = conn.fill()?;
    if fresh == 0 {
        return Err(if was_empty {
            HttpError::Closed
        } else {
            HttpError::BadRequest("the connection closed in the middle of the request head".into())
        });
    }
    // Until the empty line that ends the head has come, only the bytes this read brought are checked: a head that
    // trickles in costs a scan of its length once, not a parse of everything buffered at each read.
    if !conn.scan_head(limits)? {
        return Ok(None);
    }
    // The scan has checked every line up to the head's end: not again.
    match parse_checked_head(conn.buffered(), limits)? {
        Some((request, length)) => {
            conn.consume(length);
            Ok(Some(request))
        }
        None => Ok(None),
    }
}

/// How many header fields `parse_head` parses on the stack; a higher `--limit-request-fields` takes a heap array.
const FIELDS_ON_STACK: usize = 128;

/// Parses a request head from the start of `bytes`: `Ok(None)` while it is incomplete, otherwise the request
/// and the length of its head.
pub fn parse_head(bytes: &[u8], limits: &HeadLimits) -> Result<Option<(Request, usize)>, HttpError> {
    // Line endings and lengths, up to the head's end: httparse would take a bare LF for a line end.
    LineScan::default().advance(bytes, limits)?;
    parse_checked_head(bytes, limits)
}

/// `parse_head` for bytes whose lines a `LineScan` has already checked up to the head's end.
fn parse_checked_head(bytes: &[u8], limits: &HeadLimits) -> Result<Option<(Request, usize)>, HttpError> {
    // The fields' array is left uninitialised, and it lives on the stack under the default limit (100): as a
    // vector of 100 it cost every request an allocation too large for the allocator's per-thread cache.
    let mut on_stack = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; FIELDS_ON_STACK];
    let mut on_heap = Vec::new();
    let wanted = limits.fields.max(1);
    let fields = if wanted <= FIELDS_ON_STACK {
        &mut on_stack[..wanted]
    } else {
        on_heap.resize_with(wanted, MaybeUninit::uninit);
        &mut on_heap[..]
    };
    let mut parsed = httparse::Request::new(&mut []);
    let status = parsed.parse_with_uninit_headers(bytes, fields);
    let length = match status {
        Ok(httparse::Status::Complete(length)) => length,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(HttpError::HeadersTooLarge(format!("more than {} header fields", limits.fields)));
        }
        Err(httparse::Error::Version) => return Err(version_error(bytes)),
        Err(err) => return Err(HttpError::BadRequest(describe_parse_error(bytes, err))),
    };
    let (Some(method), Some(target), Some(minor)) = (parsed.method, parsed.path, parsed.version) else {
        return Err(HttpError::BadRequest("incomplete request line".into()));
    };
    check_method(method)?;
    let version = if minor == 0 { Version::Http10 } else { Version::Http11 };
    let mut headers: Vec<(String, String)> =
        parsed.headers.iter().map(|field| (field.name.to_string(), latin1(field.value))).collect();
    let target_parts = target::parse(method, target)?;
    let framing = framing::decide(&headers, version)?;
    let expects_continue = expectation(&headers, version)?;
    check_singletons(&headers, version)?;
    // The authority of an absolute-form target stands for the Host header, which the server must then ignore (RFC
    // 9112 section 3.2.2), as a CONNECT's authority-form target does, which its Host must repeat (RFC 9110 section
    // 7.2): whatever reads the request (routing, the environ's HTTP_HOST, a `wasi:http` guest's headers) sees one
    // host, the one the request was routed by.
    if let Some(authority) = &target_parts.authority {
        for (_, value) in headers.iter_mut().filter(|(name, _)| name.eq_ignore_ascii_case("host")) {
            value.clone_from(authority);
        }
    }
    let request = Request {
        method: method.to_string(),
        target: target.to_string(),
        path: target_parts.path,
        query: target_parts.query,
        authority: target_parts.authority,
        version,
        headers,
        framing,
        expects_continue,
    };
    Ok(Some((request, length)))
}

/// Names what httparse refused: obs-fold and whitespace before a colon are the cases worth telling apart.
fn describe_parse_error(bytes: &[u8], err: httparse::Error) -> String {
    if bytes.windows(3).any(|window| window == b"\r\n " || window == b"\r\n\t") {
        return "obsolete line folding (RFC 9112 section 5.2)".into();
    }
    format!("malformed request head ({err})")
}

/// A method is a token (httparse checks that) and, as Gunicorn's conventions have it, 3 to 20 characters with no
/// lower-case letter and no `#`.
fn check_method(method: &str) -> Result<(), HttpError> {
    if !(3..=20).contains(&method.len()) || method.bytes().any(|byte| byte.is_ascii_lowercase() || byte == b'#') {
        return Err(HttpError::BadRequest(format!("unconventional method {method:?}")));
    }
    Ok(())
}

/// `Host` (RFC 9112 section 3.2) and `Content-Type` (RFC 9110 section 8.3) are singletons; an HTTP/1.1 request
/// must have exactly one `Host`, with a valid value.
fn check_singletons(headers: &[(String, String)], version: Version) -> Result<(), HttpError> {
    let values = |name: &'static str| headers.iter().filter(move |(field, _)| field.eq_ignore_ascii_case(name));
    // Looked at without collecting them: nearly every request has one.
    let mut hosts = values("host").map(|(_, value)| value.as_str());
    let (first, second) = (hosts.next(), hosts.next());
    match (first, second, version) {
        (None, _, Version::Http10) => {}
        (Some(host), None, _) if target::is_valid_host(host) => {}
        (Some(host), None, _) => return Err(HttpError::BadRequest(format!("invalid Host {host:?}"))),
        _ => {
            let count = usize::from(first.is_some()) + usize::from(second.is_some()) + hosts.count();
            return Err(HttpError::BadRequest(format!(
                "an HTTP/1.1 request needs exactly one Host header, not {count}"
            )));
        }
    }
    if values("content-type").count() > 1 {
        return Err(HttpError::BadRequest("more than one Content-Type header".into()));
    }
    Ok(())
}

/// httparse refuses any version but 1.0 and 1.1: a well-formed other version is 505, anything else 400.
/// Only a request line of exactly three parts whose last is `HTTP/DIGIT.DIGIT` has a version worth a 505.
fn version_error(bytes: &[u8]) -> HttpError {
    let start = bytes.iter().position(|&byte| byte != b'\r' && byte != b'\n').unwrap_or(bytes.len());
    let line = bytes[start..].split(|&byte| byte == b'\n').next().unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let parts: Vec<&[u8]> = line.split(|&byte| byte == b' ').collect();
    match parts.as_slice() {
        [_, _, [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]]
            if major.is_ascii_digit() && minor.is_ascii_digit() =>
        {
            HttpError::VersionNotSupported
        }
        _ => HttpError::BadRequest("malformed HTTP version".into()),
    }
}

/// Whether the client waits for `100 Continue` before it sends the body. `Expect` is a list (RFC 9110 section
/// 10.1.1) whose empty elements count for nothing (section 5.6.1.2); an element other than `100-continue` is
/// answered `417`.
fn expectation(headers: &[(String, String)], version: Version) -> Result<bool, HttpError> {
    let mut expects_continue = false;
    let fields = headers.iter().filter(|(name, _)| name.eq_ignore_ascii_case("expect"));
    for element in fields.flat_map(|(_, value)| value.split(',')).map(|element| element.trim_matches([' ', '\t'])) {
        if element.eq_ignore_ascii_case("100-continue") {
            expects_continue = version == Version::Http11;
        } else if !element.is_empty() {
            return Err(HttpError::ExpectationFailed);
        }
    }
    Ok(expects_continue)
}

fn latin1(bytes: &[u8]) -> String {
    bytes.iter().map(|&byte| char::from(byte)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(bytes: &[u8]) -> Result<Option<(Request, usize)>, HttpError> {
        parse_head(bytes, &HeadLimits::default())
    }

    fn status(bytes: &[u8]) -> Option<u16> {
        parse(bytes).err().and_then(|err| err.status())
    }

    #[test]
    fn simple_get_is_parsed() {
        let (request, length) = parse(b"GET /a%20b?x=1 HTTP/1.1\r\nHost: h\r\nX-A: 1\r\n\r\nrest").unwrap().unwrap();
        assert_eq!(length, 44);
        assert_eq!(request.method, "GET");
        assert_eq!(request.path, "/a%20b");
        assert_eq!(request.query, "x=1");
        assert_eq!(request.framing, Framing::Length(0));
        assert_eq!(request.header("x-a"), Some("1"));
    }

    #[test]
    fn keep_alive_is_http11_without_close_or_http10_asking_for_it() {
        let wants = |head: &[u8]| parse(head).unwrap().unwrap().0.wants_keep_alive();
        assert!(wants(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"));
        assert!(!wants(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: Close\r\n\r\n"));
        assert!(!wants(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: te, close\r\n\r\n"));
        assert!(!wants(b"GET / HTTP/1.0\r\n\r\n"));
        assert!(wants(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"));
        assert!(!wants(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\nConnection: close\r\n\r\n"));
        assert!(!wants(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n"));
    }

    #[test]
    fn incomplete_head_waits_for_more() {
        assert!(parse(b"GET / HTTP/1.1\r\nHost: h\r\n").unwrap().is_none());
    }

    #[test]
    fn absolute_form_target_gives_its_path() {
        let (request, _) = parse(b"GET http://example.com/p?q HTTP/1.1\r\nHost: h\r\n\r\n").unwrap().unwrap();
        assert_eq!((request.path.as_str(), request.query.as_str()), ("/p", "q"));
    }

    #[test]
    fn content_length_with_transfer_encoding_is_rejected() {
        assert_eq!(
            status(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Some(400)
        );
    }

    #[test]
    fn malformed_content_lengths_are_rejected() {
        for value in ["-1", "+1", "0x10", "1 1", "1,1", "99999999999999999999", ""] {
            let head = format!("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: {value}\r\n\r\n");
            assert_eq!(status(head.as_bytes()), Some(400), "Content-Length {value:?}");
        }
        assert_eq!(status(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"), Some(400));
    }

    #[test]
    fn transfer_codings_other_than_chunked_are_not_implemented() {
        assert_eq!(status(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"), Some(501));
        assert_eq!(status(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, chunked\r\n\r\n"), Some(400));
        assert_eq!(status(b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"), Some(400));
        assert_eq!(
            status("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: \u{a0}chunked\r\n\r\n".as_bytes()),
            Some(400)
        );
    }

    #[test]
    fn http11_needs_exactly_one_host() {
        assert_eq!(status(b"GET / HTTP/1.1\r\n\r\n"), Some(400));
        assert_eq!(status(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"), Some(400));
        assert!(parse(b"GET / HTTP/1.0\r\n\r\n").unwrap().is_some());
        let refusal = |bytes: &[u8]| parse(bytes).err().map(|err| err.to_string()).unwrap_or_default();
        assert!(refusal(b"GET / HTTP/1.1\r\n\r\n").ends_with("exactly one Host header, not 0"));
        assert!(refusal(b"GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n").ends_with("not 2"));
        assert!(refusal(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\nHost: c\r\n\r\n").ends_with("not 3"));
        assert!(refusal(b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n").contains("invalid Host"));
    }

    #[test]
    fn other_versions_are_505_and_garbage_is_400() {
        assert_eq!(status(b"GET / HTTP/2.0\r\nHost: h\r\n\r\n"), Some(505));
        assert_eq!(status(b"GET / FOO\r\nHost: h\r\n\r\n"), Some(400));
    }

    #[test]
    fn overlong_request_line_is_414_even_before_it_ends() {
        let line = format!("GET /{} HTTP/1.1", "a".repeat(5000));
        assert_eq!(status(line.as_bytes()), Some(414));
    }

    #[test]
    fn bare_lf_line_endings_are_400() {
        assert_eq!(status(b"GET / HTTP/1.1\nHost: h\n\n"), Some(400));
        assert_eq!(status(b"GET / HTTP/1.1\r\nHost: h\n\r\n"), Some(400));
        assert_eq!(status(b"GET / HTTP/1.1\r\nHost: h\r\n\n"), Some(400));
        assert_eq!(status(b"GET / HTTP/1.1\r\nHost: h\r\nX: a\nGET /smuggled HTTP/1.1\r\n\r\n"), Some(400));
        assert_eq!(status(b"GET\n/ HTTP/1.1\r\nHost: h\r\n\r\n"), Some(400));
        // Even before the head is complete.
        assert_eq!(status(b"GET / HTTP/1.1\r\nHost: h\nX: y"), Some(400));
    }

    #[test]
    fn line_ending_in_a_bare_cr_is_400() {
        assert_eq!(status(b"GET / HTTP/1.1\rHost: h\r\n\r\n"), Some(400));
        assert_eq!(status(b"GET / HTTP/1.1\r\nHost: h\r\nX: a\rb\r\n\r\n"), Some(400));
        assert!(parse(b"GET / HTTP/1.1\r\nHost: h\r").unwrap().is_none(), "a CR at the end may get its LF");
    }

    #[test]
    fn obs_fold_is_400() {
        assert_eq!(status(b"GET / HTTP/1.1\r\nHost: h\r\nLong: one\r\n two\r\n\r\n"), Some(400));
        assert_eq!(status(b"GET / HTTP/1.1\r\nHost: h\r\nLong: one\r\n\ttwo\r\n\r\n"), Some(400));
    }

    #[test]
    fn whitespace_between_field_name_and_colon_is_400() {
        assert_eq!(status(b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length : 3\r\n\r\nabc"), Some(400));
        assert_eq!(status(b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length\t: 3\r\n\r\nabc"), Some(400));
        assert_eq!(status(b"GET / HTTP/1.1\r\n Host: h\r\n\r\n"), Some(400));
    }

    #[test]
    fn invalid_bytes_in_the_request_line_are_400() {
        for head in [
            &b"G\0ET / HTTP/1.1\r\nHost: h\r\n\r\n"[..],
            b"GET\0 / HTTP/1.1\r\nHost: h\r\n\r\n",
            b"GET /a\0b HTTP/1.1\r\nHost: h\r\n\r\n",
            b"GET /a\rb HTTP/1.1\r\nHost: h\r\n\r\n",
            b"GET /a b HTTP/1.1\r\nHost: h\r\n\r\n",
            b"GET / HTTP/1.1\0\r\nHost: h\r\n\r\n",
            b"GET / HTTP/1\0.1\r\nHost: h\r\n\r\n",
            b"GET  / HTTP/1.1\r\nHost: h\r\n\r\n",
            b"GET HTTP/1.1\r\nHost: h\r\n\r\n",
            b"GET / FTP/1.1\r\nHost: h\r\n\r\n",
            b"GET / HTTP/111\r\nHost: h\r\n\r\n",
            b"GET / HTTP/0.99\r\nHost: h\r\n\r\n",
        ] {
            assert_eq!(status(head), Some(400), "{}", String::from_utf8_lossy(head).escape_debug());
        }
    }

    #[test]
    fn invalid_bytes_in_field_names_or_values_are_400() {
        for field in
            [&b"X\0: y"[..], b"X\xc3\x9f: y", b"X-Y\x7f: z", b"X: a\0b", b"X: a\x07b", b"X: a\x7fb", b": empty-name"]
        {
            let mut head = b"GET / HTTP/1.1\r\nHost: h\r\n".to_vec();
            head.extend_from_slice(field);
            head.extend_from_slice(b"\r\n\r\n");
            assert_eq!(status(&head), Some(400), "{}", String::from_utf8_lossy(field).escape_debug());
        }
    }

    #[test]
    fn obs_text_and_tabs_in_field_values_are_kept() {
        let (request, _) = parse(b"GET / HTTP/1.1\r\nHost: h\r\nX: \tcaf\xc3\xa9\t\r\n\r\n").unwrap().unwrap();
        assert_eq!(request.header("x"), Some("caf\u{c3}\u{a9}"), "values are Latin-1, trimmed of SP and HTAB");
    }

    #[test]
    fn unconventional_methods_are_400() {
        for method in ["get", "-bl", "GE", "bla:rgh", "A#B", "ABCDEFGHIJKLMNOPQRSTU"] {
            let head = format!("{method} / HTTP/1.1\r\nHost: h\r\n\r\n");
            assert_eq!(status(head.as_bytes()), Some(400), "{method}");
        }
        assert!(parse(b"-BLARGH /foo HTTP/1.1\r\nHost: h\r\n\r\n").unwrap().is_some());
    }

    #[test]
    fn target_forms_follow_the_method() {
        assert_eq!(status(b"GET * HTTP/1.1\r\nHost: h\r\n\r\n"), Some(400));
        assert_eq!(status(b"GET example.com:443 HTTP/1.1\r\nHost: h\r\n\r\n"), Some(400));
        assert_eq!(status(b"GET foo/bar HTTP/1.1\r\nHost: h\r\n\r\n"), Some(400));
        assert!(parse(b"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n").unwrap().is_some());
        let (request, _) =
            parse(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n").unwrap().unwrap();
        assert_eq!(request.authority.as_deref(), Some("example.com:443"));
    }

    #[test]
    fn an_absolute_form_targets_authority_replaces_the_host_header() {
        let (request, _) =
            parse(b"GET http://internal.test:81/x HTTP/1.1\r\nHost: evil.example\r\nX: y\r\n\r\n").unwrap().unwrap();
        assert_eq!(request.header("host"), Some("internal.test:81"));
        assert_eq!(request.header("x"), Some("y"));
        let (request, _) = parse(b"GET /x HTTP/1.1\r\nHost: evil.example\r\n\r\n").unwrap().unwrap();
        assert_eq!(request.header("host"), Some("evil.example"));
        // A CONNECT's authority-form target too, which its Host must repeat anyway.
        let (request, _) = parse(b"CONNECT b.example:443 HTTP/1.1\r\nHost: a.example\r\n\r\n").unwrap().unwrap();
        assert_eq!(request.header("host"), Some("b.example:443"));
    }

    #[test]
    fn invalid_host_value_is_400() {
        assert_eq!(status(b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n"), Some(400));
        assert_eq!(status(b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n"), Some(400));
        assert_eq!(status(b"GET / HTTP/1.0\r\nHost: a\r\nHost: a\r\n\r\n"), Some(400));
    }

    #[test]
    fn several_content_types_are_400() {
        assert_eq!(status(b"GET / HTTP/1.1\r\nHost: h\r\nContent-Type: a/b\r\nContent-Type: c/d\r\n\r\n"), Some(400));
    }

    #[test]
    fn empty_lines_before_the_request_line_are_skipped() {
        let (request, length) = parse(b"\r\nGET /x HTTP/1.1\r\nHost: h\r\n\r\n").unwrap().unwrap();
        assert_eq!((request.path.as_str(), length), ("/x", 30));
        assert_eq!(status(b"\nGET /x HTTP/1.1\r\nHost: h\r\n\r\n"), Some(400));
    }

    #[test]
    fn too_many_fields_or_one_too_long_is_431() {
        let many: String = (0..101).map(|index| format!("X-{index}: v\r\n")).collect();
        assert_eq!(status(format!("GET / HTTP/1.1\r\nHost: h\r\n{many}\r\n").as_bytes()), Some(431));
        let long = format!("GET / HTTP/1.1\r\nHost: h\r\nX: {}\r\n\r\n", "a".repeat(8190));
        assert_eq!(status(long.as_bytes()), Some(431));
        let partial = format!("GET / HTTP/1.1\r\nHost: h\r\nX: {}", "a".repeat(8190));
        assert_eq!(status(partial.as_bytes()), Some(431), "refused before the field ends");
    }

    #[test]
    fn limits_of_zero_mean_no_limit() {
        let unlimited = HeadLimits { request_line: 0, fields: 100, field_size: 0 };
        let head = format!("GET /{} HTTP/1.1\r\nHost: h\r\nX: {}\r\n\r\n", "a".repeat(10_000), "b".repeat(10_000));
        assert!(parse_head(head.as_bytes(), &unlimited).unwrap().is_some());
        let small = HeadLimits { request_line: 20, fields: 2, field_size: 10 };
        assert_eq!(parse_head(b"GET /0123456789012345 HTTP/1.1\r\n", &small).err().and_then(|e| e.status()), Some(414));
        assert_eq!(
            parse_head(b"GET / HTTP/1.1\r\nHost: h\r\nAccept: */*\r\n\r\n", &small).err().and_then(|e| e.status()),
            Some(431)
        );
        assert_eq!(
            parse_head(b"GET / HTTP/1.1\r\nHost: h\r\nA: 1\r\nB: 2\r\n\r\n", &small).err().and_then(|e| e.status()),
            Some(431)
        );
    }

    #[test]
    fn head_read_a_byte_at_a_time_is_the_same_request() {
        use std::io::Cursor;
        struct OneByte(Cursor<Vec<u8>>);
        impl Read for OneByte {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                let one = buf.len().min(1);
                self.0.read(&mut buf[..one])
            }
        }
        impl Write for OneByte {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let wire = b"POST /p?q HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n\r\nbody";
        let mut conn = Connection::new(OneByte(Cursor::new(wire.to_vec())));
        let request = read_request(&mut conn, &HeadLimits::default()).unwrap();
        assert_eq!((request.path.as_str(), request.framing), ("/p", Framing::Length(4)));
        let mut conn = Connection::new(OneByte(Cursor::new(b"GET / HTTP/1.1\r\nHo".to_vec())));
        assert_eq!(read_request(&mut conn, &HeadLimits::default()).err().and_then(|e| e.status()), Some(400));
        let mut conn = Connection::new(OneByte(Cursor::new(Vec::new())));
        assert!(matches!(read_request(&mut conn, &HeadLimits::default()), Err(HttpError::Closed)));
    }

    #[test]
    fn expect_other_than_continue_is_417() {
        assert_eq!(status(b"POST / HTTP/1.1\r\nHost: h\r\nExpect: magic\r\n\r\n"), Some(417));
        assert_eq!(status(b"POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue, magic\r\n\r\n"), Some(417));
        let expects = |field: &[u8]| {
            let wire = [b"POST / HTTP/1.1\r\nHost: h\r\n".as_slice(), field, b"\r\n\r\n"].concat();
            parse(&wire).unwrap().unwrap().0.expects_continue
        };
        assert!(expects(b"Expect: 100-Continue"));
        // A list: its empty elements count for nothing, so an empty field expects nothing.
        assert!(expects(b"Expect: , 100-continue,"));
        assert!(!expects(b"Expect:"));
        assert!(!expects(b"Expect: ,\t,"));
    }
}
