//! What a dying worker says to the connections it holds but never started: `503 Service Unavailable` and a
//! FIN, not a reset. The arbiter ends a stuck worker (WORKER TIMEOUT) or one past its graceful timeout with
//! SIGABRT, then SIGKILL a second later, and a quick stop ends every worker with SIGINT. The worker may be busy
//! in a request, where its loop cannot act, so a signal handler does it: the worker keeps the descriptors of its
//! queued connections in a registry, a static array of atomics, while it holds them (`Queued`), and takes each
//! out before it starts serving or answering it; the handler answers every descriptor still registered (idle
//! keep-alive connections are registered too, apart: one whose client sent its next request is answered, a silent
//! one only gets its FIN),
//! records how many in the worker's heartbeat slot for the arbiter's log, then lets the signal's default action
//! end the process. The request in flight is cut.
//! When the server stops (the arbiter marks the worker's slot first), the handler also accepts what the kernel
//! queued on the listeners the worker still holds and answers it the same way: a worker busy in a guest never
//! took those, and once the last copy of a listener closes, the kernel would reset them. Not when a successor
//! arbiter (SIGUSR2) shares the listeners: its workers serve what waits there.
//! The relay thread, which may move connections in and out of the registry while a guest runs, is fenced off
//! first (see `fence`). The handler makes only async-signal-safe calls (accept4, send, recv, shutdown, close,
//! sigaction, pthread_self, pthread_kill, raise, poll) and touches nothing but atomics.

use std::ops::{Deref, DerefMut};
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::sync::atomic::{AtomicI32, AtomicPtr, AtomicU64, Ordering};

use nix::errno::Errno;
use nix::sys::pthread::{Pthread, pthread_kill, pthread_self};
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, raise, sigaction};
use nix::sys::socket::{MsgFlags, Shutdown, SockFlag, accept4, recv, send, shutdown};
use nix::unistd::close;

use super::fence::Fence;
use super::heartbeat::Slot;
use crate::http::Connection;
use crate::listener::Stream;

/// How many connections the registry follows at once: a worker holds at most `heads::MAX_PENDING` in normal
/// service, but a graceful stop takes everything the kernel queued (up to `--backlog`). Connections past this
/// are not answered when the worker dies.
pub(crate) const CAPACITY: usize = 4096;
const FREE: RawFd = -1;
/// The answer, fixed in advance: the handler cannot format or allocate. No `Date` (optional for 5xx).
pub(super) const ANSWER: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nServer: wasmcorn\r\nConnection: close\r\n\
Content-Type: text/plain\r\nContent-Length: 20\r\n\r\nService Unavailable\n";
/// How much of what a client already sent the handler discards before the process closes the socket (a close
/// with unread bytes would reset the connection, and the client could lose the answer).
const DISCARD_BUDGET: usize = 64 * 1024;

type Registry = [AtomicI32; CAPACITY];
/// The connections taken in and not started: each is answered 503.
static REGISTRY: Registry = [const { AtomicI32::new(FREE) }; CAPACITY];
/// The idle keep-alive connections: one whose client has sent its next request is answered 503, a silent one
/// just gets its FIN.
static IDLE_REGISTRY: Registry = [const { AtomicI32::new(FREE) }; CAPACITY];
/// The listeners the worker holds (non-blocking sockets), while it holds them.
static LISTENERS: [AtomicI32; MAX_LISTENERS] = [const { AtomicI32::new(FREE) }; MAX_LISTENERS];
const MAX_LISTENERS: usize = 64;
/// The most connections the handler accepts from one listener: clients may keep arriving while it answers.
const LISTEN_QUEUE_BUDGET: usize = 4096;
/// The worker's heartbeat slot, where the handler records how many connections it answered.
static SLOT: AtomicPtr<Slot> = AtomicPtr::new(std::ptr::null_mut());
/// The thread that runs the worker's loop: the handler answers from it alone, so that no connection is
/// answered by the handler while the loop writes to it.
static MAIN_THREAD: AtomicU64 = AtomicU64::new(0);

/// What the relay thread does with the heads, fenced off once the handler runs.
pub(super) static RELAY_FENCE: Fence = Fence::new();

