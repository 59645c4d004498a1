//! Writes the guest's response: validates its status and headers before any byte leaves, adds `Date`,
//! `Server` and `Connection`, sends a small body with a `Content-Length`, and streams a larger one (chunked to
//! HTTP/1.1 clients, delimited by the close for HTTP/1.0 ones). `Connection: keep-alive` goes out only when the
//! server offered it when the head left and the body's end is known from its framing; otherwise `close`.

use std::io::{self, Read, Write};

use super::connection::Connection;
use super::head::{Version, is_token_byte};
use super::request::Request;
use crate::guest::ResponseHeaders;

/// Bodies up to this size are buffered and sent in one write with a `Content-Length`.
const BUFFER_LIMIT: usize = 64 * 1024;

/// The most a guest's status line and headers may take on the wire (the host's own fields come on top): a client
/// or proxy refuses heads much larger (curl past 100 KiB, nginx's default buffers past 4 or 8 KiB).
const MAX_GUEST_HEAD: usize = 64 * 1024;

/// The room a response head is given at first: a small response goes out with its body in the same buffer.
const HEAD_CAPACITY: usize = 512;

/// Headers only the host may send: hop-by-hop ones and those it adds itself.
const RESERVED_HEADERS: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "date",
    "server",
];

/// What was sent, for the access log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Sent {
    pub status: u16,
    pub body_bytes: u64,
}

#[derive(Debug)]
enum State {
    /// `start-response` has not been called.
    Unstarted,
    /// Status and headers accepted; the body is being buffered.
    Buffering { status: u16, head: Vec<u8>, declared: Option<u64>, body: Vec<u8> },
    /// The head has been sent; the body is being streamed.
    Streaming { status: u16, chunked: bool, declared: Option<u64>, sent: u64 },
    /// The guest broke the contract; the reason is logged and the client gets a 500 (or a cut connection).
    Failed { reason: String, status_sent: Option<u16>, sent: u64 },
}

/// The response to one request, as the guest builds it.
#[derive(Debug)]
pub(crate) struct ResponseWriter {
    state: State,
    version: Version,
    head_only: bool,
    /// The request is a CONNECT: a 2xx answer to it carries neither `Content-Length` nor `Transfer-Encoding` (RFC
    /// 9110 section 9.3.6), so its body, if any, ends with the connection (which a CONNECT never keeps).
    connect: bool,
    /// The guest's headers, once accepted.
    headers: ResponseHeaders,
    /// The server may keep the connection open after this response (see `offer_keep_alive`).
    keep_alive_offered: bool,
    /// The head that went out said `Connection: keep-alive`.
    keep_alive_sent: bool,
    /// Where a small chunk is framed for chunked encoding, kept from one chunk to the next: a buffer allocated
    /// and freed for each chunk made the allocator give its pages back and fault them in again (the worker's CPU
    /// per streamed byte more than doubled).
    framing: Vec<u8>,
}

impl ResponseWriter {
    pub(crate) fn new(request: &Request) -> Self {
        ResponseWriter {
            state: State::Unstarted,
            version: request.version,
            head_only: request.method == "HEAD",
            connect: request.method == "CONNECT",
            headers: Vec::new(),
            keep_alive_offered: false,
            keep_alive_sent: false,
            framing: Vec::new(),
        }
    }

    /// Whether the server may keep the connection open after this response: the client asked for it, the server
    /// allows it, and the request's body has been read to its end. It counts when the head leaves; call it again
    /// whenever that may change.
    pub(crate) fn offer_keep_alive(&mut self, offer: bool) {
        self.keep_alive_offered = offer;
    }

    /// Whether the head sent said `Connection: keep-alive`: after a response that finished well, the connection
    /// may carry the next request.
    pub(crate) fn keeps_alive(&self) -> bool {
        self.keep_alive_sent && !matches!(self.state, State::Failed { .. })
    }

