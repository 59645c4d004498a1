//! The HTTP settings that `config` builds from the flags and the workers read: the limits on a request head,
//! the client timeout, the pending-heads budget, keep-alive and the proxies whose forwarding headers are believed. Plain
//! data: this module imports nothing else of the crate, so every layer may use it.

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use ipnet::IpNet;

/// What a worker needs to read requests besides its apps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HttpSettings {
    /// `--limit-request-line`, `--limit-request-fields`, `--limit-request-field_size`.
    pub head_limits: HeadLimits,
    /// `--limit-pending-heads`: the most bytes the buffers of a worker's pending heads may hold together.
    pub pending_heads_limit: usize,
    /// `--client-timeout`: how long the whole request head may take to arrive, and each body read or response
    /// write may wait.
    pub client_timeout: Duration,
    /// `--forwarded-allow-ips`.
    pub trusted_proxies: TrustedProxies,
    /// `--keep-alive`: how long an idle connection waits for its next request; zero closes every connection.
    pub keep_alive: Duration,
    /// `--max-idle-connections`: the most idle keep-alive connections one worker holds.
    pub max_idle_connections: usize,
}

/// `--statsd-host`, `--statsd-prefix`, `--dogstatsd-tags`: where the statsd lines go and how they are named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StatsdSettings {
    /// `--statsd-host` as given (a reload compares it, not the address it resolved to then).
    pub host: String,
    pub address: SocketAddr,
    /// Empty, or the prefix with one trailing dot.
    pub prefix: String,
    /// Empty, or the dogstatsd tags, comma-separated.
    pub tags: String,
}

/// Gunicorn's limits on a request head. A limit of 0 means no limit, except for `fields`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadLimits {
    /// The longest request line, in bytes (without its CRLF); 0 for no limit.
    pub request_line: usize,
    /// The most header fields.
    pub fields: usize,
    /// The longest header field line (name, colon, value and CRLF), in bytes; 0 for no limit.
    pub field_size: usize,
}

impl HeadLimits {
    pub(crate) fn request_line_exceeded(&self, length: usize) -> bool {
        self.request_line > 0 && length > self.request_line
    }

    pub(crate) fn field_size_exceeded(&self, length: usize) -> bool {
        self.field_size > 0 && length > self.field_size
    }
}

impl Default for HeadLimits {
    fn default() -> Self {
        HeadLimits { request_line: 4094, fields: 100, field_size: 8190 }
    }
}

/// The peers whose forwarding headers are believed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TrustedProxies {
    /// `*`: every peer.
    All,
    /// Addresses and networks (`10.0.0.0/8`).
    Listed(Vec<IpNet>),
}

impl FromStr for TrustedProxies {
    type Err = String;

    /// A comma-separated list of IP addresses and networks, or `*`. Spaces around items are ignored.
    fn from_str(text: &str) -> Result<Self, String> {
        let items: Vec<&str> = text.split(',').map(str::trim).filter(|item| !item.is_empty()).collect();
        if items.contains(&"*") {
            return Ok(TrustedProxies::All);
        }
        items
            .iter()
            .map(|item| {
                item.parse::<IpNet>()
                    .or_else(|_| item.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| format!("{item:?} is neither an IP address nor a network"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(TrustedProxies::Listed)
    }
}

impl TrustedProxies {
    pub(crate) fn trusts(&self, peer: IpAddr) -> bool {
        let peer = peer.to_canonical();
        match self {
            TrustedProxies::All => true,
            TrustedProxies::Listed(networks) => networks.iter().any(|network| network.contains(&peer)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trusted_lists_take_addresses_networks_and_star() {
        let listed: TrustedProxies = "127.0.0.1, ::1,10.0.0.0/8".parse().unwrap();
        assert!(listed.trusts("10.1.2.3".parse().unwrap()));
        assert!(listed.trusts("::ffff:127.0.0.1".parse().unwrap()), "IPv4-mapped peers count as IPv4");
        assert!(!listed.trusts("192.168.0.1".parse().unwrap()));
        assert!("*".parse::<TrustedProxies>().unwrap().trusts("192.168.0.1".parse().unwrap()));
        assert!("".parse::<TrustedProxies>().unwrap() == TrustedProxies::Listed(vec![]));
        assert!("localhost".parse::<TrustedProxies>().is_err());
    }
}
