//! Builds the CGI/WSGI-style environ a guest receives for a request (see `wit/wasmcorn.wit`).

use std::borrow::Cow;

use percent_encoding::percent_decode_str;

use super::forwarded::Client;
use crate::http::Request;
use crate::listener::Local;
use crate::routing::below_prefix;

/// The request's path percent-decoded (invalid UTF-8 replaced), as routing and PATH_INFO read it.
pub(super) fn decode_path(path: &str) -> String {
    percent_decode_str(path).decode_utf8_lossy().into_owned()
}

/// One environ variable: a name and a value, borrowed from the request where they can be.
pub(super) type Variable<'a> = (Cow<'a, str>, Cow<'a, str>);

/// The environ of `request` from `client`, received on `local`, for an app mounted at `script_name` (empty, or
/// a path starting with `/` and not ending with one). `path` is the request's path, decoded by `decode_path`.
/// Names and values are borrowed from the request wherever they appear in it as they are: only a header's
/// `HTTP_` name, a repeated header's joined value, a listening address and the client's are made.
pub(super) fn build<'a>(
    request: &'a Request,
    client: &'a Client,
    local: &Local,
    script_name: &'a str,
    path: &'a str,
) -> Vec<Variable<'a>> {
    let (server_name, server_port) = server_address(request, local, client.url_scheme);
    // PATH_INFO is what the path holds below the mount point (all of it, if it is not below).
    let path_info = below_prefix(path, script_name).unwrap_or(path);
    let mut environ: Vec<Variable<'a>> = Vec::with_capacity(14 + request.headers.len());
    let mut fixed = |name: &'static str, value: Cow<'a, str>| environ.push((Cow::Borrowed(name), value));
    fixed("REQUEST_METHOD", Cow::Borrowed(&request.method));
    fixed("SCRIPT_NAME", Cow::Borrowed(script_name));
    fixed("PATH_INFO", Cow::Borrowed(path_info));
    fixed("QUERY_STRING", Cow::Borrowed(&request.query));
    fixed("RAW_URI", Cow::Borrowed(&request.target));
    fixed("CONTENT_TYPE", Cow::Borrowed(request.header("content-type").unwrap_or_default()));
    fixed("CONTENT_LENGTH", Cow::Borrowed(request.header("content-length").unwrap_or_default()));
    fixed("SERVER_NAME", server_name);
    fixed("SERVER_PORT", server_port);
    fixed("SERVER_PROTOCOL", Cow::Borrowed(request.version.as_str()));
    fixed("SERVER_SOFTWARE", Cow::Borrowed(concat!("wasmcorn/", env!("CARGO_PKG_VERSION"))));
    fixed("REMOTE_ADDR", Cow::Owned(client.address.map(|address| address.to_string()).unwrap_or_default()));
    fixed("REMOTE_PORT", Cow::Owned(client.port.map(|port| port.to_string()).unwrap_or_default()));
    fixed("wsgi.url_scheme", Cow::Borrowed(client.url_scheme));
    let first_header = environ.len();
    for (name, value) in &request.headers {
        // A name with `_` could pose as another header once `-` becomes `_`: drop it, as Gunicorn does.
        if name.contains('_')
            || name.eq_ignore_ascii_case("content-type")
            || name.eq_ignore_ascii_case("content-length")
        {
            continue;
        }
        let key = http_name(name);
        match environ[first_header..].iter_mut().find(|(existing, _)| *existing == key) {
            Some((_, joined)) => {
                let joined = joined.to_mut();
                joined.push(',');
                joined.push_str(value);
            }
            None => environ.push((Cow::Owned(key), Cow::Borrowed(value))),
        }
    }
    environ
}

/// A header's environ name: `HTTP_` and the name in upper case, `-` turned into `_`.
fn http_name(header: &str) -> String {
    let mut key = String::with_capacity(5 + header.len());
    key.push_str("HTTP_");
    key.extend(header.chars().map(|c| if c == '-' { '_' } else { c.to_ascii_uppercase() }));
    key
}

