//! The vocabulary of a request head that the parser and its helpers share: the HTTP version, how the body is
//! framed, and what a token byte is. It imports nothing, so the parts of `http` that read a head (the request
//! line, the fields, the framing, the chunk sizes) and the response writer all stand on it.

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

/// RFC 9110 `tchar`.
pub(super) fn is_token_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}
