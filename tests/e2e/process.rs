//! Process settings: pid file, daemon mode, privileges, working folder, process titles.

use std::io::{Read, Write};
use std::os::unix::fs::FileTypeExt;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::support::{Server, command, eventually, is_alive, status_field, wait_for_file_line};

#[test]
fn pid_file_is_written_at_start_and_removed_at_exit() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("server.pid");
    let mut server = Server::start("sample:hello", 1, &["--pid", pidfile.to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(&pidfile).unwrap(), format!("{}\n", server.pid));
    server.signal(Signal::SIGTERM);
    assert_eq!(server.wait_exit().code(), Some(0));
    assert!(!pidfile.exists());
}

#[test]
fn pid_file_of_a_live_server_refuses_a_second_start() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("server.pid");
    let server = Server::start("sample:hello", 1, &["--pid", pidfile.to_str().unwrap()]);
    let output = command(&["serve", "--bind", "127.0.0.1:0", "--pid", pidfile.to_str().unwrap()]).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains(&format!("already running on pid {}", server.pid)), "{stderr}");
    assert_eq!(std::fs::read_to_string(&pidfile).unwrap().trim(), server.pid.to_string());
}

/// A pid file that another local user planted in a shared folder (sticky and everyone's, as /tmp is), naming a live
/// process, is not this user's server's: it no longer stops the start, and is replaced. One of this user's own
/// still does (above).
#[test]
fn a_pid_file_another_user_planted_does_not_stop_the_start() {
    use std::os::unix::fs::MetadataExt;
    let shared = crate::support::shared_folder();
    let pidfile = shared.path().join("wasmcorn.pid");
    std::fs::write(&pidfile, format!("{}\n", std::process::id())).unwrap();
    std::os::unix::fs::chown(&pidfile, Some(65534), Some(65534)).unwrap();
    let server = Server::start("sample:hello", 1, &["--pid", pidfile.to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(&pidfile).unwrap(), format!("{}\n", server.pid));
    assert_eq!(std::fs::metadata(&pidfile).unwrap().uid(), nix::unistd::geteuid().as_raw(), "the server's own now");
}

/// What is at the pid file's name and is not a pid file stops the start in one line and is left as it was: a
/// `--pid` aimed by mistake at a config file used to write the pid over it and remove it at exit (and, run by root,
/// `--pid /dev/null` replaced the null device). An empty file, or one naming a process that is gone, is taken over.
#[test]
fn a_pid_file_name_that_holds_something_else_stops_the_start_and_is_left_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("wasmcorn.toml");
    std::fs::write(&config, "workers = 2\n").unwrap();
    let socket = dir.path().join("socket.pid");
    let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let cases = [
        (&config, "is a file that holds something other than a process id, not a pid file"),
        (&socket, "socket.pid is a socket, not a pid file"),
    ];
    for (path, reason) in cases {
        let stderr =
            Server::refused_start(&["serve", "sample:hello", "--bind", "127.0.0.1:0", "--pid", path.to_str().unwrap()]);
        assert!(stderr.contains(reason), "{path:?}: {stderr}");
    }
    assert_eq!(std::fs::read_to_string(&config).unwrap(), "workers = 2\n", "the config file is untouched");
    assert!(std::fs::symlink_metadata(&socket).unwrap().file_type().is_socket(), "the socket is still there");
    for held in ["", "999999999\n"] {
        let pidfile = dir.path().join("taken-over.pid");
        std::fs::write(&pidfile, held).unwrap();
        let mut server = Server::start("sample:hello", 1, &["--pid", pidfile.to_str().unwrap()]);
        assert_eq!(std::fs::read_to_string(&pidfile).unwrap(), format!("{}\n", server.pid), "{held:?} taken over");
        server.signal(Signal::SIGTERM);
        assert_eq!(server.wait_exit().code(), Some(0));
        assert!(!pidfile.exists());
    }
}

