//! Passing a connection to a pool. Every pool has a channel: a `SOCK_SEQPACKET` socket pair made by the arbiter,
//! whose sending end every worker holds and whose receiving end the pool's own workers read, one whole message
//! at a time. A connection crosses as the socket itself (`SCM_RIGHTS`) with the bytes already read and its
//! `Stage`: a request routed to an app with a pool of its own (the shared pool accepts every connection and reads
//! its head), a request the shared pool is to route (a dedicated pool's keep-alive connection asking for another
//! app), or a connection a busy worker relays to its pool's idle ones (see `relay`): a head still arriving or an
//! idle keep-alive connection, with the time it has left. Sends never wait: when the pool's queue is full the
//! client gets 503 from the sender at once (a relay keeps the connection), so an app that saturates its pool
//! slows no one else.

use std::io::{self, IoSlice, IoSliceMut};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use nix::errno::Errno;
use nix::sys::socket::{
    self, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType, SockaddrLike,
    SockaddrStorage, sockopt,
};

use super::heartbeat::now_ms;
use crate::listener::{Local, Peer, Stream};

/// The socket buffer of a channel: it bounds both the bytes of one handed-over request (its head and what came
/// with it) and the connections waiting for the pool (a few hundred small requests).
const CHANNEL_BUFFER: usize = 256 * 1024;
/// The largest message: a request whose head is bigger cannot be handed over (431).
pub(super) const MAX_MESSAGE: usize = 200 * 1024;

/// A pool's channel: both ends, held by the arbiter; workers keep the end they use.
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

    /// Answers `503` (as a dying worker does, see `farewell`) every connection still waiting in the channel,
    /// and closes the idle ones whose client sent nothing: the arbiter does it when the server has stopped and
    /// no worker is left to take them. Never waits. Returns how many were answered.
    pub(crate) fn answer_waiting(&self) -> usize {
        let mut inbox = Inbox::new(self.receiver());
        let mut answered = 0;
        while let Ok(Some(handed)) = inbox.receive() {
            let fd = handed.stream.as_fd().as_raw_fd();
            if matches!(handed.stage, Stage::Idle { .. }) && !super::farewell::has_unread(fd) {
                continue;
            }
            if super::farewell::answer_one(fd) {
                answered += 1;
            }
        }
        answered
    }

    /// Moves every connection waiting in this channel, a pool a reload removed, to the shared pool's channel `to`,
    /// to be routed again by the new apps: a request routed to the removed pool's app crosses unrouted. One that
    /// `to` has no room for is answered `503`. Never waits. Returns how many were moved, and how many answered.
    pub(crate) fn forward_waiting(&self, to: &Channel) -> (usize, usize) {
        let mut inbox = Inbox::new(self.receiver());
        let (mut moved, mut answered) = (0, 0);
        while let Ok(Some(handed)) = inbox.receive() {
            let stage = match handed.stage {
                Stage::Routed { .. } => Stage::Unrouted,
                stage => stage,
            };
            if send(to.sender(), &handed.stream, &stage, &handed.bytes).is_ok() {
                moved += 1;
            } else if super::farewell::answer_one(handed.stream.as_fd().as_raw_fd()) {
                answered += 1;
            }
        }
        (moved, answered)
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

/// Where a connection is when it crosses a channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Stage {
    /// Its request head is complete, routed to the pool's app, which is mounted at `script_name`.
    Routed { script_name: String },
    /// Its request head is complete, still to be routed (by the shared pool).
    Unrouted,
    /// Its request head is still arriving, and must be whole within `left`.
    Arriving { left: Duration },
    /// It waits for its next request, for `left` more (keep-alive).
    Idle { left: Duration },
}

/// The fixed part of a message: the stage's kind, its deadline in milliseconds of the system's monotonic clock,
/// the script name's length.
const PREAMBLE: usize = 1 + 8 + 2;

impl Stage {
    /// The time left crosses as a deadline, so that the time a connection waits in the channel (while every worker
    /// of the pool is busy) counts: with the time left itself, a connection relayed again and again under load
    /// kept its time for as long as the load lasted.
    fn encode(&self) -> (u8, u64, &str) {
        let deadline = |left: &Duration| now_ms().saturating_add(u64::try_from(left.as_millis()).unwrap_or(u64::MAX));
        match self {
            Stage::Routed { script_name } => (0, 0, script_name),
            Stage::Unrouted => (1, 0, ""),
            Stage::Arriving { left } => (2, deadline(left), ""),
            Stage::Idle { left } => (3, deadline(left), ""),
        }
    }

    fn decode(kind: u8, deadline: u64, script_name: String) -> Option<Stage> {
        let left = Duration::from_millis(deadline.saturating_sub(now_ms()));
        Some(match kind {
            0 => Stage::Routed { script_name },
            1 => Stage::Unrouted,
            2 => Stage::Arriving { left },
            3 => Stage::Idle { left },
            _ => return None,
        })
    }
}

