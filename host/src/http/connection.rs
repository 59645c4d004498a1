//! A client connection with a read buffer: the request head is parsed from the buffer, and the body reader takes
//! what the head left over before it reads more from the stream. Each read first moves the unconsumed bytes to
//! the front, so the buffer holds at most what is unconsumed plus one read, however long the connection lasts.
//! It also keeps how far the checks of a head still arriving have come (see `lines::LineScan`).
//! A read lands in a per-thread scratch area first, zeroed once, and only the bytes that came are appended: room
//! for a read is not zeroed again in every connection's buffer for every request. It remembers whether its last
//! read found the stream drained, which tells a worker watching the socket edge-triggered whether bytes may wait.

use std::cell::RefCell;
use std::io::{self, Read, Write};

use super::error::HttpError;
use super::lines::LineScan;
use crate::settings::HeadLimits;

const READ_SIZE: usize = 16 * 1024;

thread_local! {
    /// Where each read of this thread lands before its bytes are appended to their connection's buffer.
    static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0; READ_SIZE].into_boxed_slice());
}

pub(crate) struct Connection<S> {
    stream: S,
    buffer: Vec<u8>,
    /// Where unconsumed bytes start in `buffer`.
    start: usize,
    /// How far the checks of the head at the start of the unconsumed bytes have come.
    head_scan: LineScan,
    /// The last read took everything the stream had then (it came back short of the room it had, or found
    /// nothing): no byte that arrived before it is left unread. False before the first read.
    drained: bool,
}

impl<S> Connection<S> {
    /// The same connection, with what it has buffered, over the stream `wrap` makes of its stream.
    pub(crate) fn map_stream<T>(self, wrap: impl FnOnce(S) -> T) -> Connection<T> {
        let Connection { stream, buffer, start, head_scan, drained } = self;
        Connection { stream: wrap(stream), buffer, start, head_scan, drained }
    }
}

impl<S: Read + Write> Connection<S> {
    pub(crate) fn new(stream: S) -> Self {
        Connection {
            stream,
            buffer: Vec::with_capacity(READ_SIZE),
            start: 0,
            head_scan: LineScan::default(),
            drained: false,
        }
    }

    /// A connection whose first bytes were already read (by another process, which handed it over).
    pub(crate) fn with_bytes(stream: S, bytes: Vec<u8>) -> Self {
        Connection { stream, buffer: bytes, start: 0, head_scan: LineScan::default(), drained: false }
    }

    /// The stream and every byte read from it so far, consumed or not: a request head just parsed is still at
    /// the start, until the next read from the stream.
    pub(crate) fn into_parts(self) -> (S, Vec<u8>) {
        (self.stream, self.buffer)
    }

    pub(crate) fn stream(&mut self) -> &mut S {
        &mut self.stream
    }

    #[cfg(test)]
    pub(crate) fn into_stream(self) -> S {
        self.stream
    }

    /// The bytes read but not yet consumed.
    pub(crate) fn buffered(&self) -> &[u8] {
        &self.buffer[self.start..]
    }

    /// Marks `count` buffered bytes as consumed. They stay in the buffer until the next read (see `into_parts`).
    pub(crate) fn consume(&mut self, count: usize) {
        self.start = (self.start + count).min(self.buffer.len());
        self.head_scan = LineScan::default();
    }

    /// Checks the unconsumed bytes as a request head's, past those checked by the calls before (see `LineScan`);
    /// returns whether the empty line that ends the head has come.
    pub(super) fn scan_head(&mut self, limits: &HeadLimits) -> Result<bool, HttpError> {
        self.head_scan.advance(&self.buffer[self.start..], limits)
    }

    /// Drops the consumed bytes, so that the buffer starts with the next request (what `into_parts` hands over);
    /// an empty buffer also gives its memory back, so an idle connection holds no read buffer.
    pub(crate) fn compact(&mut self) {
        self.buffer.drain(..self.start);
        self.start = 0;
        if self.buffer.is_empty() {
            self.buffer = Vec::new();
        }
    }

    /// Whether the last read took everything the stream had then (see `drained`).
    pub(crate) fn drained(&self) -> bool {
        self.drained
    }

