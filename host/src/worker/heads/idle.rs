//! Idle keep-alive connections among a worker's heads: a connection whose response kept it open comes back here
//! (`readmit`); bytes the client pipelined behind its request make the next request at once, otherwise it waits,
//! without a read buffer, for at most `--keep-alive`, and a worker holds at most `--max-idle-connections` of
//! them. The first byte of a next request makes it a head still arriving (its client timeout starts then); one
//! still silent at its deadline, or when the worker stops, is closed with a FIN, since no request is under way.
//! A keep-alive connection is registered in the worker's epoll edge-triggered when it first goes idle, and the
//! registration stays while its requests are served one after another, as long as each head comes whole in one
//! read (one that comes in parts is watched level-triggered until it is whole, and registered again after).
//! The epoll reports bytes that arrive after a read, so a connection whose last read drained its socket, and on
//! which the epoll reported nothing while it was away, waits without a look at the socket and without a system
//! call to watch it again. A short read is taken for a drained socket: TCP urgent data also ends a read short,
//! so a client that sends it may wait for its next request to be read until its `--keep-alive` runs out (when
//! the connection is read once more), a delay it causes itself.

use std::time::Instant;

use nix::sys::epoll::{Epoll, EpollEvent, EpollFlags};

use super::{Arrived, Heads, Origin, Pending, Progress, read_available, watch};
use crate::http::{self, Connection};
use crate::listener::{Local, Peer, Stream};
use crate::worker::answers;
use crate::worker::farewell::Queued;

/// Registers `stream` under `key` for `flags`: a connection that has no registration here (never watched, watched
/// until its head completed, or handed over) gets one with a single system call; should it have one after all,
/// that one is changed.
fn register(epoll: &Epoll, stream: &Stream, flags: EpollFlags, key: u64) -> nix::Result<()> {
    match epoll.add(stream, EpollEvent::new(flags, key)) {
        Err(nix::errno::Errno::EEXIST) => epoll.modify(stream, &mut EpollEvent::new(flags, key)),
        added => added,
    }
}

/// How an idle connection is watched: edge-triggered, so that the registration can stay while its requests are
/// served (a level-triggered one would report a pipelined request's bytes at every wait). Arming a one-shot
/// registration again for every request cost a system call per request; removing it and adding it back, two.
const IDLE_EVENTS: EpollFlags = EpollFlags::EPOLLIN.union(EpollFlags::EPOLLET);

/// A keep-alive connection waiting for its next request.
pub(super) struct Idle {
    /// Registered with the farewell handler as idle: a worker that dies answers it if its next request has come.
    pub(super) conn: Queued<Connection<Stream>>,
    pub(super) peer: Peer,
    pub(super) local: Local,
    pub(super) deadline: Instant,
}

impl Heads {
    /// Takes back the connection of a request just served whose response kept it open, with the key of the
    /// registration it kept (`Arrived::key`). Bytes the client sent behind that request (pipelined) make the next
    /// request, ready at once when its head is whole; otherwise the connection waits, idle, for at most
    /// `--keep-alive`, and is read at once if bytes may have come that the epoll will not report (see `watch_idle`).
    pub(in crate::worker) fn readmit(
        &mut self,
        epoll: &Epoll,
        mut conn: Connection<Stream>,
        peer: Peer,
        local: Local,
        key: Option<u64>,
    ) {
        conn.compact();
        let now = Instant::now();
        let woken = key.and_then(|key| self.away.remove(&key)).unwrap_or(false);
        if conn.buffered().is_empty() {
            let unread = woken || !conn.drained();
            return self.watch_idle(epoll, conn, peer, local, now + self.keep_alive, key, unread);
        }
        let mut conn = Queued::connection(conn);
        match http::parse_head(conn.buffered(), &self.limits) {
            Ok(Some((request, length))) => {
                conn.consume(length);
                let origin = Origin::Accepted;
                self.push_ready(conn.map(|conn| Arrived { conn, request, peer, local, origin, key }));
                if woken && let Some(key) = key {
                    self.away.insert(key, true);
                }
            }
            Ok(None) => {
                self.watch_pending(epoll, Pending { conn, peer, local, accepted: now, deadline: now + self.timeout })
            }
            Err(err) => answers::reject(conn.take(), &err, peer),
        }
    }

