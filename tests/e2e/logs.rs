//! Logs: files, the access-log format (atoms and JSON), the level, and reopening on SIGUSR1.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};

use nix::sys::signal::{Signal, kill};

use crate::support::{PATIENCE, Server, command, read_response, wait_for_file_line};

const MISBEHAVE: &str = env!("WASMCORN_GUEST_MISBEHAVE");

#[test]
fn access_log_file_gets_the_lines_instead_of_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("access.log");
    let server = Server::start("sample:hello", 1, &["--access-logfile", path.to_str().unwrap()]);
    server.request(b"GET /to-file HTTP/1.1\r\nHost: h\r\n\r\n");
    let text = wait_for_file_line(&path, "GET /to-file");
    assert!(text.starts_with("127.0.0.1 - - ["), "{text}");
    assert!(!server.log_text().contains("/to-file"));
}

#[test]
fn json_access_log_escapes_client_values() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("access.json");
    let server =
        Server::start("sample:hello", 1, &["--access-logfile", path.to_str().unwrap(), "--access-logformat", "json"]);
    server.request(b"GET /j?x=1 HTTP/1.1\r\nHost: h\r\nUser-Agent: evil\" agent \\ {x}\r\n\r\n");
    let text = wait_for_file_line(&path, "/j?x=1");
    let line = text.lines().next().unwrap();
    let value: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(value["user_agent"], "evil\" agent \\ {x}");
    assert_eq!(value["request"], "GET /j?x=1 HTTP/1.1");
    assert_eq!(value["path"], "/j");
    assert_eq!(value["query"], "x=1");
    assert_eq!(value["status"], 200);
    assert_eq!(value["bytes"], 13);
    assert!(value["duration_us"].as_u64().is_some());
}

#[test]
fn custom_access_log_format_renders_gunicorn_atoms() {
    let server = Server::start(
        "sample:hello",
        1,
        &["--access-logformat", "ATOMS %(m)s|%(U)s|%(q)s|%(H)s|%(s)s|%(B)s|%({x-id}i)s|%({content-type}o)s|%(p)s"],
    );
    server.request(b"POST /a?b=c HTTP/1.1\r\nHost: h\r\nX-Id: 77\r\nContent-Length: 0\r\n\r\n");
    let line = server.wait_for_line("ATOMS ");
    let worker = server.booted_worker_pids()[0];
    assert_eq!(line, format!("ATOMS POST|/a|b=c|HTTP/1.1|200|13|77|text/plain|<{worker}>"));
}

#[test]
fn error_log_goes_to_its_file_filtered_by_level() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("error.log");
    let pidfile = dir.path().join("server.pid");
    let mut command = crate::support::command(&[
        "serve",
        "--bind",
        "127.0.0.1:0",
        "--error-logfile",
        path.to_str().unwrap(),
        "--log-level",
        "warning",
        "--pid",
        pidfile.to_str().unwrap(),
    ]);
    command.stderr(std::process::Stdio::null());
    let child = ChildGuard(command.spawn().unwrap());
    // The pid file is written after the app is compiled, so the arbiter's children are then its workers.
    let pid = nix::unistd::Pid::from_raw(wait_for_file_line(&pidfile, "").trim().parse().unwrap());
    assert_eq!(pid.as_raw() as u32, child.0.id());
    crate::support::eventually("a worker", || !crate::support::children_of(pid).is_empty());
    let worker = crate::support::children_of(pid)[0];
    nix::sys::signal::kill(worker, Signal::SIGKILL).unwrap();
    let text = wait_for_file_line(&path, "was sent SIGKILL from outside wasmcorn");
    assert!(text.contains("[ERROR]"), "{text}");
    assert!(!text.contains("[INFO]"), "info lines are filtered at level warning: {text}");
}

/// Stops a spawned arbiter and its workers when the test ends.
struct ChildGuard(std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        let workers = crate::support::children_of(pid);
        let _ = self.0.kill();
        let _ = self.0.wait();
        for worker in workers {
            let _ = nix::sys::signal::kill(worker, Signal::SIGKILL);
        }
    }
}

#[test]
fn sigusr1_reopens_the_log_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("access.log");
    let rotated = dir.path().join("access.log.1");
    let server = Server::start("sample:hello", 2, &["--access-logfile", path.to_str().unwrap()]);
    server.request(b"GET /before HTTP/1.1\r\nHost: h\r\n\r\n");
    wait_for_file_line(&path, "GET /before");
    std::fs::rename(&path, &rotated).unwrap();
    server.signal(Signal::SIGUSR1);
    server.wait_for_line("Handling signal: usr1");
    // Each worker reopens when it next wakes; a few requests reach both.
    crate::support::eventually("a line in the new file", || {
        server.request(b"GET /after HTTP/1.1\r\nHost: h\r\n\r\n");
        std::fs::read_to_string(&path).map(|text| text.contains("GET /after")).unwrap_or(false)
    });
    let old = std::fs::read_to_string(&rotated).unwrap();
    assert!(old.contains("GET /before"));
}

