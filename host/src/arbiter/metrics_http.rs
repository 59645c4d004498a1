//! The metrics process's HTTP loop: `/metrics` (the exposition), `/healthz` (200 while the arbiter runs: this
//! process leaves when it does) and `/readyz` (200 when ready, 503 while starting or stopping), one response per
//! connection. It is one thread with non-blocking sockets and `poll`: at most `MAX_CLIENTS` connections at once,
//! each given `CLIENT_TIME` in all to send its head and read the answer, and a head of at most `MAX_HEAD`
//! bytes; when full, the oldest connection is dropped for the new one. A client that never sends or never reads
//! costs a slot for a while, never the arbiter anything: this is another process.

use std::io::{ErrorKind, Read, Write};
use std::net::Shutdown;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::unistd::Pid;

use super::exposition::{self, Scrape};
use crate::listener::{Listener, Stream};
use crate::worker::counters::ServerState;

const MAX_CLIENTS: usize = 16;
const CLIENT_TIME: Duration = Duration::from_secs(10);
const MAX_HEAD: usize = 8 * 1024;
/// How often the loop looks whether the arbiter is still its parent, when nothing happens.
const IDLE_WAIT: Duration = Duration::from_secs(1);

struct Client {
    stream: Stream,
    deadline: Instant,
    head: Vec<u8>,
    /// The response and how much of it was written, once the head is in.
    answer: Option<(Vec<u8>, usize)>,
}

/// Serves until the arbiter is no longer this process's parent.
pub(super) fn serve(listener: &Listener, scrape: &Scrape<'_>, arbiter: Pid) {
    let mut clients: Vec<Client> = Vec::new();
    while nix::unistd::getppid() == arbiter {
        let now = Instant::now();
        clients.retain(|client| client.deadline > now);
        let wait = clients.iter().map(|client| client.deadline - now).min().unwrap_or(IDLE_WAIT).min(IDLE_WAIT);
        let ready: Vec<PollFlags> = {
            let mut fds = vec![PollFd::new(listener.fd(), PollFlags::POLLIN)];
            for client in &clients {
                let wanted = if client.answer.is_some() { PollFlags::POLLOUT } else { PollFlags::POLLIN };
                fds.push(PollFd::new(client.stream.as_fd(), wanted));
            }
            let millis = u16::try_from(wait.as_millis().max(1)).unwrap_or(u16::MAX);
            if poll(&mut fds, PollTimeout::from(millis)).is_err() {
                continue;
            }
            fds.iter().map(|fd| fd.revents().unwrap_or(PollFlags::empty())).collect()
        };
        let mut done = vec![false; clients.len()];
        for (index, client) in clients.iter_mut().enumerate() {
            if ready.get(index + 1).is_none_or(|flags| flags.is_empty()) {
                continue;
            }
            done[index] = progress(client, scrape);
        }
        let mut index = 0;
        clients.retain(|_| {
            index += 1;
            !done[index - 1]
        });
        if ready.first().is_some_and(|flags| flags.contains(PollFlags::POLLIN)) {
            accept_all(listener, &mut clients);
        }
    }
}

fn accept_all(listener: &Listener, clients: &mut Vec<Client>) {
    while let Ok((stream, _)) = listener.accept() {
        if stream.set_nonblocking(true).is_err() {
            continue;
        }
        if clients.len() >= MAX_CLIENTS {
            clients.remove(0);
        }
        clients.push(Client { stream, deadline: Instant::now() + CLIENT_TIME, head: Vec::new(), answer: None });
    }
}

