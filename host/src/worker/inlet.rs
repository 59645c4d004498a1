//! Where a worker's connections come from, and the wait for them: the listeners (the shared pool's workers
//! accept) and the pool's channel (requests handed to a dedicated pool, connections relayed by a busy worker of
//! the same pool). An idle worker watches both beside the sockets of the heads it reads; a worker that wants no
//! more watches neither, so that a queue it leaves alone does not wake it again and again. What a wait saw
//! besides the heads' sockets (`Woken`) says whether the signals and the inlet need a look: a worker in keep-alive
//! service then makes no system call on a listener, a channel or a signal descriptor that has nothing for it.

use std::io::ErrorKind;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use nix::sys::epoll::{Epoll, EpollEvent, EpollFlags, EpollTimeout};

use super::descriptors;
use super::handoff::Inbox;
use super::heads::Heads;
use crate::listener::Listener;
use crate::log;

pub(super) struct Inlet<'a> {
    /// Empty for a dedicated pool's worker.
    pub listeners: &'a [Listener],
    /// The pool's channel.
    pub inbox: Inbox<'a>,
    /// Whether the listeners and the channel are in the worker's epoll (they go in and out together).
    watched: bool,
}

impl<'a> Inlet<'a> {
    /// The inlet of a worker holding `listeners` (none in a dedicated pool), which a dying worker answers as the
    /// server stops until `let_go_of_listeners` (see `farewell`).
    pub(super) fn new(listeners: &'a [Listener], inbox: Inbox<'a>) -> Self {
        super::farewell::hold_listeners(listeners.iter().map(|listener| listener.fd().as_raw_fd()));
        Inlet { listeners, inbox, watched: false }
    }

    /// Adds the listeners and the channel to the worker's epoll (the listeners under the keys 0 up, the channel
    /// under `CHANNEL_KEY`), or removes them; both stay out while the worker is short of descriptors.
    pub(super) fn watch(&mut self, epoll: &Epoll, watch: bool) -> anyhow::Result<()> {
        let watch = watch && descriptors::pause_left().is_none();
        if watch != self.watched {
            for (listener, key) in self.listeners.iter().zip(0u64..) {
                watch_one(epoll, listener.fd(), key, watch)?;
            }
            watch_one(epoll, self.inbox.fd(), super::CHANNEL_KEY, watch)?;
            self.watched = watch;
        }
        Ok(())
    }

    /// Closes this worker's copies of the listeners, once it has taken what they queued, as the server stops.
    /// The arbiter closed its own copies when the stop began; when the last worker closes its copies, a new
    /// connection is refused at once (a load balancer sends it elsewhere, a POST too: nothing was sent), instead
    /// of waiting in a queue that no one accepts from any more and being reset when the worker exits.
    pub(super) fn let_go_of_listeners(&mut self, epoll: &Epoll) -> anyhow::Result<()> {
        self.watch(epoll, false)?;
        super::farewell::let_go_of_listeners();
        for listener in self.listeners {
            // The worker never drops the arbiter's `Listener` objects (it leaves with `process::exit`, see
            // `arbiter::spawn`), and with the slice emptied below nothing here uses the descriptor again.
            let _ = nix::unistd::close(listener.fd().as_raw_fd());
        }
        self.listeners = &[];
        Ok(())
    }

    /// Takes the new connections the last wait saw arrive, while the worker wants more: from the channel first,
    /// then the listeners (see `take_waiting`). The listeners and the channel are in the worker's epoll
    /// (level-triggered) whenever it would take more, so a wait that did not report one of them says that nothing
    /// arrived there for this worker: a new connection wakes one watching worker, and is that one's to take
    /// (`continue_reading` says when the others look anyway). Both are tried regardless when they were not
    /// watched.
    pub(super) fn take_new(&mut self, epoll: &Epoll, heads: &mut Heads, woken: Woken) {
        if woken.channel || !self.watched {
            receive_waiting(epoll, &mut self.inbox, heads, false);
        }
        if woken.listeners || !self.watched {
            accept_waiting(epoll, self.listeners, heads, false);
        }
    }

    /// Takes new connections while the worker wants more (or, when `all`, every one queued), from the channel
    /// first: what waits there was accepted earlier (relayed by a busy worker, handed over), and a worker that
    /// took from the listeners first would, under steady load, always find a new connection there and never
    /// reach the channel, whose connections then waited (and outlived their deadlines) as long as the load
    /// lasted. Returns whether any came.
    pub(super) fn take_waiting(&mut self, epoll: &Epoll, heads: &mut Heads, all: bool) -> bool {
        let received = receive_waiting(epoll, &mut self.inbox, heads, all);
        let accepted = accept_waiting(epoll, self.listeners, heads, all);
        accepted || received
    }

    /// Takes every connection waiting in the pool's channel, and none from the listeners: as the server stops
    /// while the successor of an upgrade shares them, its workers serve what the kernel queued there, while the
    /// channel is this server's alone. Returns whether any came.
    pub(super) fn take_channel_waiting(&mut self, epoll: &Epoll, heads: &mut Heads) -> bool {
        receive_waiting(epoll, &mut self.inbox, heads, true)
    }
}