/// With `--user`, a worker cannot reopen the arbiter's owner-only files: it leaves, like at `--max-requests`, and
/// its replacement inherits the files the arbiter reopened. It went on writing to the rotated file.
#[test]
fn sigusr1_with_a_worker_user_moves_every_line_to_the_new_files() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let cache = dir.path().join("cache");
    std::fs::create_dir(&cache).unwrap();
    std::os::unix::fs::chown(&cache, Some(65534), Some(65534)).unwrap();
    let access = dir.path().join("access.log");
    let rotated = dir.path().join("access.log.1");
    let args =
        ["--user", "nobody", "--cache-dir", cache.to_str().unwrap(), "--access-logfile", access.to_str().unwrap()];
    let server = Server::start("sample:hello", 1, &args);
    let first = server.booted_worker_pids()[0];
    server.request(b"GET /before HTTP/1.1\r\nHost: h\r\n\r\n");
    wait_for_file_line(&access, "GET /before");
    std::fs::rename(&access, &rotated).unwrap();
    server.signal(Signal::SIGUSR1);
    server.wait_for_line("Worker leaving: its replacement writes to the log files the arbiter reopened");
    server.wait_for_count("Booting worker with pid", 2);
    crate::support::eventually("the first worker gone", || !crate::support::is_alive(first));
    server.request(b"GET /after HTTP/1.1\r\nHost: h\r\n\r\n");
    wait_for_file_line(&access, "GET /after");
    assert!(!std::fs::read_to_string(&rotated).unwrap().contains("GET /after"));
    assert_eq!(std::fs::metadata(&access).unwrap().permissions().mode() & 0o777, 0o600);
}

/// A worker finishing its requests in a graceful stop still reads its signals: a SIGUSR1 that reaches it after
/// it began stopping reopens its logs before its next request. (It used to stop reading signals once stopping:
/// the logs stayed on the renamed file, and the signal left unread ended each later wait at once.)
#[test]
fn sigusr1_during_a_graceful_stop_reopens_the_logs() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("access.log");
    let rotated = dir.path().join("access.log.1");
    let server = Server::start(MISBEHAVE, 1, &["--access-logfile", path.to_str().unwrap(), "--graceful-timeout", "60"]);
    let worker = server.booted_worker_pids()[0];
    let send = |head: &str| {
        let mut stream = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        stream.write_all(head.as_bytes()).unwrap();
        stream
    };
    // The worker runs the first while the other two wait, and reads the SIGTERM sent meanwhile before it starts
    // the second. The second waits for its body, which is sent only once the SIGUSR1 is: it is under way when
    // the signal comes, and the third is the worker's first request after the signal.
    let first = send("GET /sleep?seconds=2&n=1 HTTP/1.1\r\nHost: h\r\n\r\n");
    let mut second = send("POST /discard?n=2 HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n");
    let third = send("GET /sleep?seconds=0&n=3 HTTP/1.1\r\nHost: h\r\n\r\n");
    server.signal(Signal::SIGTERM);
    assert_eq!(read_response(first).status, 200);
    // `100 Continue`: the worker has started the second request, and its guest reads the body.
    let mut interim = Vec::new();
    while !interim.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        assert_eq!(second.read(&mut byte).unwrap(), 1, "the second request got no 100 Continue");
        interim.push(byte[0]);
    }
    assert!(interim.starts_with(b"HTTP/1.1 100 Continue"), "{}", String::from_utf8_lossy(&interim));
    // Having read the SIGTERM, the worker let go of its listeners (the arbiter let go of its own when the stop
    // began): a new connection is refused.
    crate::support::eventually("the worker to read the SIGTERM", || {
        TcpStream::connect(("127.0.0.1", server.port)).is_err()
    });
    // The logs are rotated under the stopping worker.
    std::fs::rename(&path, &rotated).unwrap();
    kill(worker, Signal::SIGUSR1).unwrap();
    second.write_all(b"hello").unwrap();
    assert_eq!(read_response(second).text(), "5");
    assert_eq!(read_response(third).status, 200);
    let new = wait_for_file_line(&path, "n=3");
    assert!(!new.contains("n=1") && !new.contains("n=2"), "{new}");
    let old = std::fs::read_to_string(&rotated).unwrap();
    assert!(old.contains("n=1") && old.contains("n=2") && !old.contains("n=3"), "{old}");
}

