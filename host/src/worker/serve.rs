//! Serves one request whose head has arrived: check its body size and forwarding headers, run the guest,
//! finish the response, log it, close. Also answers the requests that could not be read.

use std::io::Read;
use std::net::Shutdown;
use std::time::{Duration, Instant};

use crate::guest::{Outcome, Runtime};
use crate::http::{self, BodyReader, Connection, HttpError, Request};
use crate::listener::{Peer, Stream};
use crate::log;
use crate::settings::HttpSettings;

use super::environ;
use super::exchange::HttpExchange;
use super::forwarded;
use super::heads::Arrived;
use super::heartbeat::Slot;
use super::watched::WatchedStream;

/// How much of an unread request body is read and discarded before closing, so that the client sees the
/// response rather than a reset; and how long that may take.
const DRAIN_BUDGET: u64 = 1 << 20;
const DRAIN_TIMEOUT: Duration = Duration::from_secs(1);
/// How much of what a rejected client still sends is discarded, without waiting, before closing.
const REJECT_DRAIN_BUDGET: usize = 64 * 1024;

/// The app a request goes to, in this worker.
pub struct Target<'a> {
    /// The app's position in the worker's runtime.
    pub index: usize,
    /// Its name, for the logs (empty without a manifest).
    pub name: &'a str,
    /// Its mount point: the request's SCRIPT_NAME.
    pub script_name: &'a str,
    pub body_limit: Option<u64>,
}

pub fn request(
    runtime: &Runtime<HttpExchange>,
    target: &Target<'_>,
    settings: &HttpSettings,
    arrived: Arrived,
    slot: &'static Slot,
) {
    let Arrived { mut conn, request, peer, local, .. } = arrived;
    let checked = BodyReader::new(&request, target.body_limit)
        .and_then(|body| Ok((body, forwarded::client(&request, peer, &settings.trusted_proxies)?)));
    let (body, client) = match checked {
        Ok(checked) => checked,
        Err(err) => return reject(conn, &err, peer),
    };
    // From here on the worker waits on this client alone: each read and write gives up when the client moves no
    // byte for the client timeout, and each one that moves bytes is a sign of life.
    if let Err(err) = conn.stream().set_nonblocking(true) {
        log::warning(format_args!("cannot serve {}: {err}", request.request_line()));
        return;
    }
    let conn = conn.map_stream(|stream| WatchedStream::new(stream, slot, settings.client_timeout));
    let started = Instant::now();
    slot.begin_request(&request.request_line());
    let environ = environ::build(&request, &client, &local, target.script_name);
    let (mut exchange, outcome) = runtime.handle(target.index, &environ, HttpExchange::new(conn, &request, body));
    let guest_error = describe_failure(&request, target.name, &exchange, outcome);
    let contract_checked = guest_error.is_none();
    let sent = match exchange.response.finish(&mut exchange.conn, guest_error) {
        Ok(sent) | Err(sent) => sent,
    };
    if contract_checked && let Some(reason) = exchange.response.failure() {
        log::error(format_args!(
            "Invalid response from the guest for {}{}: {reason}",
            request.request_line(),
            of_app(target.name)
        ));
    }
    log::access(&log::AccessRecord {
        app: target.name,
        remote_addr: if client.remote_addr.is_empty() { "-" } else { &client.remote_addr },
        method: &request.method,
        target: &request.target,
        path: &request.path,
        query: &request.query,
        protocol: request.version.as_str(),
        status: sent.status,
        body_bytes: sent.body_bytes,
        request_headers: &request.headers,
        response_headers: exchange.response.headers(),
        duration: started.elapsed(),
    });
    if !exchange.body.is_done() && exchange.body_error.is_none() {
        // A client still waiting for `100 Continue` was never asked for its body: only what it sent anyway is
        // discarded, without waiting for more.
        let patience = if exchange.body.continue_pending() { Duration::ZERO } else { DRAIN_TIMEOUT };
        exchange.conn.stream().set_patience(patience);
        exchange.body.drain(&mut exchange.conn, DRAIN_BUDGET);
    }
}

