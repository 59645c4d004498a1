//! The test harness: a `Server` that runs the binary and watches its log, and a small HTTP/1.1 client.

pub(crate) mod debian;
pub(crate) mod nginx;
pub(crate) mod postgres;
pub(crate) mod python;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// How long a test waits for something the server should do promptly (start, answer, exit). Generous, so that
/// a busy machine does not fail a test; a hang still ends.
pub(crate) const PATIENCE: Duration = Duration::from_secs(60);

pub(crate) fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_wasmcorn")
}

/// The compiled-guest cache shared by the tests (content-addressed, so sharing is safe).
pub(crate) fn cache_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("wasmcorn-cache")
}

/// A command running the binary with the test cache and a clean environment for the guest.
pub(crate) fn command(args: &[&str]) -> Command {
    let mut command = Command::new(binary());
    command.args(args).env("WASMCORN_CACHE_DIR", cache_dir()).env_remove("WEB_CONCURRENCY");
    command.env_remove("FORWARDED_ALLOW_IPS");
    command
}

#[derive(Default)]
struct Log {
    lines: Vec<String>,
    closed: bool,
}

/// A running `wasmcorn serve`.
pub(crate) struct Server {
    child: Option<Child>,
    pub pid: Pid,
    pub port: u16,
    log: Arc<(Mutex<Log>, Condvar)>,
    /// Other processes this test started through the server (a successor arbiter), stopped on drop.
    also_stop: Vec<Pid>,
}

impl Server {
    /// Starts `wasmcorn serve APP --bind 127.0.0.1:0 ARGS...` and waits for `workers` workers to boot.
    pub(crate) fn start(app: &str, workers: usize, args: &[&str]) -> Server {
        Server::start_with_env(app, workers, args, &[])
    }

    /// As `start`, with extra environment variables for the server.
    pub(crate) fn start_with_env(app: &str, workers: usize, args: &[&str], env: &[(&str, &str)]) -> Server {
        let workers_text = workers.to_string();
        let mut all = vec!["serve", app, "--bind", "127.0.0.1:0", "--workers", &workers_text];
        all.extend_from_slice(args);
        let mut command = command(&all);
        command.envs(env.iter().copied());
        let server = Server::spawn(command);
        server.wait_for_count("Booting worker with pid", workers);
        server
    }

    /// Runs the command and waits for its startup line.
    pub(crate) fn spawn(command: Command) -> Server {
        Server::spawn_with_stdin(command, Stdio::null())
    }

    /// As `spawn`, with `stdin` as the server's standard input (a socket to hand over, say).
    pub(crate) fn spawn_with_stdin(command: Command, stdin: Stdio) -> Server {
        let mut server = Server::launch(command, stdin);
        let line = server.wait_for_line("Listening at: http://");
        let address =
            line.split("Listening at: http://").nth(1).and_then(|rest| rest.split(' ').next()).expect("address");
        server.port = address.rsplit(':').next().and_then(|port| port.parse().ok()).expect("port in the startup line");
        server
    }

