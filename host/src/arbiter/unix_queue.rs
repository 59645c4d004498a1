//! The listen queue of a unix socket, which /proc does not show: one `sock_diag` netlink request for the
//! listening socket with a given inode (`UNIX_DIAG_RQLEN`: for a listening socket, the connections waiting to be
//! accepted). Used by the metrics process, which holds no listener, only their inodes. `None` when the kernel
//! does not answer as expected.

use std::time::Duration;

use nix::sys::socket::{MsgFlags, SockFlag, SockProtocol, SockType, recv, send, setsockopt, socket, sockopt};
use nix::sys::time::TimeVal;

const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLM_F_REQUEST: u16 = 1;
const NLMSG_ERROR: u16 = 2;
const AF_UNIX: u8 = 1;
const TCP_LISTEN: u32 = 10;
const UDIAG_SHOW_RQLEN: u32 = 0x10;
const UNIX_DIAG_RQLEN: u16 = 4;
/// The header of a netlink message, and of a `unix_diag_msg`.
const NLMSG_HEADER: usize = 16;
const UNIX_DIAG_MSG: usize = 16;
/// How long the kernel may take to answer.
const ANSWER_TIME: Duration = Duration::from_secs(1);

/// The connections waiting on the listening unix socket whose inode is `inode`.
pub(super) fn listen_queue(inode: u64) -> Option<u64> {
    let inode = u32::try_from(inode).ok()?;
    let fd = socket(
        nix::sys::socket::AddressFamily::Netlink,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkSockDiag,
    )
    .ok()?;
    setsockopt(&fd, sockopt::ReceiveTimeout, &TimeVal::new(ANSWER_TIME.as_secs() as i64, 0)).ok()?;
    send(std::os::fd::AsRawFd::as_raw_fd(&fd), &request(inode), MsgFlags::empty()).ok()?;
    let mut answer = [0u8; 8192];
    let length = recv(std::os::fd::AsRawFd::as_raw_fd(&fd), &mut answer, MsgFlags::empty()).ok()?;
    parse(answer.get(..length)?, inode)
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
    fn the_queue_of_a_listening_unix_socket_counts_waiting_connections() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("queue.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let inode =
            std::fs::metadata(format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&listener))).unwrap().ino();
        assert_eq!(listen_queue(inode), Some(0));
        let _waiting: Vec<UnixStream> = (0..3).map(|_| UnixStream::connect(&path).unwrap()).collect();
        assert_eq!(listen_queue(inode), Some(3));
        assert_eq!(listen_queue(1), None, "no such socket");
    }
}