/// SERVER_NAME and SERVER_PORT: from an absolute-form target's authority, else the Host header, else the
/// listening address. Without a port, the scheme's default.
fn server_address<'a>(request: &'a Request, local: &Local, scheme: &str) -> (Cow<'a, str>, Cow<'a, str>) {
    let authority = request.authority.as_deref().or(request.header("host")).filter(|host| !host.is_empty());
    let default_port = if scheme == "https" { "443" } else { "80" };
    let Some(host) = authority else {
        return match local {
            Local::Ip(address) => (address.ip().to_string().into(), address.port().to_string().into()),
            // A unix socket has no port, and PEP 3333's SERVER_PORT is never empty: the scheme's, as in Gunicorn.
            Local::Unix(path) => (path.display().to_string().into(), Cow::Borrowed(default_port)),
        };
    };
    let (name, port) = match host.rsplit_once(':') {
        Some((name, port))
            if !name.is_empty()
                && !port.is_empty()
                && port.bytes().all(|byte| byte.is_ascii_digit())
                && !name.ends_with(':') =>
        {
            (name, port)
        }
        Some((name, "")) => (name, default_port),
        _ => (host, default_port),
    };
    (Cow::Borrowed(name.trim_start_matches('[').trim_end_matches(']')), Cow::Borrowed(port))
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;
    use crate::http::request_for_tests;

    fn environ_mounted(head: &str, script_name: &str) -> Vec<(String, String)> {
        let request = request_for_tests(head.as_bytes());
        let client = Client { address: Some(IpAddr::from([10, 0, 0, 9])), port: Some(5555), url_scheme: "http" };
        let path = decode_path(&request.path);
        let environ = build(&request, &client, &Local::Ip("127.0.0.1:8000".parse().unwrap()), script_name, &path);
        environ.into_iter().map(|(name, value)| (name.into_owned(), value.into_owned())).collect()
    }

    fn environ(head: &str) -> Vec<(String, String)> {
        environ_mounted(head, "")
    }

    fn get<'a>(environ: &'a [(String, String)], key: &str) -> Option<&'a str> {
        environ.iter().find(|(name, _)| name == key).map(|(_, value)| value.as_str())
    }

    #[test]
    fn path_is_decoded_and_query_kept_raw() {
        let environ = environ("GET /a%20b/%C3%A9?x=%20y HTTP/1.1\r\nHost: example.com:8080\r\n\r\n");
        assert_eq!(get(&environ, "PATH_INFO"), Some("/a b/é"));
        assert_eq!(get(&environ, "QUERY_STRING"), Some("x=%20y"));
        assert_eq!(get(&environ, "RAW_URI"), Some("/a%20b/%C3%A9?x=%20y"));
        assert_eq!(get(&environ, "SERVER_NAME"), Some("example.com"));
        assert_eq!(get(&environ, "SERVER_PORT"), Some("8080"));
        assert_eq!(get(&environ, "REMOTE_ADDR"), Some("10.0.0.9"));
        assert_eq!(get(&environ, "REMOTE_PORT"), Some("5555"));
    }

    #[test]
    fn headers_become_http_variables_joined_and_underscores_dropped() {
        let environ = environ(
            "GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: a\r\nx-forwarded-for: b\r\nX_Forwarded_For: evil\r\nContent-Type: text/plain\r\n\r\n",
        );
        assert_eq!(get(&environ, "HTTP_X_FORWARDED_FOR"), Some("a,b"));
        assert_eq!(get(&environ, "CONTENT_TYPE"), Some("text/plain"));
        assert_eq!(get(&environ, "HTTP_CONTENT_TYPE"), None);
        assert_eq!(get(&environ, "HTTP_HOST"), Some("h"));
    }

    #[test]
    fn without_host_the_listening_address_is_the_server() {
        let environ = environ("GET / HTTP/1.0\r\n\r\n");
        assert_eq!(get(&environ, "SERVER_NAME"), Some("127.0.0.1"));
        assert_eq!(get(&environ, "SERVER_PORT"), Some("8000"));
    }

    #[test]
    fn without_host_on_a_unix_socket_the_port_is_the_schemes() {
        let request = request_for_tests(b"GET / HTTP/1.0\r\n\r\n");
        let local = Local::Unix("/run/app.sock".into());
        for scheme in ["http", "https"] {
            let client = Client { address: None, port: None, url_scheme: scheme };
            let environ = build(&request, &client, &local, "", "/");
            let get = |key: &str| environ.iter().find(|(name, _)| name == key).map(|(_, value)| value.to_string());
            assert_eq!(get("SERVER_NAME").as_deref(), Some("/run/app.sock"));
            let port = if scheme == "https" { "443" } else { "80" };
            assert_eq!(get("SERVER_PORT").as_deref(), Some(port), "never empty (PEP 3333)");
        }
    }

    #[test]
    fn script_name_is_stripped_from_path_info_at_a_segment() {
        let mounted = |path: &str| {
            let environ = environ_mounted(&format!("GET {path} HTTP/1.1\r\nHost: h\r\n\r\n"), "/app");
            (get(&environ, "SCRIPT_NAME").unwrap().to_string(), get(&environ, "PATH_INFO").unwrap().to_string())
        };
        assert_eq!(mounted("/app/x%20y"), ("/app".into(), "/x y".into()));
        assert_eq!(mounted("/app"), ("/app".into(), "".into()));
        assert_eq!(mounted("/application"), ("/app".into(), "/application".into()));
        assert_eq!(mounted("/other"), ("/app".into(), "/other".into()));
    }

    #[test]
    fn absolute_form_authority_names_the_server() {
        let environ = environ("GET http://example.com:81/p HTTP/1.1\r\nHost: other\r\n\r\n");
        assert_eq!(get(&environ, "SERVER_NAME"), Some("example.com"));
        assert_eq!(get(&environ, "SERVER_PORT"), Some("81"));
        assert_eq!(get(&environ, "PATH_INFO"), Some("/p"));
        assert_eq!(get(&environ, "RAW_URI"), Some("http://example.com:81/p"));
    }

    #[test]
    fn ipv6_host_and_default_port() {
        let environ = environ("GET / HTTP/1.1\r\nHost: [::1]\r\n\r\n");
        assert_eq!(get(&environ, "SERVER_NAME"), Some("::1"));
        assert_eq!(get(&environ, "SERVER_PORT"), Some("80"));
    }
}