    /// Adds the `Connection` field to a head about to go, recording the promise; `framed` says whether the
    /// client can tell where the body ends without the connection's end.
    fn add_connection(&mut self, head: &mut Vec<u8>, framed: bool) {
        self.keep_alive_sent = self.keep_alive_offered && framed;
        head.extend_from_slice(if self.keep_alive_sent { KEEP_ALIVE } else { CLOSE });
    }

    /// The headers the guest set, once `start-response` succeeded.
    pub(crate) fn headers(&self) -> &[(String, Vec<u8>)] {
        &self.headers
    }

    /// Whether the status line has gone to the client: after that, no interim response (`100 Continue`) may.
    pub(crate) fn is_on_the_wire(&self) -> bool {
        self.progress().0.is_some()
    }

    /// Whether the guest called `start-response` (successfully or not).
    pub(crate) fn was_started(&self) -> bool {
        !matches!(self.state, State::Unstarted)
    }

    /// Why the response failed, if the guest broke the contract.
    pub(crate) fn failure(&self) -> Option<&str> {
        match &self.state {
            State::Failed { reason, .. } => Some(reason),
            _ => None,
        }
    }

    /// The guest's `start-response`.
    pub(crate) fn start(&mut self, status: &str, headers: ResponseHeaders) -> Result<(), String> {
        if let State::Failed { reason, .. } = &self.state {
            return Err(format!("the response has already failed: {reason}"));
        }
        if !matches!(self.state, State::Unstarted) {
            return Err(self.fail("start-response was called more than once".into()));
        }
        match build_head(status, &headers, self.connect) {
            Ok((status, head, declared)) => {
                self.headers = headers;
                self.state = State::Buffering { status, head, declared, body: Vec::new() };
                Ok(())
            }
            Err(reason) => Err(self.fail(reason)),
        }
    }

    /// The guest's `write-body`.
    pub(crate) fn write<S: Read + Write>(&mut self, conn: &mut Connection<S>, chunk: &[u8]) -> Result<(), String> {
        match &mut self.state {
            State::Unstarted => Err(self.fail("write-body was called before start-response".into())),
            State::Failed { reason, .. } => Err(format!("the response has already failed: {reason}")),
            State::Buffering { status, declared, body, .. } => {
                if chunk.is_empty() {
                    return Ok(());
                }
                if !status_allows_body(*status) {
                    return Err(format!("a {status} response has no body"));
                }
                let total = body.len() as u64 + chunk.len() as u64;
                if declared.is_some_and(|declared| total > declared) {
                    return Err(self.fail("the body is longer than its Content-Length".into()));
                }
                if total <= BUFFER_LIMIT as u64 {
                    body.extend_from_slice(chunk);
                    return Ok(());
                }
                // Past the buffer, the chunk is sent from where it is, after what was buffered: never copied.
                self.begin_streaming(conn)?;
                self.send_body(conn, chunk)
            }
            State::Streaming { declared, sent, .. } => {
                if chunk.is_empty() {
                    return Ok(());
                }
                if declared.is_some_and(|declared| *sent + chunk.len() as u64 > declared) {
                    return Err(self.fail("the body is longer than its Content-Length".into()));
                }
                self.send_body(conn, chunk)
            }
        }
    }