#[test]
fn log_files_are_owner_only_and_never_opened_through_a_symlink_in_a_shared_folder() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("access.log");
    let server = Server::start("sample:hello", 1, &["--umask", "0", "--access-logfile", path.to_str().unwrap()]);
    server.request(b"GET /mode HTTP/1.1\r\nHost: h\r\n\r\n");
    wait_for_file_line(&path, "GET /mode");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the access log is created owner-only even with --umask 0");
    drop(server);

    // A folder everyone may write, like /tmp, where another user planted a link at the log's name.
    let shared = crate::support::shared_folder();
    let victim = dir.path().join("victim");
    std::fs::write(&victim, "precious\n").unwrap();
    let planted = shared.path().join("error.log");
    std::os::unix::fs::symlink(&victim, &planted).unwrap();
    let args = ["serve", "sample:hello", "--bind", "127.0.0.1:0", "--error-logfile", planted.to_str().unwrap()];
    let output = command(&args).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "the start fails: {stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains("a symlink in a folder others may change"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n", "the link's target is unchanged");

    // There, a file another user planted at the log's name, one everyone may read: the logs would be theirs.
    let planted = shared.path().join("access.log");
    std::fs::write(&planted, "").unwrap();
    std::os::unix::fs::chown(&planted, Some(65534), Some(65534)).expect("chown, as root");
    std::fs::set_permissions(&planted, std::fs::Permissions::from_mode(0o666)).unwrap();
    let args = ["serve", "sample:hello", "--bind", "127.0.0.1:0", "--access-logfile", planted.to_str().unwrap()];
    let stderr = Server::refused_start(&args);
    assert!(stderr.contains("belongs to uid 65534, in a folder others may change"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&planted).unwrap(), "", "nothing is logged into it");
}

/// Names a local user could aim elsewhere from a folder everyone may write: a link to a folder on the way to a
/// log or pid file (it made the server create and write its files in the folder it points to, /etc say), and a
/// FIFO at the name (opening it waited for a reader: the start hung without a word).
#[test]
fn a_folder_link_or_a_fifo_planted_on_the_way_stops_the_start_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let victim = dir.path().join("victim");
    std::fs::create_dir(&victim).unwrap();
    let shared = crate::support::shared_folder();
    let link = shared.path().join("dirlink");
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    let fifo = shared.path().join("fifo.log");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o666)).unwrap();
    let fifo_pid = shared.path().join("fifo.pid");
    nix::unistd::mkfifo(&fifo_pid, nix::sys::stat::Mode::from_bits_truncate(0o666)).unwrap();
    let through_link = |name: &str| link.join(name).to_str().unwrap().to_string();
    let cases = [
        (["--error-logfile", &through_link("error.log")], "passes through the symlink"),
        (["--access-logfile", &through_link("access.log")], "passes through the symlink"),
        (["--pid", &through_link("server.pid")], "passes through the symlink"),
        (["--error-logfile", fifo.to_str().unwrap()], "fifo.log: a FIFO with no reader"),
        // Neither read nor waited on, nor replaced.
        (["--pid", fifo_pid.to_str().unwrap()], "fifo.pid is a FIFO, not a pid file"),
    ];
    for (flags, reason) in cases {
        let mut args = vec!["serve", "sample:hello", "--bind", "127.0.0.1:0"];
        args.extend(flags);
        let stderr = Server::refused_start(&args);
        assert!(stderr.contains(reason), "{flags:?}: {stderr}");
    }
    assert_eq!(std::fs::read_dir(&victim).unwrap().count(), 0, "nothing was made in the folder the link names");
    assert!(std::fs::symlink_metadata(&fifo_pid).unwrap().file_type().is_fifo(), "the FIFO is still there");
}

