//! Passing a connection from the shared pool to an app's dedicated pool. The shared pool accepts every
//! connection and reads its head; a request for an app with a pool of its own is sent, as the socket itself
//! (`SCM_RIGHTS`) with the bytes already read, over that pool's channel: a `SOCK_SEQPACKET` socket pair made by
//! the arbiter, whose sending end every shared worker holds and whose receiving end every worker of the pool
//! reads, one whole message at a time. Sends never wait: when the pool's queue is full the client gets 503 from
//! the shared worker at once, so an app that saturates its pool slows no one else.

use std::io::{self, IoSlice, IoSliceMut};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

use anyhow::Context;
use nix::errno::Errno;
use nix::sys::socket::{
    self, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType, SockaddrLike,
    SockaddrStorage, sockopt,
};

use crate::listener::{Local, Peer, Stream};

/// The socket buffer of a channel: it bounds both the bytes of one handed-over request (its head and what came
/// with it) and the connections waiting for the pool (a few hundred small requests).
const CHANNEL_BUFFER: usize = 256 * 1024;
/// The largest message: a request whose head is bigger cannot be handed over (431).
pub(super) const MAX_MESSAGE: usize = 200 * 1024;

/// A dedicated pool's channel: both ends, held by the arbiter; workers keep the end they use.
#[derive(Debug)]
pub(crate) struct Channel {
    sender: OwnedFd,
    receiver: OwnedFd,
}

impl Channel {
    pub(crate) fn new() -> anyhow::Result<Channel> {
        let (sender, receiver) = socket::socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        )
        .context("cannot create a pool's channel")?;
        // Best effort: the kernel caps it (and doubles it); the default is smaller.
        let _ = socket::setsockopt(&sender, sockopt::SndBuf, &CHANNEL_BUFFER);
        let _ = socket::setsockopt(&receiver, sockopt::RcvBuf, &CHANNEL_BUFFER);
        Ok(Channel { sender, receiver })
    }

    pub(crate) fn sender(&self) -> BorrowedFd<'_> {
        self.sender.as_fd()
    }

    pub(crate) fn receiver(&self) -> BorrowedFd<'_> {
        self.receiver.as_fd()
    }

    /// Both descriptors' numbers, for closing them in a worker that uses neither.
    pub(crate) fn raw_fds(&self) -> [RawFd; 2] {
        [self.sender.as_raw_fd(), self.receiver.as_raw_fd()]
    }
}

/// Why a connection could not be handed over.
#[derive(Debug)]
pub(super) enum SendError {
    /// The pool's queue is full (or the pool is gone).
    Busy(io::Error),
    /// The request's head is too big to pass.
    TooLarge,
}

/// Sends the connection `stream`, with the bytes read from it so far and the app's `SCRIPT_NAME`, to the pool.
/// On success the caller closes its copy of the socket; the pool's worker has its own.
pub(super) fn send(channel: BorrowedFd<'_>, stream: &Stream, script_name: &str, bytes: &[u8]) -> Result<(), SendError> {
    let name_length = u16::try_from(script_name.len()).map_err(|_| SendError::TooLarge)?;
    if 2 + script_name.len() + bytes.len() > MAX_MESSAGE {
        return Err(SendError::TooLarge);
    }
    let length = name_length.to_le_bytes();
    let parts = [IoSlice::new(&length), IoSlice::new(script_name.as_bytes()), IoSlice::new(bytes)];
    let fds = [stream.as_fd().as_raw_fd()];
    let rights = [ControlMessage::ScmRights(&fds)];
    loop {
        match socket::sendmsg::<()>(
            channel.as_raw_fd(),
            &parts,
            &rights,
            MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
            None,
        ) {
            Ok(_) => return Ok(()),
            Err(Errno::EINTR) => continue,
            Err(Errno::EMSGSIZE) => return Err(SendError::TooLarge),
            Err(errno) => return Err(SendError::Busy(io::Error::from(errno))),
        }
    }
}

/// A connection handed over to this pool.
pub(super) struct Handed {
    pub stream: Stream,
    pub peer: Peer,
    pub local: Local,
    pub script_name: String,
    /// What the shared worker had read: the request head, and perhaps the start of the body.
    pub bytes: Vec<u8>,
}

/// The receiving end of a pool's channel in one of its workers, with a buffer for the largest message.
pub(super) struct Inbox<'a> {
    receiver: BorrowedFd<'a>,
    buffer: Vec<u8>,
}

impl<'a> Inbox<'a> {
    pub(super) fn new(receiver: BorrowedFd<'a>) -> Self {
        Inbox { receiver, buffer: vec![0; MAX_MESSAGE] }
    }