    /// Ends the response once the guest is done. `guest_error` is set when the guest failed; then, or when it
    /// broke the contract, the client gets a 500 if nothing was sent yet and a cut connection otherwise (the
    /// returned `Err` says why the connection must not be reused). Returns what was sent.
    pub(crate) fn finish<S: Read + Write>(
        &mut self,
        conn: &mut Connection<S>,
        guest_error: Option<(u16, String)>,
    ) -> Result<Sent, Sent> {
        if let Some((status, reason)) = guest_error {
            if !matches!(self.state, State::Failed { .. }) {
                let (status_sent, sent) = self.progress();
                self.state = State::Failed { reason, status_sent, sent };
            }
            return self.finish_failed(conn, status);
        }
        match std::mem::replace(&mut self.state, State::Unstarted) {
            State::Unstarted => {
                self.state = State::Failed {
                    reason: "the guest returned without calling start-response".into(),
                    status_sent: None,
                    sent: 0,
                };
                self.finish_failed(conn, 500)
            }
            State::Buffering { status, head, declared, body } => {
                // A HEAD answer may declare the length of the body a GET would get, and write none of it.
                let head_without_body = self.head_only && body.is_empty();
                if declared.is_some_and(|declared| declared != body.len() as u64) && !head_without_body {
                    self.state = State::Failed {
                        reason: "the body is shorter than its Content-Length".into(),
                        status_sent: None,
                        sent: 0,
                    };
                    return self.finish_failed(conn, 500);
                }
                let mut bytes = head;
                // A 2xx to a CONNECT has no framing: its body ends with the connection.
                let tunnel = opens_tunnel(self.connect, status);
                self.add_connection(&mut bytes, !tunnel);
                // A HEAD answer with no body and no length says none: a length of 0 would state what a GET gets,
                // which the host does not know (RFC 9110, 8.6).
                if declared.is_none() && status_allows_body(status) && !head_without_body && !tunnel {
                    // Writing to a `Vec` cannot fail.
                    let _ = write!(bytes, "Content-Length: {}\r\n", body.len());
                }
                bytes.extend_from_slice(b"\r\n");
                if !self.head_only {
                    bytes.extend_from_slice(&body);
                }
                let sent = Sent { status, body_bytes: if self.head_only { 0 } else { body.len() as u64 } };
                conn.write_all(&bytes).map_err(|_| sent)?;
                Ok(sent)
            }
            State::Streaming { status, chunked, declared, sent } => {
                // Nothing of a HEAD answer's body goes out, so its length cannot be wrong on the wire.
                let done = Sent { status, body_bytes: if self.head_only { 0 } else { sent } };
                if declared.is_some_and(|declared| declared != sent) && !self.head_only {
                    return Err(done);
                }
                if chunked && !self.head_only {
                    conn.write_all(b"0\r\n\r\n").map_err(|_| done)?;
                }
                Ok(done)
            }
            failed @ State::Failed { .. } => {
                self.state = failed;
                self.finish_failed(conn, 500)
            }
        }
    }

    fn finish_failed<S: Read + Write>(&mut self, conn: &mut Connection<S>, status: u16) -> Result<Sent, Sent> {
        match self.progress() {
            (None, _) => {
                let body_bytes = if self.head_only { 0 } else { error_body(status).len() as u64 };
                let sent = Sent { status, body_bytes };
                let _ = conn.write_all(&error_response(status, self.head_only));
                Ok(sent)
            }
            (Some(status), sent) => Err(Sent { status, body_bytes: sent }),
        }
    }

    /// The status already on the wire, if any, and the body bytes sent.
    fn progress(&self) -> (Option<u16>, u64) {
        match &self.state {
            State::Streaming { status, sent, .. } => (Some(*status), *sent),
            State::Failed { status_sent, sent, .. } => (*status_sent, *sent),
            _ => (None, 0),
        }
    }

    fn fail(&mut self, reason: String) -> String {
        let (status_sent, sent) = self.progress();
        self.state = State::Failed { reason: reason.clone(), status_sent, sent };
        reason
    }

    fn begin_streaming<S: Read + Write>(&mut self, conn: &mut Connection<S>) -> Result<(), String> {
        let State::Buffering { status, head, declared, body } = std::mem::replace(&mut self.state, State::Unstarted)
        else {
            return Ok(());
        };
        let tunnel = opens_tunnel(self.connect, status);
        let chunked = declared.is_none() && self.version == Version::Http11 && !tunnel;
        let mut bytes = head;
        // Streamed to an HTTP/1.0 client without a length, or as a 2xx to a CONNECT, the body ends with the
        // connection.
        self.add_connection(&mut bytes, (chunked || declared.is_some() || self.head_only) && !tunnel);
        if chunked {
            bytes.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
        }
        bytes.extend_from_slice(b"\r\n");
        self.state = State::Streaming { status, chunked, declared, sent: 0 };
        if let Err(err) = conn.write_all(&bytes) {
            return Err(self.fail(format!("the client went away: {err}")));
        }
        // An empty chunk would end a chunked body.
        if body.is_empty() { Ok(()) } else { self.send_body(conn, &body) }
    }

