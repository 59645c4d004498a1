//! A worker's heads crossing a pool's channel (see `handoff`): what a busy worker's relay takes out, one
//! connection at a time with the bytes already read and the time it has left, and what a worker takes in at the
//! stage it crossed in.

use std::time::Instant;

use nix::sys::epoll::Epoll;

use super::idle::Idle;
use super::{Arrived, FAST_CLIENT_GRACE, Heads, Origin, Pending, leave};
use crate::http::{self, Connection, HttpError};
use crate::worker::answers;
use crate::worker::farewell::Queued;
use crate::worker::handoff::{Handed, Stage};

impl Heads {
    /// Takes a connection handed to this worker's pool, at the stage it crossed in: a complete head is ready to
    /// serve, a head still arriving or an idle connection is watched until its time left runs out.
    pub(in crate::worker) fn admit_handed(&mut self, epoll: &Epoll, handed: Handed) {
        let Handed { stream, peer, local, stage, bytes } = handed;
        if stream.set_nonblocking(true).is_err() {
            return;
        }
        let now = Instant::now();
        let origin = match stage {
            Stage::Routed { script_name } => Origin::HandedOver { script_name },
            Stage::Unrouted => Origin::Accepted,
            Stage::Idle { left } => {
                self.admit_idle(epoll, Connection::with_bytes(stream, bytes), peer, local, now + left);
                return self.expire_if_late(epoll, left, now);
            }
            Stage::Arriving { left } => {
                // Its grace is over: it was accepted elsewhere, a while ago.
                let accepted = now.checked_sub(FAST_CLIENT_GRACE).unwrap_or(now);
                let conn = Queued::connection(Connection::with_bytes(stream, bytes));
                self.watch_pending(epoll, Pending { conn, peer, local, accepted, deadline: now + left });
                return self.expire_if_late(epoll, left, now);
            }
        };
        let mut conn = Queued::connection(Connection::with_bytes(stream, bytes));
        match http::parse_head(conn.buffered(), &self.limits) {
            Ok(Some((request, length))) => {
                conn.consume(length);
                // Not registered here: `key` is none.
                self.ready.push_back(conn.map(|conn| Arrived { conn, request, peer, local, origin, key: None }));
            }
            Ok(None) => {
                let err = HttpError::BadRequest("an incomplete head was handed over".into());
                answers::reject(conn.take(), &err, peer);
            }
            Err(err) => answers::reject(conn.take(), &err, peer),
        }
    }

    /// A connection that crossed with no time left is dealt with at once (`408` for a head still late after one
    /// more read, a clean close for an idle one), not at the worker's next wait: a worker about to run a guest
    /// would otherwise relay it on again, and under steady load it never met its deadline.
    fn expire_if_late(&mut self, epoll: &Epoll, left: std::time::Duration, now: Instant) {
        if left.is_zero() {
            self.expire(epoll, now);
        }
    }

    /// Takes out the oldest complete request, for the front door's relay to pass on while this worker's guest
    /// runs. `Some(None)` when a dying worker's signal handler took it first.
    pub(in crate::worker) fn take_ready_unanswered(&mut self) -> Option<Option<Arrived>> {
        Some(self.take_ready_out()?.take_unanswered())
    }

    /// Takes the oldest complete request out of this worker for good (relayed, or routed by the front door): its
    /// key, if it has one, is forgotten.
    fn take_ready_out(&mut self) -> Option<Queued<Arrived>> {
        let arrived = self.ready.pop_front()?;
        self.forget(arrived.key);
        Some(arrived)
    }

    /// Takes one held connection out, to relay it to the pool's other workers: a request ready first, then heads
    /// still arriving, then idle connections. Its epoll registration is removed (the socket outlives this
    /// worker's copy). One that a dying worker's signal handler took first (see `farewell`) is left to it, and the
    /// next is taken.
    pub(in crate::worker) fn take_one(&mut self, epoll: &Epoll) -> Option<Handed> {
        loop {
            if let Some(handed) = self.take_one_held(epoll)? {
                return Some(handed);
            }
        }
    }

    /// `take_one`'s step: `Some(None)` for a connection the handler answers.
    fn take_one_held(&mut self, epoll: &Epoll) -> Option<Option<Handed>> {
        let now = Instant::now();
        if let Some(arrived) = self.take_ready_out() {
            let Some(Arrived { conn, peer, local, origin, .. }) = arrived.take_unanswered() else { return Some(None) };
            let stage = match origin {
                Origin::Accepted => Stage::Unrouted,
                Origin::HandedOver { script_name } => Stage::Routed { script_name },
            };
            let (stream, bytes) = leave(epoll, conn);
            return Some(Some(Handed { stream, peer, local, stage, bytes }));
        }
        let (stream_and_bytes, peer, local, stage) = if let Some((_, pending)) = self.pending.pop_first() {
            let Pending { mut conn, peer, local, deadline, .. } = pending;
            let _ = epoll.delete(conn.stream());
            let Some(mut conn) = conn.take_unanswered() else { return Some(None) };
            conn.compact();
            (conn.into_parts(), peer, local, Stage::Arriving { left: deadline.saturating_duration_since(now) })
        } else {
            let (_, Idle { mut conn, peer, local, deadline }) = self.idle.pop_first()?;
            let _ = epoll.delete(conn.stream());
            let Some(mut conn) = conn.take_unanswered() else { return Some(None) };
            conn.compact();
            (conn.into_parts(), peer, local, Stage::Idle { left: deadline.saturating_duration_since(now) })
        };
        let (stream, bytes) = stream_and_bytes;
        Some(Some(Handed { stream, peer, local, stage, bytes }))
    }
}
