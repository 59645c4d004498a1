//! Idle keep-alive connections among a worker's heads: a connection whose response kept it open comes back here
//! (`readmit`); bytes the client pipelined behind its request make the next request at once, otherwise it waits,
//! without a read buffer, for at most `--keep-alive`, and a worker holds at most `--max-idle-connections` of
//! them. The first byte of a next request makes it a head still arriving (its client timeout starts then); one
//! still silent at its deadline, or when the worker stops, is closed with a FIN, since no request is under way.

use std::time::Instant;

use nix::sys::epoll::{Epoll, EpollFlags};

use super::{Arrived, Heads, Origin, Pending, Progress, read_available, watch};
use crate::http::{self, Connection};
use crate::listener::{Local, Peer, Stream};
use crate::worker::answers;
use crate::worker::farewell::Queued;

/// How an idle connection is watched: its next request is reported once, and the registration then stays, spent,
/// while that request is read and served; `watch_idle` arms it again for the next one. Removing the registration
/// for every request and adding it back cost a system call more.
const IDLE_EVENTS: EpollFlags = EpollFlags::EPOLLIN.union(EpollFlags::EPOLLONESHOT);

/// A keep-alive connection waiting for its next request.
pub(super) struct Idle {
    /// Registered with the farewell handler as idle: a worker that dies answers it if its next request has come.
    pub(super) conn: Queued<Connection<Stream>>,
    pub(super) peer: Peer,
    pub(super) local: Local,
    pub(super) deadline: Instant,
}

impl Heads {
    /// Takes back the connection of a request just served whose response kept it open. Bytes the client sent
    /// behind that request (pipelined) make the next request, ready at once when its head is whole; otherwise the
    /// connection waits, idle, for at most `--keep-alive`.
    pub(in crate::worker) fn readmit(&mut self, epoll: &Epoll, mut conn: Connection<Stream>, peer: Peer, local: Local) {
        conn.compact();
        let now = Instant::now();
        if conn.buffered().is_empty() {
            return self.watch_idle(epoll, conn, peer, local, now + self.keep_alive);
        }
        let mut conn = Queued::connection(conn);
        match http::parse_head(conn.buffered(), &self.limits) {
            Ok(Some((request, length))) => {
                conn.consume(length);
                let origin = Origin::Accepted;
                self.ready.push_back(conn.map(|conn| Arrived { conn, request, peer, local, origin }));
            }
            Ok(None) => {
                self.watch_pending(epoll, Pending { conn, peer, local, accepted: now, deadline: now + self.timeout })
            }
            Err(err) => answers::reject(conn.take(), &err, peer),
        }
    }

    /// Watches an idle connection until `deadline`, or closes it at once when this worker holds its fill.
    pub(super) fn watch_idle(
        &mut self,
        epoll: &Epoll,
        mut conn: Connection<Stream>,
        peer: Peer,
        local: Local,
        deadline: Instant,
    ) {
        if self.idle.len() >= self.max_idle {
            return;
        }
        let key = self.take_key();
        if watch(epoll, conn.stream(), IDLE_EVENTS, key).is_ok() {
            self.idle.insert(key, Idle { conn: Queued::idle(conn), peer, local, deadline });
        }
    }