/// Reads or writes what the client's socket allows; returns whether the client is done with.
fn progress(client: &mut Client, scrape: &Scrape<'_>) -> bool {
    if let Some((answer, written)) = &mut client.answer {
        loop {
            match client.stream.write(&answer[*written..]) {
                Ok(0) => return true,
                Ok(count) => {
                    *written += count;
                    if *written == answer.len() {
                        let _ = client.stream.shutdown(Shutdown::Write);
                        return true;
                    }
                }
                Err(err) if err.kind() == ErrorKind::WouldBlock => return false,
                Err(err) if err.kind() == ErrorKind::Interrupted => {}
                Err(_) => return true,
            }
        }
    }
    let mut buffer = [0u8; 2048];
    loop {
        match client.stream.read(&mut buffer) {
            Ok(0) => return true,
            Ok(count) => {
                // Only the bytes this read brought are looked at (with the three before, where a CRLF CRLF may
                // have begun): a client that sends its head a byte at a time costs its length, not its square.
                let before = client.head.len();
                client.head.extend_from_slice(&buffer[..count]);
                // A line that ends in a bare LF is refused at once, as the server's own port refuses it (RFC 9112
                // section 2.2), rather than waited on for a CRLF CRLF that may never come.
                let bare_lf = (before..client.head.len())
                    .any(|at| client.head[at] == b'\n' && (at == 0 || client.head[at - 1] != b'\r'));
                if bare_lf {
                    client.answer = Some((response(400, "text/plain", b"bad request\n".to_vec(), true), 0));
                    return progress(client, scrape);
                }
                let from = before.saturating_sub(3);
                let ended = client.head[from..].windows(4).position(|window| window == b"\r\n\r\n");
                if let Some(end) = ended.map(|at| from + at) {
                    client.head.truncate(end);
                    client.answer = Some((respond(&client.head, scrape), 0));
                    return progress(client, scrape);
                }
                if client.head.len() > MAX_HEAD {
                    client.answer = Some((response(431, "text/plain", b"head too large\n".to_vec(), true), 0));
                    return progress(client, scrape);
                }
            }
            Err(err) if err.kind() == ErrorKind::WouldBlock => return false,
            Err(err) if err.kind() == ErrorKind::Interrupted => {}
            Err(_) => return true,
        }
    }
}

/// The response to a request head (without its final blank line).
fn respond(head: &[u8], scrape: &Scrape<'_>) -> Vec<u8> {
    let line = head.split(|byte| *byte == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.trim_end_matches('\r').split(' ');
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next()) else {
        return response(400, "text/plain", b"bad request\n".to_vec(), true);
    };
    if !version.starts_with("HTTP/1.") || parts.next().is_some() {
        return response(400, "text/plain", b"bad request\n".to_vec(), true);
    }
    let with_body = method == "GET";
    if !with_body && method != "HEAD" {
        return response(405, "text/plain", b"only GET and HEAD\n".to_vec(), true);
    }
    let path = target.split('?').next().unwrap_or_default();
    let (status, content_type, body) = match path {
        "/metrics" => (200, "text/plain; version=0.0.4; charset=utf-8", exposition::render(scrape).into_bytes()),
        "/healthz" => (200, "text/plain", b"ok\n".to_vec()),
        "/readyz" => match scrape.counters.state() {
            ServerState::Ready => (200, "text/plain", b"ready\n".to_vec()),
            ServerState::Starting => (503, "text/plain", b"starting\n".to_vec()),
            ServerState::Stopping => (503, "text/plain", b"stopping\n".to_vec()),
        },
        _ => (404, "text/plain", b"not found: try /metrics, /healthz or /readyz\n".to_vec()),
    };
    response(status, content_type, body, with_body)
}

fn response(status: u16, content_type: &str, body: Vec<u8>, with_body: bool) -> Vec<u8> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        _ => "Service Unavailable",
    };
    // A 405 says which methods are allowed (RFC 9110 section 15.5.6).
    let allow = if status == 405 { "Allow: GET, HEAD\r\n" } else { "" };
    let mut bytes = format!("HTTP/1.1 {status} {reason}\r\nDate: ").into_bytes();
    crate::clock::push_http_date(&mut bytes);
    bytes.extend_from_slice(
        format!(
            "\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{allow}Cache-Control: no-store\r\n\
             Connection: close\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    if with_body {
        bytes.extend_from_slice(&body);
    }
    bytes
}
