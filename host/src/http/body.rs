//! Reads a request body as the guest asks for it: Content-Length bytes, or a chunked body decoded (RFC 9112
//! section 7.1) with bounded chunk-size lines, extensions and trailers. Sends `100 Continue` before the first read
//! when the client asked for it.

use std::io::{Read, Write};

use super::request::{Framing, Request};
use super::{Connection, HttpError};

/// The longest chunk-size line (size and extensions) and trailer field accepted.
const MAX_LINE: usize = 8190;
/// The most trailer fields accepted.
const MAX_TRAILERS: usize = 100;

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
pub struct BodyReader {
    state: State,
    send_continue: bool,
}

impl BodyReader {
    pub fn new(request: &Request) -> Self {
        let state = match request.framing {
            Framing::Length(0) => State::Done,
            Framing::Length(remaining) => State::Length { remaining },
            Framing::Chunked => State::ChunkSize,
        };
        BodyReader { state, send_continue: request.expects_continue && state != State::Done }
    }

    /// The whole body has been read.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Up to `max` bytes of the body; empty at its end.
    pub fn read<S: Read + Write>(&mut self, conn: &mut Connection<S>, max: usize) -> Result<Vec<u8>, HttpError> {
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
                    let size = parse_chunk_size(&line)?;
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
                        return Err(HttpError::HeadersTooLarge("too many trailer fields".into()));
                    } else if !is_field_line(&line) {
                        return Err(HttpError::BadRequest("malformed trailer field".into()));
                    } else {
                        self.state = State::Trailers { count: count + 1 };
                    }
                }
            }
        }
    }

    /// Reads and discards what is left of the body, up to `budget` bytes, so that the client sees the response
    /// rather than a reset. Returns whether the body was read to its end.
    pub fn drain<S: Read + Write>(&mut self, conn: &mut Connection<S>, budget: u64) -> bool {
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

/// `1*HEXDIG [ BWS ";" chunk-ext ]`, with at most 15 hex digits so that the size cannot overflow.
fn parse_chunk_size(line: &[u8]) -> Result<u64, HttpError> {
    let digits = line.iter().take_while(|byte| byte.is_ascii_hexdigit()).count();
    if digits == 0 || digits > 15 {
        return Err(HttpError::BadRequest("malformed chunk size".into()));
    }
    let rest = &line[digits..];
    let extension = rest.iter().position(|&byte| byte != b' ' && byte != b'\t').map(|start| &rest[start..]);
    match extension {
        None if rest.is_empty() => {}
        Some(extension)
            if extension.starts_with(b";")
                && extension.iter().all(|&byte| byte == b'\t' || (0x20..0x7f).contains(&byte) || byte >= 0x80) => {}
        _ => return Err(HttpError::BadRequest("malformed chunk extension".into())),
    }
    let digits =
        std::str::from_utf8(&line[..digits]).map_err(|_| HttpError::BadRequest("malformed chunk size".into()))?;
    u64::from_str_radix(digits, 16).map_err(|_| HttpError::BadRequest("malformed chunk size".into()))
}

/// `field-name ":" OWS field-value OWS` with a token name and no control bytes in the value.
fn is_field_line(line: &[u8]) -> bool {
    let Some(colon) = line.iter().position(|&byte| byte == b':') else { return false };
    let (name, value) = (&line[..colon], &line[colon + 1..]);
    !name.is_empty()
        && name.iter().all(|&byte| super::request::is_token_byte(byte))
        && value.iter().all(|&byte| byte == b'\t' || byte >= 0x20 && byte != 0x7f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::request::{HeadLimits, parse_head};
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
        let (request, length) = parse_head(wire, &HeadLimits::default()).unwrap().unwrap();
        let stream = Trickle { input: Cursor::new(wire[length..].to_vec()), step, written: Vec::new() };
        let mut conn = Connection::new(stream);
        let mut reader = BodyReader::new(&request);
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

    const CHUNKED: &[u8] = b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5;name=value\r\nhello\r\n6\r\n world\r\n0\r\nTrailer: x\r\n\r\n";

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

    #[test]
    fn malformed_chunks_are_rejected() {
        let cases: &[&[u8]] = &[
            b"zz\r\nhello\r\n0\r\n\r\n",
            b"5\r\nhelloXX0\r\n\r\n",
            b"5\nhello\r\n0\r\n\r\n",
            b"10000000000000000\r\n",
            b"5 x\r\nhello\r\n0\r\n\r\n",
            b"5\r\nhel",
        ];
        for case in cases {
            let mut wire = b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
            wire.extend_from_slice(case);
            assert_eq!(
                read_body(&wire, 4).0.err().and_then(|err| err.status()),
                Some(400),
                "{}",
                String::from_utf8_lossy(case)
            );
        }
    }

    #[test]
    fn continue_is_sent_before_the_first_read_only() {
        let wire = b"POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nok";
        let (body, written) = read_body(wire, 1);
        assert_eq!(body.unwrap(), b"ok");
        assert_eq!(written, b"HTTP/1.1 100 Continue\r\n\r\n");
    }
}
