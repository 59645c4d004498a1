//! The keep-alive tests' client: a connection read one response at a time by its framing, and what tells which
//! worker served a request.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};

use nix::unistd::Pid;

use crate::support::{PATIENCE, Response, Server, holder_of, parse_response};

/// A client that keeps its connection: it reads one response at a time, by its framing.
pub(super) struct Client {
    pub(super) stream: TcpStream,
    buffer: Vec<u8>,
}

/// How a wait for the server's bytes ended.
#[derive(Debug, PartialEq)]
pub(super) enum End {
    /// A FIN: the server closed the connection cleanly.
    Closed,
    /// The connection was reset, or failed.
    Failed(ErrorKind),
}

impl Client {
    pub(super) fn connect(server: &Server) -> Client {
        let stream = TcpStream::connect(("127.0.0.1", server.port)).expect("connect to wasmcorn");
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        Client { stream, buffer: Vec::new() }
    }

    /// A client whose socket takes in at most 64 KiB at a time, so that the server's last writes of a large
    /// response wait in the server's send buffer until the client reads.
    pub(super) fn with_small_receive_buffer(server: &Server) -> Client {
        let client = Client::connect(server);
        nix::sys::socket::setsockopt(&client.stream, nix::sys::socket::sockopt::RcvBuf, &(64 * 1024))
            .expect("set SO_RCVBUF");
        client
    }

    pub(super) fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send a request");
    }

    /// `GET path` with `Host: host`, keeping the connection.
    pub(super) fn get(&mut self, host: &str, path: &str) -> Response {
        self.send(format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes());
        self.response()
    }

    /// Reads more bytes into the buffer; how the connection ended when none came.
    fn fill(&mut self) -> Result<(), End> {
        let mut chunk = [0u8; 64 * 1024];
        match self.stream.read(&mut chunk) {
            Ok(0) => Err(End::Closed),
            Ok(count) => {
                self.buffer.extend_from_slice(&chunk[..count]);
                Ok(())
            }
            Err(err) => Err(End::Failed(err.kind())),
        }
    }

    /// The next response, read by its framing (to the connection's end when it has none); it is taken out of the
    /// buffer, so what follows it is the next one.
    pub(super) fn response(&mut self) -> Response {
        loop {
            if let Some(length) = self.whole_response() {
                let raw: Vec<u8> = self.buffer.drain(..length).collect();
                return parse_response(&raw);
            }
            if let Err(end) = self.fill() {
                assert!(!self.buffer.is_empty(), "the connection ended ({end:?}) before a response");
                let raw = std::mem::take(&mut self.buffer);
                return parse_response(&raw);
            }
        }
    }

    /// The length of the whole response at the start of the buffer, if it is there and framed.
    fn whole_response(&self) -> Option<usize> {
        let mut fields = [httparse::EMPTY_HEADER; 64];
        let mut parsed = httparse::Response::new(&mut fields);
        let httparse::Status::Complete(head) = parsed.parse(&self.buffer).ok()? else { return None };
        let field = |name: &str| {
            let found = parsed.headers.iter().find(|field| field.name.eq_ignore_ascii_case(name));
            found.map(|field| String::from_utf8_lossy(field.value).into_owned())
        };
        if field("transfer-encoding").as_deref() == Some("chunked") {
            let end = self.buffer[head..].windows(5).position(|window| window == b"0\r\n\r\n")?;
            return Some(head + end + 5);
        }
        let length: usize = field("content-length")?.parse().ok()?;
        (self.buffer.len() >= head + length).then_some(head + length)
    }

    /// Waits for the server to end the connection, with nothing more sent; how it ended.
    pub(super) fn end(&mut self) -> End {
        loop {
            if let Err(end) = self.fill() {
                assert!(self.buffer.is_empty(), "more bytes came: {:?}", String::from_utf8_lossy(&self.buffer));
                return end;
            }
        }
    }

    /// Whether any byte (or the end) has come, without waiting.
    pub(super) fn has_news(&self) -> bool {
        self.stream.set_nonblocking(true).unwrap();
        let mut byte = [0u8; 1];
        let news = !matches!(self.stream.peek(&mut byte), Err(err) if err.kind() == ErrorKind::WouldBlock);
        self.stream.set_nonblocking(false).unwrap();
        news
    }
}

pub(super) fn assert_kept(response: &Response, status: u16) {
    assert_eq!(response.status, status, "{}", response.text());
    assert_eq!(response.header("connection"), Some("keep-alive"), "{:?}", response.headers);
}

pub(super) fn assert_closing(response: &Response, status: u16) {
    assert_eq!(response.status, status, "{}", response.text());
    assert_eq!(response.header("connection"), Some("close"), "{:?}", response.headers);
}

