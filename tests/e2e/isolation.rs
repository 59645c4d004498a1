//! What keeps tenants and requests apart when something goes wrong: one request's memory never reaches the next,
//! even through swap; a guest cannot forge log lines; a dedicated pool that cannot boot stops its own app and no
//! other; a failed fork is retried, never the end of the arbiter; a dedicated pool's workers hold no listening
//! socket.

use std::io::Write;
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use nix::sys::signal::Signal;
use nix::unistd::Pid;

use crate::support::{PATIENCE, Server, binary, command, eventually, is_alive, read_response};

const MISBEHAVE: &str = env!("WASMCORN_GUEST_MISBEHAVE");
/// The same guest linked with a 64 KiB stack: its linear memory starts at two wasm pages.
const MISBEHAVE_SMALL: &str = env!("WASMCORN_GUEST_MISBEHAVE_SMALL");

/// A line some guest text tries to slip into the log as one of the server's own.
const FORGED: &str = "[2026-01-01 00:00:00 +0000] [1] [CRITICAL] forged";

/// Whether a log line is (or starts with) the forged one.
fn forged_line(server: &Server) -> Option<String> {
    server.log_lines().into_iter().find(|line| line.starts_with("[2026-01-01 00:00:00 +0000] [1] [CRITICAL]"))
}

#[test]
fn a_guest_error_message_is_logged_on_one_line() {
    let server = Server::start(MISBEHAVE, 1, &[]);
    let message = "refused\r\n[2026-01-01%2000:00:00%20+0000]%20[1]%20[CRITICAL]%20forged\u{1b}[2J";
    let message = message.replace("\r\n", "%0D%0A").replace('\u{1b}', "%1B");
    let response = server.get(&format!("/refuse?message={message}"));
    assert_eq!(response.status, 500);
    let line = server.wait_for_line("Error handling request GET /refuse");
    assert!(line.ends_with(&format!(": refused\\r\\n{FORGED}\\u{{1b}}[2J")), "escaped on its line: {line}");
    // The guest printed it too: its output is cut into lines, each under its prefix, control characters escaped.
    let printed = server.wait_for_line(&format!("[guest stdout] {FORGED}"));
    assert!(printed.ends_with(&format!("{FORGED}\\u{{1b}}[2J")), "{printed:?}");
    assert_eq!(forged_line(&server), None, "{}", server.log_text());
}

#[test]
fn a_backtrace_function_name_cannot_break_its_line() {
    let server = Server::start(MISBEHAVE, 1, &[]);
    assert_eq!(server.get("/trap-in-named").status, 500);
    server.wait_for_line("Guest failure handling request GET /trap-in-named");
    let frame = server.wait_for_line("!trap_in_named");
    assert!(frame.contains(&format!("!trap_in_named\\n{FORGED} by a function name")), "escaped: {frame}");
    assert_eq!(forged_line(&server), None, "{}", server.log_text());
}

// ---------------------------------------------------------------------------------------------------------------
// One request's memory never reaches the next, even when its pages were swapped out during the request.

/// A swap area for the test: the machine's own if it has one, else a file of the test's, switched on and (on
/// drop) off again. The test needs root.
struct Swap {
    file: Option<PathBuf>,
}