/// A local user swaps, as fast as they can, a folder on the way to the log file (in a folder everyone may write)
/// with a symlink to a folder of their choosing, while the server starts. Checked by name and then opened by
/// name, a start now and then saw the folder and opened through the link; each start now either refuses the link
/// in one line or writes in the folder itself.
#[test]
fn a_link_swapped_in_on_the_way_while_the_server_starts_is_never_followed() {
    let dir = tempfile::tempdir().unwrap();
    let victim = dir.path().join("victim");
    std::fs::create_dir(&victim).unwrap();
    let shared = crate::support::shared_folder();
    let (logs, swapped) = (shared.path().join("logs"), shared.path().join("swapped"));
    std::fs::create_dir(&logs).unwrap();
    std::os::unix::fs::symlink(&victim, &swapped).unwrap();
    let log = logs.join("error.log");
    // A pid file in a folder that does not exist: each start opens its log file, loads the app, binds, and stops
    // at the pid file.
    let missing = dir.path().join("missing/server.pid");
    let args = ["serve", "sample:hello", "--bind", "127.0.0.1:0", "--error-logfile", log.to_str().unwrap()];
    let args = [&args[..], &["--pid", missing.to_str().unwrap()]].concat();
    let (refused, opened) = crate::support::while_swapping(&logs, &swapped, || {
        let (mut refused, mut opened) = (0, 0);
        for _ in 0..100 {
            let mut server = Server::launch(command(&args), std::process::Stdio::null());
            assert!(!server.wait_exit().success(), "the start fails at its pid file");
            let stderr = server.log_text();
            if stderr.contains("passes through the symlink") {
                refused += 1;
            } else {
                assert!(stderr.contains("cannot write the pid file"), "{stderr}");
                opened += 1;
            }
            assert_eq!(std::fs::read_dir(&victim).unwrap().count(), 0, "nothing was made where the link points");
        }
        (refused, opened)
    });
    assert!(refused > 0 && opened > 0, "both names were met: {refused} refused, {opened} opened");
    // The swapping may have stopped with the folder at the other name.
    let folder = if logs.is_symlink() { swapped } else { logs };
    let logged = std::fs::read_to_string(folder.join("error.log")).unwrap();
    assert_eq!(logged.lines().filter(|line| line.contains("cannot write the pid file")).count(), opened, "{logged}");
}

/// A log record is one `write` of at most 4096 bytes (a pipe's `PIPE_BUF`): a guest's long error message or output
/// line is cut, and says so, so that two workers writing to one pipe (the test's here, systemd's or docker's in
/// production) never mix their records.
#[test]
fn long_guest_messages_are_cut_to_one_pipe_write_and_never_interleave() {
    let server = Server::start(MISBEHAVE, 2, &["--limit-request-line", "0"]);
    let message = "m".repeat(60_000);
    std::thread::scope(|scope| {
        for _ in 0..8 {
            scope.spawn(|| assert_eq!(server.get(&format!("/refuse?message={message}")).status, 500));
        }
    });
    let errors = server.wait_for_count("Error handling request GET /refuse", 8);
    let outputs = server.wait_for_count("[guest stdout] mmmm", 8);
    for line in errors.iter().chain(&outputs) {
        // The line as read, without its newline.
        assert!(line.len() < 4096, "{} bytes", line.len());
        assert!(line.ends_with(" bytes cut]"), "{}", &line[line.len().saturating_sub(60)..]);
    }
    for line in server.log_text().lines() {
        let start = &line[..line.len().min(60)];
        assert!(line.starts_with('[') || line.starts_with("127.0.0.1 "), "a line that starts no record: {start}");
    }
}

/// A client that goes away in the middle of a response with a declared length: the access log counts the body
/// bytes that reached its socket, as Gunicorn does, not the length the guest declared (it logged 50,000,000).
#[test]
fn the_access_log_counts_the_bytes_sent_to_a_client_that_left() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("access.json");
    let args = ["--access-logfile", path.to_str().unwrap(), "--access-logformat", "json"];
    let server = Server::start(MISBEHAVE, 1, &args);
    let mut client = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    client.write_all(b"GET /declared?length=50000000 HTTP/1.1\r\nHost: h\r\n\r\n").unwrap();
    let mut taken = vec![0u8; 128 * 1024];
    client.read_exact(&mut taken).unwrap();
    // Closed with unread bytes: a reset, and the worker's next write fails.
    drop(client);
    let text = wait_for_file_line(&path, "/declared?length=50000000");
    let value: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    let bytes = value["bytes"].as_u64().unwrap();
    assert!(bytes > 0 && bytes < 50_000_000, "{value}");
}

/// A huge file at the pid file's name (a sparse terabyte a local user put in a shared folder) is not read (the
/// start once read it whole, for as long as reading a terabyte takes), and, as it is no pid file, not replaced
/// either: the start stops in one line.
#[test]
fn a_huge_file_at_the_pid_files_name_is_neither_read_nor_replaced() {
    let shared = crate::support::shared_folder();
    let planted = shared.path().join("server.pid");
    std::fs::File::create(&planted).unwrap().set_len(1 << 40).unwrap();
    let args = ["serve", "sample:hello", "--bind", "127.0.0.1:0", "--pid", planted.to_str().unwrap()];
    let stderr = Server::refused_start(&args);
    assert!(stderr.contains("holds something other than a process id, not a pid file"), "{stderr}");
    assert_eq!(std::fs::metadata(&planted).unwrap().len(), 1 << 40, "the file is left as it was");
}