/// A daemon started with its pid file and its error and access logs (one file) in `dir`, once its worker has booted:
/// its pid (stopped on drop), the port it listens on, the pid file and the log file.
fn start_daemon(dir: &std::path::Path) -> (KillOnDrop, u16, std::path::PathBuf, std::path::PathBuf) {
    let pidfile = dir.join("d.pid");
    let logfile = dir.join("error.log");
    let (pid_arg, log_arg) = (pidfile.to_str().unwrap(), logfile.to_str().unwrap());
    let args = ["--bind", "127.0.0.1:0", "--pid", pid_arg, "--error-logfile", log_arg, "--access-logfile", log_arg];
    let status = command(&["serve", "--daemon"]).args(args).status().unwrap();
    assert!(status.success(), "the launching process exits 0 once the server has started");
    let log = wait_for_file_line(&logfile, "Booting worker with pid");
    let pid = Pid::from_raw(wait_for_file_line(&pidfile, "").trim().parse().unwrap());
    let guard = KillOnDrop(pid);
    assert!(log.contains(&format!("[{pid}] [INFO] Starting wasmcorn")), "{log}");
    let port = log.split("Listening at: http://127.0.0.1:").nth(1).and_then(|rest| rest.split(' ').next());
    (guard, port.unwrap().parse().unwrap(), pidfile, logfile)
}

/// The descriptors 0, 1 and 2 of `pid` all point at /dev/null.
fn assert_stdio_on_dev_null(pid: Pid) {
    for fd in 0..3 {
        let target = std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).unwrap();
        assert_eq!(target, std::path::Path::new("/dev/null"), "the descriptor {fd} of {pid}");
    }
}

#[test]
fn daemon_mode_detaches_and_serves_until_terminated() {
    let dir = tempfile::tempdir().unwrap();
    let (daemon, port, pidfile, _) = start_daemon(dir.path());
    let pid = daemon.0;
    assert_eq!(crate::support::send(port, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n").status, 200);
    assert_ne!(status_field(pid, "PPid:"), std::process::id().to_string(), "the daemon is detached from its launcher");
    assert_stdio_on_dev_null(pid);
    kill(pid, Signal::SIGTERM).unwrap();
    eventually("the daemon stops", || !is_alive(pid));
    eventually("the pid file is removed", || !pidfile.exists());
}

/// A daemon whose start fails once it has detached (here its pid file names the daemon already running) makes its
/// launcher exit 1 with the error's one line: the launcher exited 0 at once, and the error went to the log alone.
#[test]
fn a_daemon_that_fails_to_start_makes_its_launcher_exit_1_with_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let (daemon, _, pidfile, logfile) = start_daemon(dir.path());
    let (pid_arg, log_arg) = (pidfile.to_str().unwrap(), logfile.to_str().unwrap());
    let args = ["serve", "--daemon", "--bind", "127.0.0.1:0", "--pid", pid_arg, "--error-logfile", log_arg];
    let output = command(&args).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains(&format!("Error: already running on pid {}", daemon.0)), "{stderr}");
    assert!(is_alive(daemon.0));
    assert_eq!(std::fs::read_to_string(&pidfile).unwrap().trim(), daemon.0.to_string());
}