impl Swap {
    fn ensure() -> Swap {
        let swaps = std::fs::read_to_string("/proc/swaps").unwrap_or_default();
        if swaps.lines().count() > 1 {
            return Swap { file: None };
        }
        let file = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("isolation-swap-{}", std::process::id()));
        // Written out in full: swapon refuses a file with holes.
        let zeroes = vec![0u8; 1 << 20];
        let made = std::fs::File::create(&file).and_then(|mut created| {
            (0..64).try_for_each(|_| created.write_all(&zeroes)).and_then(|()| created.sync_all())
        });
        assert!(made.is_ok(), "cannot create {}: {made:?}", file.display());
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let swap = Swap { file: Some(file.clone()) };
        for step in [vec!["mkswap", file.to_str().unwrap()], vec!["swapon", file.to_str().unwrap()]] {
            let output = Command::new(step[0]).args(&step[1..]).output().expect("run mkswap/swapon");
            assert!(
                output.status.success(),
                "this test needs swap, and `{}` failed (it needs root): {}",
                step.join(" "),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        swap
    }
}

impl Drop for Swap {
    fn drop(&mut self) {
        if let Some(file) = &self.file {
            let _ = Command::new("swapoff").arg(file).status();
            let _ = std::fs::remove_file(file);
        }
    }
}

/// Asks the kernel to page out every private writable mapping of `pid` (MADV_PAGEOUT through process_madvise),
/// as memory pressure would; returns the process's swapped-out size in KiB afterwards.
fn page_out(pid: Pid) -> u64 {
    use nix::libc;
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1; no memory is passed.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
    assert!(pidfd >= 0, "pidfd_open: {}", std::io::Error::last_os_error());
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).expect("read the worker's maps");
    for line in maps.lines() {
        let mut fields = line.split_whitespace();
        let (Some(range), Some(permissions)) = (fields.next(), fields.next()) else { continue };
        if !permissions.starts_with("rw") || !permissions.ends_with('p') {
            continue;
        }
        let Some((start, end)) = range.split_once('-') else { continue };
        let (Ok(start), Ok(end)) = (usize::from_str_radix(start, 16), usize::from_str_radix(end, 16)) else {
            continue;
        };
        let range = libc::iovec { iov_base: start as *mut libc::c_void, iov_len: end - start };
        // SAFETY: the iovec names a range of the *other* process's address space, which the kernel only reads;
        // `range` lives across the call. Errors (a mapping gone meanwhile) are harmless and ignored.
        unsafe { libc::syscall(libc::SYS_process_madvise, pidfd, &range as *const libc::iovec, 1, 21, 0) };
    }
    // SAFETY: closes the descriptor opened above, owned by nothing else.
    unsafe { libc::close(pidfd as i32) };
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmSwap:"))
        .and_then(|value| value.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

#[test]
fn memory_a_request_left_swapped_out_is_cleared_for_the_next() {
    let _swap = Swap::ensure();
    // The misbehave guest's memory (Rust's 1 MiB stack first) is unmapped between requests; the same guest with a
    // 64 KiB stack has a small memory, which the worker rewrites in place instead (it says so at debug level).
    for (guest, resident) in [(MISBEHAVE, 0), (MISBEHAVE_SMALL, 256)] {
        let args = ["--max-memory", "16", "--guest-timeout", "30", "--log-level", "debug"];
        let server = Server::start(guest, 1, &args);
        server.wait_for_line(&format!("Linear memory kept resident between requests: {resident} KiB"));
        a_secret_swapped_out_is_not_seen_again(&server);
    }
}

/// The first request writes its secret into a page of its own, then waits for its body: meanwhile the worker's
/// pages are swapped out, as memory pressure would do. Every later request starts from a clean memory.
fn a_secret_swapped_out_is_not_seen_again(server: &Server) {
    let worker = server.booted_worker_pids()[0];
    let secret = "the-first-request-s-secret";
    let mut first = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    first.set_read_timeout(Some(PATIENCE)).unwrap();
    let head = format!("POST /stash?secret={secret} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1\r\n\r\n");
    first.write_all(head.as_bytes()).unwrap();
    server.wait_for_line("[guest stdout] stashed");
    let swapped = page_out(worker);
    assert!(swapped > 0, "the worker's pages were swapped out (VmSwap {swapped} kB)");
    first.write_all(b"x").unwrap();
    let answer = read_response(first);
    assert_eq!((answer.status, answer.text().as_str()), (200, "stashed"));
    for _ in 0..3 {
        let peek = server.get("/peek");
        assert_eq!((peek.status, peek.text().as_str()), (200, ""), "a fresh instance sees nothing of the first");
    }
    assert_eq!(server.booted_worker_pids(), vec![worker], "the same worker served every request");
}

// ---------------------------------------------------------------------------------------------------------------
// Servers run as nobody: a dedicated pool that cannot switch to root fails to boot; RLIMIT_NPROC makes fork fail.

/// A folder anyone may enter (under /tmp, whose parents are 0755) with a compile cache that nobody owns.
struct NobodyFolder {
    dir: tempfile::TempDir,
}

impl NobodyFolder {
    fn new() -> NobodyFolder {
        let dir = tempfile::Builder::new().prefix("wasmcorn-isolation-").tempdir_in("/tmp").unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let cache = dir.path().join("cache");
        std::fs::create_dir(&cache).unwrap();
        let nobody = nix::unistd::User::from_name("nobody").unwrap().expect("a user nobody");
        nix::unistd::chown(&cache, Some(nobody.uid), Some(nobody.gid)).unwrap();
        NobodyFolder { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `wasmcorn ARGS` as nobody (setpriv), with this folder's cache.
    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new("setpriv");
        command.args(["--reuid", "nobody", "--regid", "nogroup", "--clear-groups", binary()]).args(args);
        command.env("WASMCORN_CACHE_DIR", self.path().join("cache")).env_remove("WEB_CONCURRENCY");
        command.env_remove("FORWARDED_ALLOW_IPS");
        command
    }
}

/// Two apps: hello on host a.test in the shared pool, and echo on host b.test in a pool of its own, whose
/// workers run as `user` (when given).
fn two_apps(user: Option<&str>) -> String {
    let user = user.map(|user| format!("user = \"{user}\"\n")).unwrap_or_default();
    format!(
        "[[app]]\nname = \"hello\"\ncomponent = \"sample:hello\"\nhosts = [\"a.test\"]\n\n\
         [[app]]\nname = \"echo\"\ncomponent = \"sample:echo\"\nhosts = [\"b.test\"]\nworkers = 1\n{user}"
    )
}

#[test]
fn a_dedicated_pool_that_cannot_boot_stops_its_app_alone() {
    let folder = NobodyFolder::new();
    let apps = folder.path().join("apps.toml");
    // Run as nobody, echo's pool must switch to root: it cannot boot.
    std::fs::write(&apps, two_apps(Some("root"))).unwrap();
    std::fs::set_permissions(&apps, std::fs::Permissions::from_mode(0o644)).unwrap();
    let args = ["serve", "--apps", apps.to_str().unwrap(), "--bind", "127.0.0.1:0", "--workers", "2"];
    let server = Server::spawn(folder.command(&args));
    server.wait_for_line("Worker failed to boot: cannot set the groups of user root");
    server.wait_for_line("App echo stopped: its pool's workers fail to boot; its requests get 503");
    server.wait_for_count("Booting worker with pid", 3);
    server.wait_for_line("(app echo, stopped)");
    for _ in 0..5 {
        assert_eq!(server.get_from("b.test", "/").status, 503, "the stopped app's requests get 503");
        let hello = server.get_from("a.test", "/");
        assert_eq!((hello.status, hello.text().as_str()), (200, "Hello, World!"), "the other app is served");
    }
    server.wait_for_line("\"GET / HTTP/1.1\" 503");
    assert!(is_alive(server.pid));
    let failures = server.log_lines().iter().filter(|line| line.contains("Worker failed to boot")).count();
    assert_eq!(failures, 1, "no respawn storm:\n{}", server.log_text());
    assert_eq!(server.log_lines().iter().filter(|line| line.contains("App echo stopped")).count(), 1);

    // A reload tries the app again; it still cannot boot, and everything keeps serving as before.
    server.signal(Signal::SIGHUP);
    server.wait_for_line("A new generation of workers failed to boot: the previous ones keep serving");
    assert_eq!(server.get_from("b.test", "/").status, 503);
    assert_eq!(server.get_from("a.test", "/").status, 200);
    // Fixed and reloaded, the app serves again.
    std::fs::write(&apps, two_apps(None)).unwrap();
    server.signal(Signal::SIGHUP);
    server.wait_for_line("Reload complete");
    assert_eq!(server.get_from("b.test", "/").status, 200);
    assert!(is_alive(server.pid));
}

/// Sets the soft RLIMIT_NPROC of `pid`, a process of nobody's, to `soft` (the hard limit stays as it is). It runs
/// as nobody too: changing another user's limits needs CAP_SYS_RESOURCE, which a container's root may lack.
fn set_nproc(pid: Pid, soft: &str) {
    let limit = format!("--nproc={soft}:");
    let status = Command::new("setpriv")
        .args(["--reuid", "nobody", "--regid", "nogroup", "--clear-groups", "prlimit", "--pid", &pid.to_string()])
        .arg(&limit)
        .status()
        .expect("run prlimit");
    assert!(status.success(), "prlimit --pid {pid} {limit}");
}

/// The hard RLIMIT_NPROC of `pid`, from /proc/PID/limits (`unlimited` or a number).
fn hard_nproc(pid: Pid) -> String {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("read the limits");
    let line = limits.lines().find(|line| line.starts_with("Max processes")).expect("the process limit");
    line.split_whitespace().nth(3).expect("the hard limit").to_string()
}

#[test]
fn a_failed_fork_is_logged_and_retried() {
    let folder = NobodyFolder::new();
    let args = ["serve", "sample:hello", "--bind", "127.0.0.1:0", "--workers", "1"];
    let server = Server::spawn(folder.command(&args));
    server.wait_for_count("Booting worker with pid", 1);
    let hard = hard_nproc(server.pid);
    // nobody already runs more processes than this: the next fork fails with EAGAIN.
    set_nproc(server.pid, "1");
    server.signal(Signal::SIGTTIN);
    let failed = server.wait_for_line("Cannot start a worker for the shared pool");
    assert!(failed.contains("cannot fork a worker") && failed.contains("EAGAIN"), "{failed}");
    assert!(is_alive(server.pid), "the arbiter goes on");
    assert_eq!(server.get("/").status, 200, "the first worker still serves");
    // The wait doubles after each failure.
    let waits: Vec<String> = server
        .wait_for_count("Cannot start a worker for the shared pool", 3)
        .iter()
        .filter_map(|line| line.split("(trying again in ").nth(1)?.split(' ').next().map(str::to_string))
        .collect();
    assert_eq!(waits, ["0.5", "1.0", "2.0"], "the waits before each try");
    set_nproc(server.pid, &hard);
    server.wait_for_count("Booting worker with pid", 2);
    eventually("two workers", || server.live_workers().len() == 2);
    assert!(is_alive(server.pid));
}

// ---------------------------------------------------------------------------------------------------------------

/// The inodes of the sockets among `pid`'s descriptors.
fn socket_inodes(pid: Pid) -> Vec<u64> {
    let Ok(entries) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { return Vec::new() };
    entries
        .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
        .filter_map(|target| target.to_str()?.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok())
        .collect()
}

#[test]
fn dedicated_pool_workers_hold_no_listening_socket() {
    let dir = tempfile::tempdir().unwrap();
    let apps = dir.path().join("apps.toml");
    std::fs::write(&apps, two_apps(None)).unwrap();
    let args = ["serve", "--apps", apps.to_str().unwrap(), "--bind", "127.0.0.1:0", "--workers", "1"];
    let server = Server::spawn(command(&args));
    server.wait_for_count("Booting worker with pid", 2);
    assert_eq!(server.get_from("b.test", "/").status, 200);
    let listener = crate::support::listening_inode(server.port).expect("the listening socket in /proc/net/tcp");
    let dedicated = server.booted_worker_pids_where(|line| line.ends_with("(app echo)"));
    let shared = server.booted_worker_pids_where(|line| !line.contains("(app "));
    assert_eq!((dedicated.len(), shared.len()), (1, 1), "{}", server.log_text());
    assert!(socket_inodes(server.pid).contains(&listener), "the arbiter holds the listener");
    assert!(socket_inodes(shared[0]).contains(&listener), "the shared worker accepts from it");
    let held = socket_inodes(dedicated[0]);
    assert!(!held.is_empty(), "the dedicated worker holds its channel");
    assert!(!held.contains(&listener), "the dedicated worker holds no listener: {held:?} has {listener}");
}
