//! The listening sockets: bound once by the arbiter before any worker is forked (TCP `HOST:PORT`,
//! `unix:PATH`), or adopted from the parent (`fd://N`, systemd's `LISTEN_FDS`, and the sockets an old arbiter
//! hands to its successor on SIGUSR2). Every worker inherits them. Connections come out as a `Stream`.

use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use nix::fcntl::{FcntlArg, FdFlag, OFlag, fcntl};
use nix::sys::socket::{self, AddressFamily, Backlog, SockFlag, SockType, SockaddrLike, SockaddrStorage, sockopt};

/// How sockets are bound.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BindOptions {
    pub backlog: i32,
    pub reuse_port: bool,
}

/// A listening, non-blocking socket.
#[derive(Debug)]
pub(crate) enum Listener {
    Tcp {
        socket: TcpListener,
        address: SocketAddr,
    },
    /// `owns_file`: the socket file is this server's to remove when it stops, because it bound it (or an old
    /// arbiter that bound it handed it over on SIGUSR2). A socket handed over by systemd or with `fd://N` is not:
    /// its file belongs to whoever bound it, and systemd gives the same socket to the restarted service.
    Unix {
        socket: UnixListener,
        path: PathBuf,
        owns_file: bool,
    },
}

/// Where a listener listens, as the environ needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Local {
    Ip(SocketAddr),
    Unix(PathBuf),
}

/// The client side of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Peer {
    Ip(SocketAddr),
    /// A unix-socket client has no address.
    Unix,
}

impl Peer {
    /// The client's IP address; none for a unix-socket client.
    pub(crate) fn ip(self) -> Option<IpAddr> {
        match self {
            Peer::Ip(address) => Some(address.ip()),
            Peer::Unix => None,
        }
    }
}

impl std::fmt::Display for Peer {
    /// The client's IP address, or `-` for a unix-socket client (as the access log's `%(h)s` shows it).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Peer::Ip(address) => write!(f, "{}", address.ip()),
            Peer::Unix => write!(f, "-"),
        }
    }
}

/// An accepted connection (blocking).
#[derive(Debug)]
pub(crate) enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Listener {
    /// Binds `HOST:PORT` (`HOST` alone means port 8000, as in Gunicorn) or `unix:PATH`; `fd://N` adopts an
    /// inherited socket.
    pub(crate) fn bind(spec: &str, options: BindOptions) -> anyhow::Result<Listener> {
        let address = match Address::parse(spec)? {
            Address::Inherited(fd) => return adopt(fd, false).with_context(|| format!("cannot use {spec}")),
            Address::Unix(path) => return bind_unix(path, options).with_context(|| format!("cannot bind {spec}")),
            Address::Inet(address) => address,
        };
        let family = if address.is_ipv6() { AddressFamily::Inet6 } else { AddressFamily::Inet };
        let fd = new_socket(family).with_context(|| format!("cannot create a socket for {spec}"))?;
        socket::setsockopt(&fd, sockopt::ReuseAddr, &true)
            .with_context(|| format!("cannot set SO_REUSEADDR on {spec}"))?;
        if options.reuse_port {
            socket::setsockopt(&fd, sockopt::ReusePort, &true)
                .with_context(|| format!("cannot set SO_REUSEPORT on {spec}"))?;
        }
        socket::bind(fd.as_raw_fd(), &SockaddrStorage::from(address)).with_context(|| format!("cannot bind {spec}"))?;
        listen(&fd, options.backlog).with_context(|| format!("cannot listen on {spec}"))?;
        Listener::from_fd(fd, false)
    }

    /// Wraps a listening socket of either family; `owns_file` as in `Listener::Unix`.
    fn from_fd(fd: OwnedFd, owns_file: bool) -> anyhow::Result<Listener> {
        let address: SockaddrStorage =
            socket::getsockname(fd.as_raw_fd()).context("cannot read the socket's address")?;
        match address.family() {
            Some(AddressFamily::Unix) => {
                let path =
                    address.as_unix_addr().and_then(|unix| unix.path()).map(Path::to_path_buf).unwrap_or_default();
                Ok(Listener::Unix { socket: UnixListener::from(fd), path, owns_file })
            }
            Some(AddressFamily::Inet | AddressFamily::Inet6) => {
                let socket = TcpListener::from(fd);
                let address = socket.local_addr().context("cannot read the socket's address")?;
                Ok(Listener::Tcp { socket, address })
            }
            other => bail!("the socket is neither TCP nor unix ({other:?})"),
        }
    }

    /// `http://HOST:PORT` or `unix:PATH`, as the startup line shows it.
    pub(crate) fn url(&self) -> String {
        match self {
            Listener::Tcp { address, .. } => format!("http://{address}"),
            Listener::Unix { path, .. } => format!("unix:{}", path.display()),
        }
    }

    pub(crate) fn local(&self) -> Local {
        match self {
            Listener::Tcp { address, .. } => Local::Ip(*address),
            Listener::Unix { path, .. } => Local::Unix(path.clone()),
        }
    }

    /// Accepts one waiting connection, if there is one (the listener is non-blocking; the connection is not).
    pub(crate) fn accept(&self) -> io::Result<(Stream, Peer)> {
        match self {
            Listener::Tcp { socket, .. } => socket.accept().map(|(stream, peer)| (Stream::Tcp(stream), Peer::Ip(peer))),
            Listener::Unix { socket, .. } => socket.accept().map(|(stream, _)| (Stream::Unix(stream), Peer::Unix)),
        }
    }

    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        match self {
            Listener::Tcp { socket, .. } => socket.as_fd(),
            Listener::Unix { socket, .. } => socket.as_fd(),
        }
    }

    /// Lets the socket survive `exec` (for the successor arbiter of a SIGUSR2 upgrade), or not.
    pub(crate) fn set_inheritable(&self, inheritable: bool) -> anyhow::Result<()> {
        let flags = if inheritable { FdFlag::empty() } else { FdFlag::FD_CLOEXEC };
        fcntl(self.fd(), FcntlArg::F_SETFD(flags)).context("cannot change the socket's close-on-exec flag")?;
        Ok(())
    }

    /// Removes a unix socket's file (at the end of the server's life), if it is this server's (see
    /// `Listener::Unix`).
    pub(crate) fn remove_file(&self) {
        if let Some(path) = self.own_file() {
            let _ = std::fs::remove_file(path);
        }
    }

    /// The file of a unix socket this server made (see `Listener::Unix`).
    pub(crate) fn own_file(&self) -> Option<&Path> {
        match self {
            Listener::Unix { path, owns_file: true, .. } => Some(path),
            _ => None,
        }
    }
}