    /// Runs the command and follows its log, waiting for nothing: `port` stays 0 (a server on unix sockets alone
    /// has none; one started by a socket activator starts only at the first connection).
    pub(crate) fn launch(mut command: Command, stdin: Stdio) -> Server {
        let mut child =
            command.stdin(stdin).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("start wasmcorn");
        let stderr = child.stderr.take().expect("stderr is piped");
        let log = Arc::new((Mutex::new(Log::default()), Condvar::new()));
        let writer = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let (lines, changed) = &*writer;
                lines.lock().unwrap().lines.push(line);
                changed.notify_all();
            }
            let (lines, changed) = &*writer;
            lines.lock().unwrap().closed = true;
            changed.notify_all();
        });
        let pid = Pid::from_raw(child.id() as i32);
        Server { child: Some(child), pid, port: 0, log, also_stop: Vec::new() }
    }

    /// Runs `wasmcorn ARGS` as a server (so that one that starts anyway, or hangs, is stopped when the test gives
    /// up), asserts that it fails with exactly one line on stderr, and returns that line.
    pub(crate) fn refused_start(args: &[&str]) -> String {
        let mut server = Server::launch(command(args), Stdio::null());
        assert!(!server.wait_exit().success(), "{args:?}: the start fails");
        let stderr = server.log_text();
        let lines: Vec<&str> = stderr.trim().lines().collect();
        assert_eq!(lines.len(), 1, "{args:?}: one line: {stderr}");
        lines[0].to_string()
    }

    /// Waits until a log line contains `pattern` and returns it; panics after `PATIENCE`.
    pub(crate) fn wait_for_line(&self, pattern: &str) -> String {
        self.wait_for_count(pattern, 1).pop().expect("one line")
    }

    /// Waits until `count` log lines contain `pattern` and returns them.
    pub(crate) fn wait_for_count(&self, pattern: &str, count: usize) -> Vec<String> {
        let deadline = Instant::now() + PATIENCE;
        let (lines, changed) = &*self.log;
        let mut log = lines.lock().unwrap();
        loop {
            let found: Vec<String> = log.lines.iter().filter(|line| line.contains(pattern)).cloned().collect();
            if found.len() >= count {
                return found;
            }
            let now = Instant::now();
            if now >= deadline || log.closed {
                drop(log);
                panic!("waited for {count} log lines with {pattern:?}; log so far:\n{}", self.log_text());
            }
            log = changed.wait_timeout(log, deadline - now).unwrap().0;
        }
    }

    /// Makes the test stop `pid` (and its workers) when the server is dropped.
    pub(crate) fn also_stop(&mut self, pid: Pid) {
        self.also_stop.push(pid);
    }

    /// Every log line so far.
    pub(crate) fn log_lines(&self) -> Vec<String> {
        self.log.0.lock().unwrap().lines.clone()
    }

    pub(crate) fn log_text(&self) -> String {
        self.log_lines().join("\n")
    }

    /// The pid of the new arbiter a `SIGUSR2` started, from its `Started a new arbiter (pid:N)` line.
    pub(crate) fn successor_pid(&self) -> Pid {
        let line = self.wait_for_line("Started a new arbiter (pid:");
        let pid = line.split("(pid:").nth(1).and_then(|rest| rest.split(')').next()).and_then(|pid| pid.parse().ok());
        Pid::from_raw(pid.expect("a pid in the line"))
    }

    /// The pids from `Booting worker with pid: N` lines, in order.
    pub(crate) fn booted_worker_pids(&self) -> Vec<Pid> {
        self.booted_worker_pids_where(|_| true)
    }

    /// The pids from the `Booting worker with pid: N ...` lines for which `keep` holds, in order.
    pub(crate) fn booted_worker_pids_where(&self, keep: impl Fn(&str) -> bool) -> Vec<Pid> {
        self.log_lines()
            .iter()
            .filter(|line| keep(line))
            .filter_map(|line| line.split("Booting worker with pid: ").nth(1))
            .filter_map(|rest| rest.split_whitespace().next()?.parse().ok())
            .map(Pid::from_raw)
            .collect()
    }

    /// The arbiter's live workers, from the process table.
    pub(crate) fn live_workers(&self) -> Vec<Pid> {
        children_of(self.pid)
    }

    pub(crate) fn signal(&self, signal: Signal) {
        kill(self.pid, signal).expect("signal the arbiter");
    }

    /// Waits for the arbiter to exit and returns its status, once its log has been read to the end (or, when
    /// another process still holds its stderr, a successor arbiter say, for at most a few seconds more): the last
    /// lines may still be in the pipe when it has exited.
    pub(crate) fn wait_exit(&mut self) -> ExitStatus {
        let child = self.child.as_mut().expect("the server is running");
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = child.try_wait().expect("wait for wasmcorn") {
                let (lines, changed) = &*self.log;
                let log = lines.lock().unwrap();
                let _ = changed.wait_timeout_while(log, Duration::from_secs(5), |log| !log.closed).unwrap();
                return status;
            }
            assert!(Instant::now() < deadline, "wasmcorn did not exit; log:\n{}", self.log_text());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub(crate) fn get(&self, path: &str) -> Response {
        self.request(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes())
    }

    /// `GET path` with `Host: host`.
    pub(crate) fn get_from(&self, host: &str, path: &str) -> Response {
        self.request(format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes())
    }

    /// Sends raw bytes and reads the response until the server closes the connection.
    pub(crate) fn request(&self, bytes: &[u8]) -> Response {
        send(self.port, bytes)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let workers = self.booted_worker_pids();
        for pid in &self.also_stop {
            let _ = kill(*pid, Signal::SIGKILL);
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        for pid in workers {
            if is_alive(pid) {
                let _ = kill(pid, Signal::SIGKILL);
            }
        }
        if std::thread::panicking() {
            eprintln!("--- wasmcorn log ---\n{}\n--- end of log ---", self.log_text());
        }
    }
}

/// A folder with a tenants' manifest (`apps.toml`) and the misbehave component beside it as `misbehave.wasm` (a
/// manifest names it relatively).
pub(crate) struct Site {
    pub(crate) dir: tempfile::TempDir,
}

impl Site {
    pub(crate) fn new(text: &str) -> Site {
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(env!("WASMCORN_GUEST_MISBEHAVE"), dir.path().join("misbehave.wasm")).unwrap();
        let site = Site { dir };
        site.write(text);
        site
    }

    pub(crate) fn path(&self) -> PathBuf {
        self.dir.path().join("apps.toml")
    }

    pub(crate) fn write(&self, text: &str) {
        std::fs::write(self.path(), text).unwrap();
    }

    /// `serve --apps` with `workers` shared workers; waits for `booted` workers in all (dedicated pools'
    /// included).
    pub(crate) fn serve(&self, workers: usize, booted: usize, extra: &[&str]) -> Server {
        let path = self.path();
        let workers = workers.to_string();
        let mut args = vec!["serve", "--apps", path.to_str().unwrap(), "--bind", "127.0.0.1:0", "--workers", &workers];
        args.extend_from_slice(extra);
        let server = Server::spawn(command(&args));
        server.wait_for_count("Booting worker with pid", booted);
        server
    }
}

/// Sends `signal` to a helper process a test started (nginx, PostgreSQL) and waits for it to end, killing it if
/// it has not within `PATIENCE`.
pub(crate) fn stop_child(child: &mut Child, signal: Signal) {
    let _ = kill(Pid::from_raw(child.id() as i32), signal);
    let deadline = Instant::now() + PATIENCE;
    while !matches!(child.try_wait(), Ok(Some(_)) | Err(_)) {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until the file at `path` holds a line containing `pattern` and returns the file's text.
pub(crate) fn wait_for_file_line(path: &std::path::Path, pattern: &str) -> String {
    let mut text = String::new();
    eventually(&format!("{} to contain {pattern:?}", path.display()), || {
        text = std::fs::read_to_string(path).unwrap_or_default();
        text.lines().any(|line| line.contains(pattern))
    });
    text
}

/// One line of /proc/net/tcp: a TCP socket of this machine's IPv4 loopback tests.
struct TcpSocket {
    local_port: u16,
    remote_port: u16,
    /// `01` is ESTABLISHED (accepted or still in a listen queue); a half-open one shows its queues as 0.
    state: String,
    /// Bytes sent and not yet acknowledged by the peer.
    unacknowledged: usize,
    /// Bytes received and not yet read by the socket's owner.
    unread: usize,
    /// The socket's inode: a process that holds it has a descriptor linked to `socket:[inode]`.
    inode: u64,
}

/// Every IPv4 TCP socket, from /proc/net/tcp.
fn tcp_sockets() -> Vec<TcpSocket> {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let port_of = |address: &str| address.rsplit(':').next().and_then(|hex| u16::from_str_radix(hex, 16).ok());
    let hex = |text: &str| usize::from_str_radix(text, 16).ok();
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (tx, rx) = fields.get(4)?.split_once(':')?;
            Some(TcpSocket {
                local_port: port_of(fields.get(1)?)?,
                remote_port: port_of(fields.get(2)?)?,
                state: fields.get(3)?.to_string(),
                unacknowledged: hex(tx)?,
                unread: hex(rx)?,
                inode: fields.get(9)?.parse().ok()?,
            })
        })
        .collect()
}

/// The socket from local port `local` to remote port `remote`.
fn tcp_socket(local: u16, remote: u16) -> Option<TcpSocket> {
    tcp_sockets().into_iter().find(|socket| socket.local_port == local && socket.remote_port == remote)
}

/// The inode of the socket listening on `port`, from /proc/net/tcp.
pub(crate) fn listening_inode(port: u16) -> Option<u64> {
    tcp_sockets()
        .into_iter()
        .find(|socket| socket.local_port == port && socket.state == "0A")
        .map(|socket| socket.inode)
}

/// Whether a socket listens on `port`, from /proc/net/tcp.
pub(crate) fn listening_on(port: u16) -> bool {
    listening_inode(port).is_some()
}

/// How many established TCP connections have `port` as their local port (the server's side of each, accepted
/// or still queued), from /proc/net/tcp.
pub(crate) fn established_to(port: u16) -> usize {
    tcp_sockets().iter().filter(|socket| socket.local_port == port && socket.state == "01").count()
}

/// How many bytes the server on `port` has not read yet on its side of `client`'s connection: `Some(0)` is
/// ambiguous (see `read_by_server`), `Some(n)` with n > 0 is not.
pub(crate) fn unread_by_server(port: u16, client: &TcpStream) -> Option<usize> {
    let client_port = client.local_addr().ok()?.port();
    tcp_socket(port, client_port).map(|socket| socket.unread)
}

/// Whether the server on `port` has received and read all that `client` sent: the server acknowledged every
/// byte (the client's send queue is empty), then its side, established, holds nothing unread. An unread count of
/// 0 alone is also what a socket shows while the bytes are still on the loopback path, or while it is half open.
pub(crate) fn read_by_server(port: u16, client: &TcpStream) -> bool {
    let Ok(client_port) = client.local_addr().map(|address| address.port()) else { return false };
    tcp_socket(client_port, port).is_some_and(|mine| mine.unacknowledged == 0)
        && tcp_socket(port, client_port).is_some_and(|theirs| theirs.state == "01" && theirs.unread == 0)
}

/// Which of `candidates` holds the server's side of `client`'s connection to `port` (a descriptor of it), if one
/// does: none while the socket is in flight between processes (a worker passing it to another).
pub(crate) fn holder_of(port: u16, client: &TcpStream, candidates: &[Pid]) -> Option<Pid> {
    let client_port = client.local_addr().ok()?.port();
    let link = format!("socket:[{}]", tcp_socket(port, client_port)?.inode);
    let holds = |pid: &Pid| {
        std::fs::read_dir(format!("/proc/{pid}/fd")).is_ok_and(|entries| {
            entries
                .filter_map(Result::ok)
                .any(|entry| std::fs::read_link(entry.path()).is_ok_and(|target| target.as_os_str() == link.as_str()))
        })
    };
    let mut holders = candidates.iter().copied().filter(holds);
    let holder = holders.next();
    if holders.next().is_some() { None } else { holder }
}

/// A temporary folder anyone may write, with the sticky bit (mode 1777, as /tmp): a folder others control.
pub(crate) fn shared_folder() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let shared = tempfile::tempdir().expect("a temporary folder");
    std::fs::set_permissions(shared.path(), std::fs::Permissions::from_mode(0o1777)).expect("chmod 1777");
    shared
}

