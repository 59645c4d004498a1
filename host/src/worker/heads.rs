//! Request heads still arriving. A worker reads the heads of up to `MAX_PENDING` connections at once (one more refuses
//! the one that has waited longest; on a server stop, of every connection the kernel had queued), without blocking, so
//! that a client that trickles its head, or sends nothing, costs the worker a buffer and not its time. A head must
//! arrive whole within the client timeout of its connection's accept (a deadline for the whole head, not for each
//! read); a complete head makes its request ready to serve, in arrival order. The buffers of the connections held here,
//! heads still arriving and complete ones waiting their turn, hold at most `--limit-pending-heads` bytes together: past
//! it, the largest head still arriving is refused. Every connection held here (but the idle ones, below) is `Queued`,
//! so that a worker killed meanwhile answers it 503 (see `farewell`). Idle keep-alive connections wait here too
//! (`idle`), up to `--max-idle-connections`, each for at most `--keep-alive`: the first byte of a next request makes
//! one a head still arriving (its client timeout starts then); one still silent at its deadline, or when the worker
//! stops, is closed, cleanly, since no request is under way on it. A busy worker's relay takes every connection out
//! (`take_one`) to pass it to the pool's idle workers, which `admit_handed` it at the same stage (`crossing`).

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use nix::sys::epoll::{Epoll, EpollEvent, EpollFlags};

mod crossing;
mod idle;

use super::answers;
use super::farewell::Queued;
use crate::http::{self, Connection, HeadLimits, HttpError, Request};
use crate::listener::{Local, Peer, Stream};
use crate::settings::HttpSettings;

/// The most connections one worker reads heads from at once: one more refuses the one that has waited longest
/// (`408`), so that clients that trickle, or send nothing, cannot keep new clients in the listen queue.
pub(super) const MAX_PENDING: usize = 128;
/// How long a new connection's head is given before the worker stops counting it as a fast client's. A fast client
/// sends its head at once, and a worker that took many connections at once would keep them from idle workers.
const FAST_CLIENT_GRACE: Duration = Duration::from_millis(50);
/// How many heads within their grace a worker holds, once it reads a slow client's (one past its grace), before
/// it waits for one to complete (or its grace to end) to take another connection. Without slow clients it holds
/// one, so that a burst spreads over the idle workers; with them, a few, so that slow clients arriving one after
/// another do not slow the accepting of everyone behind them.
const YOUNG_HEADS: usize = 8;
/// How long a stopping worker waits for the first byte of a connection it accepted. Past it, one that has sent
/// nothing (a browser's preconnect) is closed as an idle one is, instead of holding the worker until its client
/// timeout, and the stop or reload until the graceful timeout.
const SILENT_GRACE_WHEN_STOPPING: Duration = Duration::from_secs(1);

/// A connection whose request head has arrived whole.
pub(super) struct Arrived {
    pub conn: Connection<Stream>,
    pub request: Request,
    pub peer: Peer,
    pub local: Local,
    pub origin: Origin,
    /// The key of the socket's registration in the worker's epoll, when it keeps one while its request waits and is
    /// served: a keep-alive connection's whose head came whole (see `idle`). It comes back with the connection
    /// (`readmit`), or is forgotten (`forget`).
    pub key: Option<u64>,
}

/// How a request reached this worker.
pub(super) enum Origin {
    /// Accepted here, from a listener: it is still to be routed.
    Accepted,
    /// Handed over by a shared worker that routed it to this worker's pool, with the app's mount point (its
    /// `SCRIPT_NAME`).
    HandedOver { script_name: String },
}

impl Arrived {
    /// Answers the request with `status` from the host itself, logged under `app` (see `answers::answer`).
    pub(super) fn answer(self, status: u16, app: &str) {
        answers::answer(self.conn, &self.request, self.peer, status, app);
    }
}

struct Pending {
    conn: Queued<Connection<Stream>>,
    peer: Peer,
    local: Local,
    accepted: Instant,
    deadline: Instant,
}

/// What one round of reading did to a head.
enum Progress {
    Waiting,
    Complete(Request),
    Failed(HttpError),
}

/// The connections of one worker between accept and a complete head. Their sockets are registered in the
/// worker's epoll under keys from `first_key` up.
pub(super) struct Heads {
    pending: BTreeMap<u64, Pending>,
    ready: VecDeque<Queued<Arrived>>,
    idle: BTreeMap<u64, idle::Idle>,
    /// The keys of the connections whose requests are ready or being served and that keep their edge-triggered
    /// registration (`Arrived::key`): true once the epoll reported bytes on one of them meanwhile, which it does
    /// not report again.
    away: BTreeMap<u64, bool>,
    /// `--keep-alive` and `--max-idle-connections`.
    keep_alive: Duration,
    max_idle: usize,
    next_key: u64,
    limits: HeadLimits,
    timeout: Duration,
    /// The most bytes the pending connections' buffers may hold together (`--limit-pending-heads`).
    held_limit: usize,
    /// The most heads still arriving: `MAX_PENDING`, and no limit once the server stops and the worker takes every
    /// connection the kernel queued, to serve them before it leaves.
    pending_limit: usize,
}