/// The variable through which an old arbiter hands its sockets to its successor (SIGUSR2).
pub(crate) const UPGRADE_FDS_VAR: &str = "WASMCORN_LISTEN_FDS";

/// The sockets handed over by an old arbiter (`WASMCORN_LISTEN_FDS`) or by systemd (`LISTEN_FDS`, meant for
/// this process when `LISTEN_PID` is its pid), if any.
pub(crate) fn inherited() -> anyhow::Result<Option<Vec<Listener>>> {
    if let Ok(list) = std::env::var(UPGRADE_FDS_VAR) {
        let fds: Vec<RawFd> = list
            .split(',')
            .filter(|text| !text.is_empty())
            .map(str::parse)
            .collect::<Result<_, _>>()
            .with_context(|| format!("WASMCORN_LISTEN_FDS is not a list of numbers: {list:?}"))?;
        return fds.into_iter().map(|fd| adopt(fd, true)).collect::<anyhow::Result<Vec<_>>>().map(Some);
    }
    let listen_pid = std::env::var("LISTEN_PID").ok();
    let listen_fds = std::env::var("LISTEN_FDS").ok();
    match (listen_pid, listen_fds) {
        (Some(pid), Some(count)) if pid.parse::<u32>().ok() == Some(std::process::id()) => {
            // systemd passes the sockets from descriptor 3 on; none passed (0) means the addresses are bound here.
            let last = count
                .parse::<u32>()
                .ok()
                .and_then(|count| RawFd::try_from(count).ok())
                .and_then(|count| count.checked_add(2))
                .with_context(|| format!("LISTEN_FDS is not a number of descriptors: {count:?}"))?;
            if last < 3 {
                return Ok(None);
            }
            (3..=last).map(|fd| adopt(fd, false)).collect::<anyhow::Result<Vec<_>>>().map(Some)
        }
        _ => Ok(None),
    }
}

