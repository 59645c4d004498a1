//! The head a standard `wasi:http` guest receives, built from the parsed request: the method, the scheme the
//! client used (the listener's, or what a trusted proxy's forwarding headers say), the authority it asked for
//! (an absolute-form target's, else the Host header, else the listening address), the whole target (a
//! `wasi:http` guest has no mount point: it sees the full path), and every header as received (but `Host`, which
//! the parser replaces with an absolute-form target's authority). What the
//! worker's parser accepts but a URI may not hold (`<`, `>`, a backquote in a path; a Host that is no authority) is
//! made valid here, so that a client's odd request never reads as the guest's failure: such bytes of the target
//! are percent-encoded, and such a Host gives way to the listening address.

use crate::guest::ProxyHead;
use crate::http::Request;
use crate::listener::Local;

pub(super) fn build(request: &Request, scheme: &str, local: &Local) -> ProxyHead {
    let named = request.authority.as_deref().or(request.header("host")).filter(|host| !host.is_empty());
    let named = named.filter(|host| host.parse::<http::uri::Authority>().is_ok());
    let authority = match (named, local) {
        (Some(host), _) => host.to_string(),
        (None, Local::Ip(address)) => address.to_string(),
        (None, Local::Unix(_)) => "localhost".to_string(),
    };
    let path_with_query = if request.target.starts_with('/') || request.target == "*" {
        // Without a fragment, as the path and query a WSGI guest gets (a client should send none: RFC 9112 has no
        // `#` in a request target).
        request.target.split('#').next().unwrap_or_default().to_string()
    } else if request.query.is_empty() {
        request.path.clone()
    } else {
        format!("{}?{}", request.path, request.query)
    };
    ProxyHead {
        method: request.method.clone(),
        scheme: scheme.to_string(),
        authority,
        path_with_query: valid_target(path_with_query),
        headers: request.headers.clone(),
    }
}

/// `target` as it came when a URI may hold it, else with every byte outside RFC 3986's path and query characters
/// percent-encoded (`%` itself is kept: the target's own escapes stay as they are).
fn valid_target(target: String) -> String {
    if target.parse::<http::uri::PathAndQuery>().is_ok() {
        return target;
    }
    let mut valid = String::with_capacity(target.len() + 8);
    for byte in target.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/?%".contains(&byte) {
            valid.push(char::from(byte));
        } else {
            valid.push_str(&format!("%{byte:02X}"));
        }
    }
    valid
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::request_for_tests;

    fn head(text: &str) -> ProxyHead {
        build(&request_for_tests(text.as_bytes()), "http", &Local::Ip("127.0.0.1:8000".parse().unwrap()))
    }

    #[test]
    fn origin_form_keeps_the_whole_target_and_the_host() {
        let head = head("POST /a%20b/c?x=1 HTTP/1.1\r\nHost: example.com:81\r\nX-Y: z\r\n\r\n");
        assert_eq!(head.method, "POST");
        assert_eq!(head.authority, "example.com:81");
        assert_eq!(head.path_with_query, "/a%20b/c?x=1");
        assert_eq!(head.headers, vec![("Host".into(), "example.com:81".into()), ("X-Y".into(), "z".into())]);
    }

    #[test]
    fn absolute_form_names_the_authority_and_without_host_the_listener_does() {
        let absolute = head("GET http://other.example/p?q HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!((absolute.authority.as_str(), absolute.path_with_query.as_str()), ("other.example", "/p?q"));
        let bare = head("GET / HTTP/1.0\r\n\r\n");
        assert_eq!(bare.authority, "127.0.0.1:8000");
    }

    #[test]
    fn what_a_uri_cannot_hold_is_made_valid() {
        let odd = head("GET /<a>/`b`?q=<1> HTTP/1.1\r\nHost: h:1\r\n\r\n");
        assert_eq!(odd.path_with_query, "/%3Ca%3E/%60b%60?q=%3C1%3E");
        assert_eq!(odd.authority, "h:1");
        let kept = head("GET /a%20b/{c}?x=y HTTP/1.1\r\nHost: h:1\r\n\r\n");
        assert!(kept.path_with_query.parse::<http::uri::PathAndQuery>().is_ok(), "{}", kept.path_with_query);
    }

    #[test]
    fn a_fragment_is_left_out_as_for_a_wsgi_guest() {
        assert_eq!(head("GET /admin#x HTTP/1.1\r\nHost: h\r\n\r\n").path_with_query, "/admin");
        assert_eq!(head("GET /a?q=1#f?g HTTP/1.1\r\nHost: h\r\n\r\n").path_with_query, "/a?q=1");
        assert_eq!(head("GET http://h/p?q#f HTTP/1.1\r\nHost: h\r\n\r\n").path_with_query, "/p?q");
    }
}
