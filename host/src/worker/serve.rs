//! Serves one connection: read the request, run the guest, finish the response, log it, close.

use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::guest::{Outcome, Runtime};
use crate::http::{self, Connection, HttpError, Request};
use crate::log;

use super::environ;
use super::exchange::HttpExchange;

/// How long a worker waits on a silent client, for the request head, each body read and each write.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);
/// How much of an unread request body is read and discarded before closing, so that the client sees the
/// response rather than a reset; and how long that may take.
const DRAIN_BUDGET: u64 = 1 << 20;
const DRAIN_TIMEOUT: Duration = Duration::from_secs(1);

pub fn connection(runtime: &Runtime<HttpExchange>, stream: TcpStream, peer: SocketAddr, local: SocketAddr) {
    // A socket that refuses options is still served; the defaults are only slower or unbounded.
    let _ = stream.set_read_timeout(Some(CLIENT_TIMEOUT));
    let _ = stream.set_write_timeout(Some(CLIENT_TIMEOUT));
    let _ = stream.set_nodelay(true);
    let mut conn = Connection::new(stream);
    let request = match http::read_request(&mut conn, &Default::default()) {
        Ok(request) => request,
        Err(err) => return reject(&mut conn, &err, peer),
    };
    let environ = environ::build(&request, peer, local);
    let (mut exchange, outcome) = runtime.handle(&environ, HttpExchange::new(conn, &request));
    let guest_error = describe_failure(&request, &exchange, outcome);
    let contract_checked = guest_error.is_none();
    let sent = match exchange.response.finish(&mut exchange.conn, guest_error) {
        Ok(sent) | Err(sent) => sent,
    };
    if contract_checked && let Some(reason) = exchange.response.failure() {
        log::error(format_args!("Invalid response from the guest for {}: {reason}", request.request_line()));
    }
    log::access(&log::AccessRecord {
        remote_addr: &peer.ip().to_string(),
        request_line: &request.request_line(),
        status: sent.status,
        body_bytes: sent.body_bytes,
        referer: request.header("referer"),
        user_agent: request.header("user-agent"),
    });
    if !exchange.body.is_done() && exchange.body_error.is_none() {
        let _ = exchange.conn.stream().set_read_timeout(Some(DRAIN_TIMEOUT));
        exchange.body.drain(&mut exchange.conn, DRAIN_BUDGET);
    }
}

/// Logs what went wrong in the guest and picks the status the client gets if nothing was sent yet.
fn describe_failure(request: &Request, exchange: &HttpExchange, outcome: Outcome) -> Option<(u16, String)> {
    let what = request.request_line();
    if let Some(err) = &exchange.body_error {
        log::info(format_args!("Bad request body for {what}: {err}"));
        return Some((err.status().unwrap_or(400), err.to_string()));
    }
    match outcome {
        // Whether the response kept the contract is known once it is finished.
        Outcome::Completed => None,
        Outcome::Refused(message) => {
            log::error(format_args!("Error handling request {what}: {message}"));
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

/// Answers a request that could not be read, when there is anyone to answer.
fn reject(conn: &mut Connection<TcpStream>, err: &HttpError, peer: SocketAddr) {
    let Some(status) = err.status() else { return };
    log::info(format_args!("Invalid request from {peer}: {err}"));
    let _ = conn.write_all(&http::error_response(status));
}