/// Takes ownership of an inherited descriptor and checks that it is a listening socket; `owns_file` as in
/// `Listener::Unix`.
fn adopt(fd: RawFd, owns_file: bool) -> anyhow::Result<Listener> {
    if fd < 3 {
        bail!("descriptor {fd} is stdin, stdout or stderr, not a socket");
    }
    std::fs::symlink_metadata(format!("/proc/self/fd/{fd}")).with_context(|| format!("descriptor {fd} is not open"))?;
    // SAFETY: the descriptor was handed to this process by its parent (systemd, an old arbiter, or the operator
    // with fd://N) and nothing else in this process owns it; it was checked to be open above.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let listening: bool =
        socket::getsockopt(&owned, sockopt::AcceptConn).with_context(|| format!("descriptor {fd} is not a socket"))?;
    if !listening {
        bail!("descriptor {fd} is a socket that is not listening");
    }
    fcntl(&owned, FcntlArg::F_SETFL(OFlag::O_NONBLOCK)).context("cannot make the socket non-blocking")?;
    fcntl(&owned, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).context("cannot set close-on-exec")?;
    Listener::from_fd(owned, owns_file)
}

fn new_socket(family: AddressFamily) -> nix::Result<OwnedFd> {
    socket::socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK, None)
}

fn listen(fd: &OwnedFd, backlog: i32) -> nix::Result<()> {
    socket::listen(fd, Backlog::new(backlog).unwrap_or(Backlog::MAXCONN))
}

/// Binds a unix socket, replacing a stale socket file that nothing listens on any more.
fn bind_unix(path: &Path, options: BindOptions) -> anyhow::Result<Listener> {
    crate::planted::refuse_planted_links(path, "the socket")?;
    if let Ok(metadata) = std::fs::symlink_metadata(path) {
        use std::os::unix::fs::FileTypeExt;
        if !metadata.file_type().is_socket() {
            bail!("{} exists and is not a socket", path.display());
        }
        // Only a refused connection says that nobody listens: any other failure (another user's socket this one
        // may not connect to) leaves the file to whoever owns it.
        match UnixStream::connect(path) {
            Ok(_) => bail!("{} is in use by another server", path.display()),
            Err(err) if err.kind() == io::ErrorKind::ConnectionRefused => {}
            Err(err) => bail!("{} may be in use: cannot connect to it to tell ({err})", path.display()),
        }
        std::fs::remove_file(path).with_context(|| format!("cannot remove the stale socket {}", path.display()))?;
    }
    let fd = new_socket(AddressFamily::Unix)?;
    let address = socket::UnixAddr::new(path)?;
    socket::bind(fd.as_raw_fd(), &address)?;
    listen(&fd, options.backlog)?;
    Listener::from_fd(fd, true)
}

/// Checks that `spec` is an address `Listener::bind` can take (`fd://NUMBER`, `unix:PATH`, `HOST[:PORT]`), without
/// binding it: what `--check-config` says of `--bind` and `--metrics-bind`.
pub(crate) fn check_spec(spec: &str) -> anyhow::Result<()> {
    Address::parse(spec).map(drop)
}

/// Refuses an inherited descriptor given twice to `--bind`, however written (`fd://3`, `fd://03`): it would be
/// adopted, and closed at the end, twice. (Other addresses may repeat: `127.0.0.1:0` twice is two ports, and an
/// address in use is refused when it is bound.)
pub(crate) fn refuse_repeated(specs: &[String]) -> anyhow::Result<()> {
    let mut seen = std::collections::HashSet::new();
    for spec in specs {
        let Some(Ok(fd)) = inherited_fd(spec) else { continue };
        if !seen.insert(fd) {
            bail!("--bind {spec} is given twice: descriptor {fd} can be adopted once");
        }
    }
    Ok(())
}

/// The descriptor an `fd://NUMBER` spec names; None for another kind of address.
fn inherited_fd(spec: &str) -> Option<Result<RawFd, std::num::ParseIntError>> {
    spec.strip_prefix("fd://").map(str::parse)
}

/// What a bind spec names.
enum Address<'a> {
    /// `fd://NUMBER`: a socket inherited from the process that started this one.
    Inherited(RawFd),
    /// `unix:PATH`.
    Unix(&'a Path),
    /// `HOST[:PORT]`, resolved.
    Inet(SocketAddr),
}