/// Runs `during` while another thread exchanges the names `one` and `other` (`renameat2`, `RENAME_EXCHANGE`) as
/// fast as it can, as a local user racing the server would: at any moment each name is there, one of the two
/// things. The swapping stops when `during` returns or panics.
pub(crate) fn while_swapping<T>(one: &std::path::Path, other: &std::path::Path, during: impl FnOnce() -> T) -> T {
    use std::sync::atomic::{AtomicBool, Ordering};

    use nix::fcntl::{AT_FDCWD, RenameFlags, renameat2};

    /// Stops the swapping when dropped, a panic's unwinding included (the scope waits for the thread).
    struct Stop<'a>(&'a AtomicBool);
    impl Drop for Stop<'_> {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }
    let swap = || renameat2(AT_FDCWD, one, AT_FDCWD, other, RenameFlags::RENAME_EXCHANGE).expect("swap the two names");
    // Once each way first, so that a file system that cannot exchange fails here, before `during` runs.
    swap();
    swap();
    let stopped = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let _stop = Stop(&stopped);
        scope.spawn(|| {
            while !stopped.load(Ordering::Relaxed) {
                swap();
            }
        });
        during()
    })
}

/// Whether a process exists and is not a zombie.
pub(crate) fn is_alive(pid: Pid) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.rsplit(')').next().and_then(|rest| rest.split_whitespace().next()) != Some("Z"),
        Err(_) => false,
    }
}

