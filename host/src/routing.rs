//! Which hosted app a request belongs to. Each app has routes (a set of Host names, exact or `*.` wildcards,
//! and a path prefix); a request goes to the route whose host matches best (an exact name before a wildcard,
//! a longer wildcard before a shorter one, any named host before a route for every host), then to the longest
//! prefix. The matched prefix becomes `SCRIPT_NAME`. Pure logic: no sockets, no wasm.

use std::fmt;
use std::net::Ipv6Addr;

use percent_encoding::percent_decode_str;

/// The hosts a route answers for.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum HostPattern {
    /// Every host (the route names none).
    Any,
    /// `*.example.com`: any name ending in `.example.com` (not `example.com` itself), stored as `.example.com`.
    Wildcard(String),
    /// One name, in lower case.
    Exact(String),
}

impl HostPattern {
    /// Reads `name` or `*.suffix`; a name is a DNS name or an IP literal, without a port.
    pub(crate) fn parse(text: &str) -> Result<HostPattern, String> {
        let lower = text.trim_end_matches('.').to_ascii_lowercase();
        let (wildcard, name) = match lower.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, lower.as_str()),
        };
        let valid_name = !name.is_empty()
            && name.split('.').all(|label| {
                !label.is_empty() && label.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'-')
            });
        // An IPv6 literal, bracketed or not, is kept as a Host header names it: bracketed, in its canonical form
        // (`normalise_host` writes the request's so), or it would never match.
        let ipv6 = name.parse::<Ipv6Addr>().ok().or_else(|| bracketed_ipv6(name));
        if let (false, Some(address)) = (wildcard, ipv6) {
            return Ok(HostPattern::Exact(format!("[{address}]")));
        }
        let ip_literal = !wildcard && name.parse::<std::net::Ipv4Addr>().is_ok();
        if !(valid_name || ip_literal) {
            return Err(format!("{text:?} is not a host name or a *.wildcard"));
        }
        Ok(if wildcard { HostPattern::Wildcard(format!(".{name}")) } else { HostPattern::Exact(name.to_string()) })
    }

    /// How well this pattern matches `host` (already normalised): `None` when it does not; higher is better.
    fn rank(&self, host: Option<&str>) -> Option<usize> {
        match (self, host) {
            (HostPattern::Any, _) => Some(0),
            (HostPattern::Exact(name), Some(host)) if name == host => Some(usize::MAX),
            (HostPattern::Wildcard(suffix), Some(host)) if host.len() > suffix.len() && host.ends_with(suffix) => {
                Some(suffix.len())
            }
            _ => None,
        }
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostPattern::Any => write!(f, "*"),
            HostPattern::Wildcard(suffix) => write!(f, "*{suffix}"),
            HostPattern::Exact(name) => write!(f, "{name}"),
        }
    }
}

/// The address of `[an IPv6 literal]`.
fn bracketed_ipv6(text: &str) -> Option<Ipv6Addr> {
    text.strip_prefix('[').and_then(|rest| rest.strip_suffix(']')).and_then(|inner| inner.parse().ok())
}

/// A path prefix: empty (the root) or `/a/b` without a final `/`. It matches whole segments only, of the request's
/// percent-decoded path (see `worker::environ::decode_path`): a prefix written percent-encoded is decoded too.
pub(crate) fn normalise_prefix(text: &str) -> Result<String, String> {
    let decoded = percent_decode_str(text)
        .decode_utf8()
        .map_err(|_| format!("{text:?} holds percent-encoded bytes that are not UTF-8"))?;
    if !decoded.starts_with('/') {
        return Err(format!("{text:?} is not a path starting with '/'"));
    }
    if decoded.chars().any(|c| c.is_control() || c == '?' || c == '#') {
        return Err(format!("{text:?} holds a control character, '?' or '#' (once percent-decoded)"));
    }
    let prefix = decoded.trim_end_matches('/');
    // Clients resolve dot segments before they send a path (RFC 3986 section 5.2.4), and an empty one is rare:
    // a prefix holding one would route only the odd client's requests.
    if prefix.split('/').skip(1).any(|segment| matches!(segment, "" | "." | "..")) {
        return Err(format!("{text:?} holds an empty, '.' or '..' segment"));
    }
    Ok(prefix.to_string())
}

/// What follows `prefix` (see `normalise_prefix`) in `path`, if `path` lies under it: `/echo` holds `/echo`
/// (leaving `""`) and `/echo/x` (leaving `/x`), not `/echoes`; the empty prefix holds every path whole. Routing
/// matches routes with it, and the environ's PATH_INFO is what it leaves of the path under `SCRIPT_NAME`.
pub(crate) fn below_prefix<'a>(path: &'a str, prefix: &str) -> Option<&'a str> {
    path.strip_prefix(prefix).filter(|rest| rest.is_empty() || rest.starts_with('/') || prefix.is_empty())
}

