//! The request target (RFC 9112 section 3.2) in its four forms, and the Host value it may stand in for.

use std::net::Ipv6Addr;

use percent_encoding::percent_decode_str;

use super::error::HttpError;

/// A request target taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct TargetParts {
    /// The path, still percent-encoded: `/` for an absolute-form target without one, `*` for asterisk-form,
    /// empty for authority-form.
    pub path: String,
    /// What follows `?`, as sent, without a fragment.
    pub query: String,
    /// The host and port of an absolute-form or authority-form target.
    pub authority: Option<String>,
}

/// Checks `target` against the form its method allows: origin-form (`/path?query`) and absolute-form
/// (`http://host/path?query`, without userinfo) for any method, authority-form (`host:port`) only for
/// CONNECT, and `*` only for OPTIONS. A fragment, which clients should not send, is ignored as Gunicorn does.
/// Every form is visible ASCII (RFC 3986): a byte outside it, such as raw UTF-8, must be percent-encoded. A path
/// with a dot segment is refused (see `has_dot_segment`).
pub(super) fn parse(method: &str, target: &str) -> Result<TargetParts, HttpError> {
    let invalid = |why: &str| HttpError::BadRequest(format!("invalid request target {target:?}: {why}"));
    if !target.bytes().all(|byte| byte.is_ascii_graphic()) {
        return Err(invalid("a byte outside visible ASCII (percent-encode it)"));
    }
    if method == "CONNECT" {
        if !is_valid_host(target) || !target.rsplit_once(':').is_some_and(|(_, port)| is_port(port)) {
            return Err(invalid("CONNECT takes host:port"));
        }
        return Ok(TargetParts { path: String::new(), query: String::new(), authority: Some(target.to_string()) });
    }
    if target == "*" {
        if method != "OPTIONS" {
            return Err(invalid("`*` is only for OPTIONS"));
        }
        return Ok(TargetParts { path: "*".into(), query: String::new(), authority: None });
    }
    let without_fragment = target.split('#').next().unwrap_or_default();
    let (authority, path_and_query) = if without_fragment.starts_with('/') {
        (None, without_fragment)
    } else if let Some(rest) = strip_scheme(without_fragment) {
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        let authority = &rest[..end];
        if authority.contains('@') {
            return Err(invalid("userinfo in a target is refused (RFC 9110 section 4.2.4)"));
        }
        if authority.is_empty() || !is_valid_host(authority) {
            return Err(invalid("malformed authority"));
        }
        (Some(authority.to_string()), &rest[end..])
    } else {
        return Err(invalid("neither a path nor an absolute http(s) URI"));
    };
    let (path, query) = path_and_query.split_once('?').unwrap_or((path_and_query, ""));
    let path = if path.is_empty() { "/" } else { path };
    if has_dot_segment(path) {
        return Err(invalid("a `.` or `..` segment in the path"));
    }
    Ok(TargetParts { path: path.to_string(), query: query.to_string(), authority })
}

/// Whether a segment of `path` is `.` or `..`, as sent or percent-encoded (`%2e`, and `%2f` for a slash, as
/// routing decodes the path). Clients resolve dot segments before they send a path; a proxy in front that resolves
/// such a path where wasmcorn routes it as sent would apply the rules of one app's path to a request that reaches
/// another (`/admin/../index.html`).
fn has_dot_segment(path: &str) -> bool {
    if !path.bytes().any(|byte| byte == b'.' || byte == b'%') {
        return false;
    }
    let decoded = percent_decode_str(path).decode_utf8_lossy();
    decoded.split('/').any(|segment| segment == "." || segment == "..")
}

fn strip_scheme(target: &str) -> Option<&str> {
    ["http://", "https://"].iter().find_map(|scheme| {
        let head = target.get(..scheme.len())?;
        head.eq_ignore_ascii_case(scheme).then(|| &target[scheme.len()..])
    })
}

/// `uri-host [ ":" port ]` (RFC 9110 section 7.2): a registered name of unreserved, sub-delims and
/// percent-encoded characters, or an IPv6 address in brackets; empty is allowed (a target without authority), but
/// not a port without a host (RFC 9110 section 4.2.1: an http URI's host is never empty).
pub(super) fn is_valid_host(host: &str) -> bool {
    let (name, port) = match host.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((literal, after)) => {
                if literal.parse::<Ipv6Addr>().is_err() {
                    return false;
                }
                match after {
                    "" => return true,
                    _ => ("", after.strip_prefix(':').unwrap_or("x")),
                }
            }
            None => return false,
        },
        None => match host.rsplit_once(':') {
            Some(("", _)) => return false,
            Some((name, port)) => (name, port),
            None => (host, ""),
        },
    };
    let name_ok = name.bytes().all(|byte| byte.is_ascii_alphanumeric() || b"-._~%!$&'()*+,;=".contains(&byte));
    let port_ok = port.is_empty() || is_port(port);
    name_ok && port_ok && (host.contains(':') || port.is_empty())
}

