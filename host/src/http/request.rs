//! Reads and checks a request head with httparse, and decides how its body is framed (RFC 9112).

use std::io::{Read, Write};

use super::{Connection, HttpError};

/// Gunicorn's limits on a request head.
#[derive(Debug, Clone, Copy)]
pub struct HeadLimits {
    /// The longest request line, in bytes.
    pub request_line: usize,
    /// The most header fields.
    pub fields: usize,
    /// The longest header field (name, colon and value), in bytes.
    pub field_size: usize,
}

impl Default for HeadLimits {
    fn default() -> Self {
        HeadLimits { request_line: 4094, fields: 100, field_size: 8190 }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    Http10,
    Http11,
}

impl Version {
    pub fn as_str(self) -> &'static str {
        match self {
            Version::Http10 => "HTTP/1.0",
            Version::Http11 => "HTTP/1.1",
        }
    }
}

/// How the request body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// `Content-Length` bytes (0 without the header).
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

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

    /// The request line as the access log shows it.
    pub fn request_line(&self) -> String {
        format!("{} {} {}", self.method, self.target, self.version.as_str())
    }
}

/// Reads from the connection until a whole request head has arrived, and parses it.
pub fn read_request<S: Read + Write>(conn: &mut Connection<S>, limits: &HeadLimits) -> Result<Request, HttpError> {
    loop {
        if let Some((request, length)) = parse_head(conn.buffered(), limits)? {
            conn.consume(length);
            return Ok(request);
        }
        let was_empty = conn.buffered().is_empty();
        if conn.fill()? == 0 {
            return Err(if was_empty {
                HttpError::Closed
            } else {
                HttpError::BadRequest("the connection closed in the middle of the request head".into())
            });
        }
    }
}

/// Parses a request head from the start of `bytes`: `Ok(None)` while it is incomplete, otherwise the request
/// and the length of its head.
pub fn parse_head(bytes: &[u8], limits: &HeadLimits) -> Result<Option<(Request, usize)>, HttpError> {
    check_line_lengths(bytes, limits)?;
    let mut fields = vec![httparse::EMPTY_HEADER; limits.fields];
    let mut parsed = httparse::Request::new(&mut fields);
    let length = match parsed.parse(bytes) {
        Ok(httparse::Status::Complete(length)) => length,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(HttpError::HeadersTooLarge(format!("more than {} header fields", limits.fields)));
        }
        Err(httparse::Error::Version) => return Err(version_error(bytes)),
        Err(err) => return Err(HttpError::BadRequest(format!("malformed request head ({err})"))),
    };
    let (Some(method), Some(target), Some(minor)) = (parsed.method, parsed.path, parsed.version) else {
        return Err(HttpError::BadRequest("incomplete request line".into()));
    };
    let version = if minor == 0 { Version::Http10 } else { Version::Http11 };
    let headers: Vec<(String, String)> =
        parsed.headers.iter().map(|field| (field.name.to_string(), latin1(field.value))).collect();
    let (path, query) = split_target(target)?;
    let framing = framing(&headers, version)?;
    let expects_continue = expectation(&headers, version)?;
    if version == Version::Http11 {
        let hosts = headers.iter().filter(|(name, _)| name.eq_ignore_ascii_case("host")).count();
        if hosts != 1 {
            return Err(HttpError::BadRequest(format!(
                "an HTTP/1.1 request needs exactly one Host header, not {hosts}"
            )));
        }
    }
    let request = Request {
        method: method.to_string(),
        target: target.to_string(),
        path,
        query,
        version,
        headers,
        framing,
        expects_continue,
    };
    Ok(Some((request, length)))
}

/// Enforces the request-line and field-size limits, on complete lines and on a line still arriving.
fn check_line_lengths(bytes: &[u8], limits: &HeadLimits) -> Result<(), HttpError> {
    for (index, line) in bytes.split(|&byte| byte == b'\n').enumerate() {
        let complete = line.len() < bytes.len() || bytes.ends_with(b"\n");
        let length = line.strip_suffix(b"\r").unwrap_or(line).len();
        if index == 0 && length > limits.request_line {
            return Err(HttpError::RequestLineTooLong);
        }
        if index > 0 && length > limits.field_size {
            return Err(HttpError::HeadersTooLarge(format!(
                "a header field is longer than {} bytes",
                limits.field_size
            )));
        }
        if index > 0 && complete && length == 0 {
            break;
        }
    }
    Ok(())
}

/// httparse refuses any version but 1.0 and 1.1: a well-formed other version is 505, anything else 400.
fn version_error(bytes: &[u8]) -> HttpError {
    let line = bytes.split(|&byte| byte == b'\n').next().unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let version = line.rsplit(|&byte| byte == b' ').next().unwrap_or_default();
    match version {
        [b'H', b'T', b'T', b'P', b'/', major, b'.', minor] if major.is_ascii_digit() && minor.is_ascii_digit() => {
            HttpError::VersionNotSupported
        }
        _ => HttpError::BadRequest("malformed HTTP version".into()),
    }
}