/// Live, non-zombie children of `parent`.
pub(crate) fn children_of(parent: Pid) -> Vec<Pid> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    let mut children: Vec<Pid> = entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .map(Pid::from_raw)
        .filter(|pid| parent_of(*pid) == Some(parent) && is_alive(*pid))
        .collect();
    children.sort();
    children
}

fn parent_of(pid: Pid) -> Option<Pid> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let ppid = stat.rsplit(')').next()?.split_whitespace().nth(1)?.parse().ok()?;
    Some(Pid::from_raw(ppid))
}

/// Lowers the descriptor limit of the running process `pid` (with `prlimit`) so that it has room for `room` more
/// descriptors: new ones take the lowest numbers free, and must be below the limit (those open above it stay).
pub(crate) fn leave_room_for(pid: Pid, room: usize) {
    let open: Vec<usize> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("list the process's descriptors")
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    let limit = (0..).filter(|number| !open.contains(number)).nth(room).expect("a free number");
    let status = Command::new("prlimit")
        .args([format!("--pid={pid}"), format!("--nofile={limit}:{limit}")])
        .status()
        .expect("run prlimit");
    assert!(status.success(), "prlimit --pid={pid} --nofile={limit}");
}

/// The peak resident memory of a process, in bytes (`VmHWM` of /proc/PID/status).
pub(crate) fn peak_memory(pid: Pid) -> u64 {
    let kib: u64 = status_field(pid, "VmHWM:").parse().expect("VmHWM in /proc/PID/status");
    kib << 10
}

