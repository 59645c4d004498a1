//! Builds the CGI/WSGI-style environ a guest receives for a request (see `wit/wasmcorn.wit`).

use percent_encoding::percent_decode_str;

use crate::http::Request;
use crate::listener::{Local, Peer};

pub fn build(request: &Request, peer: &Peer, local: &Local) -> Vec<(String, String)> {
    let (server_name, server_port) = server_address(request, local);
    let (remote_addr, remote_port) = match peer {
        Peer::Ip(address) => (address.ip().to_string(), address.port().to_string()),
        Peer::Unix => (String::new(), String::new()),
    };
    let mut environ: Vec<(String, String)> = vec![
        ("REQUEST_METHOD".into(), request.method.clone()),
        ("SCRIPT_NAME".into(), String::new()),
        ("PATH_INFO".into(), percent_decode_str(&request.path).decode_utf8_lossy().into_owned()),
        ("QUERY_STRING".into(), request.query.clone()),
        ("RAW_URI".into(), request.target.clone()),
        ("CONTENT_TYPE".into(), request.header("content-type").unwrap_or_default().to_string()),
        ("CONTENT_LENGTH".into(), request.header("content-length").unwrap_or_default().to_string()),
        ("SERVER_NAME".into(), server_name),
        ("SERVER_PORT".into(), server_port),
        ("SERVER_PROTOCOL".into(), request.version.as_str().into()),
        ("SERVER_SOFTWARE".into(), concat!("wasmcorn/", env!("CARGO_PKG_VERSION")).into()),
        ("REMOTE_ADDR".into(), remote_addr),
        ("REMOTE_PORT".into(), remote_port),
        ("wsgi.url_scheme".into(), "http".into()),
    ];
    let first_header = environ.len();
    for (name, value) in &request.headers {
        // A name with `_` could pose as another header once `-` becomes `_`: drop it, as Gunicorn does.
        if name.contains('_')
            || name.eq_ignore_ascii_case("content-type")
            || name.eq_ignore_ascii_case("content-length")
        {
            continue;
        }
        let key = format!("HTTP_{}", name.to_ascii_uppercase().replace('-', "_"));
        match environ[first_header..].iter_mut().find(|(existing, _)| *existing == key) {
            Some((_, joined)) => {
                joined.push(',');
                joined.push_str(value);
            }
            None => environ.push((key, value.clone())),
        }
    }
    environ
}

/// SERVER_NAME and SERVER_PORT: from the Host header when there is one, otherwise the listening address (a
/// unix socket's path, with no port).
fn server_address(request: &Request, local: &Local) -> (String, String) {
    let Some(host) = request.header("host").filter(|host| !host.is_empty()) else {
        return match local {
            Local::Ip(address) => (address.ip().to_string(), address.port().to_string()),
            Local::Unix(path) => (path.display().to_string(), String::new()),
        };
    };
    let (name, port) = match host.rsplit_once(':') {
        Some((name, port))
            if !name.is_empty() && port.bytes().all(|byte| byte.is_ascii_digit()) && !name.ends_with(':') =>
        {
            (name, port)
        }
        _ => (host, "80"),
    };
    (name.trim_start_matches('[').trim_end_matches(']').to_string(), port.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::request_for_tests;

    fn environ(head: &str) -> Vec<(String, String)> {
        let request = request_for_tests(head.as_bytes());
        build(&request, &Peer::Ip("10.0.0.9:5555".parse().unwrap()), &Local::Ip("127.0.0.1:8000".parse().unwrap()))
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
}