/// Splits the target into its path and query; accepts origin-form, absolute-form and `*`.
fn split_target(target: &str) -> Result<(String, String), HttpError> {
    let without_fragment = target.split('#').next().unwrap_or_default();
    let path_and_query = if without_fragment.starts_with('/') || without_fragment == "*" {
        without_fragment
    } else if let Some(rest) = strip_scheme(without_fragment) {
        match rest.find(['/', '?']) {
            Some(start) => &rest[start..],
            None => "",
        }
    } else {
        return Err(HttpError::BadRequest(format!("unsupported request target {target:?}")));
    };
    let (path, query) = path_and_query.split_once('?').unwrap_or((path_and_query, ""));
    let path = if path.is_empty() { "/" } else { path };
    Ok((path.to_string(), query.to_string()))
}

fn strip_scheme(target: &str) -> Option<&str> {
    for scheme in ["http://", "https://"] {
        if target.len() >= scheme.len() && target[..scheme.len()].eq_ignore_ascii_case(scheme) {
            return Some(&target[scheme.len()..]);
        }
    }
    None
}

/// Decides the body framing from Content-Length and Transfer-Encoding (RFC 9112 section 6).
fn framing(headers: &[(String, String)], version: Version) -> Result<Framing, HttpError> {
    let values = |name: &str| -> Vec<&str> {
        headers.iter().filter(|(field, _)| field.eq_ignore_ascii_case(name)).map(|(_, value)| value.as_str()).collect()
    };
    let transfer_encodings = values("transfer-encoding");
    let content_lengths = values("content-length");
    if !transfer_encodings.is_empty() {
        if version == Version::Http10 {
            return Err(HttpError::BadRequest("Transfer-Encoding in an HTTP/1.0 request".into()));
        }
        if !content_lengths.is_empty() {
            return Err(HttpError::BadRequest("both Content-Length and Transfer-Encoding".into()));
        }
        let codings: Vec<&str> = transfer_encodings
            .iter()
            .flat_map(|value| value.split(','))
            .map(|coding| coding.trim_matches([' ', '\t']))
            .collect();
        for coding in &codings {
            if coding.is_empty() || !coding.bytes().all(is_token_byte) {
                return Err(HttpError::BadRequest(format!("malformed transfer coding {coding:?}")));
            }
        }
        let chunked = codings.iter().filter(|coding| coding.eq_ignore_ascii_case("chunked")).count();
        if let Some(unknown) = codings.iter().find(|coding| !coding.eq_ignore_ascii_case("chunked")) {
            return Err(HttpError::NotImplemented(format!("transfer coding {unknown:?}")));
        }
        if chunked != 1 {
            return Err(HttpError::BadRequest("chunked is applied more than once".into()));
        }
        return Ok(Framing::Chunked);
    }
    let mut length = None;
    for value in content_lengths {
        let parsed = parse_content_length(value)?;
        if length.is_some_and(|known| known != parsed) {
            return Err(HttpError::BadRequest("differing Content-Length headers".into()));
        }
        length = Some(parsed);
    }
    Ok(Framing::Length(length.unwrap_or(0)))
}

/// A Content-Length is 1 to 19 ASCII digits and nothing else: no sign, space, hex or list.
fn parse_content_length(value: &str) -> Result<u64, HttpError> {
    if value.is_empty() || value.len() > 19 || !value.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err(HttpError::BadRequest(format!("malformed Content-Length {value:?}")));
    }
    value.parse().map_err(|_| HttpError::BadRequest(format!("malformed Content-Length {value:?}")))
}

fn expectation(headers: &[(String, String)], version: Version) -> Result<bool, HttpError> {
    let mut expects_continue = false;
    for (_, value) in headers.iter().filter(|(name, _)| name.eq_ignore_ascii_case("expect")) {
        if value.trim_matches([' ', '\t']).eq_ignore_ascii_case("100-continue") {
            expects_continue = version == Version::Http11;
        } else {
            return Err(HttpError::ExpectationFailed);
        }
    }
    Ok(expects_continue)
}

/// RFC 9110 `tchar`.
pub(crate) fn is_token_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
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
    fn expect_other_than_continue_is_417() {
        assert_eq!(status(b"POST / HTTP/1.1\r\nHost: h\r\nExpect: magic\r\n\r\n"), Some(417));
        let (request, _) = parse(b"POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-Continue\r\n\r\n").unwrap().unwrap();
        assert!(request.expects_continue);
    }
}
