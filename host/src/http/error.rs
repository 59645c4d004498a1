//! Everything that can go wrong while reading a request, and the one place that maps each case to a status.

use std::fmt;
use std::io;

#[derive(Debug)]
pub enum HttpError {
    /// The client closed the connection before sending anything: there is nobody to answer.
    Closed,
    /// Malformed request: what is wrong with it.
    BadRequest(String),
    /// The request line is longer than the limit.
    RequestLineTooLong,
    /// Too many header fields, or one too large.
    HeadersTooLarge(String),
    /// The body is larger than the limit.
    BodyTooLarge,
    /// A transfer coding wasmcorn does not implement.
    NotImplemented(String),
    /// An HTTP version other than 1.0 and 1.1.
    VersionNotSupported,
    /// An `Expect` other than `100-continue`.
    ExpectationFailed,
    /// The client was silent for longer than the client timeout.
    Timeout,
    /// A head still arriving refused to make room for newer connections: it had waited longest of the most a
    /// worker reads at once.
    Displaced,
    /// The connection failed.
    Io(io::Error),
}

impl HttpError {
    /// The status to answer with, or `None` when no answer can or should be sent.
    pub fn status(&self) -> Option<u16> {
        match self {
            HttpError::Closed | HttpError::Io(_) => None,
            HttpError::BadRequest(_) => Some(400),
            HttpError::Timeout | HttpError::Displaced => Some(408),
            HttpError::BodyTooLarge => Some(413),
            HttpError::RequestLineTooLong => Some(414),
            HttpError::ExpectationFailed => Some(417),
            HttpError::HeadersTooLarge(_) => Some(431),
            HttpError::NotImplemented(_) => Some(501),
            HttpError::VersionNotSupported => Some(505),
        }
    }

    /// Sorts an I/O error: a read that timed out is the client's silence, not a broken connection.
    pub fn from_io(err: io::Error) -> HttpError {
        match err.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => HttpError::Timeout,
            io::ErrorKind::UnexpectedEof => {
                HttpError::BadRequest("the connection closed in the middle of the request".into())
            }
            _ => HttpError::Io(err),
        }
    }
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpError::Closed => write!(f, "the client closed the connection"),
            HttpError::BadRequest(why) => write!(f, "bad request: {why}"),
            HttpError::RequestLineTooLong => write!(f, "the request line is too long"),
            HttpError::HeadersTooLarge(why) => write!(f, "request headers too large: {why}"),
            HttpError::BodyTooLarge => write!(f, "the request body is too large"),
            HttpError::NotImplemented(what) => write!(f, "not implemented: {what}"),
            HttpError::VersionNotSupported => write!(f, "HTTP version not supported"),
            HttpError::ExpectationFailed => write!(f, "unsupported expectation"),
            HttpError::Timeout => write!(f, "the client sent too little within the client timeout"),
            HttpError::Displaced => {
                write!(
                    f,
                    "the head was still arriving, the oldest a worker read, when a newer connection needed its place"
                )
            }
            HttpError::Io(err) => write!(f, "connection error: {err}"),
        }
    }
}

impl std::error::Error for HttpError {}