    /// Watches an idle connection until `deadline`, or closes it at once when this worker holds its fill. One that
    /// kept its registration (`key`) stays under it, with no system call; one without is registered. With
    /// `unread` (the epoll reported bytes while it was away, or its last read did not drain the socket), it is read
    /// at once: the epoll reports only bytes that arrive from now on.
    #[allow(clippy::too_many_arguments, reason = "the connection's parts, as Idle holds them, and how it comes")]
    fn watch_idle(
        &mut self,
        epoll: &Epoll,
        conn: Connection<Stream>,
        peer: Peer,
        local: Local,
        deadline: Instant,
        key: Option<u64>,
        unread: bool,
    ) {
        if self.idle.len() >= self.max_idle {
            return;
        }
        let key = match key {
            Some(key) => {
                self.idle.insert(key, Idle { conn: Queued::idle(conn), peer, local, deadline });
                key
            }
            None => match self.hold_idle(epoll, conn, peer, local, deadline) {
                Some(key) => key,
                None => return,
            },
        };
        if unread {
            self.wake_idle(epoll, key, true);
        }
    }

    /// Takes an idle connection another worker of the pool handed over. Its client may have sent its next request
    /// while it crossed, so it is read at once, as a woken idle connection is; one still silent waits here. When
    /// that makes one more than this worker holds, the connection idle the longest (the nearest deadline: a key is
    /// a connection's for its whole life, and says nothing of how long it has been idle) is closed (read first:
    /// one whose next request has begun stays, as a head) rather than the one just handed over, whose client is
    /// the more active.
    pub(super) fn admit_idle(
        &mut self,
        epoll: &Epoll,
        conn: Connection<Stream>,
        peer: Peer,
        local: Local,
        deadline: Instant,
    ) {
        // Registered before the read: a byte that comes after it is then reported.
        let Some(key) = self.hold_idle(epoll, conn, peer, local, deadline) else { return };
        self.wake_idle(epoll, key, true);
        if self.idle.len() > self.max_idle {
            let others = self.idle.iter().filter(|(other, _)| **other != key);
            if let Some(oldest) = others.min_by_key(|(_, idle)| idle.deadline).map(|(other, _)| *other) {
                self.wake_idle(epoll, oldest, false);
            }
        }
    }

    /// Holds an idle connection that has no registration here under a new key, registered; returns the key, or
    /// `None` when the connection cannot be watched (it is dropped, closed).
    fn hold_idle(
        &mut self,
        epoll: &Epoll,
        mut conn: Connection<Stream>,
        peer: Peer,
        local: Local,
        deadline: Instant,
    ) -> Option<u64> {
        let key = self.take_key();
        register(epoll, conn.stream(), IDLE_EVENTS, key).ok()?;
        self.idle.insert(key, Idle { conn: Queued::idle(conn), peer, local, deadline });
        Some(key)
    }

    /// Closes every idle connection (the worker stops): each is read once first, and one whose next request has
    /// started arriving is kept as a head still arriving, to be served.
    pub(in crate::worker) fn close_idle(&mut self, epoll: &Epoll) {
        let keys: Vec<u64> = self.idle.keys().copied().collect();
        for key in keys {
            self.wake_idle(epoll, key, false);
        }
    }