/// A daemon upgraded by `USR2`: the new arbiter detaches where it is, as the old one's child, writes `FILE.2`, and
/// takes the pid file over when the old one stops. (It forked twice to daemonize again: the old arbiter took the
/// child it had started, exiting at once, for a failed upgrade, and the new one, not knowing whom it succeeded,
/// refused the pid file of a live server.)
#[test]
fn a_daemon_upgraded_by_sigusr2_hands_over_to_its_successor() {
    let dir = tempfile::tempdir().unwrap();
    let (daemon, port, pidfile, logfile) = start_daemon(dir.path());
    let old = daemon.0;
    kill(old, Signal::SIGUSR2).unwrap();
    let upgrade_pidfile = dir.path().join("d.pid.2");
    let new = Pid::from_raw(wait_for_file_line(&upgrade_pidfile, "").trim().parse().unwrap());
    let _new_guard = KillOnDrop(new);
    assert_eq!(status_field(new, "PPid:"), old.to_string(), "the new arbiter is the old one's child");
    assert_stdio_on_dev_null(new);
    eventually("both arbiters' workers booted", || {
        std::fs::read_to_string(&logfile).is_ok_and(|log| log.matches("Booting worker with pid").count() >= 2)
    });
    kill(old, Signal::SIGTERM).unwrap();
    eventually("the old arbiter gone", || !is_alive(old));
    eventually("the new arbiter owns the pid file", || {
        std::fs::read_to_string(&pidfile).is_ok_and(|text| text.trim() == new.to_string())
    });
    assert!(is_alive(new), "the new arbiter serves on");
    assert_eq!(crate::support::send(port, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n").status, 200);
    kill(new, Signal::SIGTERM).unwrap();
    eventually("the new arbiter stops", || !is_alive(new));
    eventually("its pid file removed", || !pidfile.exists());
    let log = std::fs::read_to_string(&logfile).unwrap();
    assert!(!log.contains("already running") && !log.contains("of the upgrade exited"), "{log}");
}

struct KillOnDrop(Pid);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if is_alive(self.0) {
            let _ = kill(self.0, Signal::SIGKILL);
        }
    }
}

#[test]
fn workers_run_as_the_given_user_and_group_while_the_arbiter_stays() {
    // The compile step writes the cache as nobody: a folder of nobody's, in a folder anyone may enter.
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let cache = dir.path().join("cache");
    std::fs::create_dir(&cache).unwrap();
    std::os::unix::fs::chown(&cache, Some(65534), Some(65534)).unwrap();
    let cache_dir = cache.to_str().unwrap();
    let args = ["--user", "nobody", "--group", "nogroup", "--cache-dir", cache_dir];
    let server = Server::start("sample:hello", 2, &args);
    for worker in server.live_workers() {
        assert_eq!(status_field(worker, "Uid:"), "65534");
        assert_eq!(status_field(worker, "Gid:"), "65534");
    }
    assert_eq!(status_field(server.pid, "Uid:"), nix::unistd::getuid().to_string());
    assert_eq!(server.get("/").status, 200);
}

#[test]
fn chdir_applies_before_the_app_path_is_read() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(env!("WASMCORN_GUEST_ECHO"), dir.path().join("app.wasm")).unwrap();
    let server = Server::start("app.wasm", 1, &["--chdir", dir.path().to_str().unwrap()]);
    assert_eq!(server.get("/here").json()["environ"]["PATH_INFO"], "/here");
}

/// With a relative `--chdir`, a manifest named relative to the folder the server was started in is read from there
/// at start, on a reload and by an upgrade's new arbiter (started there, so that its `--chdir` means the same), and
/// the manifest's components are taken from the manifest's folder. (Before, the start compiled `work/app.wasm`,
/// a reload looked for `work/apps.toml`, and the new arbiter failed to change to `work/work`.)
#[test]
fn relative_paths_keep_their_meaning_across_a_reload_and_an_upgrade_with_chdir() {
    let dir = tempfile::tempdir().unwrap();
    let start = dir.path().join("start");
    std::fs::create_dir_all(start.join("work")).unwrap();
    std::fs::copy(env!("WASMCORN_GUEST_ECHO"), start.join("app.wasm")).unwrap();
    let manifest =
        |value: &str| format!("[[app]]\nname = \"echo\"\ncomponent = \"app.wasm\"\nenv = {{ V = \"{value}\" }}\n");
    std::fs::write(start.join("apps.toml"), manifest("one")).unwrap();
    let args = ["serve", "--bind", "127.0.0.1:0", "--apps", "apps.toml", "--chdir", "work", "--pid", "x.pid"];
    let mut launch = command(&args);
    launch.current_dir(&start);
    let mut server = Server::spawn(launch);
    assert_eq!(server.get("/").json()["env"]["V"], "one");
    std::fs::write(start.join("apps.toml"), manifest("two")).unwrap();
    server.signal(Signal::SIGHUP);
    server.wait_for_line("Reload complete");
    assert_eq!(server.get("/").json()["env"]["V"], "two");
    server.signal(Signal::SIGUSR2);
    let successor = server.successor_pid();
    server.also_stop(successor);
    let text = wait_for_file_line(&start.join("work").join("x.pid.2"), "");
    assert_eq!(text.trim(), successor.to_string(), "the new arbiter changed to work/ and wrote its pid file there");
    server.wait_for_count("Booting worker with pid", 3);
    assert!(!server.log_text().contains("failed"), "{}", server.log_text());
}