    fn send_body<S: Read + Write>(&mut self, conn: &mut Connection<S>, chunk: &[u8]) -> Result<(), String> {
        let State::Streaming { chunked, sent, .. } = &mut self.state else {
            return Ok(());
        };
        if self.head_only {
            *sent += chunk.len() as u64;
            return Ok(());
        }
        // Only the body bytes that reached the socket count (the access log's byte count), not a chunk's framing.
        let (result, prefix) = if *chunked {
            let prefix = format!("{:x}\r\n", chunk.len());
            let result = if chunk.len() <= BUFFER_LIMIT {
                // A small chunk goes out in one write with its framing.
                self.framing.clear();
                self.framing.extend_from_slice(prefix.as_bytes());
                self.framing.extend_from_slice(chunk);
                self.framing.extend_from_slice(b"\r\n");
                conn.write_all_counted(&self.framing)
            } else {
                // A large one is written from where it is, between its framing: a copy would double what a guest's
                // one call makes the worker hold.
                write_all_in_turn(conn, &[prefix.as_bytes(), chunk, b"\r\n"])
            };
            (result, prefix.len())
        } else {
            (conn.write_all_counted(chunk), 0)
        };
        match result {
            Ok(()) => {
                *sent += chunk.len() as u64;
                Ok(())
            }
            Err((written, err)) => {
                *sent += written.saturating_sub(prefix).min(chunk.len()) as u64;
                Err(self.fail(format!("the client went away: {err}")))
            }
        }
    }
}

/// Writes `parts` one after the other; on failure, says how many of their bytes went before it.
fn write_all_in_turn<S: Read + Write>(conn: &mut Connection<S>, parts: &[&[u8]]) -> Result<(), (usize, io::Error)> {
    let mut written = 0;
    for part in parts {
        conn.write_all_counted(part).map_err(|(count, err)| (written + count, err))?;
        written += part.len();
    }
    Ok(())
}

/// Checks the guest's status and headers and renders the head (without the blank line that ends it). Returns
/// the status code, the head and the declared Content-Length. `connect`: the request is a CONNECT, whose 2xx
/// answer goes out without the `Content-Length` a guest declares (still held to it).
fn build_head(
    status: &str,
    headers: &[(String, Vec<u8>)],
    connect: bool,
) -> Result<(u16, Vec<u8>, Option<u64>), String> {
    let too_large = || format!("the status line and headers take more than {MAX_GUEST_HEAD} bytes");
    let (code, reason) = parse_status(status)?;
    if reason.len() > MAX_GUEST_HEAD {
        return Err(too_large());
    }
    let mut head = Vec::with_capacity(HEAD_CAPACITY);
    // Writing to a `Vec` cannot fail.
    let _ = write!(head, "HTTP/1.1 {code} {reason}\r\n");
    let mut declared = None;
    for (name, value) in headers {
        if name.is_empty() || !name.bytes().all(is_token_byte) {
            return Err(format!("invalid header name {name:?}"));
        }
        // A field value (RFC 9110 section 5.5): visible characters, obs-text, spaces and tabs, no other control.
        if http::HeaderValue::from_bytes(value).is_err() {
            return Err(format!("the value of header {name:?} contains a control character"));
        }
        if RESERVED_HEADERS.iter().any(|reserved| name.eq_ignore_ascii_case(reserved)) {
            return Err(format!("the guest may not set the {name:?} header: the host manages it"));
        }
        if name.eq_ignore_ascii_case("content-length") {
            let digits = value.trim_ascii();
            let length = std::str::from_utf8(digits)
                .ok()
                .filter(|_| digits.iter().all(u8::is_ascii_digit))
                .and_then(|digits| digits.parse::<u64>().ok());
            match (length, declared) {
                (Some(length), None) => declared = Some(length),
                (Some(_), Some(_)) => return Err("more than one Content-Length header".into()),
                (None, _) => return Err(format!("invalid Content-Length {:?}", String::from_utf8_lossy(value))),
            }
            if !status_allows_body(code) && length != Some(0) {
                return Err(format!("a {code} response cannot have a Content-Length"));
            }
            // A 204 has no body and no Content-Length field, not even `0` (RFC 9110 section 8.6); a 2xx to a
            // CONNECT has none either (section 9.3.6).
            if code == 204 || opens_tunnel(connect, code) {
                continue;
            }
        }
        head.extend_from_slice(name.as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value);
        head.extend_from_slice(b"\r\n");
        if head.len() > MAX_GUEST_HEAD {
            return Err(too_large());
        }
    }
    push_host_headers(&mut head);
    Ok((code, head, declared))
}

