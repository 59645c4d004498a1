//! Serves one request whose head has arrived with the app it goes to: check its body size and forwarding
//! headers, run the guest, finish the response, log it; then give the connection back for its next request when
//! the response kept it alive, or drain what is left of the body and close.

use std::time::{Duration, Instant};

use crate::guest::{Outcome, Runtime};
use crate::http::{BodyReader, Connection, Request};
use crate::listener::{Local, Peer, Stream};
use crate::log;
use crate::settings::HttpSettings;

use super::answers::{self, DRAIN_TIMEOUT};
use super::environ;
use super::exchange::HttpExchange;
use super::forwarded;
use super::heads::Arrived;
use super::heartbeat::Slot;
use super::meter;
use super::proxy_head;
use super::watched::WatchedStream;

/// How much of an unread request body is read and discarded before closing, so that the client sees the
/// response rather than a reset (for at most `DRAIN_TIMEOUT` in all).
const DRAIN_BUDGET: u64 = 1 << 20;

/// The app a request goes to, in this worker, and the request's decoded path.
pub(super) struct Target<'a> {
    /// The app's position in the worker's runtime.
    pub index: usize,
    /// Its name, for the logs (empty without a manifest).
    pub name: &'a str,
    /// Its mount point: the request's SCRIPT_NAME.
    pub script_name: &'a str,
    /// The request's path, percent-decoded (see `environ::decode_path`).
    pub path: &'a str,
    pub body_limit: Option<u64>,
}

/// A connection whose response kept it open, given back for its next request.
pub(super) struct KeptAlive {
    pub conn: Connection<Stream>,
    pub peer: Peer,
    pub local: Local,
}