/// The signals that end a worker at once, and are handled here. The arbiter sends them to the worker's main thread.
pub(crate) const DEADLY: [Signal; 3] = [Signal::SIGABRT, Signal::SIGINT, Signal::SIGQUIT];

/// Installs the handler of the `DEADLY` signals (replacing their disposition, even an inherited "ignore"). Call
/// it in the worker, after the fork, from the thread that serves.
pub(super) fn install(slot: &Slot) -> nix::Result<()> {
    MAIN_THREAD.store(pthread_self() as u64, Ordering::Relaxed);
    SLOT.store(std::ptr::from_ref(slot).cast_mut(), Ordering::Release);
    // While the handler runs, the others wait: one answers, then the process ends.
    let mut mask = SigSet::empty();
    DEADLY.iter().for_each(|signal| mask.add(*signal));
    let action = SigAction::new(SigHandler::Handler(on_deadly_signal), SaFlags::SA_RESTART, mask);
    for signal in DEADLY {
        // SAFETY: `on_deadly_signal` makes only async-signal-safe calls and reads only atomics and a shared
        // mapping that is never unmapped.
        unsafe { sigaction(signal, &action) }?;
    }
    Ok(())
}

/// The worker holds these listeners (the shared pool's): a worker dying as the server stops answers what they
/// queued. Listeners past `MAX_LISTENERS` are not answered.
pub(super) fn hold_listeners(fds: impl IntoIterator<Item = RawFd>) {
    for (cell, fd) in LISTENERS.iter().zip(fds) {
        cell.store(fd, Ordering::Release);
    }
}

/// The worker closes its listeners: the handler must not touch those descriptors any more.
pub(super) fn let_go_of_listeners() {
    for cell in &LISTENERS {
        cell.store(FREE, Ordering::Release);
    }
}

/// A connection (or what holds it) that the worker has taken in but not started: while it is held here, a dying
/// worker answers it 503. `take` hands it over to be served or answered, and takes it out of the registry first.
pub(super) struct Queued<T> {
    // Declared first, so dropped first: the descriptor leaves the registry before it is closed.
    entry: Entry,
    value: T,
}

impl Queued<Connection<Stream>> {
    pub(super) fn connection(mut conn: Connection<Stream>) -> Self {
        let fd = conn.stream().as_fd().as_raw_fd();
        Queued { entry: Entry::register(&REGISTRY, fd), value: conn }
    }

    /// An idle keep-alive connection: a dying worker answers it only if its client has sent something.
    pub(super) fn idle(mut conn: Connection<Stream>) -> Self {
        let fd = conn.stream().as_fd().as_raw_fd();
        Queued { entry: Entry::register(&IDLE_REGISTRY, fd), value: conn }
    }
}

impl<T> Queued<T> {
    /// The same registration, around what `change` makes of the value (a connection whose head has arrived).
    pub(super) fn map<U>(self, change: impl FnOnce(T) -> U) -> Queued<U> {
        Queued { entry: self.entry, value: change(self.value) }
    }

    /// Moves an idle connection's registration to the connections taken in: its next request has begun. Registered
    /// there before it leaves the idle ones, so that a handler running in between finds it.
    pub(super) fn into_queued(self) -> Queued<T> {
        let Queued { entry, value } = self;
        let fd = entry.0.map_or(FREE, |(_, fd)| fd);
        let queued = Queued { entry: Entry::register(&REGISTRY, fd), value };
        drop(entry);
        queued
    }

    /// Out of the registry: from now on the caller answers the connection.
    pub(super) fn take(self) -> T {
        let Queued { entry, value } = self;
        drop(entry);
        value
    }

    /// Out of the registry, for a thread other than the loop's (the relay, which passes the connection on):
    /// `None` when the handler of a dying worker took it first and is answering it on the loop's thread. The
    /// connection is then left open (forgotten: the process is ending), so that the handler's descriptor stays
    /// the same socket while it answers.
    pub(super) fn take_unanswered(self) -> Option<T> {
        let Queued { entry, value } = self;
        if entry.release() {
            return Some(value);
        }
        std::mem::forget(value);
        None
    }
}