    /// The idle connection under `key` became readable (or its time is up, or the worker stops): what arrived
    /// makes it a head still arriving, under the same key, or a request ready to serve, which keeps the
    /// registration; nothing (or an end of stream) closes it.
    pub(super) fn wake_idle(&mut self, epoll: &Epoll, key: u64, readable: bool) {
        let Some(Idle { mut conn, peer, local, deadline }) = self.idle.remove(&key) else { return };
        let progress = read_available(&mut conn, &self.limits, self.held_limit);
        if matches!(progress, Progress::Waiting) && conn.buffered().is_empty() {
            if readable {
                // Woken for nothing: it stays idle, its registration as it was (the read drained the socket).
                self.idle.insert(key, Idle { conn, peer, local, deadline });
            } else {
                let _ = epoll.delete(conn.stream());
            }
            return;
        }
        let now = Instant::now();
        let mut pending =
            Pending { conn: conn.into_queued(), peer, local, accepted: now, deadline: now + self.timeout };
        match progress {
            Progress::Waiting => {
                // A head still arriving is watched for every byte, not once.
                if watch(epoll, pending.conn.stream(), EpollFlags::EPOLLIN, key).is_err() {
                    return;
                }
                self.pending.insert(key, pending);
                self.refuse_over_limits(epoll);
            }
            // A complete request keeps the registration while it is served (a failed one, or a client that closed
            // between requests, which is no error, closes the connection, and its registration with it).
            progress => self.settle(pending, progress, Some(key)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;
    use std::time::Duration;

    use nix::sys::epoll::{EpollCreateFlags, EpollEvent, EpollTimeout};

    use super::*;
    use crate::settings::{HeadLimits, HttpSettings, TrustedProxies};
    use crate::worker::handoff::{Handed, Stage};

    fn heads(max_idle: usize) -> Heads {
        let settings = HttpSettings {
            head_limits: HeadLimits::default(),
            pending_heads_limit: 1 << 20,
            client_timeout: Duration::from_secs(30),
            trusted_proxies: TrustedProxies::All,
            keep_alive: Duration::from_secs(2),
            max_idle_connections: max_idle,
        };
        Heads::new(1, &settings)
    }

    /// A served connection (its request consumed) holding `unread`, and the client's end.
    fn served(unread: &[u8]) -> (Connection<Stream>, UnixStream) {
        let (ours, client) = UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        let done = b"GET /done HTTP/1.1\r\n\r\n";
        let mut conn = Connection::with_bytes(Stream::Unix(ours), [done.as_slice(), unread].concat());
        conn.consume(done.len());
        (conn, client)
    }

    fn epoll() -> Epoll {
        Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).unwrap()
    }

    fn local() -> Local {
        Local::Unix("/test".into())
    }

    #[test]
    fn a_pipelined_request_is_ready_at_once_and_an_empty_connection_waits_idle() {
        let (epoll, mut heads) = (epoll(), heads(4));
        let (pipelined, _client) = served(b"GET /next HTTP/1.1\r\nHost: h\r\n\r\n");
        heads.readmit(&epoll, pipelined, Peer::Unix, local(), None);
        assert_eq!(heads.pop_ready().map(|arrived| arrived.request.path), Some("/next".into()));
        let (empty, _client) = served(b"");
        heads.readmit(&epoll, empty, Peer::Unix, local(), None);
        assert_eq!((heads.idle_count(), heads.held()), (1, 0));
        assert!(heads.is_empty(), "an idle connection is no request under way");
        let left = heads.next_deadline(Instant::now()).unwrap();
        assert!(left <= Duration::from_secs(2) && left > Duration::from_secs(1), "{left:?}");
    }

    /// The keys the epoll reports within a second.
    fn reported(epoll: &Epoll) -> Vec<u64> {
        let mut events = [EpollEvent::empty(); 4];
        let count = epoll.wait(&mut events, EpollTimeout::from(1000u16)).unwrap();
        events[..count].iter().map(EpollEvent::data).collect()
    }

    /// A served connection taken back, empty, to wait idle among `heads`; the client's end.
    fn idle_connection(epoll: &Epoll, heads: &mut Heads) -> UnixStream {
        let (conn, client) = served(b"");
        heads.readmit(epoll, conn, Peer::Unix, local(), None);
        client
    }

    /// The connection of `arrived`, its request served, taken back with the registration it kept.
    fn served_back(epoll: &Epoll, heads: &mut Heads, arrived: Arrived) {
        heads.readmit(epoll, arrived.conn, arrived.peer, arrived.local, arrived.key);
    }

    /// The client sends `bytes`, and the heads read what the epoll reports.
    fn send(client: &mut UnixStream, bytes: &[u8], epoll: &Epoll, heads: &mut Heads) {
        client.write_all(bytes).unwrap();
        heads.on_readable(epoll, reported(epoll)[0]);
    }

    /// Nothing is reported at once.
    fn quiet(epoll: &Epoll) -> bool {
        let mut events = [EpollEvent::empty(); 4];
        epoll.wait(&mut events, EpollTimeout::ZERO).unwrap() == 0
    }

    #[test]
    fn a_connection_kept_alive_keeps_one_registration_that_reports_each_next_request() {
        let (epoll, mut heads) = (epoll(), heads(4));
        let mut client = idle_connection(&epoll, &mut heads);
        let mut keys = Vec::new();
        for path in ["/first", "/second", "/third"] {
            client.write_all(format!("GET {path} HTTP/1.1\r\nHost: h\r\n\r\n").as_bytes()).unwrap();
            let reported = reported(&epoll);
            assert_eq!(reported.len(), 1, "{path}: {reported:?}");
            heads.on_readable(&epoll, reported[0]);
            let arrived = heads.pop_ready().expect(path);
            assert_eq!(arrived.request.path, path);
            assert_eq!(arrived.key, Some(reported[0]), "{path}: served under the key it was idle under");
            assert_eq!(heads.idle_count(), 0);
            keys.push(reported[0]);
            served_back(&epoll, &mut heads, arrived);
            assert_eq!(heads.idle_count(), 1, "{path}: idle again");
            assert!(quiet(&epoll), "{path}: an idle connection that sent nothing is not reported");
        }
        assert!(keys.iter().all(|key| *key == keys[0]), "one registration for every request: {keys:?}");
    }

    #[test]
    fn a_request_that_arrives_while_the_last_one_is_served_is_ready_when_the_connection_comes_back() {
        let (epoll, mut heads) = (epoll(), heads(4));
        let mut client = idle_connection(&epoll, &mut heads);
        // The epoll reports the next request while the connection is away, and it is not reported again.
        send(&mut client, b"GET /one HTTP/1.1\r\nHost: h\r\n\r\n", &epoll, &mut heads);
        let one = heads.pop_ready().unwrap();
        client.write_all(b"GET /two HTTP/1.1\r\nHost: h\r\n\r\n").unwrap();
        let keys = reported(&epoll);
        assert_eq!(keys, vec![one.key.unwrap()]);
        assert!(heads.owns(keys[0]), "the key of a connection away is still this worker's");
        heads.on_readable(&epoll, keys[0]);
        assert!(quiet(&epoll), "reported once");
        served_back(&epoll, &mut heads, one);
        let two = heads.pop_ready().expect("the request that came meanwhile");
        assert_eq!(two.request.path, "/two");
        // Not reported while away: the epoll reports it once the connection is back.
        client.write_all(b"GET /three HTTP/1.1\r\nHost: h\r\n\r\n").unwrap();
        served_back(&epoll, &mut heads, two);
        assert_eq!(heads.idle_count(), 1);
        heads.on_readable(&epoll, reported(&epoll)[0]);
        assert_eq!(heads.pop_ready().map(|arrived| arrived.request.path), Some("/three".into()));
    }

    #[test]
    fn a_request_left_in_the_socket_by_a_full_read_is_read_when_the_connection_comes_back() {
        let (epoll, mut heads) = (epoll(), heads(4));
        let mut client = idle_connection(&epoll, &mut heads);
        // A head exactly as long as one read: the read that takes it leaves the next request in the socket.
        let start = "GET /long HTTP/1.1\r\nHost: h\r\n";
        let padding = 16 * 1024 - start.len() - "X-A: \r\nX-B: \r\n\r\n".len();
        let (a, b) = ("a".repeat(padding / 2), "b".repeat(padding - padding / 2));
        let long = format!("{start}X-A: {a}\r\nX-B: {b}\r\n\r\n");
        assert_eq!(long.len(), 16 * 1024);
        client.write_all(format!("{long}GET /next HTTP/1.1\r\nHost: h\r\n\r\n").as_bytes()).unwrap();
        heads.on_readable(&epoll, reported(&epoll)[0]);
        let first = heads.pop_ready().unwrap();
        assert_eq!(first.request.path, "/long");
        assert!(first.conn.buffered().is_empty() && !first.conn.drained());
        assert!(quiet(&epoll), "the epoll does not report bytes that were there before the read");
        served_back(&epoll, &mut heads, first);
        assert_eq!(heads.pop_ready().map(|arrived| arrived.request.path), Some("/next".into()));
    }

    #[test]
    fn a_head_pipelined_in_part_behind_a_request_is_watched_until_it_completes() {
        let (epoll, mut heads) = (epoll(), heads(4));
        let mut client = idle_connection(&epoll, &mut heads);
        send(&mut client, b"GET /whole HTTP/1.1\r\nHost: h\r\n\r\nGET /part", &epoll, &mut heads);
        let arrived = heads.pop_ready().unwrap();
        assert_eq!(arrived.request.path, "/whole");
        served_back(&epoll, &mut heads, arrived);
        assert_eq!((heads.held(), heads.idle_count()), (1, 0), "a head still arriving");
        send(&mut client, b"ed HTTP/1.1\r\n", &epoll, &mut heads);
        assert!(heads.pop_ready().is_none());
        send(&mut client, b"Host: h\r\n\r\n", &epoll, &mut heads);
        assert_eq!(heads.pop_ready().map(|arrived| arrived.request.path), Some("/parted".into()));
    }

    #[test]
    fn a_next_head_that_arrives_in_part_is_watched_for_every_byte() {
        let (epoll, mut heads) = (epoll(), heads(4));
        let mut client = idle_connection(&epoll, &mut heads);
        send(&mut client, b"GET /tr", &epoll, &mut heads);
        assert_eq!((heads.held(), heads.idle_count()), (1, 0), "a head still arriving");
        send(&mut client, b"ickle HTTP/1.1\r\n", &epoll, &mut heads);
        send(&mut client, b"Host: h\r\n\r\n", &epoll, &mut heads);
        assert_eq!(heads.pop_ready().map(|arrived| arrived.request.path), Some("/trickle".into()));
    }

    #[test]
    fn a_request_relayed_from_an_idle_connection_takes_its_registration_away() {
        let (epoll, mut heads) = (epoll(), heads(4));
        let mut client = idle_connection(&epoll, &mut heads);
        send(&mut client, b"GET /next HTTP/1.1\r\nHost: h\r\n\r\n", &epoll, &mut heads);
        let handed = heads.take_one(&epoll).expect("the ready request");
        assert!(matches!(handed.stage, Stage::Unrouted), "{:?}", handed.stage);
        let mut event = EpollEvent::new(EpollFlags::EPOLLIN, 9);
        assert_eq!(epoll.modify(&handed.stream, &mut event), Err(nix::errno::Errno::ENOENT));
    }

    #[test]
    fn closing_idle_connections_serves_a_request_that_began_and_closes_the_silent_ones_cleanly() {
        let (epoll, mut heads) = (epoll(), heads(4));
        let (silent, mut silent_client) = served(b"");
        let (talking, mut talking_client) = served(b"");
        heads.readmit(&epoll, silent, Peer::Unix, local(), None);
        heads.readmit(&epoll, talking, Peer::Unix, local(), None);
        talking_client.write_all(b"GET /late HTTP/1.1\r\nHost: h\r\n\r\n").unwrap();
        heads.close_idle(&epoll);
        assert_eq!(heads.idle_count(), 0);
        assert_eq!(heads.pop_ready().map(|arrived| arrived.request.path), Some("/late".into()));
        let mut rest = Vec::new();
        assert_eq!(silent_client.read_to_end(&mut rest).unwrap(), 0, "a FIN and nothing else");
    }

    #[test]
    fn an_idle_connection_handed_over_past_the_limit_closes_the_one_idle_the_longest() {
        let (epoll, mut heads) = (epoll(), heads(2));
        // The first to go idle keeps the smaller key for its whole life...
        let mut busy_client = idle_connection(&epoll, &mut heads);
        let (silent, mut silent_client) = served(b"");
        heads.readmit(&epoll, silent, Peer::Unix, local(), None);
        // ...and is idle again, after one more request, for less time than the other.
        send(&mut busy_client, b"GET /again HTTP/1.1\r\nHost: h\r\n\r\n", &epoll, &mut heads);
        let again = heads.pop_ready().unwrap();
        served_back(&epoll, &mut heads, again);
        assert_eq!(heads.idle_count(), 2);
        let (ours, _handed_client) = UnixStream::pair().unwrap();
        let stage = Stage::Idle { left: Duration::from_secs(2) };
        heads.admit_handed(
            &epoll,
            Handed { stream: Stream::Unix(ours), peer: Peer::Unix, local: local(), stage, bytes: vec![] },
        );
        assert_eq!(heads.idle_count(), 2);
        silent_client.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        assert_eq!(silent_client.read(&mut [0u8; 8]).ok(), Some(0), "the one idle the longest is closed");
        busy_client.set_nonblocking(true).unwrap();
        let busy = busy_client.read(&mut [0u8; 8]).map_err(|err| err.kind());
        assert_eq!(busy, Err(std::io::ErrorKind::WouldBlock), "the busy client's connection stays open");
    }

    #[test]
    fn past_the_idle_limit_a_connection_is_closed_and_each_stage_can_be_taken_out() {
        let (epoll, mut heads) = (epoll(), heads(1));
        let (first, _first_client) = served(b"");
        let (second, mut second_client) = served(b"");
        heads.readmit(&epoll, first, Peer::Unix, local(), None);
        assert!(!heads.has_idle_room());
        heads.readmit(&epoll, second, Peer::Unix, local(), None);
        assert_eq!(heads.idle_count(), 1);
        assert_eq!(second_client.read(&mut [0u8; 8]).unwrap(), 0, "closed");
        let (arriving, _arriving_client) = served(b"GET /half HTTP/1.1\r\n");
        heads.readmit(&epoll, arriving, Peer::Unix, local(), None);
        let taken = heads.take_one(&epoll).unwrap();
        assert!(matches!(taken.stage, Stage::Arriving { .. }), "{:?}", taken.stage);
        assert_eq!(taken.bytes, b"GET /half HTTP/1.1\r\n");
        let taken = heads.take_one(&epoll).unwrap();
        assert!(matches!(taken.stage, Stage::Idle { left } if left <= Duration::from_secs(2)), "{:?}", taken.stage);
        assert!(heads.take_one(&epoll).is_none());
    }
}
