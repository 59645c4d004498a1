//! Turns `--dir`, `--allow-net` and `--allow-http` into the capabilities an app is granted. Each is checked here, before any
//! worker is forked: a folder that is missing or unreadable, or reached through a symlink in a folder others may
//! change, or a name that does not resolve, is a one-line error at start rather than a failure in every request.

use std::ffi::OsStr;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use nix::fcntl::OFlag;

use crate::guest::{DirGrant, HttpAuthority, HttpGrant, NetGrant};
use crate::planted::{Folder, Unreachable};

/// Reads every `--dir HOST[::GUEST][:ro]` and checks that each HOST is a folder the server can open.
pub(super) fn dirs(specs: &[String]) -> anyhow::Result<Vec<DirGrant>> {
    specs.iter().map(|spec| dir(spec, None)).collect()
}

/// As `dirs`, with a relative HOST taken from `base` (a manifest's folder).
pub(super) fn dirs_under(specs: &[String], base: &Path) -> anyhow::Result<Vec<DirGrant>> {
    specs.iter().map(|spec| dir(spec, Some(base))).collect()
}

fn dir(spec: &str, base: Option<&Path>) -> anyhow::Result<DirGrant> {
    let mut grant = parse_dir(spec)?;
    if let Some(base) = base {
        grant.host = base.join(&grant.host);
    }
    let folder = Folder::open(&grant.host, "the granted folder").map_err(|unreachable| match unreachable {
        Unreachable::Planted(refusal) => refusal.context(format!("--dir {spec}")),
        Unreachable::Io(err) => anyhow::Error::from(err).context(format!("--dir {spec}: cannot open the folder")),
    })?;
    let readable = folder.open_file(OsStr::new("."), OFlag::O_RDONLY | OFlag::O_DIRECTORY, 0);
    drop(readable.with_context(|| format!("--dir {spec}: cannot open the folder"))?);
    Ok(grant)
}

fn parse_dir(spec: &str) -> anyhow::Result<DirGrant> {
    let (paths, read_only) = match spec.strip_suffix(":ro") {
        Some(paths) => (paths, true),
        None => (spec, false),
    };
    let (host, guest) = paths.split_once("::").unwrap_or((paths, paths));
    if host.is_empty() || guest.is_empty() || host.contains('\0') || guest.contains('\0') {
        bail!("--dir takes HOST[::GUEST][:ro], not {spec:?}");
    }
    Ok(DirGrant { host: PathBuf::from(host), guest: guest.to_string(), read_only })
}

/// Reads every `--allow-net HOST:PORT`, resolving host names now: the guest may connect to the addresses found
/// and look up the names listed.
pub(super) fn net(specs: &[String]) -> anyhow::Result<NetGrant> {
    let mut grant = NetGrant::default();
    for spec in specs {
        let (host, port) = parse_net(spec)?;
        match host.parse::<IpAddr>() {
            Ok(ip) => grant.addresses.push(SocketAddr::new(ip, port)),
            Err(_) => {
                let found: Vec<SocketAddr> = (host, port)
                    .to_socket_addrs()
                    .with_context(|| format!("--allow-net {spec}: cannot resolve {host}"))?
                    .collect();
                if found.is_empty() {
                    bail!("--allow-net {spec}: {host} has no address");
                }
                grant.addresses.extend(found);
                grant.names.push(host.to_ascii_lowercase());
            }
        }
    }
    grant.addresses.sort();
    grant.addresses.dedup();
    grant.names.sort();
    grant.names.dedup();
    Ok(grant)
}

/// Reads every `--allow-http HOST[:PORT]` (port 80 when none is given), resolving host names now, as
/// `--allow-net` does: a `wasi:http` guest's request to that authority goes to the addresses found, and a request to
/// any other authority is refused.
pub(super) fn http(specs: &[String]) -> anyhow::Result<HttpGrant> {
    let mut grant = HttpGrant::default();
    for spec in specs {
        let usage = || format!("--allow-http takes HOST[:PORT] with a port from 1 to 65535, not {spec:?}");
        let with_port = with_default_port(spec);
        let (host, port) = parse_net(&with_port).with_context(usage)?;
        let addresses: Vec<SocketAddr> = match host.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, port)],
            Err(_) => (host, port)
                .to_socket_addrs()
                .with_context(|| format!("--allow-http {spec}: cannot resolve {host}"))?
                .collect(),
        };
        if addresses.is_empty() {
            bail!("--allow-http {spec}: {host} has no address");
        }
        grant.authorities.push(HttpAuthority { host: host.to_ascii_lowercase(), port, addresses });
    }
    Ok(grant)
}