/// Logs what went wrong in the guest and picks the status the client gets if nothing was sent yet.
fn describe_failure(request: &Request, app: &str, exchange: &HttpExchange, outcome: Outcome) -> Option<(u16, String)> {
    let what = format!("{}{}", request.request_line(), of_app(app));
    if let Some(err) = &exchange.body_error {
        log::info(format_args!("Bad request body for {what}: {err}"));
        return Some((err.status().unwrap_or(400), err.to_string()));
    }
    match outcome {
        // Whether the response kept the contract is known once it is finished.
        Outcome::Completed => None,
        Outcome::Refused(message) => {
            // The guest's message is logged on its line, its control characters escaped.
            log::error(format_args!("Error handling request {what}: {}", log::escape(&message)));
            Some((500, message))
        }
        Outcome::TimedOut(trace) => {
            log::error(format_args!("Guest timeout handling request {what}: {trace}"));
            Some((503, "the guest ran past its time limit".into()))
        }
        Outcome::Failed(trace) => {
            log::error(format_args!("Guest failure handling request {what}: {trace}"));
            Some((500, "the guest failed".into()))
        }
    }
}

/// ` (app NAME)` for a named app, for log lines.
fn of_app(name: &str) -> String {
    if name.is_empty() { String::new() } else { format!(" (app {name})") }
}

/// Answers a complete request with `status` from the host itself (no app has it, or its pool is full), logs it
/// in the access log under `app` (`-` when none), and closes.
pub fn answer(arrived: Arrived, status: u16, app: &str) {
    let Arrived { mut conn, request, peer, .. } = arrived;
    let started = Instant::now();
    let sent = write_host_answer(&mut conn, status);
    let remote_addr = peer.to_string();
    log::access(&log::AccessRecord {
        app,
        remote_addr: &remote_addr,
        method: &request.method,
        target: &request.target,
        path: &request.path,
        query: &request.query,
        protocol: request.version.as_str(),
        status,
        body_bytes: if sent { http::error_body_length(status) } else { 0 },
        request_headers: &request.headers,
        response_headers: &[],
        duration: started.elapsed(),
    });
    if sent {
        close_discarding(conn.stream());
    }
}

/// Answers a request that could not be read or is refused, when there is anyone to answer, and closes. The
/// answer is followed by a FIN, and what the client already sent is discarded first, so that closing with unread
/// bytes does not reset the connection before the client reads the answer.
pub fn reject(mut conn: Connection<Stream>, err: &HttpError, peer: Peer) {
    let Some(status) = err.status() else { return };
    log::info(format_args!("Invalid request from {peer}: {err}"));
    if write_host_answer(&mut conn, status) {
        close_discarding(conn.stream());
    }
}

/// Writes the host's own response for `status`, waiting at most `DRAIN_TIMEOUT`; returns whether it was sent.
fn write_host_answer(conn: &mut Connection<Stream>, status: u16) -> bool {
    let _ = conn.stream().set_nonblocking(false);
    let _ = conn.stream().set_write_timeout(Some(DRAIN_TIMEOUT));
    conn.write_all(&http::error_response(status)).is_ok()
}

/// Ends the response with a FIN and discards, without waiting, what the client already sent, so that closing
/// with unread bytes does not reset the connection before the client reads the answer.
fn close_discarding(stream: &mut Stream) {
    let _ = stream.shutdown(Shutdown::Write);
    let _ = stream.set_nonblocking(true);
    let mut discarded = 0;
    let mut scratch = [0u8; 16 * 1024];
    while discarded < REJECT_DRAIN_BUDGET {
        match stream.read(&mut scratch) {
            Ok(0) | Err(_) => break,
            Ok(count) => discarded += count,
        }
    }
}