/// Serves the request; `keep_alive` says whether the worker can keep the connection open after it (the client
/// must ask too). Returns the connection when the response kept it alive.
pub(super) fn request(
    runtime: &Runtime<HttpExchange>,
    target: &Target<'_>,
    settings: &HttpSettings,
    arrived: Arrived,
    slot: &'static Slot,
    keep_alive: bool,
) -> Option<KeptAlive> {
    let Arrived { conn, request, peer, local, .. } = arrived;
    let checked = BodyReader::new(&request, target.body_limit)
        .and_then(|body| Ok((body, forwarded::client(&request, peer, &settings.trusted_proxies)?)));
    let (body, client) = match checked {
        Ok(checked) => checked,
        Err(err) => {
            // Logged with the client a trusted proxy names, as a served request is (the proxy when its headers are
            // what is refused).
            let client = forwarded::client(&request, peer, &settings.trusted_proxies);
            let remote_addr = client.map_or_else(|_| peer.ip(), |client| client.address);
            answers::refuse(conn, &request, &err, peer, remote_addr);
            return None;
        }
    };
    // From here on the worker waits on this client alone: each read and write gives up when the client moves no
    // byte for the client timeout, and each one that moves bytes is a sign of life. The socket is non-blocking
    // already: the heads make every connection so before they read it (`Heads::admit`, `crossing`), and a kept
    // connection comes back from here.
    let conn = conn.map_stream(|stream| WatchedStream::new(stream, slot, settings.client_timeout));
    let started = Instant::now();
    slot.begin_request(&request.request_line_parts());
    // Only an app that is given the environ or may ask for it reads it: the others do not pay for building it.
    let environ = if runtime.reads_environ(target.index) {
        environ::build(&request, &client, &local, target.script_name, target.path)
    } else {
        Vec::new()
    };
    let keep_alive = keep_alive && request.wants_keep_alive();
    // Only a `wasi:http` app reads it: the others do not pay for copying the headers.
    let head = runtime.serves_proxy(target.index).then(|| proxy_head::build(&request, client.url_scheme, &local));
    let exchange = HttpExchange::new(conn, &request, body, keep_alive, head);
    let pairs: Vec<(&str, &str)> = environ.iter().map(|(name, value)| (name.as_ref(), value.as_ref())).collect();
    let (mut exchange, outcome) = runtime.handle(target.index, &pairs, exchange);
    meter::guest_done(target.name, &outcome, exchange.instance);
    let guest_error = describe_failure(&request, target.name, &exchange, outcome);
    let contract_checked = guest_error.is_none();
    if slot.is_retiring() || slot.is_server_stopping() {
        // Retired while the guest ran (a reload, TTOU), or the server began to stop: this worker closes its
        // connections after this request, and the response says so.
        exchange.forgo_keep_alive();
    }
    exchange.offer_keep_alive();
    let (sent, finished) = match exchange.response.finish(&mut exchange.conn, guest_error) {
        Ok(sent) => (sent, true),
        Err(sent) => (sent, false),
    };
    if !finished || exchange.response.failure().is_some() {
        // A request that failed only now (see `Runtime::discard_kept`) does not leave its instance for the next.
        runtime.discard_kept(target.index);
    }
    // The response is out (or its client gone): only now is the instance torn down, which the client no longer
    // waits for.
    runtime.retire_served();
    if contract_checked && let Some(reason) = exchange.response.failure() {
        log::error(format_args!(
            "Invalid response from the guest for {}{}: {reason}",
            request.request_line(),
            of_app(target.name)
        ));
    }
    answers::log_access(&request, target.name, client.address, sent, exchange.response.headers(), started);
    if finished && exchange.keeps_alive() {
        let HttpExchange { conn, .. } = exchange;
        return Some(KeptAlive { conn: conn.map_stream(WatchedStream::into_inner), peer, local });
    }
    if !exchange.body.is_done() && exchange.body_error.is_none() {
        // A client still waiting for `100 Continue` was never asked for its body: only what it sent anyway is
        // discarded, without waiting for more. The cutoff ends the whole drain, not each read: a client trickling
        // a byte now and then does not hold the worker any longer.
        let patience = if exchange.body.continue_pending() { Duration::ZERO } else { DRAIN_TIMEOUT };
        exchange.conn.stream().set_patience(patience);
        exchange.conn.stream().set_cutoff(Some(Instant::now() + patience));
        exchange.body.drain(&mut exchange.conn, DRAIN_BUDGET);
    }
    let HttpExchange { conn, .. } = exchange;
    answers::close_after_response(conn.map_stream(WatchedStream::into_inner).stream());
    None
}

/// Logs what went wrong in the guest and picks the status the client gets if nothing was sent yet.
fn describe_failure(request: &Request, app: &str, exchange: &HttpExchange, outcome: Outcome) -> Option<(u16, String)> {
    // Formatted only for a request that went wrong.
    let what = || format!("{}{}", request.request_line(), of_app(app));
    if let Some(err) = &exchange.body_error {
        log::info(format_args!("Bad request body for {}: {err}", what()));
        return Some((err.status().unwrap_or(400), err.to_string()));
    }
    match outcome {
        // Whether the response kept the contract is known once it is finished.
        Outcome::Completed => None,
        Outcome::Refused(message) => {
            // The guest's message is logged on its line, its control characters escaped; no more of it than a log
            // line holds is escaped.
            let shown = log::escape(log::prefix(&message, log::RECORD_MAX));
            log::error(format_args!("Error handling request {}: {shown}", what()));
            Some((500, message))
        }
        Outcome::TimedOut(trace) => {
            log::error(format_args!("Guest timeout handling request {}: {trace}", what()));
            Some((503, "the guest ran past its time limit".into()))
        }
        Outcome::Failed(trace) => {
            log::error(format_args!("Guest failure handling request {}: {trace}", what()));
            Some((500, "the guest failed".into()))
        }
    }
}

/// ` (app NAME)` for a named app, for log lines.
fn of_app(name: &str) -> String {
    if name.is_empty() { String::new() } else { format!(" (app {name})") }
}