/// A relative `--dir` folder is the one in `--chdir`'s folder, where the workers open it, and so is a relative
/// `--pid` checked there. (The start checked a `data` folder beside it, which the workers never opened.)
#[test]
fn chdir_applies_to_granted_folders_and_the_pid_file_check() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("work").join("data")).unwrap();
    std::fs::write(dir.path().join("work").join("data").join("file"), "inside").unwrap();
    let misbehave = env!("WASMCORN_GUEST_MISBEHAVE");
    let mut check = command(&["serve", misbehave, "--chdir", "work", "--pid", "data", "--check-config"]);
    let output = check.current_dir(dir.path()).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success() && stderr.contains("names a folder"), "{stderr}");
    let mut launch = command(&["serve", misbehave, "--bind", "127.0.0.1:0", "--chdir", "work", "--dir", "data::/data"]);
    launch.current_dir(dir.path());
    let server = Server::spawn(launch);
    assert_eq!(server.get("/read?path=/data/file").text(), "ok: inside");
}

/// Relative paths of the files the server makes are taken from `--chdir` too: the pid file, the access log and a
/// unix socket land there, and the pid file and the socket are removed from there at the end.
#[test]
fn chdir_applies_to_the_pid_file_the_logs_and_unix_sockets() {
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "--chdir",
        dir.path().to_str().unwrap(),
        "--pid",
        "x.pid",
        "--access-logfile",
        "a.log",
        "--bind",
        "unix:s.sock",
    ];
    let mut server = Server::start("sample:hello", 1, &args);
    let pid_text = std::fs::read_to_string(dir.path().join("x.pid")).expect("the pid file in the --chdir folder");
    assert_eq!(pid_text.trim(), server.pid.to_string());
    assert_eq!(server.get("/").status, 200);
    let mut over_unix = std::os::unix::net::UnixStream::connect(dir.path().join("s.sock")).expect("the socket there");
    over_unix.write_all(b"GET /unix HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n").unwrap();
    let mut raw = Vec::new();
    over_unix.read_to_end(&mut raw).unwrap();
    assert!(raw.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&raw));
    eventually("both requests in the access log there", || {
        std::fs::read_to_string(dir.path().join("a.log"))
            .is_ok_and(|log| log.contains("GET / ") && log.contains("GET /unix "))
    });
    server.signal(Signal::SIGTERM);
    assert_eq!(server.wait_exit().code(), Some(0));
    assert!(!dir.path().join("x.pid").exists(), "the pid file removed");
    assert!(!dir.path().join("s.sock").exists(), "the socket file removed");
}

#[test]
fn name_shows_in_the_process_titles() {
    let server = Server::start("sample:hello", 1, &["--name", "shop"]);
    let cmdline = |pid: Pid| {
        String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default()).replace('\0', " ")
    };
    let comm = |pid: Pid| std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    eventually("the arbiter's title", || cmdline(server.pid).starts_with("wasmcorn: arbiter [shop]"));
    let worker = server.live_workers()[0];
    eventually("the worker's title", || cmdline(worker).starts_with("wasmcorn: worker [shop]"));
    assert_eq!(comm(server.pid).trim(), "wasmcorn: arbit");
    assert_eq!(comm(worker).trim(), "wasmcorn: worke");
}
