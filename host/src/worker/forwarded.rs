//! Behind a proxy: what a trusted peer's (`--forwarded-allow-ips`, see `settings::TrustedProxies`)
//! `X-Forwarded-For` and secure-scheme headers say about the client, as Gunicorn reads them.

use std::net::{IpAddr, SocketAddr};

use crate::http::{HttpError, Request};
use crate::listener::Peer;
use crate::settings::TrustedProxies;

/// Gunicorn's default `secure_scheme_headers`: a header, and the value that means the client used https.
const SECURE_SCHEME_HEADERS: &[(&str, &str)] =
    &[("x-forwarded-protocol", "ssl"), ("x-forwarded-proto", "https"), ("x-forwarded-ssl", "on")];

/// Who the client is, as far as the guest is told. The address and port stay numbers: they are written out only
/// for an app that reads the environ (`REMOTE_ADDR`, `REMOTE_PORT`) and for an access log that is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Client {
    /// None for a unix-socket peer that no trusted forwarding header names.
    pub address: Option<IpAddr>,
    /// None for a unix-socket peer too, and when a proxy named the client without a port.
    pub port: Option<u16>,
    /// `http` or `https`.
    pub url_scheme: &'static str,
}

/// The client behind `peer`. From a trusted peer, the last address of `X-Forwarded-For` (the one the proxy
/// itself added; the ones before it are whatever the client claimed) becomes the remote address, and the
/// secure-scheme headers set the scheme; secure-scheme headers that contradict each other are a 400, as in
/// Gunicorn. From any other peer those headers are ignored (the guest still sees them as `HTTP_*`).
///
/// A unix-socket peer is a proxy on this machine and is trusted, as in Gunicorn; it has no address of its own.
pub(super) fn client(request: &Request, peer: Peer, trusted: &TrustedProxies) -> Result<Client, HttpError> {
    let (mut client, trusted) = match peer {
        Peer::Ip(address) => (
            Client { address: Some(address.ip()), port: Some(address.port()), url_scheme: "http" },
            trusted.trusts(address.ip()),
        ),
        Peer::Unix => (Client { address: None, port: None, url_scheme: "http" }, true),
    };
    if !trusted {
        return Ok(client);
    }
    let mut scheme_seen = false;
    for (name, value) in &request.headers {
        let Some((_, secure_value)) =
            SECURE_SCHEME_HEADERS.iter().find(|(header, _)| name.eq_ignore_ascii_case(header))
        else {
            continue;
        };
        let scheme = if value.trim().eq_ignore_ascii_case(secure_value) { "https" } else { "http" };
        if scheme_seen && scheme != client.url_scheme {
            return Err(HttpError::BadRequest("contradictory secure scheme headers".into()));
        }
        scheme_seen = true;
        client.url_scheme = scheme;
    }
    let forwarded_for = request.headers.iter().filter(|(name, _)| name.eq_ignore_ascii_case("x-forwarded-for"));
    if let Some(last) = forwarded_for.flat_map(|(_, value)| value.split(',')).last()
        && let Some((addr, port)) = parse_forwarded_address(last.trim())
    {
        client.address = Some(addr);
        client.port = port;
    }
    Ok(client)
}

/// `1.2.3.4`, `1.2.3.4:5678`, `::1` or `[::1]:5678`.
fn parse_forwarded_address(text: &str) -> Option<(IpAddr, Option<u16>)> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Some((addr.ip(), Some(addr.port())));
    }
    let bare = text.strip_prefix('[').and_then(|rest| rest.strip_suffix(']')).unwrap_or(text);
    bare.parse::<IpAddr>().ok().map(|addr| (addr, None))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::request_for_tests;

    fn client_of(fields: &str, peer: &str, trusted: &str) -> Result<Client, Option<u16>> {
        let request = request_for_tests(format!("GET / HTTP/1.1\r\nHost: h\r\n{fields}\r\n").as_bytes());
        client(&request, Peer::Ip(peer.parse().unwrap()), &trusted.parse().unwrap()).map_err(|err| err.status())
    }

    #[test]
    fn trusted_peer_gives_the_last_forwarded_address_and_the_scheme() {
        let client = client_of(
            "X-Forwarded-For: 6.6.6.6, 203.0.113.7\r\nX-Forwarded-For: 198.51.100.2:4321\r\nX-Forwarded-Proto: https\r\n",
            "127.0.0.1:5000",
            "127.0.0.1",
        )
        .unwrap();
        assert_eq!(
            client,
            Client { address: Some("198.51.100.2".parse().unwrap()), port: Some(4321), url_scheme: "https" }
        );
        let v6 = client_of("X-Forwarded-For: [2001:db8::1]\r\n", "127.0.0.1:5000", "*").unwrap();
        assert_eq!((v6.address, v6.port), (Some("2001:db8::1".parse().unwrap()), None));
    }

    #[test]
    fn untrusted_peer_forwarding_headers_are_ignored() {
        let client =
            client_of("X-Forwarded-For: 203.0.113.7\r\nX-Forwarded-Proto: https\r\n", "192.0.2.1:5000", "127.0.0.1")
                .unwrap();
        assert_eq!(
            client,
            Client { address: Some("192.0.2.1".parse().unwrap()), port: Some(5000), url_scheme: "http" }
        );
    }

    #[test]
    fn contradictory_secure_scheme_headers_are_400() {
        let result = client_of("X-Forwarded-Proto: https\r\nX-Forwarded-Ssl: off\r\n", "127.0.0.1:1", "*");
        assert_eq!(result, Err(Some(400)));
        let agreeing = client_of("X-Forwarded-Proto: https\r\nX-Forwarded-Ssl: on\r\n", "127.0.0.1:1", "*");
        assert_eq!(agreeing.map(|client| client.url_scheme), Ok("https"));
    }

    #[test]
    fn garbage_forwarded_for_keeps_the_peer() {
        let client = client_of("X-Forwarded-For: unknown\r\n", "127.0.0.1:5000", "*").unwrap();
        assert_eq!(client.address, Some("127.0.0.1".parse().unwrap()));
    }
}