/// `NNN` or `NNN reason`, with a code from 200 to 599 and a reason of visible characters and spaces.
fn parse_status(status: &str) -> Result<(u16, &str), String> {
    let invalid = || format!("invalid status {status:?}: it must be a code from 200 to 599 and an optional reason");
    let (code, reason) = status.split_once(' ').unwrap_or((status, ""));
    if code.len() != 3 || !code.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err(invalid());
    }
    let code: u16 = code.parse().map_err(|_| invalid())?;
    if !(200..=599).contains(&code) || reason.bytes().any(|byte| byte != b'\t' && !(0x20..0x7f).contains(&byte)) {
        return Err(invalid());
    }
    let reason = if reason.is_empty() { reason_phrase(code) } else { reason };
    Ok((code, reason))
}

/// Whether a response with `status` answers a CONNECT (`connect`: the request is one) with success: its head then
/// says nothing of its body's length, and the body ends with the connection (RFC 9110 section 9.3.6).
fn opens_tunnel(connect: bool, status: u16) -> bool {
    connect && (200..300).contains(&status)
}

fn status_allows_body(status: u16) -> bool {
    !matches!(status, 100..=199 | 204 | 304)
}

/// The `Connection` fields the host ends a head with.
const KEEP_ALIVE: &[u8] = b"Connection: keep-alive\r\n";
const CLOSE: &[u8] = b"Connection: close\r\n";

/// Appends the headers the host adds to every response, but `Connection`.
fn push_host_headers(head: &mut Vec<u8>) {
    head.extend_from_slice(b"Date: ");
    crate::clock::push_http_date(head);
    head.extend_from_slice(b"\r\nServer: wasmcorn\r\n");
}

fn error_body(status: u16) -> String {
    format!("{}\n", reason_phrase(status))
}

/// The length of the body of `error_response(status)`.
pub(crate) fn error_body_length(status: u16) -> u64 {
    error_body(status).len() as u64
}

/// A complete response for a status the host answers by itself (a bad request, a failed guest); for a HEAD
/// request (`head_only`), its head alone.
pub(crate) fn error_response(status: u16, head_only: bool) -> Vec<u8> {
    let body = error_body(status);
    let mut response = Vec::with_capacity(HEAD_CAPACITY);
    // Writing to a `Vec` cannot fail.
    let _ = write!(response, "HTTP/1.1 {status} {}\r\n", reason_phrase(status));
    push_host_headers(&mut response);
    let _ = write!(response, "Connection: close\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n", body.len());
    // The answer to a HEAD request has the head a GET's would have, and no body (RFC 9110, 9.3.2).
    if !head_only {
        response.extend_from_slice(body.as_bytes());
    }
    response
}