impl Heads {
    pub(super) fn new(first_key: u64, settings: &HttpSettings) -> Self {
        Heads {
            pending: BTreeMap::new(),
            ready: VecDeque::new(),
            idle: BTreeMap::new(),
            away: BTreeMap::new(),
            keep_alive: settings.keep_alive,
            max_idle: settings.max_idle_connections,
            next_key: first_key,
            limits: settings.head_limits,
            timeout: settings.client_timeout,
            held_limit: settings.pending_heads_limit,
            pending_limit: MAX_PENDING,
        }
    }

    /// Whether the connection of the request about to be served may stay open after it: keep-alive is on and
    /// this worker has room for one more idle connection.
    pub(super) fn has_idle_room(&self) -> bool {
        !self.keep_alive.is_zero() && self.idle.len() < self.max_idle
    }

    /// From now on no head still arriving is refused for their number: the server stops, and this worker takes
    /// every connection already queued for it, to serve them all.
    pub(super) fn keep_every_head(&mut self) {
        self.pending_limit = usize::MAX;
    }

    /// Whether the worker may take another connection: nothing is waiting to be served, and no head still
    /// arriving is within its grace (see `FAST_CLIENT_GRACE`), or fewer than `YOUNG_HEADS` are while a slow
    /// client's is read too.
    pub(super) fn wants_more(&self, now: Instant) -> bool {
        if !self.ready.is_empty() {
            return false;
        }
        let young = self.pending.values().filter(|pending| now < pending.accepted + FAST_CLIENT_GRACE).count();
        young == 0 || (young < self.pending.len() && young < YOUNG_HEADS)
    }

    /// Whether no request is under way here: idle connections do not count (a stopping worker closes them).
    pub(super) fn is_empty(&self) -> bool {
        self.pending.is_empty() && self.ready.is_empty()
    }

    /// How many connections are held, heads still arriving and requests not started.
    pub(super) fn held(&self) -> usize {
        self.pending.len() + self.ready.len()
    }

    /// How many idle keep-alive connections are held.
    pub(super) fn idle_count(&self) -> usize {
        self.idle.len()
    }

    /// The oldest request whose head is complete, taken out of the queue to be served. Its key, if it has one,
    /// stays away until the connection comes back (`readmit`) or is forgotten (`forget`).
    pub(super) fn pop_ready(&mut self) -> Option<Arrived> {
        self.ready.pop_front().map(Queued::take)
    }

    /// Queues a complete request; one that keeps its registration is away from now on (see `away`).
    fn push_ready(&mut self, arrived: Queued<Arrived>) {
        if let Some(key) = arrived.key {
            self.away.entry(key).or_insert(false);
        }
        self.ready.push_back(arrived);
    }

    /// How long until the next head deadline or end of a grace, if any head is pending.
    pub(super) fn next_deadline(&self, now: Instant) -> Option<Duration> {
        let grace_ends =
            self.pending.values().map(|pending| pending.accepted + FAST_CLIENT_GRACE).filter(|end| *end > now);
        let deadlines = self.pending.values().map(|pending| pending.deadline);
        let idle_ends = self.idle.values().map(|idle| idle.deadline);
        deadlines.chain(idle_ends).chain(grace_ends).map(|instant| instant.saturating_duration_since(now)).min()
    }

    /// Takes a newly accepted connection: reads what already arrived, and watches it if the head is incomplete.
    pub(super) fn admit(&mut self, epoll: &Epoll, stream: Stream, peer: Peer, local: Local) {
        // Reads must never block here, or one silent client would hold the worker: a socket that cannot be made
        // non-blocking (or watched, below) is dropped. Without TCP_NODELAY it is only slower.
        let _ = stream.set_nodelay(true);
        if stream.set_nonblocking(true).is_err() {
            return;
        }
        let accepted = Instant::now();
        let conn = Queued::connection(Connection::new(stream));
        let mut pending = Pending { conn, peer, local, accepted, deadline: accepted + self.timeout };
        match read_available(&mut pending.conn, &self.limits, self.held_limit) {
            Progress::Waiting => {
                let key = self.next_key;
                self.next_key += 1;
                if epoll.add(pending.conn.stream(), EpollEvent::new(EpollFlags::EPOLLIN, key)).is_err() {
                    return;
                }
                self.pending.insert(key, pending);
                self.refuse_over_limits(epoll);
            }
            progress => self.settle(pending, progress, None),
        }
    }