/// A hosted app's place in its site (`Site::apps`), which routes lead to. It names an app within one
/// configuration only; what outlives a reload (pools, channels) goes by the app's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct AppId(pub usize);

impl AppId {
    /// Its index in `Site::apps` (and in every list kept in the same order, such as the artefacts).
    pub(crate) fn index(self) -> usize {
        self.0
    }
}

/// One route: a host pattern and a prefix, leading to an app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Route {
    pub host: HostPattern,
    pub prefix: String,
    pub app: AppId,
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.host, if self.prefix.is_empty() { "/" } else { &self.prefix })
    }
}

/// Where a request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Routed {
    pub app: AppId,
    /// The matched prefix: the request's `SCRIPT_NAME`.
    pub script_name: String,
}

/// Every route of every hosted app, and the app that takes what no route matches.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Router {
    routes: Vec<Route>,
    fallback: Option<AppId>,
    /// The fallback's `SCRIPT_NAME` (a single app's `--script-name`).
    fallback_script_name: String,
}

impl Router {
    pub(crate) fn new(routes: Vec<Route>, fallback: Option<AppId>) -> Router {
        Router { routes, fallback, fallback_script_name: String::new() }
    }

    /// One app for every request, mounted at `script_name`: the server without a manifest.
    pub(crate) fn single(script_name: &str) -> Router {
        Router { routes: Vec::new(), fallback: Some(AppId(0)), fallback_script_name: script_name.to_string() }
    }

    pub(crate) fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// The app that takes what no route matches, if any.
    pub(crate) fn fallback(&self) -> Option<AppId> {
        self.fallback
    }

    /// The app for a request to `host` (the Host header or the absolute-form authority, port allowed) and
    /// `path` (percent-decoded).
    pub(crate) fn route(&self, host: Option<&str>, path: &str) -> Option<Routed> {
        let host = host.map(normalise_host);
        let best = self
            .routes
            .iter()
            .filter(|route| below_prefix(path, &route.prefix).is_some())
            .filter_map(|route| route.host.rank(host.as_deref()).map(|rank| ((rank, route.prefix.len()), route)))
            .max_by_key(|(key, _)| *key);
        match best {
            Some((_, route)) => Some(Routed { app: route.app, script_name: route.prefix.clone() }),
            None => self.fallback.map(|app| Routed { app, script_name: self.fallback_script_name.clone() }),
        }
    }
}