/// The standard reason phrase of a status code (RFC 9110), or an empty one.
pub(super) fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        417 => "Expectation Failed",
        422 => "Unprocessable Content",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::request::parse_head;
    use crate::settings::HeadLimits;
    use std::io::Cursor;

    struct Wire(Cursor<Vec<u8>>, Vec<u8>);
    impl Read for Wire {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            self.0.read(buf)
        }
    }
    impl Write for Wire {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.1.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn respond(head: &[u8], guest: impl FnOnce(&mut ResponseWriter, &mut Connection<Wire>)) -> String {
        respond_offering(head, false, guest).0
    }

    /// The wire and whether the response kept the connection, the server offering keep-alive or not.
    fn respond_offering(
        head: &[u8],
        offer: bool,
        guest: impl FnOnce(&mut ResponseWriter, &mut Connection<Wire>),
    ) -> (String, bool) {
        let (request, _) = parse_head(head, &HeadLimits::default()).unwrap().unwrap();
        let mut conn = Connection::new(Wire(Cursor::new(Vec::new()), Vec::new()));
        let mut writer = ResponseWriter::new(&request);
        writer.offer_keep_alive(offer);
        guest(&mut writer, &mut conn);
        let _ = writer.finish(&mut conn, None);
        (String::from_utf8_lossy(&conn.into_stream().1).into_owned(), writer.keeps_alive())
    }

    #[test]
    fn keep_alive_is_said_only_when_offered_and_the_framing_is_known() {
        let small = |writer: &mut ResponseWriter, conn: &mut Connection<Wire>| {
            writer.start("200 OK", vec![]).unwrap();
            writer.write(conn, b"hi").unwrap();
        };
        let big = |writer: &mut ResponseWriter, conn: &mut Connection<Wire>| {
            writer.start("200 OK", vec![]).unwrap();
            writer.write(conn, &vec![b'a'; BUFFER_LIMIT + 1]).unwrap();
        };
        let (wire, kept) = respond_offering(GET, true, small);
        assert!(kept && wire.contains("\r\nConnection: keep-alive\r\n") && !wire.contains("close"), "{wire}");
        let (wire, kept) = respond_offering(GET, false, small);
        assert!(!kept && wire.contains("\r\nConnection: close\r\n"), "{wire}");
        let (wire, kept) = respond_offering(GET, true, big);
        assert!(kept && wire.contains("\r\nConnection: keep-alive\r\n"), "chunked is framed: {wire:.300}");
        let (wire, kept) = respond_offering(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", true, big);
        assert!(!kept && wire.contains("\r\nConnection: close\r\n"), "a close-delimited body closes: {wire:.300}");
        let (wire, kept) = respond_offering(GET, true, |writer, _| {
            writer.start("200 OK\r\nX: y", vec![]).unwrap_err();
        });
        assert!(!kept && wire.starts_with("HTTP/1.1 500 ") && wire.contains("Connection: close"), "{wire}");
    }

    const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: h\r\n\r\n";

    #[test]
    fn small_body_is_sent_with_content_length() {
        let wire = respond(GET, |writer, conn| {
            writer.start("200 OK", vec![("Content-Type".into(), "text/plain".into())]).unwrap();
            writer.write(conn, b"hi").unwrap();
        });
        assert!(wire.starts_with("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nDate: "), "{wire}");
        assert!(wire.contains("\r\nServer: wasmcorn\r\nConnection: close\r\nContent-Length: 2\r\n\r\nhi"), "{wire}");
    }

    #[test]
    fn a_2xx_answer_to_connect_says_nothing_of_its_length() {
        const CONNECT: &[u8] = b"CONNECT example.test:443 HTTP/1.1\r\nHost: example.test:443\r\n\r\n";
        let small = |status: &'static str, length: Option<&'static str>| {
            move |writer: &mut ResponseWriter, conn: &mut Connection<Wire>| {
                let headers = length.map(|length| ("Content-Length".into(), length.into())).into_iter().collect();
                writer.start(status, headers).unwrap();
                writer.write(conn, b"hi").unwrap();
            }
        };
        // RFC 9110 section 9.3.6: no Content-Length in a 2xx to CONNECT, the host's or the guest's; the body ends
        // with the connection.
        for length in [None, Some("2")] {
            let (wire, kept) = respond_offering(CONNECT, true, small("200 OK", length));
            assert!(!kept && wire.contains("\r\nConnection: close\r\n\r\nhi"), "{wire}");
            assert!(!wire.to_ascii_lowercase().contains("content-length"), "{wire}");
        }
        let (wire, _) = respond_offering(CONNECT, true, |writer, conn| {
            writer.start("200 OK", vec![]).unwrap();
            writer.write(conn, &vec![b'a'; BUFFER_LIMIT + 1]).unwrap();
        });
        assert!(
            !wire.contains("Transfer-Encoding") && wire.contains("\r\nConnection: close\r\n\r\naaa"),
            "{wire:.300}"
        );
        // Any other answer to it is framed as usual.
        let (wire, _) = respond_offering(CONNECT, true, small("404 Not Found", None));
        assert!(wire.contains("\r\nContent-Length: 2\r\n\r\nhi"), "{wire}");
        // The guest is still held to the length it declared.
        let wire = respond(CONNECT, small("200 OK", Some("5")));
        assert!(wire.starts_with("HTTP/1.1 500 "), "{wire}");
    }

    #[test]
    fn large_body_is_streamed_chunked() {
        let wire = respond(GET, |writer, conn| {
            writer.start("200", vec![]).unwrap();
            writer.write(conn, &vec![b'a'; BUFFER_LIMIT + 1]).unwrap();
            writer.write(conn, b"tail").unwrap();
        });
        assert!(wire.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(wire.contains("Transfer-Encoding: chunked\r\n\r\n10001\r\naaa"));
        assert!(wire.ends_with("\r\n4\r\ntail\r\n0\r\n\r\n"));
        // What was buffered goes first, then the chunk that would have overfilled the buffer, each framed.
        let wire = respond(GET, |writer, conn| {
            writer.start("200", vec![]).unwrap();
            writer.write(conn, b"head").unwrap();
            writer.write(conn, &vec![b'b'; BUFFER_LIMIT]).unwrap();
        });
        let body = format!("4\r\nhead\r\n10000\r\n{}\r\n0\r\n\r\n", "b".repeat(BUFFER_LIMIT));
        assert!(wire.contains("Transfer-Encoding: chunked\r\n\r\n") && wire.ends_with(&body), "{wire:.300}");
    }

    #[test]
    fn invalid_status_or_headers_answer_500_and_nothing_of_the_guest() {
        let cases: Vec<(&str, ResponseHeaders)> = vec![
            ("99 Low", vec![]),
            ("700 High", vec![]),
            ("200 OK\r\nX: y", vec![]),
            ("200 OK", vec![("X-Evil".into(), "a\r\nSet-Cookie: b".into())]),
            ("200 OK", vec![("Bad Name".into(), "v".into())]),
            ("200 OK", vec![("Transfer-Encoding".into(), "chunked".into())]),
            ("200 OK", vec![("Connection".into(), "keep-alive".into())]),
            ("200 OK", vec![("X-Evil".into(), "a\x0bb".into())]),
            ("200 OK", vec![("X-Evil".into(), "a\x1b[2Jb".into())]),
            ("200 OK", vec![("X-Evil".into(), "a\x7fb".into())]),
            // A length padded with what is not optional whitespace (SP, HTAB) frames nothing a client can read.
            ("200 OK", vec![("Content-Length".into(), "\u{3000}5".into())]),
            ("200 OK", vec![("Content-Length".into(), "\x0b5".into())]),
        ];
        for (status, headers) in cases {
            let wire = respond(GET, |writer, conn| {
                assert!(writer.start(status, headers.clone()).is_err());
                let _ = writer.write(conn, b"secret");
            });
            assert!(wire.starts_with("HTTP/1.1 500 Internal Server Error\r\n"), "{status:?}: {wire}");
            assert!(!wire.contains("secret") && !wire.contains("Set-Cookie") && !wire.contains("X-Evil"), "{wire}");
        }
    }

    #[test]
    fn a_head_past_its_limit_is_refused() {
        let field = |bytes: usize| ("X-Big".to_string(), vec![b'a'; bytes]);
        let mut writer = ResponseWriter::new(&parse_head(GET, &HeadLimits::default()).unwrap().unwrap().0);
        assert!(writer.start("200 OK", vec![field(MAX_GUEST_HEAD - 100)]).is_ok(), "what fits goes");
        for (status, headers) in [
            ("200 OK".to_string(), vec![field(MAX_GUEST_HEAD / 2), field(MAX_GUEST_HEAD / 2)]),
            (format!("200 {}", "o".repeat(MAX_GUEST_HEAD + 1)), vec![]),
        ] {
            let mut writer = ResponseWriter::new(&parse_head(GET, &HeadLimits::default()).unwrap().unwrap().0);
            let refused = writer.start(&status, headers).unwrap_err();
            assert!(refused.contains("the status line and headers take more than 65536 bytes"), "{refused}");
        }
    }

    #[test]
    fn a_204_goes_without_content_length() {
        let wire = respond(GET, |writer, _| {
            writer.start("204", vec![("Content-Length".into(), "0".into()), ("X-A".into(), "b".into())]).unwrap();
        });
        assert!(wire.starts_with("HTTP/1.1 204 No Content\r\nX-A: b\r\n"), "{wire}");
        assert!(!wire.to_ascii_lowercase().contains("content-length"), "{wire}");
    }

    #[test]
    fn header_values_go_out_as_the_bytes_the_guest_gave() {
        let wire = respond(GET, |writer, _| {
            let headers = vec![("X-Utf8".into(), "caf\u{e9}".into()), ("X-Latin1".into(), b"caf\xe9\tb".to_vec())];
            writer.start("204", headers).unwrap();
        });
        assert!(
            wire.starts_with("HTTP/1.1 204 No Content\r\nX-Utf8: caf\u{e9}\r\nX-Latin1: caf\u{fffd}\tb\r\n"),
            "{wire}"
        );
    }

    #[test]
    fn missing_start_response_is_500() {
        let wire = respond(GET, |_, _| {});
        assert!(wire.starts_with("HTTP/1.1 500 "), "{wire}");
    }

    #[test]
    fn head_response_has_no_body_but_the_length() {
        let wire = respond(b"HEAD / HTTP/1.1\r\nHost: h\r\n\r\n", |writer, conn| {
            writer.start("200 OK", vec![]).unwrap();
            writer.write(conn, b"hello").unwrap();
        });
        assert!(wire.ends_with("Content-Length: 5\r\n\r\n"), "{wire}");
    }

    #[test]
    fn head_response_with_no_body_and_no_length_states_no_length() {
        let wire = respond(b"HEAD / HTTP/1.1\r\nHost: h\r\n\r\n", |writer, _| {
            writer.start("200 OK", vec![("Content-Type".into(), "text/plain".into())]).unwrap();
        });
        assert!(wire.starts_with("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"), "{wire}");
        assert!(!wire.to_ascii_lowercase().contains("content-length"), "{wire}");
        assert!(wire.ends_with("Connection: close\r\n\r\n"), "{wire}");
    }

    #[test]
    fn head_response_may_declare_a_length_and_write_nothing() {
        let wire = respond(b"HEAD / HTTP/1.1\r\nHost: h\r\n\r\n", |writer, _| {
            writer.start("200 OK", vec![("Content-Length".into(), "1234".into())]).unwrap();
        });
        assert!(wire.starts_with("HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n"), "{wire}");
        assert!(wire.ends_with("Connection: close\r\n\r\n"), "{wire}");
    }

    #[test]
    fn wrong_content_length_is_500() {
        let wire = respond(GET, |writer, conn| {
            writer.start("200 OK", vec![("Content-Length".into(), "10".into())]).unwrap();
            writer.write(conn, b"short").unwrap();
        });
        assert!(wire.starts_with("HTTP/1.1 500 "), "{wire}");
    }

    #[test]
    fn http10_client_gets_a_close_delimited_stream() {
        let wire = respond(b"GET / HTTP/1.0\r\n\r\n", |writer, conn| {
            writer.start("200 OK", vec![]).unwrap();
            writer.write(conn, &vec![b'a'; BUFFER_LIMIT + 1]).unwrap();
        });
        assert!(!wire.contains("Transfer-Encoding"));
        assert!(wire.ends_with("aaaa"));
    }
}
