//! Reads a request body as the guest asks for it: Content-Length bytes, or a chunked body decoded (RFC 9112
//! section 7.1) with bounded chunk-size lines, extensions (checked against RFC 9112's grammar) and trailers, all
//! within the body size limit. Sends `100 Continue` before the first read when the client asked for it, and never
//! once the response has started.

use std::io::{Read, Write};

use super::chunk_size::parse_chunk_size;
use super::connection::Connection;
use super::error::HttpError;
use super::head::{Framing, is_token_byte};
use super::request::Request;

/// The longest chunk-size line (size and extensions) and trailer field accepted.
const MAX_LINE: usize = 8190;
/// The most trailer fields accepted.
const MAX_TRAILERS: usize = 100;
/// The most bytes of chunk extensions accepted over a whole body, so that extensions cannot be a body of their own.
const MAX_EXTENSION_BYTES: usize = 16 * 1024;
/// Fields that must not come in a trailer (RFC 9110 section 6.5.1): framing, routing and request modifiers.
const FORBIDDEN_TRAILERS: &[&str] =
    &["content-length", "transfer-encoding", "trailer", "host", "te", "expect", "max-forwards"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Length { remaining: u64 },
    ChunkSize,
    ChunkData { remaining: u64 },
    ChunkEnd,
    Trailers { count: usize },
    Done,
}

#[derive(Debug)]
pub(crate) struct BodyReader {
    state: State,
    send_continue: bool,
    /// The most body bytes accepted (`--limit-request-body`), if limited.
    limit: Option<u64>,
    /// Decoded body bytes read so far.
    received: u64,
    /// Chunk-extension bytes seen so far.
    extension_bytes: usize,
}

impl BodyReader {
    /// A reader for the body of `request`, which may be at most `limit` bytes. A Content-Length over the limit
    /// is refused here, before anything reads the body or sends `100 Continue`.
    pub(crate) fn new(request: &Request, limit: Option<u64>) -> Result<Self, HttpError> {
        let state = match request.framing {
            Framing::Length(length) if limit.is_some_and(|limit| length > limit) => {
                return Err(HttpError::BodyTooLarge);
            }
            Framing::Length(0) => State::Done,
            Framing::Length(remaining) => State::Length { remaining },
            Framing::Chunked => State::ChunkSize,
        };
        Ok(BodyReader {
            state,
            send_continue: request.expects_continue && state != State::Done,
            limit,
            received: 0,
            extension_bytes: 0,
        })
    }

    /// The whole body has been read.
    pub(crate) fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Up to `max` bytes of the body; empty at its end.
    pub(crate) fn read<S: Read + Write>(&mut self, conn: &mut Connection<S>, max: usize) -> Result<Vec<u8>, HttpError> {
        if self.send_continue {
            self.send_continue = false;
            conn.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").map_err(HttpError::Io)?;
        }
        loop {
            match self.state {
                State::Done => return Ok(Vec::new()),
                State::Length { remaining } => {
                    let bytes = conn.read_some(clamp(max, remaining))?;
                    let left = remaining - bytes.len() as u64;
                    self.state = if left == 0 { State::Done } else { State::Length { remaining: left } };
                    return Ok(bytes);
                }
                State::ChunkSize => {
                    let line = read_line(conn)?;
                    let (size, extension) = parse_chunk_size(&line)?;
                    self.extension_bytes += extension;
                    if self.extension_bytes > MAX_EXTENSION_BYTES {
                        return Err(HttpError::BadRequest("too many bytes of chunk extensions".into()));
                    }
                    if self.limit.is_some_and(|limit| self.received.saturating_add(size) > limit) {
                        return Err(HttpError::BodyTooLarge);
                    }
                    self.received += size;
                    self.state =
                        if size == 0 { State::Trailers { count: 0 } } else { State::ChunkData { remaining: size } };
                }
                State::ChunkData { remaining } => {
                    let bytes = conn.read_some(clamp(max, remaining))?;
                    let left = remaining - bytes.len() as u64;
                    self.state = if left == 0 { State::ChunkEnd } else { State::ChunkData { remaining: left } };
                    return Ok(bytes);
                }
                State::ChunkEnd => {
                    if !read_line(conn)?.is_empty() {
                        return Err(HttpError::BadRequest("chunk data is not followed by CRLF".into()));
                    }
                    self.state = State::ChunkSize;
                }
                State::Trailers { count } => {
                    let line = read_line(conn)?;
                    if line.is_empty() {
                        self.state = State::Done;
                    } else if count >= MAX_TRAILERS {
                        // A body that breaks the trailer rules is 400, whichever rule (431 is for a head).
                        return Err(HttpError::BadRequest(format!("more than {MAX_TRAILERS} trailer fields")));
                    } else if !is_field_line(&line) {
                        return Err(HttpError::BadRequest("malformed trailer field".into()));
                    } else if is_forbidden_trailer(&line) {
                        return Err(HttpError::BadRequest("a trailer field that may only be in the head".into()));
                    } else {
                        self.state = State::Trailers { count: count + 1 };
                    }
                }
            }
        }
    }

