//! The metrics flags, checked: `--metrics-bind` (a TCP address or `unix:PATH`, and not `fd://`), and the statsd
//! flags (`--statsd-host` resolved once, at start; the prefix given Gunicorn's one trailing dot; tags checked to
//! be one line that cannot break the statsd format).

use std::net::ToSocketAddrs;

use anyhow::{Context, bail};

use crate::settings::StatsdSettings;

/// `--metrics-bind`, checked.
pub(super) fn bind(spec: Option<&str>) -> anyhow::Result<Option<String>> {
    let Some(spec) = spec else { return Ok(None) };
    if spec.is_empty() {
        bail!("--metrics-bind needs an address: HOST:PORT or unix:PATH");
    }
    if spec.starts_with("fd://") {
        bail!("--metrics-bind takes HOST:PORT or unix:PATH, not an inherited socket ({spec})");
    }
    if let Some(path) = spec.strip_prefix("unix:")
        && path.is_empty()
    {
        bail!("--metrics-bind unix: needs a path");
    }
    Ok(Some(spec.to_string()))
}

/// The statsd settings, when `--statsd-host` is given.
pub(super) fn statsd(host: Option<&str>, prefix: &str, tags: &str) -> anyhow::Result<Option<StatsdSettings>> {
    let Some(host) = host else { return Ok(None) };
    let address = host
        .to_socket_addrs()
        .with_context(|| format!("--statsd-host {host:?}: expected HOST:PORT, such as localhost:8125"))?
        .next()
        .with_context(|| format!("--statsd-host {host:?}: the name resolves to no address"))?;
    if !valid_part(prefix) {
        bail!("--statsd-prefix {prefix:?} may not hold spaces, control characters, ':', '|' or '@'");
    }
    if !valid_part(&tags.replace(':', "")) {
        bail!("--dogstatsd-tags {tags:?} may not hold spaces, control characters, '|' or '@'");
    }
    let prefix = prefix.trim_end_matches('.');
    let prefix = if prefix.is_empty() { String::new() } else { format!("{prefix}.") };
    Ok(Some(StatsdSettings { host: host.to_string(), address, prefix, tags: tags.to_string() }))
}

/// Whether `text` can sit in a statsd line without changing its meaning.
fn valid_part(text: &str) -> bool {
    !text.chars().any(|c| c.is_whitespace() || c.is_control() || matches!(c, ':' | '|' | '@' | '#'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prefix_gets_one_dot_and_bad_values_are_refused() {
        let settings = statsd(Some("127.0.0.1:8125"), "service.app..", "env:prod,team:web").unwrap().unwrap();
        assert_eq!(settings.prefix, "service.app.");
        assert_eq!(settings.tags, "env:prod,team:web");
        assert_eq!(statsd(Some("127.0.0.1:8125"), "", "").unwrap().unwrap().prefix, "");
        assert!(statsd(Some("nowhere"), "", "").is_err());
        assert!(statsd(Some("127.0.0.1:8125"), "a|b", "").is_err());
        assert!(statsd(Some("127.0.0.1:8125"), "", "a\nb").is_err());
        assert!(statsd(None, "x", "y").unwrap().is_none());
        assert!(bind(Some("fd://3")).is_err());
        assert!(bind(Some("unix:")).is_err());
        assert_eq!(bind(Some("127.0.0.1:9100")).unwrap().as_deref(), Some("127.0.0.1:9100"));
    }
}
