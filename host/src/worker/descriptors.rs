//! What a worker does when it runs out of descriptors (or of kernel memory for a socket): it stops taking new
//! connections, from its listeners and from its pool's channel, for a second, and says so in one log line. A
//! listener it kept watching (level-triggered) would wake it at once, again and again, for a failed accept each
//! time. A connection received from the channel with no room in the table for its descriptor would be lost (the
//! kernel closes it), so the worker keeps one spare descriptor and gives its slot back for each receive.

use std::fmt::Display;
use std::os::fd::{BorrowedFd, RawFd};
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, fcntl};

use super::heartbeat::now_ms;
use crate::log;

/// How long the worker takes no new connection after a shortage.
const PAUSE: Duration = Duration::from_secs(1);
/// Until when taking is paused (`now_ms`), 0 when it is not: shared by the worker's loop and its relay.
static PAUSED_UNTIL: AtomicU64 = AtomicU64::new(0);
/// The spare descriptor (a copy of the channel's), -1 when there is none.
static SPARE: AtomicI32 = AtomicI32::new(-1);

/// How long taking new connections stays paused, if it is.
pub(super) fn pause_left() -> Option<Duration> {
    let (until, now) = (PAUSED_UNTIL.load(Ordering::Relaxed), now_ms());
    (until > now).then(|| Duration::from_millis(until - now))
}

/// Pauses taking new connections after `what` failed with `err`, with one log line.
pub(super) fn pause(what: impl Display, err: impl Display) {
    PAUSED_UNTIL.store(now_ms() + PAUSE.as_millis() as u64, Ordering::Relaxed);
    log::warning(format_args!("{what}: {err}; taking new connections again in {} s", PAUSE.as_secs()));
}

/// Whether `err` says a descriptor or the kernel memory for one was wanting, which stays so for a while.
pub(super) fn is_shortage(err: &std::io::Error) -> bool {
    let short = [Errno::EMFILE, Errno::ENFILE, Errno::ENOBUFS, Errno::ENOMEM];
    err.raw_os_error().is_some_and(|code| short.contains(&Errno::from_raw(code)))
}

/// Runs `receive` (a receive from the channel `channel`) with room for the descriptor it brings: the spare's slot,
/// given back first; without a spare, only if a copy of `channel` can be made. Afterwards takes a spare again,
/// and pauses when there is no room for one. `None` when there was no room: nothing was received.
pub(super) fn with_room<T>(channel: BorrowedFd<'_>, receive: impl FnOnce() -> T) -> Option<T> {
    match SPARE.swap(-1, Ordering::Relaxed) {
        -1 => match copy(channel) {
            Ok(probe) => drop(nix::unistd::close(probe)),
            Err(errno) => {
                pause("no descriptor left for a connection handed to this pool", errno.desc());
                return None;
            }
        },
        spare => drop(nix::unistd::close(spare)),
    }
    let received = receive();
    match copy(channel) {
        Ok(spare) => SPARE.store(spare, Ordering::Relaxed),
        Err(errno) => pause("no descriptor left for the next connection handed to this pool", errno.desc()),
    }
    Some(received)
}

fn copy(fd: BorrowedFd<'_>) -> nix::Result<RawFd> {
    fcntl(fd, FcntlArg::F_DUPFD_CLOEXEC(0))
}
