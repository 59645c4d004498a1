//! Decides how a request body is delimited from its Content-Length and Transfer-Encoding fields (RFC 9112
//! section 6), refusing every combination a proxy in front could read differently.

use super::error::HttpError;
use super::head::{Framing, Version, is_token_byte};

/// The framing of a request's body, or why the request must be refused.
pub(super) fn decide(headers: &[(String, String)], version: Version) -> Result<Framing, HttpError> {
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
        return chunked(&transfer_encodings);
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

/// The codings must be exactly one `chunked`, last. Only SP and HTAB around a coding are optional whitespace
/// (no Unicode trimming: `\u{a0}chunked` is not chunked). Any other coding is not implemented (501).
fn chunked(transfer_encodings: &[&str]) -> Result<Framing, HttpError> {
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
    let is_chunked = |coding: &str| coding.eq_ignore_ascii_case("chunked");
    if !codings.last().is_some_and(|coding| is_chunked(coding)) {
        return Err(HttpError::BadRequest("the last transfer coding is not chunked".into()));
    }
    if codings.iter().filter(|coding| is_chunked(coding)).count() > 1 {
        return Err(HttpError::BadRequest("chunked is applied more than once".into()));
    }
    if let Some(unknown) = codings.iter().find(|coding| !is_chunked(coding)) {
        return Err(HttpError::NotImplemented(format!("transfer coding {unknown:?}")));
    }
    Ok(Framing::Chunked)
}

/// A Content-Length is 1 to 19 ASCII digits and nothing else: no sign, space, hex, underscore or list.
fn parse_content_length(value: &str) -> Result<u64, HttpError> {
    if value.is_empty() || value.len() > 19 || !value.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err(HttpError::BadRequest(format!("malformed Content-Length {value:?}")));
    }
    value.parse().map_err(|_| HttpError::BadRequest(format!("malformed Content-Length {value:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framing_of(version: Version, fields: &[(&str, &str)]) -> Result<Framing, Option<u16>> {
        let headers: Vec<(String, String)> =
            fields.iter().map(|(name, value)| (name.to_string(), value.to_string())).collect();
        decide(&headers, version).map_err(|err| err.status())
    }

    fn status(fields: &[(&str, &str)]) -> Option<u16> {
        framing_of(Version::Http11, fields).err().flatten()
    }

    #[test]
    fn content_length_and_transfer_encoding_together_is_400() {
        assert_eq!(status(&[("Content-Length", "3"), ("Transfer-Encoding", "chunked")]), Some(400));
        assert_eq!(status(&[("Transfer-Encoding", "chunked"), ("Content-Length", "0")]), Some(400));
    }

    #[test]
    fn malformed_content_length_is_400() {
        for value in
            ["-1", "+1", "-0", "0x10", "1 1", "1,1", "5, 5", "0_1", " 1", "1 ", "bla", "99999999999999999999", ""]
        {
            assert_eq!(status(&[("Content-Length", value)]), Some(400), "Content-Length {value:?}");
        }
    }

    #[test]
    fn differing_content_lengths_are_400_and_equal_ones_pass() {
        assert_eq!(status(&[("Content-Length", "1"), ("Content-Length", "2")]), Some(400));
        assert_eq!(
            framing_of(Version::Http11, &[("Content-Length", "2"), ("content-length", "2")]),
            Ok(Framing::Length(2))
        );
    }

    #[test]
    fn transfer_encoding_whose_last_coding_is_not_chunked_is_400() {
        assert_eq!(status(&[("Transfer-Encoding", "chunked, gzip")]), Some(400));
        assert_eq!(status(&[("Transfer-Encoding", "chunked"), ("Transfer-Encoding", "identity")]), Some(400));
        assert_eq!(status(&[("Transfer-Encoding", "gzip")]), Some(400));
    }

    #[test]
    fn unknown_transfer_codings_before_chunked_are_501() {
        assert_eq!(status(&[("Transfer-Encoding", "gzip, chunked")]), Some(501));
        assert_eq!(status(&[("Transfer-Encoding", "identity"), ("Transfer-Encoding", "chunked")]), Some(501));
    }

    #[test]
    fn chunked_twice_is_400() {
        assert_eq!(status(&[("Transfer-Encoding", "chunked, chunked")]), Some(400));
        assert_eq!(status(&[("Transfer-Encoding", "identity, chunked, identity, chunked")]), Some(400));
    }

    #[test]
    fn transfer_coding_with_non_token_bytes_is_400() {
        for value in ["\u{a0}chunked", "chunked\u{a0}", "chu nked", "\"chunked\"", "chunked;q=1", ",", "chunked,"] {
            assert_eq!(status(&[("Transfer-Encoding", value)]), Some(400), "Transfer-Encoding {value:?}");
        }
    }

    #[test]
    fn transfer_coding_allows_spaces_and_tabs_around_and_any_case() {
        for value in ["chunked", " chunked", "\tchunked\t", "CHUNKED", "Chunked "] {
            assert_eq!(framing_of(Version::Http11, &[("Transfer-Encoding", value)]), Ok(Framing::Chunked), "{value:?}");
        }
    }

    #[test]
    fn transfer_encoding_in_http10_is_400() {
        assert_eq!(framing_of(Version::Http10, &[("Transfer-Encoding", "chunked")]), Err(Some(400)));
    }

    #[test]
    fn no_framing_header_means_no_body() {
        assert_eq!(framing_of(Version::Http11, &[]), Ok(Framing::Length(0)));
    }
}