/// Sends the connection `stream`, with the bytes read from it so far (from the start of its next request) and
/// its stage, to the pool. On success the caller closes its copy of the socket; the pool's worker has its own.
pub(super) fn send(channel: BorrowedFd<'_>, stream: &Stream, stage: &Stage, bytes: &[u8]) -> Result<(), SendError> {
    let (kind, deadline, script_name) = stage.encode();
    let name_length = u16::try_from(script_name.len()).map_err(|_| SendError::TooLarge)?;
    if PREAMBLE + script_name.len() + bytes.len() > MAX_MESSAGE {
        return Err(SendError::TooLarge);
    }
    let mut preamble = [0u8; PREAMBLE];
    preamble[0] = kind;
    preamble[1..9].copy_from_slice(&deadline.to_le_bytes());
    preamble[9..].copy_from_slice(&name_length.to_le_bytes());
    let parts = [IoSlice::new(&preamble), IoSlice::new(script_name.as_bytes()), IoSlice::new(bytes)];
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

/// A connection handed over to this pool (or about to be relayed from this worker).
pub(super) struct Handed {
    pub stream: Stream,
    pub peer: Peer,
    pub local: Local,
    pub stage: Stage,
    /// What the sender had read and not consumed: the request head (or its start), perhaps the start of the body.
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
                // The descriptor had no room in this process's table: the kernel closed it, and the connection is
                // lost. Said, so that the worker stops taking more until there is room (see `descriptors`).
                if message.flags.contains(MsgFlags::MSG_CTRUNC) {
                    return Err(io::Error::from(Errno::EMFILE));
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
    let preamble = message.get(..PREAMBLE)?;
    let deadline = u64::from_le_bytes(preamble[1..9].try_into().ok()?);
    let name_length = usize::from(u16::from_le_bytes([preamble[9], preamble[10]]));
    let script_name = std::str::from_utf8(message.get(PREAMBLE..PREAMBLE + name_length)?).ok()?.to_string();
    let stage = Stage::decode(preamble[0], deadline, script_name)?;
    let bytes = message.get(PREAMBLE + name_length..)?.to_vec();
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
    Some(Handed { stream, peer, local, stage, bytes })
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
        let routed = Stage::Routed { script_name: "/echo".into() };
        send(channel.sender(), &Stream::Tcp(accepted), &routed, b"GET /echo/x HTTP/1.1\r\n\r\n").unwrap();
        let mut inbox = Inbox::new(channel.receiver());
        let handed = inbox.receive().unwrap().unwrap();
        assert_eq!(handed.stage, routed);
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
    fn every_stage_crosses_with_its_time_left() {
        let channel = Channel::new().unwrap();
        let mut inbox = Inbox::new(channel.receiver());
        let stages = [
            Stage::Unrouted,
            Stage::Arriving { left: Duration::from_millis(1500) },
            Stage::Idle { left: Duration::from_millis(2000) },
        ];
        for stage in &stages {
            let (ours, _theirs) = UnixStream::pair().unwrap();
            send(channel.sender(), &Stream::Unix(ours), stage, b"GET / HT").unwrap();
            let handed = inbox.receive().unwrap().unwrap();
            assert_eq!(handed.bytes.as_slice(), b"GET / HT".as_slice());
            match (&handed.stage, stage) {
                (Stage::Arriving { left }, Stage::Arriving { left: sent })
                | (Stage::Idle { left }, Stage::Idle { left: sent }) => {
                    assert!(*left <= *sent && *sent - *left < Duration::from_millis(500), "{left:?} of {sent:?}");
                }
                (crossed, sent) => assert_eq!(crossed, sent),
            }
        }
    }

    #[test]
    fn the_time_spent_in_the_channel_counts() {
        let channel = Channel::new().unwrap();
        let mut inbox = Inbox::new(channel.receiver());
        let (ours, _theirs) = UnixStream::pair().unwrap();
        send(channel.sender(), &Stream::Unix(ours), &Stage::Idle { left: Duration::from_millis(300) }, b"").unwrap();
        std::thread::sleep(Duration::from_millis(400));
        let handed = inbox.receive().unwrap().unwrap();
        assert_eq!(handed.stage, Stage::Idle { left: Duration::ZERO }, "its time ran out while it waited");
    }

    #[test]
    fn a_full_queue_refuses_at_once_and_a_huge_head_is_too_large() {
        let channel = Channel::new().unwrap();
        let (ours, _theirs) = UnixStream::pair().unwrap();
        let stream = Stream::Unix(ours);
        assert!(matches!(
            send(channel.sender(), &stream, &Stage::Unrouted, &vec![b'x'; MAX_MESSAGE]),
            Err(SendError::TooLarge)
        ));
        let head = vec![b'x'; 16 * 1024];
        let mut sent = 0;
        let refused = loop {
            match send(channel.sender(), &stream, &Stage::Unrouted, &head) {
                Ok(()) => sent += 1,
                Err(err) => break err,
            }
            assert!(sent < 10_000, "the channel never filled");
        };
        assert!(matches!(refused, SendError::Busy(_)), "{refused:?}");
        assert!(sent > 0);
    }
}