    /// Takes an idle connection another worker of the pool handed over. Its client may have sent its next request
    /// while it crossed, so it is read at once, as a woken idle connection is; one still silent waits here. When
    /// that makes one more than this worker holds, its oldest idle connection is closed (read first: one whose next
    /// request has begun stays, as a head) rather than the one just handed over, whose client is the more active.
    pub(super) fn admit_idle(
        &mut self,
        epoll: &Epoll,
        conn: Connection<Stream>,
        peer: Peer,
        local: Local,
        deadline: Instant,
    ) {
        let key = self.take_key();
        self.idle.insert(key, Idle { conn: Queued::idle(conn), peer, local, deadline });
        self.wake_idle(epoll, key, true);
        if self.idle.len() > self.max_idle
            && let Some(&oldest) = self.idle.keys().next()
        {
            self.wake_idle(epoll, oldest, false);
        }
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
    /// makes it a head still arriving, under the same key; nothing (or an end of stream) closes it.
    pub(super) fn wake_idle(&mut self, epoll: &Epoll, key: u64, readable: bool) {
        let Some(Idle { mut conn, peer, local, deadline }) = self.idle.remove(&key) else { return };
        let progress = read_available(&mut conn, &self.limits, self.held_limit);
        if matches!(progress, Progress::Waiting) && conn.buffered().is_empty() {
            if !readable {
                let _ = epoll.delete(conn.stream());
            } else if watch(epoll, conn.stream(), IDLE_EVENTS, key).is_ok() {
                // Woken for nothing: it stays idle, its spent registration armed again.
                self.idle.insert(key, Idle { conn, peer, local, deadline });
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
            // A client that closed between requests is no error: there is nobody to answer.
            progress => {
                // Woken by its next request, the registration is spent and stays, reporting nothing, until the
                // connection is idle again (`watch_idle` arms it) or closed. Otherwise it is armed: removed.
                if !readable {
                    let _ = epoll.delete(pending.conn.stream());
                }
                self.settle(pending, progress);
            }
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
    use crate::worker::handoff::Stage;

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
        heads.readmit(&epoll, pipelined, Peer::Unix, local());
        assert_eq!(heads.pop_ready().map(|arrived| arrived.request.path), Some("/next".into()));
        let (empty, _client) = served(b"");
        heads.readmit(&epoll, empty, Peer::Unix, local());
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
        heads.readmit(epoll, conn, Peer::Unix, local());
        client
    }

    /// The client sends `bytes`, and the heads read what the epoll reports.
    fn send(client: &mut UnixStream, bytes: &[u8], epoll: &Epoll, heads: &mut Heads) {
        client.write_all(bytes).unwrap();
        heads.on_readable(epoll, reported(epoll)[0]);
    }

    #[test]
    fn a_connection_idle_again_and_again_reports_each_next_request() {
        let (epoll, mut heads) = (epoll(), heads(4));
        let mut client = idle_connection(&epoll, &mut heads);
        for path in ["/first", "/second", "/third"] {
            client.write_all(format!("GET {path} HTTP/1.1\r\nHost: h\r\n\r\n").as_bytes()).unwrap();
            let keys = reported(&epoll);
            assert_eq!(keys.len(), 1, "{path}: {keys:?}");
            heads.on_readable(&epoll, keys[0]);
            let arrived = heads.pop_ready().expect(path);
            assert_eq!(arrived.request.path, path);
            assert_eq!(heads.idle_count(), 0);
            // Its registration is spent while the request is served: more bytes report nothing.
            client.write_all(b"G").unwrap();
            let mut events = [EpollEvent::empty(); 4];
            assert_eq!(epoll.wait(&mut events, EpollTimeout::ZERO).unwrap(), 0, "{path}");
            let mut conn = arrived.conn;
            http::read_request_part(&mut conn, &HeadLimits::default()).ok();
            assert_eq!(conn.buffered(), b"G");
            conn.consume(1);
            heads.readmit(&epoll, conn, arrived.peer, arrived.local);
            assert_eq!(heads.idle_count(), 1, "{path}: idle again");
        }
    }

    #[test]
    fn a_head_pipelined_in_part_behind_a_request_is_watched_until_it_completes() {
        let (epoll, mut heads) = (epoll(), heads(4));
        let mut client = idle_connection(&epoll, &mut heads);
        send(&mut client, b"GET /whole HTTP/1.1\r\nHost: h\r\n\r\nGET /part", &epoll, &mut heads);
        let arrived = heads.pop_ready().unwrap();
        assert_eq!(arrived.request.path, "/whole");
        heads.readmit(&epoll, arrived.conn, arrived.peer, arrived.local);
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
    fn a_request_relayed_from_an_idle_connection_takes_its_spent_registration_away() {
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
        heads.readmit(&epoll, silent, Peer::Unix, local());
        heads.readmit(&epoll, talking, Peer::Unix, local());
        talking_client.write_all(b"GET /late HTTP/1.1\r\nHost: h\r\n\r\n").unwrap();
        heads.close_idle(&epoll);
        assert_eq!(heads.idle_count(), 0);
        assert_eq!(heads.pop_ready().map(|arrived| arrived.request.path), Some("/late".into()));
        let mut rest = Vec::new();
        assert_eq!(silent_client.read_to_end(&mut rest).unwrap(), 0, "a FIN and nothing else");
    }

    #[test]
    fn past_the_idle_limit_a_connection_is_closed_and_each_stage_can_be_taken_out() {
        let (epoll, mut heads) = (epoll(), heads(1));
        let (first, _first_client) = served(b"");
        let (second, mut second_client) = served(b"");
        heads.readmit(&epoll, first, Peer::Unix, local());
        assert!(!heads.has_idle_room());
        heads.readmit(&epoll, second, Peer::Unix, local());
        assert_eq!(heads.idle_count(), 1);
        assert_eq!(second_client.read(&mut [0u8; 8]).unwrap(), 0, "closed");
        let (arriving, _arriving_client) = served(b"GET /half HTTP/1.1\r\n");
        heads.readmit(&epoll, arriving, Peer::Unix, local());
        let taken = heads.take_one(&epoll).unwrap();
        assert!(matches!(taken.stage, Stage::Arriving { .. }), "{:?}", taken.stage);
        assert_eq!(taken.bytes, b"GET /half HTTP/1.1\r\n");
        let taken = heads.take_one(&epoll).unwrap();
        assert!(matches!(taken.stage, Stage::Idle { left } if left <= Duration::from_secs(2)), "{:?}", taken.stage);
        assert!(heads.take_one(&epoll).is_none());
    }
}