    /// The client asked for `100 Continue` and has not been sent it: nobody read the body yet.
    pub(crate) fn continue_pending(&self) -> bool {
        self.send_continue
    }

    /// Never sends `100 Continue`: the final response has started (a client that waits for it will send its body
    /// after its own timeout, as RFC 9110 section 10.1.1 has it).
    pub(crate) fn forgo_continue(&mut self) {
        self.send_continue = false;
    }

    /// Reads and discards what is left of the body, up to `budget` bytes, so that the client sees the response
    /// rather than a reset. Returns whether the body was read to its end. It runs after the final response has
    /// started, so it never sends `100 Continue`: a client still waiting for one is not asked for its body.
    pub(crate) fn drain<S: Read + Write>(&mut self, conn: &mut Connection<S>, budget: u64) -> bool {
        self.forgo_continue();
        let mut drained = 0u64;
        while !self.is_done() && drained <= budget {
            match self.read(conn, 64 * 1024) {
                Ok(bytes) => drained += bytes.len() as u64,
                Err(_) => return false,
            }
        }
        self.is_done()
    }
}

fn clamp(max: usize, remaining: u64) -> usize {
    usize::try_from(remaining).map_or(max, |remaining| remaining.min(max))
}

/// One CRLF-terminated line, without its CRLF. A bare LF or CR, or a line longer than `MAX_LINE`, is an error.
fn read_line<S: Read + Write>(conn: &mut Connection<S>) -> Result<Vec<u8>, HttpError> {
    loop {
        if let Some(end) = conn.buffered().iter().position(|&byte| byte == b'\n') {
            let line = conn.buffered()[..end].to_vec();
            conn.consume(end + 1);
            let Some(line) = line.strip_suffix(b"\r") else {
                return Err(HttpError::BadRequest("a chunked body line ends in a bare LF".into()));
            };
            if line.contains(&b'\r') || line.len() > MAX_LINE {
                return Err(HttpError::BadRequest("malformed line in a chunked body".into()));
            }
            return Ok(line.to_vec());
        }
        if conn.buffered().len() > MAX_LINE {
            return Err(HttpError::BadRequest("a chunk-size line or trailer is too long".into()));
        }
        if conn.fill()? == 0 {
            return Err(HttpError::BadRequest("the connection closed in the middle of a chunked body".into()));
        }
    }
}

/// `field-name ":" OWS field-value OWS` with a token name and no control bytes in the value.
fn is_field_line(line: &[u8]) -> bool {
    let Some(colon) = line.iter().position(|&byte| byte == b':') else { return false };
    let (name, value) = (&line[..colon], &line[colon + 1..]);
    !name.is_empty()
        && name.iter().all(|&byte| is_token_byte(byte))
        && value.iter().all(|&byte| byte == b'\t' || byte >= 0x20 && byte != 0x7f)
}

