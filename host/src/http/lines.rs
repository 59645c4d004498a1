//! The line-level rules of a request head: every line ends in CRLF (RFC 9112 section 2.2), and Gunicorn's
//! limits on the request line and on each field line hold, for complete lines and for a line still arriving.

use super::HttpError;
use super::request::HeadLimits;

/// Enforces the request-line and field-size limits, on complete lines and on a line still arriving. Empty lines
/// before the request line (which RFC 9112 lets a server skip) count toward the request line.
pub fn check_line_lengths(bytes: &[u8], limits: &HeadLimits) -> Result<(), HttpError> {
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

/// `check_line_lengths` for the last, incomplete line only.
pub fn check_last_line_length(bytes: &[u8], limits: &HeadLimits) -> Result<(), HttpError> {
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
pub fn check_line_endings(head: &[u8]) -> Result<(), HttpError> {
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
