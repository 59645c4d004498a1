//! The listening sockets: bound once by the arbiter before any worker is forked, inherited by every worker.

use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::os::fd::{AsFd, BorrowedFd};

use anyhow::{Context, bail};
use nix::sys::socket::{self, AddressFamily, Backlog, SockFlag, SockType, SockaddrStorage, sockopt};

/// Gunicorn's default listen backlog.
const BACKLOG: i32 = 2048;

/// A bound, listening, non-blocking TCP socket.
#[derive(Debug)]
pub struct Listener {
    socket: TcpListener,
    address: SocketAddr,
}

impl Listener {
    /// Binds `HOST:PORT` (`HOST` alone means port 8000, as in Gunicorn).
    pub fn bind(spec: &str) -> anyhow::Result<Listener> {
        let address = resolve(spec)?;
        let family = if address.is_ipv6() { AddressFamily::Inet6 } else { AddressFamily::Inet };
        let fd = socket::socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK, None)
            .with_context(|| format!("cannot create a socket for {spec}"))?;
        socket::setsockopt(&fd, sockopt::ReuseAddr, &true)
            .with_context(|| format!("cannot set SO_REUSEADDR on {spec}"))?;
        socket::bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &SockaddrStorage::from(address))
            .with_context(|| format!("cannot bind {spec}"))?;
        socket::listen(&fd, Backlog::new(BACKLOG).unwrap_or(Backlog::MAXCONN))
            .with_context(|| format!("cannot listen on {spec}"))?;
        let socket = TcpListener::from(fd);
        let address = socket.local_addr().with_context(|| format!("cannot read the address bound for {spec}"))?;
        Ok(Listener { socket, address })
    }

    /// `http://HOST:PORT`, as the startup line shows it.
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Accepts one waiting connection, if there is one (the socket is non-blocking). The connection itself
    /// is blocking.
    pub fn accept(&self) -> std::io::Result<(std::net::TcpStream, SocketAddr)> {
        self.socket.accept()
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_host_gets_port_8000_and_ipv6_brackets_work() {
        assert_eq!(resolve("127.0.0.1").unwrap(), "127.0.0.1:8000".parse().unwrap());
        assert_eq!(resolve("[::1]:0").unwrap(), "[::1]:0".parse().unwrap());
        assert!(resolve("127.0.0.1:notaport").is_err());
    }

    #[test]
    fn port_zero_binds_a_free_port() {
        let listener = Listener::bind("127.0.0.1:0").unwrap();
        assert_ne!(listener.address().port(), 0);
        assert!(listener.url().starts_with("http://127.0.0.1:"));
    }
}
