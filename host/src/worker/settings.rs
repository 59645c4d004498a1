//! What a worker needs to serve HTTP besides the app: limits on requests, the client timeout, the proxies it
//! trusts and the app's mount point. `Config` builds it from the command line.

use std::time::Duration;

use super::forwarded::TrustedProxies;
use crate::http::HeadLimits;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpSettings {
    /// `--limit-request-line`, `--limit-request-fields`, `--limit-request-field_size`.
    pub head_limits: HeadLimits,
    /// `--limit-request-body`: the largest body accepted, if limited.
    pub body_limit: Option<u64>,
    /// `--limit-pending-heads`: the most bytes the buffers of a worker's pending heads may hold together.
    pub pending_heads_limit: usize,
    /// `--client-timeout`: how long the whole request head may take to arrive, and each body read or response
    /// write may wait.
    pub client_timeout: Duration,
    /// `--forwarded-allow-ips`.
    pub trusted_proxies: TrustedProxies,
    /// `--script-name` (or `SCRIPT_NAME` given with `--env`): empty, or `/path` without a final `/`.
    pub script_name: String,
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            head_limits: HeadLimits::default(),
            body_limit: None,
            pending_heads_limit: 16 << 20,
            client_timeout: Duration::from_secs(30),
            trusted_proxies: "127.0.0.1,::1".parse().unwrap_or(TrustedProxies::Listed(Vec::new())),
            script_name: String::new(),
        }
    }
}