/// Adds `fd` to the worker's epoll under `key` (or removes it).
fn watch_one(epoll: &Epoll, fd: std::os::fd::BorrowedFd<'_>, key: u64, watch: bool) -> nix::Result<()> {
    if watch {
        // EPOLLEXCLUSIVE: a new connection wakes one idle worker, not all of them.
        epoll.add(fd, EpollEvent::new(EpollFlags::EPOLLIN | EpollFlags::EPOLLEXCLUSIVE, key))
    } else {
        epoll.delete(fd)
    }
}

/// Accepts waiting connections while the worker wants more (or, when `all`, every one queued), unless it is short
/// of descriptors; returns whether any was accepted.
pub(super) fn accept_waiting(epoll: &Epoll, listeners: &[Listener], heads: &mut Heads, all: bool) -> bool {
    let mut accepted = false;
    if descriptors::pause_left().is_some() {
        return false;
    }
    for listener in listeners {
        while all || heads.wants_more(Instant::now()) {
            match listener.accept() {
                Ok((stream, peer)) => {
                    accepted = true;
                    heads.admit(epoll, stream, peer, listener.local());
                }
                Err(err)
                    if matches!(
                        err.kind(),
                        ErrorKind::WouldBlock | ErrorKind::Interrupted | ErrorKind::ConnectionAborted
                    ) =>
                {
                    break;
                }
                Err(err) if descriptors::is_shortage(&err) => {
                    descriptors::pause(format_args!("accept failed on {}", listener.url()), err);
                    return accepted;
                }
                Err(err) => {
                    log::warning(format_args!("accept failed on {}: {err}", listener.url()));
                    break;
                }
            }
        }
    }
    accepted
}

/// Takes the connections handed or relayed to this worker's pool while the worker wants more (or, when `all`,
/// every one waiting); returns whether any came.
fn receive_waiting(epoll: &Epoll, inbox: &mut Inbox<'_>, heads: &mut Heads, all: bool) -> bool {
    let mut received = false;
    let channel = inbox.fd();
    while (all || heads.wants_more(Instant::now())) && descriptors::pause_left().is_none() {
        let Some(taken) = descriptors::with_room(channel, || inbox.receive()) else { break };
        match taken {
            Ok(Some(handed)) => {
                received = true;
                heads.admit_handed(epoll, handed);
            }
            Ok(None) => break,
            Err(err) if descriptors::is_shortage(&err) => {
                descriptors::pause("a connection handed to this pool was lost, with no room for it", err);
                break;
            }
            Err(err) => {
                log::warning(format_args!("cannot receive from the pool's channel: {err}"));
                break;
            }
        }
    }
    received
}

/// What a wait saw besides the heads' sockets: a signal to read, a connection to take from a listener, one in
/// the channel. A wait that returned all it had (fewer events than room) and did not report one of them says it
/// has nothing; otherwise (and after a wait that timed out) all are looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Woken {
    pub signals: bool,
    pub listeners: bool,
    pub channel: bool,
}

impl Woken {
    /// Nothing is known yet (before the first wait, or after one cut short): look at everything.
    pub(super) const UNKNOWN: Woken = Woken { signals: true, listeners: true, channel: true };
}

/// Waits up to `wait` for sockets to become readable, reads the heads that progressed (and the idle connections
/// whose next request began), and deals with the heads and idle connections that are late. Returns what else the
/// wait saw.
pub(super) fn continue_reading(
    epoll: &Epoll,
    heads: &mut Heads,
    events: &mut [EpollEvent],
    wait: Duration,
) -> anyhow::Result<Woken> {
    // Round up, so that a deadline a fraction of a millisecond away is not a busy loop.
    let millis = u16::try_from(wait.as_micros().div_ceil(1000)).unwrap_or(u16::MAX);
    let count = match epoll.wait(events, EpollTimeout::from(millis)) {
        Ok(count) => count,
        Err(nix::errno::Errno::EINTR) => {
            heads.expire(epoll, Instant::now());
            return Ok(Woken::UNKNOWN);
        }
        Err(err) => return Err(err.into()),
    };
    // A full batch may have left events out: the rest is not known. A wait that timed out looks at everything
    // too: a new connection wakes one sleeping worker of those watching (EPOLLEXCLUSIVE), and the others' epolls
    // never report it; when the woken one cannot take it (it holds its fill, or it is retiring), the others find
    // it at their next timed-out wait, every heartbeat interval at most, as they did when they tried the inlet
    // on every turn.
    let mut woken = if count == events.len() || (count == 0 && !wait.is_zero()) {
        Woken::UNKNOWN
    } else {
        Woken { signals: false, listeners: false, channel: false }
    };
    for event in &events[..count] {
        let key = event.data();
        if heads.owns(key) {
            heads.on_readable(epoll, key);
        } else if key == super::SIGNAL_KEY {
            woken.signals = true;
        } else if key == super::CHANNEL_KEY {
            woken.channel = true;
        } else if key < super::FIRST_CONNECTION_KEY {
            woken.listeners = true;
        }
    }
    heads.expire(epoll, Instant::now());
    Ok(woken)
}
