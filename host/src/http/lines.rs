//! The line-level rules of a request head: every line ends in CRLF (RFC 9112 section 2.2), and Gunicorn's
//! limits on the request line and on each field line hold, for complete lines and for a line still arriving.
//! Empty lines before the request line (which RFC 9112 lets a server skip) count toward the request line. The
//! checks go through a head once, as it arrives: each byte is looked at once, whatever the limits.

use super::error::HttpError;
use crate::settings::HeadLimits;

/// How far the checks of a head still arriving have come, so that each read checks only the bytes it brought: a
/// head that trickles in costs its length once, however long its lines may be (limits of `0` allow any length).
/// Positions count from the start of the head. `parse_head` runs a new one over a whole head.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LineScan {
    /// How many bytes of the head are checked.
    checked: usize,
    /// Where the line still arriving starts.
    line_start: usize,
    /// The length of the empty lines before the request line (they count toward it).
    leading: usize,
    /// The request line is complete.
    past_request_line: bool,
    /// The empty line that ends the head has come.
    ended: bool,
}

impl LineScan {
    /// Checks the bytes of `head` past those checked before: every line ends in CRLF, and the lines they complete
    /// or extend keep to the limits. Returns whether an empty line after the request line has come: the head may
    /// then be parsed whole. `head` must start with the bytes the earlier calls were given.
    pub(super) fn advance(&mut self, head: &[u8], limits: &HeadLimits) -> Result<bool, HttpError> {
        if self.ended {
            return Ok(true);
        }
        let from = self.checked.min(head.len());
        // From the byte before: a CR that ended the bytes checked before is only now followed by its LF or not.
        for index in from.saturating_sub(1)..head.len() {
            match head[index] {
                b'\r' if head.get(index + 1).is_some_and(|&next| next != b'\n') => {
                    return Err(HttpError::BadRequest("a bare CR in the request head".into()));
                }
                b'\n' if index >= from => {
                    if index == 0 || head[index - 1] != b'\r' {
                        return Err(HttpError::BadRequest("a line of the request head ends in a bare LF".into()));
                    }
                    if self.complete_line(index - 1, limits)? {
                        self.ended = true;
                        return Ok(true);
                    }
                    self.line_start = index + 1;
                }
                _ => {}
            }
        }
        self.checked = head.len();
        let arriving = head.len() - self.line_start - usize::from(head.ends_with(b"\r"));
        if !self.past_request_line {
            if limits.request_line_exceeded(self.leading + arriving) {
                return Err(HttpError::RequestLineTooLong);
            }
        } else if arriving > 0 {
            check_field_size(arriving, limits)?;
        }
        Ok(false)
    }

    /// Checks the line from `line_start` to its CR at `cr`; returns whether it is the empty line that ends the head.
    fn complete_line(&mut self, cr: usize, limits: &HeadLimits) -> Result<bool, HttpError> {
        let length = cr - self.line_start;
        if self.past_request_line {
            if length == 0 {
                return Ok(true);
            }
            check_field_size(length, limits)?;
        } else if length == 0 {
            self.leading += 2;
            if limits.request_line_exceeded(self.leading) {
                return Err(HttpError::RequestLineTooLong);
            }
        } else {
            self.past_request_line = true;
            if limits.request_line_exceeded(self.leading + length) {
                return Err(HttpError::RequestLineTooLong);
            }
        }
        Ok(false)
    }
}

/// Gunicorn counts a field line with its CRLF (and the request line without).
fn check_field_size(length: usize, limits: &HeadLimits) -> Result<(), HttpError> {
    if limits.field_size_exceeded(length + 2) {
        return Err(HttpError::HeadersTooLarge(format!("a header field is longer than {} bytes", limits.field_size)));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The status of the first error in a head fed in pieces, or `None`, and whether the head ended.
    type Verdict = (Option<u16>, bool);

    /// The verdict on `head` fed in pieces of `piece` bytes.
    fn fed(head: &[u8], piece: usize, limits: &HeadLimits) -> Verdict {
        let mut scan = LineScan::default();
        let mut ended = false;
        for end in (piece..head.len()).step_by(piece).chain([head.len()]) {
            match scan.advance(&head[..end], limits) {
                Ok(done) => ended = done,
                Err(err) => return (err.status(), false),
            }
        }
        (None, ended)
    }

    #[test]
    fn lines_are_held_to_their_limits_and_endings_however_the_head_arrives() {
        let limits = HeadLimits { request_line: 10, fields: 10, field_size: 10 };
        let cases: [(&[u8], Verdict); 14] = [
            (b"GET /12345\r\nX: 1", (None, false)),
            (b"GET /12345\r\nX: 1\r\n\r\nbody\n\rbare", (None, true)),
            (b"GET /123456\r\nX: 1", (Some(414), false)),
            (b"GET /123456", (Some(414), false)),
            (b"\r\n\r\nGET /1234\r\n", (Some(414), false)),
            (b"\r\n\r\nGET /1", (None, false)),
            (b"\r\n\r\n\r\n\r\n\r\n\r\n", (Some(414), false)),
            (b"GET /\r\nX: 12345\r\nY: 123456\r\n", (Some(431), false)),
            (b"GET /\r\nX: 12345\r\nY: 123456", (Some(431), false)),
            (b"GET /\r\nX: 12345\r\nY: 12345\r\n\r", (None, false)),
            (b"GET /\r\nX: 1\nY: 2\r\n", (Some(400), false)),
            (b"GET /\r\nX: 1\r\nY: 2\rZ", (Some(400), false)),
            (b"\nGET /\r\n", (Some(400), false)),
            (b"GET /\r\n\r\r\n", (Some(400), false)),
        ];
        for (head, expected) in cases {
            for piece in 1..=head.len() {
                assert_eq!(
                    fed(head, piece, &limits),
                    expected,
                    "{:?} in pieces of {piece}",
                    head.escape_ascii().to_string()
                );
            }
        }
    }

    #[test]
    fn limits_of_zero_let_a_line_grow_until_the_head_ends() {
        let limits = HeadLimits { request_line: 0, fields: 10, field_size: 0 };
        let mut head = b"\r\n".repeat(5_000);
        head.extend_from_slice(b"GET /");
        head.extend_from_slice(&b"a".repeat(100_000));
        head.extend_from_slice(b" HTTP/1.1\r\nX: ");
        head.extend_from_slice(&b"b".repeat(100_000));
        head.extend_from_slice(b"\r\n\r\n");
        assert_eq!(fed(&head, 7, &limits), (None, true));
    }

    #[test]
    fn each_byte_is_looked_at_once() {
        // The bytes checked by an earlier call are not looked at again: a bare LF put among them afterwards (which
        // a head cannot do, its bytes never change) goes unseen, while one among the new bytes is found.
        let limits = HeadLimits { request_line: 0, fields: 10, field_size: 0 };
        let mut head = b"GET / HTTP/1.1\r\nX: aaaaaaaa".to_vec();
        let mut scan = LineScan::default();
        assert_eq!(scan.advance(&head, &limits).ok(), Some(false));
        head[20] = b'\n';
        head.extend_from_slice(b"aaaa");
        assert_eq!(scan.advance(&head, &limits).ok(), Some(false), "the checked bytes were looked at again");
        head.extend_from_slice(b"a\na");
        assert_eq!(scan.advance(&head, &limits).err().and_then(|err| err.status()), Some(400));
    }
}