impl<T> Deref for Queued<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

impl<T> DerefMut for Queued<T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.value
    }
}

/// A cell of a registry and the descriptor it holds, freed on drop; `None` when the registry was full.
struct Entry(Option<(&'static AtomicI32, RawFd)>);

impl Entry {
    fn register(registry: &'static Registry, fd: RawFd) -> Entry {
        let free = registry.iter().find(|cell| {
            cell.load(Ordering::Relaxed) == FREE
                && cell.compare_exchange(FREE, fd, Ordering::AcqRel, Ordering::Relaxed).is_ok()
        });
        Entry(free.map(|cell| (cell, fd)))
    }

    /// Frees the cell; whether it still held the descriptor (false: the handler took it).
    fn release(mut self) -> bool {
        match self.0.take() {
            Some((cell, fd)) => cell.compare_exchange(fd, FREE, Ordering::AcqRel, Ordering::Relaxed).is_ok(),
            None => true,
        }
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        if let Some((cell, fd)) = self.0 {
            // Unless the handler already took it.
            let _ = cell.compare_exchange(fd, FREE, Ordering::AcqRel, Ordering::Relaxed);
        }
    }
}

extern "C" fn on_deadly_signal(number: nix::libc::c_int) {
    let errno = Errno::last_raw();
    let Ok(signal) = Signal::try_from(number) else { return };
    let main = MAIN_THREAD.load(Ordering::Relaxed) as Pthread;
    if pthread_self() != main {
        // Another thread got the signal while the loop may be writing to a connection: pass it on.
        let _ = pthread_kill(main, signal);
        Errno::set_raw(errno);
        return;
    }
    // No connection moves between the registry, the listeners and the channel behind the handler's back.
    RELAY_FENCE.close();
    let mut answered = answer_all();
    // SAFETY: the pointer is null or the worker's slot in the heartbeat table, a mapping never unmapped.
    if let Some(slot) = unsafe { SLOT.load(Ordering::Acquire).as_ref() } {
        if slot.leaves_the_listen_queues_to_nobody() {
            answered += answer_listen_queues();
        }
        slot.record_answered_at_death(answered);
    }
    let default = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
    // SAFETY: restoring the default disposition installs no handler.
    let _ = unsafe { sigaction(signal, &default) };
    // Blocked while the handler runs: delivered, with its default action, when it returns.
    let _ = raise(signal);
}

/// Answers every registered connection 503 (an idle one only if its client has sent something: a silent one
/// just gets its FIN), ends it with a FIN, and discards what its client sent; returns how many got the whole
/// answer.
fn answer_all() -> u32 {
    let mut answered = 0;
    for cell in &REGISTRY {
        let fd = cell.swap(FREE, Ordering::AcqRel);
        if fd != FREE && answer_one(fd) {
            answered += 1;
        }
    }
    for cell in &IDLE_REGISTRY {
        let fd = cell.swap(FREE, Ordering::AcqRel);
        if fd == FREE {
            continue;
        }
        if has_unread(fd) {
            if answer_one(fd) {
                answered += 1;
            }
        } else {
            let _ = shutdown(fd, Shutdown::Write);
        }
    }
    answered
}

/// Accepts what the held listeners queued and answers each connection as `answer_all` does; returns how many got
/// the whole answer.
fn answer_listen_queues() -> u32 {
    let mut answered = 0;
    for cell in &LISTENERS {
        let listener = cell.swap(FREE, Ordering::AcqRel);
        if listener == FREE {
            continue;
        }
        let mut accepted = 0;
        while accepted < LISTEN_QUEUE_BUDGET {
            match accept4(listener, SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC) {
                Ok(fd) => {
                    accepted += 1;
                    if answer_one(fd) {
                        answered += 1;
                    }
                    let _ = close(fd);
                }
                Err(Errno::EINTR | Errno::ECONNABORTED) => continue,
                // EAGAIN: nothing more is queued.
                Err(_) => break,
            }
        }
    }
    answered
}

/// Answers one connection as the handler does (503, a FIN, what its client sent discarded), without waiting;
/// returns whether the whole answer went out. For the arbiter's last look at the pools' channels.
pub(super) fn answer_one(fd: RawFd) -> bool {
    let answered = send_all(fd, ANSWER);
    let _ = shutdown(fd, Shutdown::Write);
    discard_unread(fd);
    answered
}

/// Whether the client of the connection `fd` has sent bytes not read yet: an idle connection's next request has
/// begun. Never waits.
pub(super) fn has_unread(fd: RawFd) -> bool {
    let mut byte = [0u8; 1];
    matches!(recv(fd, &mut byte, MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT), Ok(1))
}

fn send_all(fd: RawFd, mut bytes: &[u8]) -> bool {
    while !bytes.is_empty() {
        match send(fd, bytes, MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT) {
            Ok(0) => return false,
            Ok(sent) => bytes = &bytes[sent..],
            Err(Errno::EINTR) => continue,
            Err(_) => return false,
        }
    }
    true
}

fn discard_unread(fd: RawFd) {
    let mut scratch = [0u8; 4096];
    let mut discarded = 0;
    while discarded < DISCARD_BUDGET {
        match recv(fd, &mut scratch, MsgFlags::MSG_DONTWAIT) {
            Ok(0) => return,
            Ok(count) => discarded += count,
            Err(Errno::EINTR) => continue,
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::unix::net::UnixStream;

    #[test]
    fn the_answer_is_a_complete_503_that_closes() {
        let text = std::str::from_utf8(ANSWER).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 503 Service Unavailable\r\n"));
        assert!(head.contains("\r\nConnection: close"));
        assert!(head.contains(&format!("\r\nContent-Length: {}", body.len())));
        assert_eq!(body, "Service Unavailable\n");
    }

    #[test]
    fn a_queued_connection_is_answered_until_it_is_taken() {
        let (ours, mut client) = UnixStream::pair().unwrap();
        let (other, mut other_client) = UnixStream::pair().unwrap();
        let taken = Queued::connection(Connection::new(Stream::Unix(other))).take();
        let queued = Queued::connection(Connection::new(Stream::Unix(ours))).map(|conn| (conn, "arrived"));
        assert_eq!(queued.1, "arrived");
        // Other tests of this binary may hold cells too: count ours only by what the clients read.
        answer_all();
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).unwrap();
        assert_eq!(answer, ANSWER);
        drop(taken);
        let mut nothing = Vec::new();
        other_client.read_to_end(&mut nothing).unwrap();
        assert!(nothing.is_empty(), "a connection taken out is not answered");
        drop(queued);
    }

    #[test]
    fn an_idle_connection_is_answered_only_when_its_next_request_has_come() {
        let (silent, mut silent_client) = UnixStream::pair().unwrap();
        let (asking, mut asking_client) = UnixStream::pair().unwrap();
        let silent = Queued::idle(Connection::new(Stream::Unix(silent)));
        let asking = Queued::idle(Connection::new(Stream::Unix(asking)));
        std::io::Write::write_all(&mut asking_client, b"GET / HTTP/1.1\r\n").unwrap();
        answer_all();
        let mut answer = Vec::new();
        asking_client.read_to_end(&mut answer).unwrap();
        assert_eq!(answer, ANSWER);
        let mut nothing = Vec::new();
        silent_client.read_to_end(&mut nothing).unwrap();
        assert!(nothing.is_empty(), "a silent idle connection only gets its FIN");
        drop((silent, asking));
    }

    #[test]
    fn a_connection_the_handler_took_first_is_not_taken_again() {
        // Descriptor numbers no test opens: only the registry's cells are at stake here.
        let kept = Entry::register(&REGISTRY, 1_000_001);
        assert!(kept.release(), "still registered: the relay may pass it on");
        let claimed = Entry::register(&REGISTRY, 1_000_002);
        let (cell, fd) = claimed.0.expect("a free cell");
        // What the handler does with each cell before it answers.
        assert_eq!(cell.swap(FREE, Ordering::AcqRel), fd);
        assert!(!claimed.release(), "the handler answers it: the relay must not pass it on");
    }
}