/// The pid in the access-log line (`--access-logformat '%(p)s %(r)s'`) of the request line `request_line`.
pub(super) fn served_by(server: &Server, request_line: &str) -> Pid {
    let line = server.wait_for_line(&format!("> {request_line}"));
    let pid = line.split('<').nth(1).and_then(|rest| rest.split('>').next()).and_then(|pid| pid.parse().ok());
    Pid::from_raw(pid.unwrap_or_else(|| panic!("no pid in {line:?}")))
}

static TRIES: AtomicUsize = AtomicUsize::new(0);

/// A kept-alive connection that the worker `holder` holds (which worker takes a connection is the kernel's
/// choice: connect until one lands there).
///
/// A new connection wakes the first of the workers waiting for one (EPOLLEXCLUSIVE), in an order that does not
/// change: with every worker idle, the same one takes nearly every connection, and another only when it happens
/// to be busy (60 tries in a row once all landed on the other worker). So each try after a miss first sends a
/// request on the connection that missed: the worker that took it serves it while this one connects.
pub(super) fn connection_on(server: &Server, holder: Pid) -> Client {
    let mut missed: Option<Client> = None;
    for _ in 0..60 {
        // Each try has a request line of its own, for `served_by`.
        let attempt = TRIES.fetch_add(1, Ordering::Relaxed);
        let busy = missed.take().map(|mut other| {
            other.send(format!("GET /count?keeping-busy={attempt} HTTP/1.1\r\nHost: h\r\n\r\n").as_bytes());
            other
        });
        let mut client = Client::connect(server);
        if let Some(mut busy) = busy {
            assert_kept(&busy.response(), 200);
        }
        assert_kept(&client.get("h", &format!("/count?try={attempt}")), 200);
        if served_by(server, &format!("GET /count?try={attempt} HTTP/1.1")) == holder {
            return client;
        }
        missed = Some(client);
    }
    panic!("no connection landed on worker {holder}");
}

/// A long request on `client`: the guest waits for the body, which the test sends when it likes (`x`).
pub(super) fn start_long_request(server: &Server, client: &mut Client) {
    client.send(b"POST /stash?secret=s HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\n\r\n");
    server.wait_for_line("[guest stdout] stashed");
}

/// `clients` by the worker of `workers` that holds each one's connection, as the kernel shows it. A worker whose
/// guest run lasts past 5 ms passes the connections it holds to an idle worker (the relay), so the one that served
/// a request need not hold its connection. A client that no worker holds (its connection closed, or in flight
/// between workers) is dropped.
pub(super) fn group_by_holder(server: &Server, workers: &[Pid], clients: Vec<Client>) -> HashMap<Pid, Vec<Client>> {
    let mut held: HashMap<Pid, Vec<Client>> = HashMap::new();
    for client in clients {
        if let Some(holder) = holder_of(server.port, &client.stream, workers) {
            held.entry(holder).or_default().push(client);
        }
    }
    held
}

/// Two idle kept-alive connections that one of `workers` holds, as the kernel shows it once no request is under
/// way, and that worker. Which worker served a connection does not settle which holds it: a worker whose guest run
/// lasts past 5 ms (a loaded machine) passes the connections it holds to an idle worker of its pool (the relay).
/// Connects again until one worker holds both.
pub(super) fn two_idle_connections_on_one_worker(server: &Server, workers: &[Pid]) -> (Pid, Client, Client) {
    let worker = *workers.first().expect("a worker");
    for _ in 0..20 {
        let first = connection_on(server, worker);
        let second = connection_on(server, worker);
        let holders = [holder_of(server.port, &first.stream, workers), holder_of(server.port, &second.stream, workers)];
        if holders == [Some(worker); 2] {
            return (worker, first, second);
        }
    }
    panic!("worker {worker} never held two idle connections");
}

/// An idle kept-alive connection held by each of `workers`, as the kernel shows it once no request is under way.
/// The worker that served a connection need not hold it later: one whose guest run lasts past 5 ms (a loaded
/// machine) passes the connections it holds to an idle worker of its pool (the relay). Connects again until each
/// worker holds one of them.
pub(super) fn idle_connection_on_each(server: &Server, workers: &[Pid]) -> Vec<(Pid, Client)> {
    for _ in 0..20 {
        let clients: Vec<Client> = workers.iter().map(|worker| connection_on(server, *worker)).collect();
        let held: Vec<(Pid, Client)> = clients
            .into_iter()
            .filter_map(|client| Some((holder_of(server.port, &client.stream, workers)?, client)))
            .collect();
        if workers.iter().all(|worker| held.iter().filter(|(holder, _)| holder == worker).count() == 1) {
            return held;
        }
    }
    panic!("the workers {workers:?} never held one idle connection each");
}