    /// The bytes of memory the buffer holds (its capacity), consumed or not.
    pub(crate) fn held(&self) -> usize {
        self.buffer.capacity()
    }

    /// Reads more bytes from the stream into the buffer; returns how many (0 at the end of the stream). The
    /// consumed bytes are dropped first: what is left unconsumed (a line still arriving) moves to the front.
    pub(crate) fn fill(&mut self) -> Result<usize, HttpError> {
        if self.start > 0 {
            self.buffer.drain(..self.start);
            self.start = 0;
        }
        let read = SCRATCH.with(|scratch| match scratch.try_borrow_mut() {
            Ok(mut scratch) => read_into(&mut self.stream, &mut scratch, &mut self.buffer),
            // Only a read made while another read of this thread is under way finds it taken: not done here,
            // but such a read gets a scratch area of its own rather than a panic.
            Err(_) => read_into(&mut self.stream, &mut vec![0; READ_SIZE], &mut self.buffer),
        });
        // A read short of its room found the socket's queue empty; one that would block found nothing at all.
        self.drained = match &read {
            Ok(count) => *count < READ_SIZE,
            Err(err) => err.kind() == io::ErrorKind::WouldBlock,
        };
        read.map_err(HttpError::from_io)
    }

    /// Takes up to `max` bytes: buffered ones first, otherwise one read from the stream.
    pub(crate) fn read_some(&mut self, max: usize) -> Result<Vec<u8>, HttpError> {
        if self.buffered().is_empty() && self.fill()? == 0 {
            return Err(HttpError::BadRequest("the connection closed in the middle of the body".into()));
        }
        let count = self.buffered().len().min(max);
        let bytes = self.buffered()[..count].to_vec();
        self.consume(count);
        Ok(bytes)
    }

    /// Writes all of `bytes` to the client.
    pub(crate) fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Writes all of `bytes` to the client; on failure, says how many went before it.
    pub(crate) fn write_all_counted(&mut self, mut bytes: &[u8]) -> Result<(), (usize, io::Error)> {
        let mut written = 0;
        while !bytes.is_empty() {
            match self.stream.write(bytes) {
                Ok(0) => return Err((written, io::Error::from(io::ErrorKind::WriteZero))),
                Ok(count) => {
                    written += count;
                    bytes = &bytes[count.min(bytes.len())..];
                }
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return Err((written, err)),
            }
        }
        Ok(())
    }
}

/// One read from `stream` into `scratch`, whose bytes are appended to `buffer`; returns how many.
fn read_into(stream: &mut impl Read, scratch: &mut [u8], buffer: &mut Vec<u8>) -> io::Result<usize> {
    loop {
        match stream.read(scratch) {
            Ok(count) => {
                let count = count.min(scratch.len());
                buffer.extend_from_slice(&scratch[..count]);
                return Ok(count);
            }
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(err),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;

    /// A stream that reads from `input` and takes writes.
    struct Duplex(Cursor<Vec<u8>>);

    impl Read for Duplex {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.0.read(buf)
        }
    }

    impl Write for Duplex {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn reads_append_only_what_came_one_read_at_a_time() {
        let input: Vec<u8> = (0..READ_SIZE + 100).map(|index| (index % 251) as u8).collect();
        let mut conn = Connection::new(Duplex(Cursor::new(input.clone())));
        assert!(!conn.drained(), "nothing read yet");
        assert_eq!(conn.fill().unwrap(), READ_SIZE);
        assert!(!conn.drained(), "a read that filled its room may have left bytes behind");
        assert_eq!(conn.buffered(), &input[..READ_SIZE]);
        conn.consume(READ_SIZE - 10);
        assert_eq!(conn.fill().unwrap(), 100);
        assert!(conn.drained(), "a short read took all there was");
        assert_eq!(conn.buffered(), &input[READ_SIZE - 10..], "the unconsumed tail, then the new bytes");
        assert_eq!(conn.fill().unwrap(), 0, "the end of the stream");
        assert_eq!(conn.buffered().len(), 110);
    }
}