/// The first word of a field of `/proc/PID/status` (`Uid:`, `PPid:`, ...), or an empty string.
pub(crate) fn status_field(pid: Pid, field: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .unwrap_or_default()
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// Whether `signal` waits, sent and not yet taken, for the process `pid` (`ShdPnd` of `/proc/PID/status`): a
/// worker blocks SIGTERM and reads it in its loop, so it stays there while the worker runs a guest.
pub(crate) fn signal_pending(pid: Pid, signal: Signal) -> bool {
    u64::from_str_radix(&status_field(pid, "ShdPnd:"), 16).is_ok_and(|mask| mask & (1 << (signal as i32 - 1)) != 0)
}

/// Waits until `condition` holds, up to `PATIENCE`.
pub(crate) fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A parsed HTTP response.
#[derive(Debug)]
pub(crate) struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Everything the server sent.
    pub raw: Vec<u8>,
}

impl Response {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(field, _)| field.eq_ignore_ascii_case(name)).map(|(_, value)| value.as_str())
    }

    /// A response with a Content-Length carries exactly that many bytes (not so for HEAD).
    pub(crate) fn assert_length_matches(&self) {
        if let Some(length) = self.header("content-length") {
            assert_eq!(length.parse::<usize>().ok(), Some(self.body.len()), "Content-Length matches the body");
        }
    }

    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON.
    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|err| panic!("body is not JSON ({err}): {}", self.text()))
    }
}

/// Connects, writes `bytes`, and reads until the server closes.
pub(crate) fn send(port: u16, bytes: &[u8]) -> Response {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to wasmcorn");
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream.write_all(bytes).expect("send the request");
    let response = read_response(stream);
    if !bytes.starts_with(b"HEAD ") {
        response.assert_length_matches();
    }
    response
}

/// A new connection to `port` that has sent `bytes`.
pub(crate) fn connect_sending(port: u16, bytes: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream.write_all(bytes).unwrap();
    stream
}

/// Sends the head of a misbehave guest's `/stash` request for `host`, whose one-byte body the test sends later: the
/// guest prints `stashed` and then waits for that byte, so the test decides when the request (and its connection:
/// `Connection: close`) ends.
pub(crate) fn held_request(port: u16, host: &str) -> TcpStream {
    let head =
        format!("POST /stash?secret=s HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: 1\r\n\r\n");
    connect_sending(port, head.as_bytes())
}