    pub(super) fn fd(&self) -> BorrowedFd<'a> {
        self.receiver
    }

    /// The next connection waiting, if any (never waits). A message that cannot be understood is dropped, with
    /// its socket.
    pub(super) fn receive(&mut self) -> io::Result<Option<Handed>> {
        loop {
            let (length, fd) = {
                let mut parts = [IoSliceMut::new(&mut self.buffer)];
                let mut space = nix::cmsg_space!([RawFd; 1]);
                let message = match socket::recvmsg::<()>(
                    self.receiver.as_raw_fd(),
                    &mut parts,
                    Some(&mut space),
                    MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC,
                ) {
                    Ok(message) => message,
                    Err(Errno::EINTR) => continue,
                    Err(Errno::EAGAIN) => return Ok(None),
                    Err(errno) => return Err(io::Error::from(errno)),
                };
                let mut fd = None;
                if let Ok(messages) = message.cmsgs() {
                    for control in messages {
                        if let ControlMessageOwned::ScmRights(fds) = control {
                            for raw in fds {
                                // SAFETY: SCM_RIGHTS gave this process a new descriptor that nothing else owns.
                                let owned = unsafe { OwnedFd::from_raw_fd(raw) };
                                fd = fd.or(Some(owned));
                            }
                        }
                    }
                }
                (message.bytes, fd)
            };
            if length == 0 && fd.is_none() {
                // The other end is gone: nothing more will come.
                return Ok(None);
            }
            if let Some(handed) = fd.and_then(|fd| decode(&self.buffer[..length], fd)) {
                return Ok(Some(handed));
            }
        }
    }
}

/// The message's parts and the socket as a stream, with its addresses.
fn decode(message: &[u8], fd: OwnedFd) -> Option<Handed> {
    let name_length = usize::from(u16::from_le_bytes([*message.first()?, *message.get(1)?]));
    let script_name = std::str::from_utf8(message.get(2..2 + name_length)?).ok()?.to_string();
    let bytes = message.get(2 + name_length..)?.to_vec();
    let local: SockaddrStorage = socket::getsockname(fd.as_raw_fd()).ok()?;
    let (stream, peer, local) = match local.family()? {
        AddressFamily::Inet | AddressFamily::Inet6 => {
            let peer: SockaddrStorage = socket::getpeername(fd.as_raw_fd()).ok()?;
            (Stream::Tcp(TcpStream::from(fd)), Peer::Ip(socket_addr(&peer)?), Local::Ip(socket_addr(&local)?))
        }
        AddressFamily::Unix => {
            let path = local.as_unix_addr().and_then(|address| address.path()).map(PathBuf::from).unwrap_or_default();
            (Stream::Unix(UnixStream::from(fd)), Peer::Unix, Local::Unix(path))
        }
        _ => return None,
    };
    Some(Handed { stream, peer, local, script_name, bytes })
}

fn socket_addr(address: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = address.as_sockaddr_in() {
        return Some(SocketAddr::from(*v4));
    }
    address.as_sockaddr_in6().map(|v6| SocketAddr::from(*v6))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;

    #[test]
    fn a_connection_crosses_with_its_bytes_and_addresses() {
        let channel = Channel::new().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        send(channel.sender(), &Stream::Tcp(accepted), "/echo", b"GET /echo/x HTTP/1.1\r\n\r\n").unwrap();
        let mut inbox = Inbox::new(channel.receiver());
        let handed = inbox.receive().unwrap().unwrap();
        assert_eq!(handed.script_name, "/echo");
        assert_eq!(handed.bytes, b"GET /echo/x HTTP/1.1\r\n\r\n");
        assert_eq!(handed.peer, Peer::Ip(client.local_addr().unwrap()));
        assert_eq!(handed.local, Local::Ip(listener.local_addr().unwrap()));
        let Stream::Tcp(mut stream) = handed.stream else { panic!("not TCP") };
        stream.write_all(b"hi").unwrap();
        drop(stream);
        let mut answer = String::new();
        client.read_to_string(&mut answer).unwrap();
        assert_eq!(answer, "hi");
        assert!(inbox.receive().unwrap().is_none());
    }

    #[test]
    fn a_full_queue_refuses_at_once_and_a_huge_head_is_too_large() {
        let channel = Channel::new().unwrap();
        let (ours, _theirs) = UnixStream::pair().unwrap();
        let stream = Stream::Unix(ours);
        assert!(matches!(send(channel.sender(), &stream, "", &vec![b'x'; MAX_MESSAGE]), Err(SendError::TooLarge)));
        let head = vec![b'x'; 16 * 1024];
        let mut sent = 0;
        let refused = loop {
            match send(channel.sender(), &stream, "", &head) {
                Ok(()) => sent += 1,
                Err(err) => break err,
            }
            assert!(sent < 10_000, "the channel never filled");
        };
        assert!(matches!(refused, SendError::Busy(_)), "{refused:?}");
        assert!(sent > 0);
    }
}