impl<'a> Address<'a> {
    fn parse(spec: &'a str) -> anyhow::Result<Address<'a>> {
        if let Some(fd) = inherited_fd(spec) {
            let fd = fd.with_context(|| format!("cannot bind {spec:?}: expected fd://NUMBER"))?;
            return Ok(Address::Inherited(fd));
        }
        if let Some(path) = spec.strip_prefix("unix:") {
            if path.is_empty() {
                bail!("cannot bind {spec:?}: expected unix:PATH");
            }
            return Ok(Address::Unix(Path::new(path)));
        }
        resolve(spec).map(Address::Inet)
    }
}

fn resolve(spec: &str) -> anyhow::Result<SocketAddr> {
    let with_port = if spec.starts_with('[') && spec.ends_with(']') || !spec.contains(':') {
        format!("{spec}:8000")
    } else {
        spec.to_string()
    };
    let mut addresses = with_port
        .to_socket_addrs()
        .with_context(|| format!("cannot bind {spec:?}: expected HOST:PORT, such as 127.0.0.1:8000 or [::1]:8000"))?;
    match addresses.next() {
        Some(address) => Ok(address),
        None => bail!("cannot bind {spec:?}: the name resolves to no address"),
    }
}

impl Stream {
    pub(crate) fn set_nonblocking(&self, nonblocking: bool) -> io::Result<()> {
        match self {
            Stream::Tcp(stream) => stream.set_nonblocking(nonblocking),
            Stream::Unix(stream) => stream.set_nonblocking(nonblocking),
        }
    }

    pub(crate) fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Tcp(stream) => stream.set_write_timeout(timeout),
            Stream::Unix(stream) => stream.set_write_timeout(timeout),
        }
    }

    /// TCP_NODELAY on a TCP connection; nothing on a unix socket.
    pub(crate) fn set_nodelay(&self, nodelay: bool) -> io::Result<()> {
        match self {
            Stream::Tcp(stream) => stream.set_nodelay(nodelay),
            Stream::Unix(_) => Ok(()),
        }
    }

    pub(crate) fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        match self {
            Stream::Tcp(stream) => stream.shutdown(how),
            Stream::Unix(stream) => stream.shutdown(how),
        }
    }
}

impl AsFd for Stream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Stream::Tcp(stream) => stream.as_fd(),
            Stream::Unix(stream) => stream.as_fd(),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(stream) => stream.read(buf),
            Stream::Unix(stream) => stream.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(stream) => stream.write(buf),
            Stream::Unix(stream) => stream.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Tcp(stream) => stream.flush(),
            Stream::Unix(stream) => stream.flush(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPTIONS: BindOptions = BindOptions { backlog: 16, reuse_port: false };

    #[test]
    fn bare_host_gets_port_8000_and_ipv6_brackets_work() {
        assert_eq!(resolve("127.0.0.1").unwrap(), "127.0.0.1:8000".parse().unwrap());
        assert_eq!(resolve("[::1]:0").unwrap(), "[::1]:0".parse().unwrap());
        assert!(resolve("127.0.0.1:notaport").is_err());
    }

    #[test]
    fn port_zero_binds_a_free_port() {
        let listener = Listener::bind("127.0.0.1:0", OPTIONS).unwrap();
        assert!(listener.url().starts_with("http://127.0.0.1:"));
        assert!(!listener.url().ends_with(":0"));
    }

    #[test]
    fn stale_unix_socket_is_replaced_but_a_live_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let first = Listener::bind(&format!("unix:{}", path.display()), OPTIONS).unwrap();
        assert!(Listener::bind(&format!("unix:{}", path.display()), OPTIONS).is_err(), "in use");
        drop(first);
        let second = Listener::bind(&format!("unix:{}", path.display()), OPTIONS).unwrap();
        assert_eq!(second.url(), format!("unix:{}", path.display()));
    }

    #[test]
    fn only_a_socket_file_bound_here_is_removed() {
        use std::os::fd::IntoRawFd;
        let dir = tempfile::tempdir().unwrap();
        let bound_path = dir.path().join("bound.sock");
        let bound = Listener::bind(&format!("unix:{}", bound_path.display()), OPTIONS).unwrap();
        bound.remove_file();
        assert!(!bound_path.exists(), "bound here: removed");
        // As systemd or a supervisor hands one over: bound by someone else, adopted with fd://N.
        let handed_path = dir.path().join("handed.sock");
        let fd = UnixListener::bind(&handed_path).unwrap().into_raw_fd();
        let handed = Listener::bind(&format!("fd://{fd}"), OPTIONS).unwrap();
        handed.remove_file();
        assert!(handed_path.exists(), "handed over: its file is left to its owner");
    }
}