fn is_forbidden_trailer(line: &[u8]) -> bool {
    let name = line.split(|&byte| byte == b':').next().unwrap_or_default();
    FORBIDDEN_TRAILERS.iter().any(|forbidden| name.eq_ignore_ascii_case(forbidden.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::request::parse_head;
    use crate::settings::HeadLimits;
    use std::io::Cursor;

    /// A stream that yields its input in pieces of `step` bytes and swallows writes.
    struct Trickle {
        input: Cursor<Vec<u8>>,
        step: usize,
        written: Vec<u8>,
    }

    impl Read for Trickle {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let step = self.step.min(buf.len());
            self.input.read(&mut buf[..step])
        }
    }

    impl Write for Trickle {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.written.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn read_body(wire: &[u8], step: usize) -> (Result<Vec<u8>, HttpError>, Vec<u8>) {
        read_body_within(wire, step, None)
    }

    fn read_body_within(wire: &[u8], step: usize, limit: Option<u64>) -> (Result<Vec<u8>, HttpError>, Vec<u8>) {
        let (request, length) = parse_head(wire, &HeadLimits::default()).unwrap().unwrap();
        let stream = Trickle { input: Cursor::new(wire[length..].to_vec()), step, written: Vec::new() };
        let mut conn = Connection::new(stream);
        let mut reader = match BodyReader::new(&request, limit) {
            Ok(reader) => reader,
            Err(err) => return (Err(err), Vec::new()),
        };
        let mut body = Vec::new();
        let result = loop {
            match reader.read(&mut conn, 7) {
                Ok(bytes) if bytes.is_empty() => break Ok(body),
                Ok(bytes) => body.extend_from_slice(&bytes),
                Err(err) => break Err(err),
            }
        };
        (result, conn.into_stream().written)
    }

    const CHUNKED: &[u8] = b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5;name=value\r\nhello\r\n6\r\n world\r\n0\r\nChecksum: x\r\n\r\n";

    #[test]
    fn chunked_body_is_decoded_whatever_the_read_sizes() {
        for step in [1, 2, 3, 1000] {
            assert_eq!(read_body(CHUNKED, step).0.unwrap(), b"hello world", "step {step}");
        }
    }

    #[test]
    fn content_length_body_is_read_exactly() {
        let wire = b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhelloGET / HTTP/1.1\r\n";
        assert_eq!(read_body(wire, 1).0.unwrap(), b"hello");
    }

    fn chunked_status(chunks: &[u8]) -> Option<u16> {
        let mut wire = b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        wire.extend_from_slice(chunks);
        read_body(&wire, 4).0.err().and_then(|err| err.status())
    }

    #[test]
    fn malformed_chunk_sizes_are_400() {
        for case in [
            "zz\r\nhello\r\n0\r\n\r\n",
            "-5\r\nhello\r\n0\r\n\r\n",
            "+5\r\nhello\r\n0\r\n\r\n",
            "6_0\r\n",
            "0x5\r\nhello\r\n0\r\n\r\n",
            " 5\r\nhello\r\n0\r\n\r\n",
            "5 x\r\nhello\r\n0\r\n\r\n",
            "0 \r\n\r\n",
            "\r\n",
            " ;foo=bar\r\n",
        ] {
            assert_eq!(chunked_status(case.as_bytes()), Some(400), "{case:?}");
        }
    }

    #[test]
    fn overflowing_chunk_size_is_400() {
        assert_eq!(chunked_status(b"10000000000000000\r\n"), Some(400));
        assert_eq!(chunked_status(b"ffffffffffffffffff\r\n"), Some(400));
    }

    #[test]
    fn chunk_data_without_crlf_is_400() {
        assert_eq!(chunked_status(b"5\r\nhelloXX0\r\n\r\n"), Some(400));
        assert_eq!(chunked_status(b"5\r\nhello\n0\r\n\r\n"), Some(400));
    }

    #[test]
    fn chunk_lines_with_bare_lf_or_bare_cr_are_400() {
        assert_eq!(chunked_status(b"5\nhello\r\n0\r\n\r\n"), Some(400));
        assert_eq!(chunked_status(b"5;a=\rb\r\nhello\r\n0\r\n\r\n"), Some(400));
        assert_eq!(chunked_status(b"5\r\nhello\r\n0\r\nX: y\n\r\n"), Some(400));
    }

    #[test]
    fn body_ending_early_is_400() {
        assert_eq!(chunked_status(b"5\r\nhel"), Some(400));
        assert_eq!(chunked_status(b"5\r\nhello\r\n0\r\n"), Some(400));
    }

    #[test]
    fn unbounded_chunk_extensions_are_400() {
        let long_line = format!("1;{}\r\na\r\n0\r\n\r\n", "x".repeat(9000));
        assert_eq!(chunked_status(long_line.as_bytes()), Some(400));
        let extension = format!(";{}", "x".repeat(4000));
        let many: String = (0..5).map(|_| format!("1{extension}\r\na\r\n")).collect();
        assert_eq!(chunked_status(format!("{many}0\r\n\r\n").as_bytes()), Some(400));
    }

    #[test]
    fn quoted_chunk_extensions_are_accepted() {
        let wire =
            b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5;name=\"a b\";x\r\nhello\r\n000\r\n\r\n";
        assert_eq!(read_body(wire, 3).0.unwrap(), b"hello");
    }

    /// A stream that yields one packet per read.
    struct Packets {
        packets: std::collections::VecDeque<Vec<u8>>,
    }

    impl Read for Packets {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let Some(packet) = self.packets.front_mut() else { return Ok(0) };
            let count = packet.len().min(buf.len());
            buf[..count].copy_from_slice(&packet[..count]);
            packet.drain(..count);
            if packet.is_empty() {
                self.packets.pop_front();
            }
            Ok(count)
        }
    }

    impl Write for Packets {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn chunked_body_whose_packets_end_inside_size_lines_keeps_the_buffer_small() {
        // Chunks of 4000 bytes (`fa0`), each packet ending after the `f` of the next size line.
        let chunks = 2048;
        let mut packets = std::collections::VecDeque::from([b"f".to_vec()]);
        for index in 0..chunks {
            let mut packet = b"a0\r\n".to_vec();
            packet.extend(std::iter::repeat_n(b'x', 4000));
            packet.extend_from_slice(if index + 1 == chunks { b"\r\n0\r\n\r\n" } else { b"\r\nf" });
            packets.push_back(packet);
        }
        let (request, _) =
            parse_head(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n", &HeadLimits::default())
                .unwrap()
                .unwrap();
        let mut conn = Connection::new(Packets { packets });
        let mut reader = BodyReader::new(&request, None).unwrap();
        let (mut total, mut most_held) = (0, 0);
        loop {
            let bytes = reader.read(&mut conn, 64 * 1024).unwrap();
            if bytes.is_empty() {
                break;
            }
            total += bytes.len();
            most_held = most_held.max(conn.held());
        }
        assert_eq!(total, chunks * 4000);
        assert!(most_held < 64 * 1024, "the buffer grew to {most_held} bytes for a {total}-byte body");
    }

    #[test]
    fn drain_never_sends_continue() {
        let wire = b"POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nok";
        let (request, length) = parse_head(wire, &HeadLimits::default()).unwrap().unwrap();
        let stream = Trickle { input: Cursor::new(wire[length..].to_vec()), step: 1, written: Vec::new() };
        let mut conn = Connection::new(stream);
        let mut reader = BodyReader::new(&request, None).unwrap();
        assert!(reader.continue_pending());
        assert!(reader.drain(&mut conn, 1024));
        assert!(conn.into_stream().written.is_empty(), "no 100 Continue after the response");
    }

    #[test]
    fn framing_fields_in_trailers_are_400() {
        for name in ["Content-Length", "Transfer-Encoding", "Host", "trailer"] {
            assert_eq!(chunked_status(format!("0\r\n{name}: 1\r\n\r\n").as_bytes()), Some(400), "{name}");
        }
        assert_eq!(chunked_status(b"0\r\nVary: *\r\nContent-Type: text/plain\r\n\r\n"), None);
        let too_many: String = (0..=MAX_TRAILERS).map(|index| format!("X-{index}: v\r\n")).collect();
        assert_eq!(chunked_status(format!("0\r\n{too_many}\r\n").as_bytes()), Some(400), "101 trailer fields");
    }

    #[test]
    fn content_length_over_the_body_limit_is_413_before_any_read() {
        let wire = b"POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 11\r\n\r\nhello world";
        let (result, written) = read_body_within(wire, 4, Some(10));
        assert_eq!(result.err().and_then(|err| err.status()), Some(413));
        assert!(written.is_empty(), "no 100 Continue for a body that is refused");
        assert_eq!(read_body_within(wire, 4, Some(11)).0.unwrap(), b"hello world");
    }

    #[test]
    fn chunked_body_growing_past_the_limit_is_413() {
        let (result, _) = read_body_within(CHUNKED, 4, Some(10));
        assert_eq!(result.err().and_then(|err| err.status()), Some(413));
        assert_eq!(read_body_within(CHUNKED, 4, Some(11)).0.unwrap(), b"hello world");
    }

    #[test]
    fn continue_is_sent_before_the_first_read_only() {
        let wire = b"POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nok";
        let (body, written) = read_body(wire, 1);
        assert_eq!(body.unwrap(), b"ok");
        assert_eq!(written, b"HTTP/1.1 100 Continue\r\n\r\n");
    }
}