    /// Watches a head still arriving (a part of it may be buffered already).
    fn watch_pending(&mut self, epoll: &Epoll, mut pending: Pending) {
        let key = self.take_key();
        if watch(epoll, pending.conn.stream(), EpollFlags::EPOLLIN, key).is_err() {
            return;
        }
        self.pending.insert(key, pending);
        self.refuse_over_limits(epoll);
    }

    fn take_key(&mut self) -> u64 {
        let key = self.next_key;
        self.next_key += 1;
        key
    }

    /// Whether `key` is one of the pending, idle or away connections' keys.
    pub(super) fn owns(&self, key: u64) -> bool {
        self.pending.contains_key(&key) || self.idle.contains_key(&key) || self.away.contains_key(&key)
    }

    /// The connection of a request that kept its registration under `key` will not come back: it was closed, or
    /// it left this worker (handed over or relayed, served or not).
    pub(super) fn forget(&mut self, key: Option<u64>) {
        if let Some(key) = key {
            self.away.remove(&key);
        }
    }

    /// Reads what arrived on the connection under `key` (or, for one away, notes that bytes came).
    pub(super) fn on_readable(&mut self, epoll: &Epoll, key: u64) {
        if let Some(woken) = self.away.get_mut(&key) {
            *woken = true;
            return;
        }
        if self.idle.contains_key(&key) {
            return self.wake_idle(epoll, key, true);
        }
        let Some(pending) = self.pending.get_mut(&key) else { return };
        let progress = read_available(&mut pending.conn, &self.limits, self.held_limit);
        if matches!(progress, Progress::Waiting) {
            self.refuse_largest_over_limit(epoll);
            return;
        }
        if let Some(mut pending) = self.pending.remove(&key) {
            let _ = epoll.delete(pending.conn.stream());
            self.settle(pending, progress, None);
        }
        // A head that completed keeps its buffer until it is served: it still counts.
        self.refuse_largest_over_limit(epoll);
    }

    /// Answers `408 Request Timeout` to every connection whose head is late. Each is read once more first: its
    /// head may have arrived while the worker was busy with a guest.
    pub(super) fn expire(&mut self, epoll: &Epoll, now: Instant) {
        let idle_late: Vec<u64> =
            self.idle.iter().filter(|(_, idle)| idle.deadline <= now).map(|(key, _)| *key).collect();
        for key in idle_late {
            self.wake_idle(epoll, key, false);
        }
        let late: Vec<u64> =
            self.pending.iter().filter(|(_, pending)| pending.deadline <= now).map(|(key, _)| *key).collect();
        for key in late {
            if let Some(mut pending) = self.pending.remove(&key) {
                let _ = epoll.delete(pending.conn.stream());
                match read_available(&mut pending.conn, &self.limits, self.held_limit) {
                    Progress::Waiting => answers::reject(pending.conn.take(), &HttpError::Timeout, pending.peer),
                    progress => self.settle(pending, progress, None),
                }
            }
        }
    }

    /// The worker stops: closes, with a FIN, each head still arriving that has sent nothing within
    /// `SILENT_GRACE_WHEN_STOPPING` of its accept (read once more first). Returns how long until the next silent
    /// one's grace ends, if one is left.
    pub(super) fn close_silent(&mut self, epoll: &Epoll, now: Instant) -> Option<Duration> {
        let silent: Vec<u64> =
            self.pending.iter().filter(|(_, pending)| sent_nothing(&pending.conn)).map(|(key, _)| *key).collect();
        let mut next: Option<Duration> = None;
        for key in silent {
            let Some(pending) = self.pending.get_mut(&key) else { continue };
            let grace_end = pending.accepted + SILENT_GRACE_WHEN_STOPPING;
            if grace_end > now {
                next = Some(next.map_or(grace_end - now, |next| next.min(grace_end - now)));
                continue;
            }
            let progress = read_available(&mut pending.conn, &self.limits, self.held_limit);
            if matches!(progress, Progress::Waiting) && !sent_nothing(&pending.conn) {
                continue;
            }
            if let Some(mut pending) = self.pending.remove(&key) {
                let _ = epoll.delete(pending.conn.stream());
                match progress {
                    // Dropped: its client sent nothing, there is nobody to answer.
                    Progress::Waiting => {}
                    progress => self.settle(pending, progress, None),
                }
            }
        }
        next
    }