/// Reads a whole response: until the server closes the connection, or, when the response keeps it alive
/// (`Connection: keep-alive`), until its body is whole by its framing; then closes the connection.
pub(crate) fn read_response(mut stream: TcpStream) -> Response {
    let mut raw = Vec::new();
    let mut buffer = [0u8; 64 * 1024];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => break,
            Ok(count) => raw.extend_from_slice(&buffer[..count]),
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(err) => {
                assert!(!raw.is_empty(), "reading the response failed: {err}");
                break;
            }
        }
        if kept_alive_and_whole(&raw) {
            break;
        }
    }
    let _ = stream.shutdown(Shutdown::Both);
    parse_response(&raw)
}

/// Whether `raw` is one whole response that keeps its connection alive: the server will not close it.
pub(crate) fn kept_alive_and_whole(raw: &[u8]) -> bool {
    let mut fields = [httparse::EMPTY_HEADER; 64];
    let mut parsed = httparse::Response::new(&mut fields);
    let Ok(httparse::Status::Complete(length)) = parsed.parse(raw) else { return false };
    let field =
        |name: &str| parsed.headers.iter().find(|field| field.name.eq_ignore_ascii_case(name)).map(|field| field.value);
    if parsed.code == Some(100) || field("connection") != Some(b"keep-alive".as_slice()) {
        return false;
    }
    let payload = &raw[length..];
    if field("transfer-encoding") == Some(b"chunked".as_slice()) {
        return payload.ends_with(b"0\r\n\r\n");
    }
    let declared = field("content-length").and_then(|value| std::str::from_utf8(value).ok()?.parse::<usize>().ok());
    payload.len() >= declared.unwrap_or(0)
}

/// Parses a response; `100 Continue` interim responses are skipped.
pub(crate) fn parse_response(raw: &[u8]) -> Response {
    let mut rest = raw;
    loop {
        let mut fields = [httparse::EMPTY_HEADER; 64];
        let mut parsed = httparse::Response::new(&mut fields);
        let length = match parsed.parse(rest) {
            Ok(httparse::Status::Complete(length)) => length,
            other => panic!("malformed response ({other:?}): {:?}", String::from_utf8_lossy(raw)),
        };
        let status = parsed.code.expect("status");
        let headers: Vec<(String, String)> = parsed
            .headers
            .iter()
            .map(|field| (field.name.to_string(), String::from_utf8_lossy(field.value).into_owned()))
            .collect();
        if status == 100 {
            rest = &rest[length..];
            continue;
        }
        let payload = &rest[length..];
        let chunked =
            headers.iter().any(|(name, value)| name.eq_ignore_ascii_case("transfer-encoding") && value == "chunked");
        let body = if chunked { decode_chunked(payload) } else { payload.to_vec() };
        return Response { status, headers, body, raw: raw.to_vec() };
    }
}

fn decode_chunked(mut payload: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    loop {
        let end = payload.windows(2).position(|pair| pair == b"\r\n").expect("chunk size line");
        let size = usize::from_str_radix(std::str::from_utf8(&payload[..end]).unwrap(), 16).expect("chunk size");
        payload = &payload[end + 2..];
        if size == 0 {
            assert_eq!(payload, b"\r\n", "the chunked body ends properly");
            return body;
        }
        body.extend_from_slice(&payload[..size]);
        assert_eq!(&payload[size..size + 2], b"\r\n", "chunk data ends with CRLF");
        payload = &payload[size + 2..];
    }
}

/// Runs `count` requests at once, each on its own thread; returns the responses in order.
pub(crate) fn concurrently(count: usize, request: impl Fn(usize) -> Response + Send + Sync) -> Vec<Response> {
    std::thread::scope(|scope| {
        let request = &request;
        let handles: Vec<_> = (0..count).map(|index| scope.spawn(move || request(index))).collect();
        handles.into_iter().map(|handle| handle.join().expect("request thread")).collect()
    })
}

/// A failed command's output: a non-zero exit and one line on stderr holding each of `needles`.
pub(crate) fn assert_one_line_error(output: &std::process::Output, needles: &[&str]) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "expected a failure: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    for needle in needles {
        assert!(stderr.contains(needle), "{stderr:?} does not mention {needle:?}");
    }
}
