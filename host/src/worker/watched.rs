//! The client's socket while a worker serves its request: every read or write that moves bytes is a sign of
//! life in the worker's heartbeat slot, so the arbiter never takes a worker that is busy with a slow client for
//! a stuck one. Each read and write gives up when the client moves nothing for the client timeout (its
//! `patience`); while the guest runs, also when the guest's deadline comes, and the time spent waiting for bytes
//! that did move is given back to the guest (up to the client timeout in all). The socket is non-blocking
//! underneath and every wait is a `poll`,
//! so progress is seen per partial read or write, not per `write_all`.

use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use super::heartbeat::Slot;
use crate::guest::Deadline;
use crate::listener::Stream;

pub(super) struct WatchedStream {
    stream: Stream,
    slot: &'static Slot,
    /// The longest a read or write waits for the client to move a byte.
    patience: Duration,
    /// The guest's deadline while the guest runs.
    deadline: Option<Deadline>,
    /// When every wait ends, however lively the client: the end of the drain of an unread body.
    cutoff: Option<Instant>,
}

impl WatchedStream {
    /// Watches `stream`, which must be non-blocking.
    pub(super) fn new(stream: Stream, slot: &'static Slot, patience: Duration) -> Self {
        WatchedStream { stream, slot, patience, deadline: None, cutoff: None }
    }

    /// The socket, unwatched (still non-blocking), for the next request of a kept-alive connection.
    pub(super) fn into_inner(self) -> Stream {
        self.stream
    }

    pub(super) fn set_patience(&mut self, patience: Duration) {
        self.patience = patience;
    }

    /// Ends every wait at `cutoff`, even for a client that keeps moving a byte now and then: a drain that may
    /// take at most so long, whatever the client does.
    pub(super) fn set_cutoff(&mut self, cutoff: Option<Instant>) {
        self.cutoff = cutoff;
    }

    /// The guest's deadline while it runs. The time the client moves bytes in is given back to the guest, up to
    /// the client's patience in all, so a request holds its worker at most the guest's time plus that.
    pub(super) fn set_deadline(&mut self, deadline: Option<Deadline>) {
        if let Some(deadline) = &deadline {
            deadline.cap_extensions(self.patience);
        }
        self.deadline = deadline;
    }

    /// Runs `operation` until it moves bytes, fails, or the wait for the client runs out.
    fn transfer(
        &mut self,
        interest: PollFlags,
        mut operation: impl FnMut(&mut Stream) -> io::Result<usize>,
    ) -> io::Result<usize> {
        let started = Instant::now();
        loop {
            match operation(&mut self.stream) {
                Ok(count) => {
                    if count > 0 {
                        self.slot.beat();
                        if let Some(deadline) = &self.deadline {
                            deadline.extend(started.elapsed());
                        }
                    }
                    return Ok(count);
                }
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => self.wait(interest, started)?,
                Err(err) => return Err(err),
            }
        }
    }

    /// Waits until the socket is ready for `interest`, at most until the patience (counted from `started`), the
    /// guest's deadline or the cutoff runs out.
    fn wait(&self, interest: PollFlags, started: Instant) -> io::Result<()> {
        let mut limit = self.patience.saturating_sub(started.elapsed());
        if let Some(deadline) = &self.deadline {
            limit = limit.min(deadline.remaining());
        }
        if let Some(cutoff) = self.cutoff {
            limit = limit.min(cutoff.saturating_duration_since(Instant::now()));
        }
        if limit.is_zero() {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "the client moved no byte in time"));
        }
        // Rounded up, so that a fraction of a millisecond left is not a busy loop.
        let millis = u64::try_from(limit.as_micros().div_ceil(1000)).unwrap_or(u64::MAX);
        let timeout = PollTimeout::try_from(millis).unwrap_or(PollTimeout::MAX);
        let mut fds = [PollFd::new(self.stream.as_fd(), interest)];
        match poll(&mut fds, timeout) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => Ok(()),
            Err(err) => Err(err.into()),
        }
    }
}

impl Read for WatchedStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.transfer(PollFlags::POLLIN, |stream| stream.read(buf))
    }
}

impl Write for WatchedStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.transfer(PollFlags::POLLOUT, |stream| stream.write(buf))
    }

    fn flush(&mut self) -> io::Result<()> {
        self.stream.flush()
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixStream;

    use super::*;
    use crate::worker::heartbeat::Heartbeats;

    fn watched_pair(patience: Duration) -> (WatchedStream, UnixStream, &'static Slot) {
        let (ours, theirs) = UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        let slot = Heartbeats::new().unwrap().slot(0);
        (WatchedStream::new(Stream::Unix(ours), slot, patience), theirs, slot)
    }

    #[test]
    fn bytes_that_move_are_a_sign_of_life_and_given_back_to_the_guest() {
        let (mut watched, mut client, slot) = watched_pair(Duration::from_secs(10));
        let deadline = Deadline::after(Duration::from_secs(5));
        watched.set_deadline(Some(deadline.clone()));
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(1));
            client.write_all(b"late").unwrap();
            client
        });
        let mut buf = [0u8; 8];
        assert_eq!(watched.read(&mut buf).unwrap(), 4);
        // A fresh slot has been silent since the machine booted; the read beat.
        assert!(slot.silence() < Duration::from_secs(5));
        // The second spent waiting for the bytes was given back (without, at most 4 s would be left).
        assert!(deadline.remaining() > Duration::from_millis(4500), "{:?}", deadline.remaining());
        drop(writer.join().unwrap());
    }

    #[test]
    fn a_client_that_moves_nothing_ends_the_wait_at_the_patience_or_the_deadline() {
        let (mut watched, _client, _) = watched_pair(Duration::from_millis(50));
        let mut buf = [0u8; 8];
        assert_eq!(watched.read(&mut buf).unwrap_err().kind(), io::ErrorKind::TimedOut);
        watched.set_patience(Duration::from_secs(60));
        let deadline = Deadline::after(Duration::from_millis(50));
        watched.set_deadline(Some(deadline.clone()));
        assert_eq!(watched.read(&mut buf).unwrap_err().kind(), io::ErrorKind::TimedOut);
        assert!(deadline.has_passed(), "the wait ended at the guest's deadline, not the patience");
    }

    #[test]
    fn the_cutoff_ends_the_waits_of_a_client_that_keeps_trickling() {
        let (mut watched, mut client, _) = watched_pair(Duration::from_secs(1));
        let started = Instant::now();
        watched.set_cutoff(Some(started + Duration::from_millis(300)));
        let trickle = std::thread::spawn(move || {
            // A byte every 50 ms for 5 s, well within the patience each time.
            for _ in 0..100 {
                if client.write_all(b"x").is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        let mut buf = [0u8; 8];
        let ended = loop {
            match watched.read(&mut buf) {
                Ok(0) => break None,
                Ok(_) => {}
                Err(err) => break Some(err.kind()),
            }
        };
        assert_eq!(ended, Some(io::ErrorKind::TimedOut));
        // Generous: the cutoff came after 300 ms; the trickle went on for 5 s.
        assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
        drop(watched);
        trickle.join().unwrap();
    }
}
