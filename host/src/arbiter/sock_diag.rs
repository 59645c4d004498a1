//! The listen queue of a listening socket, by its inode, asked of the kernel over `sock_diag` netlink: for a
//! unix socket one request for that inode (`UNIX_DIAG_RQLEN`), which /proc does not show; for TCP a dump of the
//! listening sockets alone (IPv4 and IPv6), whose receive queue is the connections waiting to be accepted.
//! (/proc/net/tcp would list every socket, thousands of TIME_WAIT ones under load, on each scrape.) Used by the
//! metrics process, which holds no listener, only their inodes. `None` when the kernel does not answer as
//! expected.

use std::time::Duration;

use std::os::fd::{AsRawFd, OwnedFd};

use nix::sys::socket::{
    AddressFamily, MsgFlags, SockFlag, SockProtocol, SockType, recv, send, setsockopt, socket, sockopt,
};
use nix::sys::time::TimeVal;

const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const AF_UNIX: u8 = 1;
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
const IPPROTO_TCP: u8 = 6;
/// In an `inet_diag_msg`: the state, the receive queue and the inode.
const INET_STATE: usize = 1;
const INET_RQUEUE: usize = 56;
const INET_INODE: usize = 68;
const TCP_LISTEN: u32 = 10;
const UDIAG_SHOW_RQLEN: u32 = 0x10;
const UNIX_DIAG_RQLEN: u16 = 4;
/// The header of a netlink message, and of a `unix_diag_msg`.
const NLMSG_HEADER: usize = 16;
const UNIX_DIAG_MSG: usize = 16;
/// How long the kernel may take to answer.
const ANSWER_TIME: Duration = Duration::from_secs(1);

/// The connections waiting on the listening unix socket whose inode is `inode`.
pub(super) fn unix_listen_queue(inode: u64) -> Option<u64> {
    let inode = u32::try_from(inode).ok()?;
    let fd = diag_socket()?;
    send(fd.as_raw_fd(), &request(inode), MsgFlags::empty()).ok()?;
    let mut answer = [0u8; 8192];
    let length = recv(fd.as_raw_fd(), &mut answer, MsgFlags::empty()).ok()?;
    parse(answer.get(..length)?, inode)
}

/// The connections waiting on the listening TCP socket whose inode is `inode`.
pub(super) fn tcp_listen_queue(inode: u64) -> Option<u64> {
    let inode = u32::try_from(inode).ok()?;
    let fd = diag_socket()?;
    [AF_INET, AF_INET6].into_iter().find_map(|family| {
        send(fd.as_raw_fd(), &tcp_request(family), MsgFlags::empty()).ok()?;
        find_in_dump(&fd, inode)
    })
}

fn diag_socket() -> Option<OwnedFd> {
    let fd = socket(AddressFamily::Netlink, SockType::Datagram, SockFlag::SOCK_CLOEXEC, SockProtocol::NetlinkSockDiag)
        .ok()?;
    setsockopt(&fd, sockopt::ReceiveTimeout, &TimeVal::new(ANSWER_TIME.as_secs() as i64, 0)).ok()?;
    Some(fd)
}

/// A dump request for the listening TCP sockets of `family` (`inet_diag_req_v2`, any address).
fn tcp_request(family: u8) -> Vec<u8> {
    let mut message = Vec::with_capacity(NLMSG_HEADER + 56);
    message.extend_from_slice(&((NLMSG_HEADER + 56) as u32).to_ne_bytes());
    message.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    message.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    message.extend_from_slice(&2u32.to_ne_bytes()); // sequence
    message.extend_from_slice(&0u32.to_ne_bytes()); // port id
    message.extend_from_slice(&[family, IPPROTO_TCP, 0, 0]);
    message.extend_from_slice(&(1u32 << TCP_LISTEN).to_ne_bytes());
    message.extend_from_slice(&[0u8; 48]); // inet_diag_sockid: any
    message
}

