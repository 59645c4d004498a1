//! The worker's own answers, given without an app: a request that could not be read or is refused (4xx/5xx
//! from `HttpError`), a request no app takes (404), one whose pool is full or whose app is stopped (503). Each is
//! written with a bounded wait and followed by a closing drain, so that the client reads the answer rather than a
//! reset. Also the one builder of the access-log record, for these answers and for the apps' responses, and the
//! close after an app's response that ends its connection, which discards what the client pipelined first.

use std::io::Read;
use std::net::{IpAddr, Shutdown};
use std::os::fd::{AsFd, AsRawFd};
use std::time::{Duration, Instant};

use nix::sys::socket::{MsgFlags, recv};

use crate::http::{self, Connection, HttpError, Request, Sent};
use crate::listener::{Peer, Stream};
use crate::log;

use super::meter;

/// The longest the worker waits to write its own answer, or to read and discard an unread request body.
pub(super) const DRAIN_TIMEOUT: Duration = Duration::from_secs(1);
/// How much of what a rejected client still sends is discarded, without waiting, before closing.
const REJECT_DRAIN_BUDGET: usize = 64 * 1024;
/// How much of what a client pipelined behind a request whose response closes is discarded, without waiting.
const PIPELINED_DISCARD_BUDGET: usize = 1 << 20;

/// Writes the access-log line of `request`, answered for `app` (empty without a manifest; `-` when no app did)
/// to the client at `remote_addr` (None when unknown) with `sent` and `response_headers`, `started` at the end of
/// its head.
pub(super) fn log_access(
    request: &Request,
    app: &str,
    remote_addr: Option<IpAddr>,
    sent: Sent,
    response_headers: &[(String, Vec<u8>)],
    started: Instant,
) {
    let duration = started.elapsed();
    meter::request_done(app, &request.method, sent.status, duration);
    write_access_line(request, app, remote_addr, sent, response_headers, duration);
}

/// The access-log line of `log_access`, for a request that took `duration`, without counting the request.
fn write_access_line(
    request: &Request,
    app: &str,
    remote_addr: Option<IpAddr>,
    sent: Sent,
    response_headers: &[(String, Vec<u8>)],
    duration: Duration,
) {
    log::access(&log::AccessRecord {
        app,
        remote_addr,
        method: &request.method,
        target: &request.target,
        path: &request.path,
        query: &request.query,
        protocol: request.version.as_str(),
        status: sent.status,
        body_bytes: sent.body_bytes,
        request_headers: &request.headers,
        response_headers,
        duration,
    });
}

/// Answers a complete request with `status` from the host itself (no app has it, or its pool is full), logs it
/// in the access log under `app` (`-` when none), and closes.
pub(super) fn answer(mut conn: Connection<Stream>, request: &Request, peer: Peer, status: u16, app: &str) {
    let started = Instant::now();
    let head_only = request.method == "HEAD";
    let written = write_host_answer(&mut conn, status, head_only);
    let sent = host_answer_sent(status, written, head_only);
    log_access(request, app, peer.ip(), sent, &[], started);
    if written {
        close_discarding(conn.stream());
    }
}

/// Answers a request whose head was read and that is refused before any app sees it (a body over the limit: 413;
/// contradictory forwarding headers: 400) as `reject` does, and writes its access-log line (under no app) naming
/// the client at `remote_addr`.
pub(super) fn refuse(
    conn: Connection<Stream>,
    request: &Request,
    err: &HttpError,
    peer: Peer,
    remote_addr: Option<IpAddr>,
) {
    let head_only = request.method == "HEAD";
    if let Some((sent, duration)) = reject_answering(conn, err, peer, head_only) {
        write_access_line(request, "-", remote_addr, sent, &[], duration);
    }
}

/// Answers a request that could not be read or is refused, when there is anyone to answer, and closes. The
/// answer is followed by a FIN, and what the client already sent is discarded first, so that closing with unread
/// bytes does not reset the connection before the client reads the answer.
pub(super) fn reject(conn: Connection<Stream>, err: &HttpError, peer: Peer) {
    // The head was not (or not wholly) parsed, but its first bytes say whether it is a HEAD request, whose answer
    // has no body.
    let head_only = conn.buffered().starts_with(b"HEAD ");
    reject_answering(conn, err, peer, head_only);
}

/// `reject`, with the head alone for a HEAD request (`head_only`); what was sent and how long the answer took,
/// or None when the error has no answer.
fn reject_answering(
    mut conn: Connection<Stream>,
    err: &HttpError,
    peer: Peer,
    head_only: bool,
) -> Option<(Sent, Duration)> {
    let status = err.status()?;
    log::info(format_args!("Invalid request from {peer}: {err}"));
    let started = Instant::now();
    let written = write_host_answer(&mut conn, status, head_only);
    let duration = started.elapsed();
    // Counted without an app, its method `_OTHER`: the request was not (or not wholly) read.
    meter::request_done("-", "", status, duration);
    if written {
        close_discarding(conn.stream());
    }
    Some((host_answer_sent(status, written, head_only), duration))
}

/// What the access log counts of the host's own answer `status`: its body, unless it answered a HEAD request or did
/// not go out.
fn host_answer_sent(status: u16, written: bool, head_only: bool) -> Sent {
    Sent { status, body_bytes: if written && !head_only { http::error_body_length(status) } else { 0 } }
}

/// Writes the host's own response for `status`, waiting at most `DRAIN_TIMEOUT`; returns whether it was sent.
fn write_host_answer(conn: &mut Connection<Stream>, status: u16, head_only: bool) -> bool {
    let _ = conn.stream().set_nonblocking(false);
    let _ = conn.stream().set_write_timeout(Some(DRAIN_TIMEOUT));
    conn.write_all(&http::error_response(status, head_only)).is_ok()
}

/// Ends the response with a FIN and discards, without waiting, what the client already sent, so that closing
/// with unread bytes does not reset the connection before the client reads the answer.
fn close_discarding(stream: &mut Stream) {
    let _ = stream.shutdown(Shutdown::Write);
    let _ = stream.set_nonblocking(true);
    discard(stream, REJECT_DRAIN_BUDGET);
}

/// Closes a connection after an app's response that closes it. What the client sent behind the request
/// (pipelined requests this connection will not answer) is discarded first, up to 1 MiB and without waiting,
/// after a FIN: closed with unread bytes, the connection would be reset, and the kernel would throw
/// away the part of the response the client had not read yet. When nothing is there (the usual case), it is
/// closed as it is, one read later.
pub(super) fn close_after_response(stream: &mut Stream) {
    let mut scratch = [0u8; 16 * 1024];
    // Never waits, whatever mode the socket is in.
    let Ok(count @ 1..) = recv(stream.as_fd().as_raw_fd(), &mut scratch, MsgFlags::MSG_DONTWAIT) else { return };
    let _ = stream.shutdown(Shutdown::Write);
    let _ = stream.set_nonblocking(true);
    discard(stream, PIPELINED_DISCARD_BUDGET.saturating_sub(count));
}

/// Reads and drops what has arrived on the non-blocking `stream`, up to `budget` bytes.
fn discard(stream: &mut Stream, budget: usize) {
    let mut discarded = 0;
    let mut scratch = [0u8; 16 * 1024];
    while discarded < budget {
        match stream.read(&mut scratch) {
            Ok(0) | Err(_) => break,
            Ok(count) => discarded += count,
        }
    }
}