/// `HOST[:PORT]` as `HOST:PORT`, port 80 when none is given (`[::1]` and a bare `::1` have none).
fn with_default_port(spec: &str) -> String {
    match spec.parse::<IpAddr>() {
        Ok(IpAddr::V6(_)) => format!("[{spec}]:80"),
        Ok(IpAddr::V4(_)) => format!("{spec}:80"),
        Err(_) if spec.starts_with('[') && spec.ends_with(']') => format!("{spec}:80"),
        Err(_) if spec.contains(':') => spec.to_string(),
        Err(_) => format!("{spec}:80"),
    }
}

/// Splits `HOST:PORT` (`[::1]:PORT` for an IPv6 literal).
fn parse_net(spec: &str) -> anyhow::Result<(&str, u16)> {
    let usage = || format!("--allow-net takes HOST:PORT with a port from 1 to 65535, not {spec:?}");
    let (host, port) = spec.rsplit_once(':').with_context(usage)?;
    let host = host.strip_prefix('[').and_then(|inner| inner.strip_suffix(']')).unwrap_or(host);
    let port: u16 = port.parse().ok().filter(|port| *port != 0).with_context(usage)?;
    if host.is_empty() || host.contains([':', '/', ' ']) && host.parse::<IpAddr>().is_err() {
        bail!(usage());
    }
    Ok((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dir_takes_a_guest_name_and_a_read_only_suffix() {
        let plain = parse_dir("/srv/data").unwrap();
        assert_eq!(
            (plain.host, plain.guest.as_str(), plain.read_only),
            (PathBuf::from("/srv/data"), "/srv/data", false)
        );
        let renamed = parse_dir("/srv/data::/data:ro").unwrap();
        assert_eq!(
            (renamed.host, renamed.guest.as_str(), renamed.read_only),
            (PathBuf::from("/srv/data"), "/data", true)
        );
        assert!(parse_dir("/srv/data:ro").unwrap().read_only);
        assert!(parse_dir("::/data").is_err());
        assert!(parse_dir("/srv::").is_err());
    }

    #[test]
    fn missing_dir_is_an_error_naming_the_flag() {
        let err = dirs(&["/no/such/folder".into()]).unwrap_err();
        assert!(format!("{err:#}").starts_with("--dir /no/such/folder: cannot open the folder"), "{err:#}");
    }

    #[test]
    fn allow_net_takes_ip_literals_and_names() {
        let grant = net(&["127.0.0.1:5432".into(), "[::1]:80".into(), "localhost:8080".into()]).unwrap();
        assert!(grant.addresses.contains(&"127.0.0.1:5432".parse().unwrap()));
        assert!(grant.addresses.contains(&"[::1]:80".parse().unwrap()));
        assert!(grant.addresses.iter().any(|address| address.port() == 8080 && address.ip().is_loopback()));
        assert_eq!(grant.names, vec!["localhost".to_string()]);
    }

    #[test]
    fn allow_http_takes_a_host_with_or_without_a_port() {
        let grant = http(&["127.0.0.1:8080".into(), "localhost".into(), "[::1]:81".into()]).unwrap();
        assert_eq!(grant.addresses_of("127.0.0.1", 8080), Some(&["127.0.0.1:8080".parse().unwrap()][..]));
        assert!(grant.addresses_of("localhost", 80).is_some_and(|found| found.iter().all(|a| a.port() == 80)));
        assert!(grant.addresses_of("[::1]", 81).is_some());
        assert!(grant.addresses_of("127.0.0.1", 80).is_none());
        for spec in ["127.0.0.1:0", "127.0.0.1:http", ":80", "a b"] {
            assert!(http(&[spec.into()]).is_err(), "{spec}");
        }
    }

    #[test]
    fn allow_net_without_a_valid_port_is_refused() {
        for spec in ["127.0.0.1", "127.0.0.1:0", "127.0.0.1:http", ":80", "a b:80", "127.0.0.1:70000"] {
            assert!(parse_net(spec).is_err(), "{spec}");
        }
    }
}
