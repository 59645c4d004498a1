//! The chunk-size line of a chunked body (RFC 9112 section 7.1): a size of 1 to 15 hex digits, then chunk
//! extensions held to their grammar, so that no proxy in front can read the line's end elsewhere.

use super::error::HttpError;
use super::head::is_token_byte;

/// `1*HEXDIG chunk-ext`, with at most 15 hex digits so that the size cannot overflow. Returns the size and the
/// length of the extensions.
pub(super) fn parse_chunk_size(line: &[u8]) -> Result<(u64, usize), HttpError> {
    let digits = line.iter().take_while(|byte| byte.is_ascii_hexdigit()).count();
    if digits == 0 || digits > 15 {
        return Err(HttpError::BadRequest("malformed chunk size".into()));
    }
    check_chunk_extensions(&line[digits..])?;
    let digits =
        std::str::from_utf8(&line[..digits]).map_err(|_| HttpError::BadRequest("malformed chunk size".into()))?;
    let size = u64::from_str_radix(digits, 16).map_err(|_| HttpError::BadRequest("malformed chunk size".into()))?;
    Ok((size, line.len() - digits.len()))
}

/// RFC 9112 section 7.1.1: `chunk-ext = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )`, where a
/// name is a token and a value a token or a quoted-string (RFC 9110 section 5.6.4) that closes on its line.
/// Whitespace is only allowed where an extension follows: `0 ` alone is not a chunk size.
fn check_chunk_extensions(mut rest: &[u8]) -> Result<(), HttpError> {
    let malformed = |why: &str| Err(HttpError::BadRequest(format!("malformed chunk extension: {why}")));
    while !rest.is_empty() {
        rest = skip_whitespace(rest);
        let Some(after_semicolon) = rest.strip_prefix(b";") else {
            return malformed("`;` expected");
        };
        rest = skip_whitespace(after_semicolon);
        let name = token_length(rest);
        if name == 0 {
            return malformed("an extension without a name");
        }
        rest = &rest[name..];
        let before_value = skip_whitespace(rest);
        if let Some(after_equals) = before_value.strip_prefix(b"=") {
            rest = skip_whitespace(after_equals);
            let value = match rest.first() {
                Some(b'"') => quoted_string_length(rest).ok_or_else(|| {
                    HttpError::BadRequest("malformed chunk extension: a quoted value that does not close".into())
                })?,
                _ => token_length(rest),
            };
            if value == 0 {
                return malformed("an `=` without a value");
            }
            rest = &rest[value..];
        }
        if !rest.is_empty() && skip_whitespace(rest).first() != Some(&b';') {
            return malformed("something other than `;` after an extension");
        }
    }
    Ok(())
}

fn skip_whitespace(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|&byte| byte != b' ' && byte != b'\t').unwrap_or(bytes.len());
    &bytes[start..]
}

fn token_length(bytes: &[u8]) -> usize {
    bytes.iter().take_while(|&&byte| is_token_byte(byte)).count()
}

/// The length of the quoted-string at the start of `bytes`, quotes included: `DQUOTE *( qdtext / quoted-pair )
/// DQUOTE`, with `qdtext = HTAB / SP / %x21 / %x23-5B / %x5D-7E / obs-text` and `quoted-pair = "\" ( HTAB / SP
/// / VCHAR / obs-text )`. `None` when it does not close.
fn quoted_string_length(bytes: &[u8]) -> Option<usize> {
    let mut index = 1;
    while let Some(&byte) = bytes.get(index) {
        match byte {
            b'"' => return Some(index + 1),
            b'\\' => match bytes.get(index + 1) {
                Some(&escaped) if escaped == b'\t' || escaped >= 0x20 && escaped != 0x7f => index += 2,
                _ => return None,
            },
            b'\t' | b' ' | 0x21..=0x7e | 0x80..=0xff => index += 1,
            _ => return None,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_extensions_following_rfc_9112_are_accepted() {
        for extension in
            [";a", ";a=b", " ; a = b ;c", "\t;a=\"\"", ";a=\"q \\\" \\\\ x\"", ";a=\"café\";b=token!#$%&'*+-.^_`|~"]
        {
            assert_eq!(parse_chunk_size(format!("5{extension}").as_bytes()).ok(), Some((5, extension.len())));
        }
    }

    #[test]
    fn chunk_extensions_against_rfc_9112_are_400() {
        for extension in [
            &b";"[..],
            b"; ",
            b";=a",
            b"; =a",
            b";;a",
            b";a=",
            b";a b",
            b";a=b c",
            b";a=b ",
            b";a=\"abc;b=\"def; ghi",
            b";a=\"open",
            b";a=\"x\\",
            b";a=\"x\x7f\"",
            b";a=\"x\x01\"",
            b";a=\"x\\\x01\"",
            b";a=b\"c\"",
            b";a@b",
            b";\xc3\xa9",
        ] {
            let line = [b"5", extension].concat();
            let status = parse_chunk_size(&line).err().and_then(|err| err.status());
            assert_eq!(status, Some(400), "{:?}", String::from_utf8_lossy(extension));
        }
    }
}