    /// Refuses heads still arriving past the limits: past `pending_limit` of them, the one that has waited longest;
    /// past `--limit-pending-heads` bytes held, the largest.
    fn refuse_over_limits(&mut self, epoll: &Epoll) {
        while self.pending.len() > self.pending_limit {
            let oldest = self.pending.iter().min_by_key(|(_, pending)| pending.accepted).map(|(key, _)| *key);
            let Some(mut pending) = oldest.and_then(|key| self.pending.remove(&key)) else { break };
            let _ = epoll.delete(pending.conn.stream());
            answers::reject(pending.conn.take(), &HttpError::Displaced, pending.peer);
        }
        self.refuse_largest_over_limit(epoll);
    }

    /// Answers `431` to the largest pending heads until the buffers of every connection held here (heads still
    /// arriving, and complete ones waiting to be served) hold no more than `--limit-pending-heads` together: the
    /// clients sending the most unfinished bytes go, the others keep their place.
    fn refuse_largest_over_limit(&mut self, epoll: &Epoll) {
        let waiting: usize = self.ready.iter().map(|arrived| arrived.conn.held()).sum();
        let mut held: usize = waiting + self.pending.values().map(|pending| pending.conn.held()).sum::<usize>();
        while held > self.held_limit {
            let largest = self.pending.iter().max_by_key(|(_, pending)| pending.conn.held()).map(|(key, _)| *key);
            let Some(mut pending) = largest.and_then(|key| self.pending.remove(&key)) else { break };
            held -= pending.conn.held();
            let _ = epoll.delete(pending.conn.stream());
            let why = format!(
                "the heads still arriving at this worker hold more than {} bytes (--limit-pending-heads); this one \
                 holds {}",
                self.held_limit,
                pending.conn.held()
            );
            answers::reject(pending.conn.take(), &HttpError::HeadersTooLarge(why), pending.peer);
        }
    }

    /// Deals with a head read to its end: a complete one is ready to serve (`key`: the registration its socket
    /// keeps meanwhile, if any), a failed one is answered.
    fn settle(&mut self, pending: Pending, progress: Progress, key: Option<u64>) {
        match progress {
            Progress::Waiting => {}
            Progress::Complete(request) => {
                let Pending { conn, peer, local, .. } = pending;
                self.push_ready(conn.map(|conn| Arrived { conn, request, peer, local, origin: Origin::Accepted, key }));
            }
            Progress::Failed(err) => answers::reject(pending.conn.take(), &err, pending.peer),
        }
    }
}

/// Whether a head still arriving holds nothing but the empty lines a server ignores before a request line
/// (RFC 9112 section 2.2): no request has begun.
fn sent_nothing(conn: &Connection<Stream>) -> bool {
    conn.buffered().iter().all(|byte| matches!(byte, b'\r' | b'\n'))
}

/// Watches `stream` under `key` for `flags`. A connection that was idle here may still have its registration (see
/// `idle`): that one is changed, one system call where removing it and adding a new one took two; a socket without
/// one gets one.
fn watch(epoll: &Epoll, stream: &Stream, flags: EpollFlags, key: u64) -> nix::Result<()> {
    let mut event = EpollEvent::new(flags, key);
    match epoll.modify(stream, &mut event) {
        Err(nix::errno::Errno::ENOENT) => epoll.add(stream, event),
        armed => armed,
    }
}

/// A connection with a request that leaves this worker (handed to another pool, or relayed to an idle worker of
/// its own): its stream and buffered bytes. The registration a keep-alive connection keeps while its request is
/// served (see `idle`) is removed, or it would stay in this worker's epoll for as long as the other worker keeps
/// the socket open.
pub(super) fn leave(epoll: &Epoll, conn: Connection<Stream>) -> (Stream, Vec<u8>) {
    let (stream, bytes) = conn.into_parts();
    let _ = epoll.delete(&stream);
    (stream, bytes)
}

/// Reads everything the non-blocking socket has, until the head is complete or fails, or until the connection's
/// buffer holds more than `most` bytes (`--limit-pending-heads`): then it stops reading and the head is left to
/// `refuse_largest_over_limit`, so that a client sending as fast as the worker reads cannot grow the buffer past
/// the limit before it is looked at.
fn read_available(conn: &mut Connection<Stream>, limits: &HeadLimits, most: usize) -> Progress {
    loop {
        match http::read_request_part(conn, limits) {
            Ok(Some(request)) => return Progress::Complete(request),
            Ok(None) if conn.held() > most => return Progress::Waiting,
            Ok(None) => continue,
            // The socket is non-blocking: "would block" means nothing more has arrived yet, not a timeout.
            Err(HttpError::Timeout) => return Progress::Waiting,
            Err(err) => return Progress::Failed(err),
        }
    }
}