/// Reads a dump to its end; the receive queue of the listening socket `inode`, if it is in it.
fn find_in_dump(fd: &OwnedFd, inode: u32) -> Option<u64> {
    let mut found = None;
    let mut buffer = vec![0u8; 32 * 1024];
    loop {
        let length = recv(fd.as_raw_fd(), &mut buffer, MsgFlags::empty()).ok()?;
        let mut at = 0;
        while at + NLMSG_HEADER <= length {
            let size = u32_at(&buffer, at)? as usize;
            let kind = u16_at(&buffer, at + 4)?;
            if kind == NLMSG_DONE || kind == NLMSG_ERROR {
                return found;
            }
            let message = buffer.get(at + NLMSG_HEADER..at + size)?;
            if message.get(INET_STATE) == Some(&(TCP_LISTEN as u8)) && u32_at(message, INET_INODE)? == inode {
                found = u32_at(message, INET_RQUEUE).map(u64::from);
            }
            if size < NLMSG_HEADER {
                return found;
            }
            at += size.div_ceil(4) * 4;
        }
        if length == 0 {
            return found;
        }
    }
}

/// A `SOCK_DIAG_BY_FAMILY` request for the one listening unix socket `inode`, with its queue lengths.
fn request(inode: u32) -> Vec<u8> {
    let mut message = Vec::with_capacity(NLMSG_HEADER + 24);
    message.extend_from_slice(&((NLMSG_HEADER + 24) as u32).to_ne_bytes());
    message.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    message.extend_from_slice(&NLM_F_REQUEST.to_ne_bytes());
    message.extend_from_slice(&1u32.to_ne_bytes()); // sequence
    message.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills it in
    // struct unix_diag_req: family, protocol, padding, states, inode, what to show, cookie (any).
    message.extend_from_slice(&[AF_UNIX, 0, 0, 0]);
    message.extend_from_slice(&(1u32 << TCP_LISTEN).to_ne_bytes());
    message.extend_from_slice(&inode.to_ne_bytes());
    message.extend_from_slice(&UDIAG_SHOW_RQLEN.to_ne_bytes());
    message.extend_from_slice(&u32::MAX.to_ne_bytes());
    message.extend_from_slice(&u32::MAX.to_ne_bytes());
    message
}

fn u16_at(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(bytes.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

/// The receive queue in the kernel's answer about socket `inode`.
fn parse(answer: &[u8], inode: u32) -> Option<u64> {
    let length = u32_at(answer, 0)? as usize;
    let kind = u16_at(answer, 4)?;
    if kind == NLMSG_ERROR || kind != SOCK_DIAG_BY_FAMILY || length > answer.len() {
        return None;
    }
    let message = &answer[NLMSG_HEADER..length];
    if u32_at(message, 4)? != inode {
        return None;
    }
    // The attributes, each 4-byte aligned: length, type, data.
    let mut at = UNIX_DIAG_MSG;
    while at + 4 <= message.len() {
        let attribute_length = u16_at(message, at)? as usize;
        if attribute_length < 4 {
            return None;
        }
        if u16_at(message, at + 2)? == UNIX_DIAG_RQLEN {
            return u32_at(message, at + 4).map(u64::from);
        }
        at += attribute_length.div_ceil(4) * 4;
    }
    None
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;
    use std::os::unix::net::{UnixListener, UnixStream};

    use super::*;

    #[test]
    fn the_queue_of_a_listening_tcp_socket_counts_waiting_connections() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let inode = std::fs::metadata(format!("/proc/self/fd/{}", listener.as_raw_fd())).unwrap().ino();
        assert_eq!(tcp_listen_queue(inode), Some(0));
        let _waiting: Vec<_> = (0..2).map(|_| std::net::TcpStream::connect(address).unwrap()).collect();
        assert_eq!(tcp_listen_queue(inode), Some(2));
        assert_eq!(tcp_listen_queue(1), None, "no such socket");
    }

    #[test]
    fn the_queue_of_a_listening_unix_socket_counts_waiting_connections() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("queue.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let inode = std::fs::metadata(format!("/proc/self/fd/{}", listener.as_raw_fd())).unwrap().ino();
        assert_eq!(unix_listen_queue(inode), Some(0));
        let _waiting: Vec<UnixStream> = (0..3).map(|_| UnixStream::connect(&path).unwrap()).collect();
        assert_eq!(unix_listen_queue(inode), Some(3));
        assert_eq!(unix_listen_queue(1), None, "no such socket");
    }
}
