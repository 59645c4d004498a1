//! The line-level rules of a request head: every line ends in CRLF (RFC 9112 section 2.2), and Gunicorn's
//! limits on the request line and on each field line hold, for complete lines and for a line still arriving.

use super::error::HttpError;
use crate::settings::HeadLimits;

/// Enforces the request-line and field-size limits, on complete lines and on a line still arriving. Empty lines
/// before the request line (which RFC 9112 lets a server skip) count toward the request line.
pub(super) fn check_line_lengths(bytes: &[u8], limits: &HeadLimits) -> Result<(), HttpError> {
    let leading = leading_empty_lines(bytes);
    for (index, line) in bytes[leading..].split(|&byte| byte == b'\n').enumerate() {
        let complete = line.len() < bytes.len() - leading || bytes.ends_with(b"\n");
        let length = line.strip_suffix(b"\r").unwrap_or(line).len();
        if index == 0 && limits.request_line_exceeded(leading + length) {
            return Err(HttpError::RequestLineTooLong);
        }
        // Gunicorn counts a field line with its CRLF (and the request line without).
        if index > 0 && limits.field_size_exceeded(length + 2) {
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

/// `check_line_lengths` and `check_line_endings` for the lines that the bytes from `from` on complete or start,
/// in a head that does not end in them: the lines before were checked when they arrived, so a head that trickles
/// in costs its length once, not once per read.
pub(super) fn check_new_lines(bytes: &[u8], from: usize, limits: &HeadLimits) -> Result<(), HttpError> {
    let leading = leading_empty_lines(bytes);
    if from <= leading {
        // Nothing before `from` but empty lines: the request line is new.
        check_line_endings(bytes)?;
        return check_line_lengths(bytes, limits);
    }
    let line_start = bytes[..from].iter().rposition(|&byte| byte == b'\n').map_or(0, |end| end + 1);
    check_line_endings(&bytes[line_start..])?;
    for (index, line) in bytes[line_start..].split(|&byte| byte == b'\n').enumerate() {
        let length = line.strip_suffix(b"\r").unwrap_or(line).len();
        if index == 0 && line_start <= leading {
            if limits.request_line_exceeded(leading + length) {
                return Err(HttpError::RequestLineTooLong);
            }
        } else if limits.field_size_exceeded(length + 2) {
            return Err(HttpError::HeadersTooLarge(format!(
                "a header field is longer than {} bytes",
                limits.field_size
            )));
        }
    }
    Ok(())
}

/// `check_line_lengths` for the last, incomplete line only.
pub(super) fn check_last_line_length(bytes: &[u8], limits: &HeadLimits) -> Result<(), HttpError> {
    let leading = leading_empty_lines(bytes);
    let last_start = bytes.iter().rposition(|&byte| byte == b'\n').map_or(0, |end| end + 1);
    if last_start <= leading {
        let length = bytes.len() - usize::from(bytes.ends_with(b"\r"));
        if limits.request_line_exceeded(length) {
            return Err(HttpError::RequestLineTooLong);
        }
    } else if limits.field_size_exceeded(bytes.len() - last_start - usize::from(bytes.ends_with(b"\r")) + 2) {
        return Err(HttpError::HeadersTooLarge(format!("a header field is longer than {} bytes", limits.field_size)));
    }
    Ok(())
}

/// The length of the empty lines (CRLF) before the request line.
fn leading_empty_lines(bytes: &[u8]) -> usize {
    let mut leading = 0;
    while bytes[leading..].starts_with(b"\r\n") {
        leading += 2;
    }
    leading
}

/// Every line of a head ends in CRLF (RFC 9112 section 2.2): a bare LF or a bare CR is an error, never a line end.
/// A CR as the last byte of an incomplete head may still be followed by its LF.
pub(super) fn check_line_endings(head: &[u8]) -> Result<(), HttpError> {
    for (index, &byte) in head.iter().enumerate() {
        let next = head.get(index + 1);
        if byte == b'\r' && next.is_some_and(|&next| next != b'\n') {
            return Err(HttpError::BadRequest("a bare CR in the request head".into()));
        }
        if byte == b'\n' && (index == 0 || head[index - 1] != b'\r') {
            return Err(HttpError::BadRequest("a line of the request head ends in a bare LF".into()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_lines_are_held_to_their_limits_and_endings() {
        let limits = HeadLimits { request_line: 10, fields: 10, field_size: 10 };
        let status = |bytes: &[u8], from| check_new_lines(bytes, from, &limits).err().and_then(|e| e.status());
        assert_eq!(status(b"GET /12345\r\nX: 1", 3), None);
        assert_eq!(status(b"GET /123456\r\nX: 1", 3), Some(414));
        assert_eq!(status(b"\r\n\r\nGET /1234\r\n", 2), Some(414), "empty lines before count");
        assert_eq!(status(b"GET /\r\nX: 12345\r\nY: 123456\r\n", 20), Some(431));
        assert_eq!(status(b"GET /\r\nX: 12345\r\nY: 12345\r\n", 20), None);
        assert_eq!(status(b"GET /\r\nX: 1\nY: 2\r\n", 10), Some(400), "a bare LF");
        assert_eq!(status(b"GET /\r\nX: 1\r\nY: 2\rZ", 16), Some(400), "a bare CR");
        // Lines wholly before `from` were checked when they arrived.
        assert_eq!(status(b"GET /123456789\r\nX: 1\r\n", 17), None);
    }

    #[test]
    fn line_still_arriving_is_held_to_its_limit() {
        let limits = HeadLimits { request_line: 10, fields: 10, field_size: 10 };
        assert_eq!(check_last_line_length(b"GET /12345", &limits).err().and_then(|e| e.status()), None);
        assert_eq!(check_last_line_length(b"GET /123456", &limits).err().and_then(|e| e.status()), Some(414));
        assert_eq!(check_last_line_length(b"\r\nGET /12345", &limits).err().and_then(|e| e.status()), Some(414));
        assert_eq!(check_last_line_length(b"GET / HTTP/1.1\r\nX: 12345", &limits).err().and_then(|e| e.status()), None);
        assert_eq!(
            check_last_line_length(b"GET / HTTP/1.1\r\nX: 123456", &limits).err().and_then(|e| e.status()),
            Some(431)
        );
    }
}