fn is_port(port: &str) -> bool {
    !port.is_empty() && port.len() <= 5 && port.bytes().all(|byte| byte.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(method: &str, target: &str) -> Option<(String, String, Option<String>)> {
        parse(method, target).ok().map(|parts| (parts.path, parts.query, parts.authority))
    }

    #[test]
    fn origin_form_keeps_path_and_query_raw() {
        assert_eq!(parts("GET", "/a%20b?x=1#frag"), Some(("/a%20b".into(), "x=1".into(), None)));
        assert_eq!(parts("GET", "///keeping_slashes"), Some(("///keeping_slashes".into(), "".into(), None)));
    }

    #[test]
    fn absolute_form_gives_path_and_authority() {
        assert_eq!(parts("GET", "http://example.com/p?q"), Some(("/p".into(), "q".into(), Some("example.com".into()))));
        assert_eq!(parts("GET", "HTTPS://example.com"), Some(("/".into(), "".into(), Some("example.com".into()))));
        assert_eq!(parts("GET", "http://[::1]:8080/foo"), Some(("/foo".into(), "".into(), Some("[::1]:8080".into()))));
        // An http URI's host is never empty (RFC 9110 section 4.2.1), with a port or without.
        for empty in ["http:///p", "http://:80/p", "http://[:]/p"] {
            assert_eq!(parts("GET", empty), None, "{empty}");
        }
        assert_eq!(parts("CONNECT", ":443"), None);
    }

    #[test]
    fn a_path_with_a_dot_segment_is_refused_as_sent_or_encoded() {
        for path in
            ["/admin/../index.html", "/a/./b", "/..", "/.", "/a/%2e%2E/b", "/a%2F..%2Fb", "/x/.%2e", "http://h/a/../b"]
        {
            assert_eq!(parts("GET", path), None, "{path}");
        }
        for path in ["/a.b/c..d/...", "/.well-known/x", "/a/%2e%2e%2e", "/a/b?x=/../y", "/v1.2/"] {
            assert!(parts("GET", path).is_some(), "{path}");
        }
    }

    #[test]
    fn absolute_form_with_userinfo_or_other_scheme_is_refused() {
        assert_eq!(parts("GET", "http://user:pass@example.com/"), None);
        assert_eq!(parts("GET", "s://]ufd/:"), None);
        assert_eq!(parts("GET", "ftp://example.com/"), None);
        assert_eq!(parts("GET", "http:///nohost"), None);
    }

    #[test]
    fn bytes_outside_visible_ascii_are_refused() {
        assert_eq!(parts("GET", "/\u{3b4}\u{b6}/"), None);
        assert_eq!(parts("GET", "/\u{e0}%20k"), None);
        assert_eq!(parts("GET", "http://ex\u{e9}.test/"), None);
        assert_eq!(parts("GET", "/%CE%B4%C2%B6/"), Some(("/%CE%B4%C2%B6/".into(), "".into(), None)));
    }

    #[test]
    fn relative_target_is_refused() {
        assert_eq!(parts("GET", "foo/bar"), None);
    }

    #[test]
    fn asterisk_form_only_for_options() {
        assert_eq!(parts("OPTIONS", "*"), Some(("*".into(), "".into(), None)));
        assert_eq!(parts("GET", "*"), None);
    }

    #[test]
    fn authority_form_only_for_connect() {
        assert_eq!(parts("CONNECT", "example.com:443"), Some(("".into(), "".into(), Some("example.com:443".into()))));
        assert_eq!(parts("CONNECT", "[::1]:443").map(|parts| parts.2), Some(Some("[::1]:443".into())));
        assert_eq!(parts("GET", "example.com:443"), None);
        assert_eq!(parts("CONNECT", "/path"), None);
        assert_eq!(parts("CONNECT", "example.com"), None);
    }

    #[test]
    fn host_values_follow_rfc_9110() {
        for host in ["", "example.com", "example.com:8080", "127.0.0.1:80", "[::1]", "[::1]:8000", "a_b.test"] {
            assert!(is_valid_host(host), "{host:?} is valid");
        }
        let invalid =
            ["exa mple.com", "a/b", "a:b", "[::1", "[zz]", "a@b", "h:123456", "[::1]x", "ex\u{e9}", ":80", "[:]"];
        for host in invalid {
            assert!(!is_valid_host(host), "{host:?} is invalid");
        }
    }
}