/// A Host header as routes compare it: lower case, without the port or a final dot; an IPv6 literal in its
/// canonical form (`[0::1]` is `[::1]`).
pub(crate) fn normalise_host(host: &str) -> String {
    let host = host.trim();
    let without_port = if host.starts_with('[') {
        // `[::1]:8000`: the port follows the bracket.
        match host.find(']') {
            Some(end) => &host[..=end],
            None => host,
        }
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|byte| byte.is_ascii_digit()) => name,
            _ => host,
        }
    };
    match bracketed_ipv6(without_port) {
        Some(address) => format!("[{address}]"),
        None => without_port.trim_end_matches('.').to_ascii_lowercase(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(host: &str, prefix: &str, app: usize) -> Route {
        let host = if host == "*" { HostPattern::Any } else { HostPattern::parse(host).unwrap() };
        Route { host, prefix: normalise_prefix(prefix).unwrap(), app: AppId(app) }
    }

    fn app_of(router: &Router, host: &str, path: &str) -> Option<(usize, String)> {
        router.route(Some(host), path).map(|routed| (routed.app.index(), routed.script_name))
    }

    #[test]
    fn exact_host_beats_wildcard_beats_any_host() {
        let router = Router::new(
            vec![route("*", "/", 0), route("*.example.com", "/", 1), route("api.example.com", "/", 2)],
            None,
        );
        assert_eq!(app_of(&router, "api.example.com", "/x"), Some((2, String::new())));
        assert_eq!(app_of(&router, "www.example.com", "/x"), Some((1, String::new())));
        assert_eq!(app_of(&router, "example.com", "/x"), Some((0, String::new())));
        assert_eq!(app_of(&router, "API.Example.COM.:8080", "/"), Some((2, String::new())));
    }

    #[test]
    fn longer_wildcard_beats_shorter() {
        let router = Router::new(vec![route("*.example.com", "/", 0), route("*.eu.example.com", "/", 1)], None);
        assert_eq!(app_of(&router, "a.eu.example.com", "/"), Some((1, String::new())));
        assert_eq!(app_of(&router, "a.us.example.com", "/"), Some((0, String::new())));
    }

    #[test]
    fn longest_prefix_wins_and_matches_whole_segments() {
        let router = Router::new(vec![route("*", "/", 0), route("*", "/echo", 1), route("*", "/echo/deep/", 2)], None);
        assert_eq!(app_of(&router, "h", "/echo"), Some((1, "/echo".into())));
        assert_eq!(app_of(&router, "h", "/echo/x"), Some((1, "/echo".into())));
        assert_eq!(app_of(&router, "h", "/echo/deep/x"), Some((2, "/echo/deep".into())));
        assert_eq!(app_of(&router, "h", "/echoes"), Some((0, String::new())));
    }

    #[test]
    fn a_named_host_beats_a_longer_prefix_for_every_host() {
        let router = Router::new(vec![route("a.test", "/", 0), route("*", "/echo", 1)], None);
        assert_eq!(app_of(&router, "a.test", "/echo/x"), Some((0, String::new())));
        assert_eq!(app_of(&router, "b.test", "/echo/x"), Some((1, "/echo".into())));
    }

    #[test]
    fn no_match_goes_to_the_fallback_or_nowhere() {
        let routes = vec![route("a.test", "/", 0)];
        assert_eq!(Router::new(routes.clone(), None).route(Some("b.test"), "/"), None);
        assert_eq!(Router::new(routes.clone(), None).route(None, "/"), None);
        assert_eq!(app_of(&Router::new(routes, Some(AppId(3))), "b.test", "/x"), Some((3, String::new())));
        assert_eq!(app_of(&Router::single("/mount"), "any", "/x"), Some((0, "/mount".into())));
    }

    #[test]
    fn host_patterns_are_checked() {
        assert_eq!(HostPattern::parse("A.Test.").unwrap(), HostPattern::Exact("a.test".into()));
        assert_eq!(HostPattern::parse("*.Example.com").unwrap(), HostPattern::Wildcard(".example.com".into()));
        assert_eq!(HostPattern::parse("127.0.0.1").unwrap(), HostPattern::Exact("127.0.0.1".into()));
        assert_eq!(HostPattern::parse("[::1]").unwrap(), HostPattern::Exact("[::1]".into()));
        // Unbracketed or not canonical, an IPv6 literal is kept as a Host header's normalised form.
        for ipv6 in ["::1", "[0::1]", "0:0:0:0:0:0:0:1"] {
            assert_eq!(HostPattern::parse(ipv6).unwrap(), HostPattern::Exact("[::1]".into()), "{ipv6}");
        }
        assert_eq!(HostPattern::parse("2001:DB8::1").unwrap(), HostPattern::Exact("[2001:db8::1]".into()));
        for bad in ["", "a..b", "a.test:80", "*", "*.", "a_b.test", "a/b"] {
            assert!(HostPattern::parse(bad).is_err(), "{bad}");
        }
        assert!(normalise_prefix("echo").is_err());
        assert_eq!(normalise_prefix("/").unwrap(), "");
        assert_eq!(normalise_prefix("/a/b/").unwrap(), "/a/b");
        for odd in ["/a/../b", "/a/./b", "//a", "/a//b", "/..", "/a%2F%2Fb", "/a/%2E%2E", "/a%0Ab", "/caf%E9"] {
            assert!(normalise_prefix(odd).is_err(), "{odd}");
        }
        // Routed against the decoded path: written percent-encoded, a prefix is decoded.
        assert_eq!(normalise_prefix("/caf%C3%A9/").unwrap(), "/café");
        assert_eq!(normalise_prefix("/a%20b").unwrap(), "/a b");
    }

    #[test]
    fn hosts_are_normalised() {
        assert_eq!(normalise_host("A.test:8000"), "a.test");
        assert_eq!(normalise_host("[::1]:8000"), "[::1]");
        assert_eq!(normalise_host("a.test."), "a.test");
        assert_eq!(normalise_host("[0:0::1]:8000"), "[::1]");
        assert_eq!(normalise_host("[2001:DB8::1]"), "[2001:db8::1]");
    }

    #[test]
    fn a_route_for_an_ipv6_literal_matches_however_either_side_writes_it() {
        for written in ["::1", "[::1]", "[0::1]"] {
            let router = Router::new(vec![route(written, "/", 1)], None);
            for host in ["[::1]", "[::1]:8000", "[0:0::1]:80"] {
                assert_eq!(app_of(&router, host, "/x"), Some((1, String::new())), "route {written}, Host {host}");
            }
        }
    }
}
