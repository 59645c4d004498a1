//! What a guest may reach outside its sandbox: nothing by default. The operator grants folders (`--dir`) and
//! outbound TCP addresses (`--allow-net`); this module turns those grants into each request's WASI context. No
//! host environment, no host stdio (stdout and stderr are captured for the log, stdin is empty), no UDP, no
//! listening sockets, and name lookups only for the names the operator listed.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use wasmtime_wasi::sockets::SocketAddrUse;
use wasmtime_wasi::{FsPerms, WasiCtx};

use super::output::GuestOutput;

/// Everything the operator granted an app beyond pure computation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// Folders the guest sees, as preopened directories.
    pub dirs: Vec<DirGrant>,
    /// Where the guest may connect.
    pub net: NetGrant,
    /// Where a `wasi:http` guest may send outgoing HTTP requests.
    pub http: HttpGrant,
}

/// One host folder shown to the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirGrant {
    /// The folder on the host.
    pub host: PathBuf,
    /// Its name inside the guest.
    pub guest: String,
    /// The guest may read but not create, change or remove anything.
    pub read_only: bool,
}

/// The TCP addresses a guest may connect to, and the host names it may look up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetGrant {
    /// Every address the guest may connect to (names were resolved when the server started).
    pub addresses: Vec<SocketAddr>,
    /// Host names the guest may resolve through `wasi:sockets/ip-name-lookup`, in lower case.
    pub names: Vec<String>,
}

impl NetGrant {
    pub fn is_empty(&self) -> bool {
        self.addresses.is_empty()
    }

    /// Whether the guest may look `name` up: an IP literal (answered without any lookup) or a listed name.
    pub fn may_resolve(&self, name: &str) -> bool {
        let literal = name.strip_prefix('[').and_then(|rest| rest.strip_suffix(']')).unwrap_or(name);
        literal.parse::<IpAddr>().is_ok() || self.names.iter().any(|listed| listed.eq_ignore_ascii_case(name))
    }
}

/// The authorities a `wasi:http` guest may send requests to (`--allow-http`), each with the addresses its name
/// resolved to when the server started: a request goes to those addresses and no others.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HttpGrant {
    pub authorities: Vec<HttpAuthority>,
}

/// One granted authority.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpAuthority {
    /// The host as the guest names it, in lower case, without the brackets of an IPv6 literal.
    pub host: String,
    pub port: u16,
    pub addresses: Vec<SocketAddr>,
}

impl HttpGrant {
    /// The addresses a request to `host` and `port` may go to, if that authority was granted.
    pub fn addresses_of(&self, host: &str, port: u16) -> Option<&[SocketAddr]> {
        let host = host.strip_prefix('[').and_then(|rest| rest.strip_suffix(']')).unwrap_or(host);
        self.authorities
            .iter()
            .find(|granted| granted.port == port && granted.host.eq_ignore_ascii_case(host))
            .map(|granted| granted.addresses.as_slice())
    }
}

/// Builds one request's WASI context: the environment, the captured output streams, and the granted folders
/// and addresses.
pub(crate) fn wasi_ctx(
    env: &[(String, String)],
    dirs: &[DirGrant],
    net: &Arc<NetGrant>,
    stdout: GuestOutput,
    stderr: GuestOutput,
) -> anyhow::Result<WasiCtx> {
    let mut builder = WasiCtx::builder();
    builder.envs(env).stdout(stdout).stderr(stderr);
    for dir in dirs {
        let perms = if dir.read_only { FsPerms::ReadOnly } else { FsPerms::ReadWrite };
        // Checked at start, and again at each open (by name): a link planted since is refused as well. The
        // folder is opened through the descriptor the check ended on, never by its name again.
        let folder = crate::planted::Folder::open(&dir.host, "the granted folder").map_err(|unreachable| {
            unreachable.context(format!("cannot open the granted folder {}", dir.host.display()))
        })?;
        builder
            .preopened_dir(folder.path(), &dir.guest, perms)
            .map_err(anyhow::Error::from)
            .with_context(|| format!("cannot open the granted folder {}", dir.host.display()))?;
    }
    let allowed = Arc::clone(net);
    builder
        .allow_udp(false)
        .allow_tcp(!net.is_empty())
        // Lookups go through `name_lookup`, which lets only IP literals and listed names reach this resolver.
        .allow_ip_name_lookup(!net.is_empty())
        .socket_addr_check(move |address, used_for| {
            let permitted = permits(&allowed.addresses, address, used_for);
            Box::pin(async move { permitted })
        });
    Ok(builder.build())
}

/// The socket check: connecting to a granted address, and the implicit bind to an ephemeral port that comes
/// with it. No explicit bind, no listening, no UDP.
fn permits(allowed: &[SocketAddr], address: SocketAddr, used_for: SocketAddrUse) -> bool {
    match used_for {
        SocketAddrUse::TcpConnect => allowed.contains(&address),
        SocketAddrUse::TcpBind => address.ip().is_unspecified() && address.port() == 0 && !allowed.is_empty(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_granted_addresses_may_be_connected_to() {
        let allowed = ["127.0.0.1:5432".parse().unwrap()];
        assert!(permits(&allowed, "127.0.0.1:5432".parse().unwrap(), SocketAddrUse::TcpConnect));
        assert!(!permits(&allowed, "127.0.0.1:5433".parse().unwrap(), SocketAddrUse::TcpConnect));
        assert!(!permits(&allowed, "10.0.0.1:5432".parse().unwrap(), SocketAddrUse::TcpConnect));
        assert!(permits(&allowed, "0.0.0.0:0".parse().unwrap(), SocketAddrUse::TcpBind));
        assert!(!permits(&allowed, "0.0.0.0:8080".parse().unwrap(), SocketAddrUse::TcpBind));
        assert!(!permits(&allowed, "0.0.0.0:0".parse().unwrap(), SocketAddrUse::TcpListen));
        assert!(!permits(&allowed, "127.0.0.1:5432".parse().unwrap(), SocketAddrUse::UdpSend));
        assert!(!permits(&[], "0.0.0.0:0".parse().unwrap(), SocketAddrUse::TcpBind));
    }

    #[test]
    fn only_granted_authorities_have_addresses() {
        let address: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let grant = HttpGrant {
            authorities: vec![HttpAuthority { host: "api.internal".into(), port: 8080, addresses: vec![address] }],
        };
        assert_eq!(grant.addresses_of("API.internal", 8080), Some(&[address][..]));
        assert_eq!(grant.addresses_of("api.internal", 80), None);
        assert_eq!(grant.addresses_of("api.internal.attacker.example", 8080), None);
        let v6 = HttpGrant { authorities: vec![HttpAuthority { host: "::1".into(), port: 80, addresses: vec![] }] };
        assert!(v6.addresses_of("[::1]", 80).is_some());
    }

    #[test]
    fn only_listed_names_and_ip_literals_may_be_resolved() {
        let grant = NetGrant { addresses: Vec::new(), names: vec!["db.internal".into()] };
        assert!(grant.may_resolve("db.internal"));
        assert!(grant.may_resolve("DB.Internal"));
        assert!(grant.may_resolve("127.0.0.1"));
        assert!(grant.may_resolve("[::1]"));
        assert!(grant.may_resolve("::1"));
        assert!(!grant.may_resolve("exfiltrate.example.com"));
        assert!(!grant.may_resolve("db.internal.attacker.example"));
    }
}
