//! The command line: bad apps, flags and addresses give one clear line and a non-zero exit, and bind nothing.

use std::process::Output;

use crate::support::{Server, command};

fn run(args: &[&str]) -> Output {
    command(args).output().expect("run wasmcorn")
}

fn stderr_lines(output: &Output) -> Vec<String> {
    String::from_utf8_lossy(&output.stderr).lines().map(str::to_string).collect()
}

/// Asserts a failed run that printed exactly one line, containing every one of `needles`, and bound nothing.
fn assert_one_line_error(output: &Output, needles: &[&str]) {
    let lines = stderr_lines(output);
    assert!(!output.status.success(), "expected a failure, got {:?}", output.status);
    assert_eq!(lines.len(), 1, "expected exactly one line, got {lines:#?}");
    for needle in needles {
        assert!(lines[0].contains(needle), "{:?} does not mention {needle:?}", lines[0]);
    }
    assert!(!lines[0].contains("Listening at"));
}

/// A component path that is not a regular file is refused before it is read: /dev/zero was read until the
/// kernel killed the compile step for the memory it took, and a FIFO was waited on for ever. So is a file that
/// does not start as WebAssembly does, from its first bytes: a terabyte named by mistake was read whole first.
#[test]
fn component_path_that_is_not_a_regular_file_is_a_one_line_error() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("app.wasm");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let huge = dir.path().join("disk.img");
    std::fs::File::create(&huge).unwrap().set_len(1 << 40).unwrap();
    // Past the 1 GiB a component file may hold, the size alone refuses it.
    let too_large = dir.path().join("too-large.wasm");
    std::fs::write(&too_large, b"\0asm\x0d\0\x01\0").unwrap();
    std::fs::OpenOptions::new().write(true).open(&too_large).unwrap().set_len((1 << 30) + 1).unwrap();
    let cases = [
        (fifo.as_path(), "not a regular file"),
        (std::path::Path::new("/dev/null"), "not a regular file"),
        (dir.path(), "not a regular file"),
        (too_large.as_path(), "more than 1073741824"),
        (huge.as_path(), "is not a WebAssembly component"),
    ];
    for (path, reason) in cases {
        let path = path.to_str().unwrap();
        let mut child = command(&["serve", path, "--check-config"])
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run wasmcorn");
        let deadline = std::time::Instant::now() + crate::support::PATIENCE;
        while child.try_wait().expect("wait for wasmcorn").is_none() {
            if std::time::Instant::now() > deadline {
                // The compile step (a child of its own) would wait on; it goes first.
                let pid = nix::unistd::Pid::from_raw(child.id() as i32);
                for compile_step in crate::support::children_of(pid) {
                    let _ = nix::sys::signal::kill(compile_step, nix::sys::signal::Signal::SIGKILL);
                }
                let _ = child.kill();
                let _ = child.wait();
                panic!("serve {path} --check-config did not end");
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let output = child.wait_with_output().expect("wasmcorn's output");
        assert_one_line_error(&output, &[path, reason]);
    }
}

/// A line break in a name the operator gave (here a folder on the pid file's path) is written as an escape: the
/// error stays one line.
#[test]
fn a_line_break_in_a_path_stays_on_the_errors_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("no\nsuch").join("wasmcorn.pid");
    let output = run(&["serve", "sample:hello", "-b", "127.0.0.1:0", "--pid", pidfile.to_str().unwrap()]);
    assert_one_line_error(&output, &["cannot write the pid file", "no\\nsuch/wasmcorn.pid"]);
}

#[test]
fn file_that_is_not_a_component_is_a_one_line_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("not-a-component.wasm");
    std::fs::write(&path, b"this is not wasm").unwrap();
    let output = run(&["serve", path.to_str().unwrap(), "--bind", "127.0.0.1:0"]);
    assert_one_line_error(&output, &["not-a-component.wasm", "not a WebAssembly component"]);
    assert_names_once(&output, "not-a-component.wasm");
}

#[test]
fn core_module_is_refused_as_not_a_component() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("core-module.wasm");
    // The smallest valid core WebAssembly module: magic and version 1.
    std::fs::write(&path, b"\0asm\x01\0\0\0").unwrap();
    let output = run(&["serve", path.to_str().unwrap(), "--bind", "127.0.0.1:0"]);
    assert_one_line_error(&output, &["core-module.wasm", "component"]);
}

#[test]
fn missing_file_is_a_one_line_error() {
    let output = run(&["serve", "/nonexistent/app.wasm", "--bind", "127.0.0.1:0"]);
    assert_one_line_error(&output, &["/nonexistent/app.wasm"]);
    assert_names_once(&output, "/nonexistent/app.wasm");
}

/// The error of a single app names its component once: nothing names it again in front of an error that names it
/// already.
fn assert_names_once(output: &Output, path: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.matches(path).count(), 1, "{stderr:?} names {path:?} once");
}

#[test]
fn unknown_sample_names_the_samples() {
    let output = run(&["serve", "sample:nope", "--bind", "127.0.0.1:0"]);
    assert_one_line_error(&output, &["sample:nope", "sample:hello", "sample:echo", "sample:workload"]);
}

#[test]
fn bad_flag_values_are_one_line_errors_naming_the_flag() {
    assert_one_line_error(&run(&["serve", "--bind", "127.0.0.1:0", "--env", "NOEQUALS"]), &["--env"]);
    assert_one_line_error(&run(&["serve", "--bind", "127.0.0.1:0", "--workers", "0"]), &["--workers"]);
    // The arbiter follows 1024 workers, and a reload runs two generations of a pool at once.
    // With --check-config: without the bound, it would start a server that never exits.
    let too_many = ["serve", "--bind", "127.0.0.1:0", "--workers", "513", "--check-config"];
    assert_one_line_error(&run(&too_many), &["--workers", "at most 512"]);
    let idle = ["serve", "--max-idle-connections", "4097", "--check-config"];
    assert_one_line_error(&run(&idle), &["--max-idle-connections must be at most 4096, not 4097"]);
    assert_one_line_error(&run(&["serve", "--bind", "not an address"]), &["not an address"]);
    assert_one_line_error(&run(&["serve", "--bind", "127.0.0.1:0", "--guest-timeout", "-1"]), &["--guest-timeout"]);
    assert_one_line_error(&run(&["serve", "--bind", "127.0.0.1:0", "--workers", "many"]), &["--workers", "many"]);
    assert_one_line_error(&run(&["serve", "--no-such-flag"]), &["--no-such-flag"]);
}

#[test]
fn port_in_use_is_a_one_line_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let output = run(&["serve", "--bind", &address]);
    let lines = stderr_lines(&output);
    assert!(!output.status.success());
    let errors: Vec<&String> = lines.iter().filter(|line| line.starts_with("Error:")).collect();
    assert_eq!(errors.len(), 1, "{lines:#?}");
    assert!(errors[0].contains(&address) && errors[0].contains("in use"), "{lines:#?}");
}

/// A metrics address in use is one line on stderr, before the server says it listens. It came after the
/// `Listening at` line, and twice: logged as a `[CRITICAL]` line and printed by `main`. A failure after logging
/// has started (a pid file that cannot be written) is said once too, and is in the error log file when there is
/// one.
#[test]
fn a_metrics_address_in_use_is_said_once() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let output = run(&["serve", "--bind", "127.0.0.1:0", "--metrics-bind", &address]);
    assert_one_line_error(&output, &["Error: --metrics-bind", &address, "in use"]);

    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("error.log");
    let pidfile = dir.path().join("missing-folder").join("wasmcorn.pid");
    let (pidfile, log) = (pidfile.to_str().unwrap(), log.to_str().unwrap());
    let output = run(&["serve", "--bind", "127.0.0.1:0", "--pid", pidfile, "--error-logfile", log]);
    assert_one_line_error(&output, &["Error: cannot write the pid file"]);
    let logged = std::fs::read_to_string(log).unwrap();
    assert!(logged.lines().any(|line| line.contains("[CRITICAL] cannot write the pid file")), "{logged}");
}

#[test]
fn help_explains_every_serve_flag() {
    let output = run(&["serve", "--help"]);
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for flag in [
        "--bind",
        "--workers",
        "--env",
        "--guest-timeout",
        "--max-memory",
        "--cache-dir",
        "WEB_CONCURRENCY",
        "sample:hello",
    ] {
        assert!(help.contains(flag), "--help does not mention {flag}:\n{help}");
    }
}

#[test]
fn web_concurrency_sets_the_worker_count() {
    let mut command = command(&["serve", "--bind", "127.0.0.1:0"]);
    command.env("WEB_CONCURRENCY", "3");
    let server = Server::spawn(command);
    server.wait_for_count("Booting worker with pid", 3);
    crate::support::eventually("three live workers", || server.live_workers().len() == 3);
}

#[test]
fn forwarded_allow_ips_defaults_to_its_environment_variable() {
    let mut command = command(&["serve", "sample:echo", "--bind", "127.0.0.1:0", "--workers", "1"]);
    command.env("FORWARDED_ALLOW_IPS", "*");
    let server = Server::spawn(command);
    let response = crate::support::send(
        server.port,
        b"GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 10.1.2.3\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(response.json()["environ"]["REMOTE_ADDR"], "10.1.2.3", "the peer is trusted through the variable");
}

/// Without `--cache-dir` and `$WASMCORN_CACHE_DIR`, the compiled apps go to `$XDG_CACHE_HOME/wasmcorn`, and without
/// that to `~/.cache/wasmcorn`.
#[test]
fn the_cache_folder_defaults_to_the_xdg_cache_home_then_the_home_folder() {
    let xdg = tempfile::tempdir().unwrap();
    let mut command = command(&["serve", "sample:hello", "--bind", "127.0.0.1:0", "--workers", "1"]);
    command.env_remove("WASMCORN_CACHE_DIR").env("XDG_CACHE_HOME", xdg.path());
    let server = Server::spawn(command);
    server.wait_for_count("Booting worker with pid", 1);
    let compiled = std::fs::read_dir(xdg.path().join("wasmcorn")).map(Iterator::count).unwrap_or(0);
    assert!(compiled > 0, "nothing compiled into $XDG_CACHE_HOME/wasmcorn");
    drop(server);
    let home = tempfile::tempdir().unwrap();
    let mut command = crate::support::command(&["serve", "sample:hello", "--bind", "127.0.0.1:0", "--workers", "1"]);
    command.env_remove("WASMCORN_CACHE_DIR").env_remove("XDG_CACHE_HOME").env("HOME", home.path());
    let server = Server::spawn(command);
    server.wait_for_count("Booting worker with pid", 1);
    let compiled = std::fs::read_dir(home.path().join(".cache/wasmcorn")).map(Iterator::count).unwrap_or(0);
    assert!(compiled > 0, "nothing compiled into ~/.cache/wasmcorn");
}

#[test]
fn startup_lines_follow_gunicorn() {
    let server = Server::start("sample:hello", 1, &[]);
    let log = server.log_text();
    let pid = server.pid.to_string();
    assert!(log.contains("[INFO] Starting wasmcorn "), "{log}");
    assert!(log.contains(&format!("[INFO] Listening at: http://127.0.0.1:{} ({pid})", server.port)), "{log}");
    assert!(log.contains("[INFO] Using worker: sync"), "{log}");
    let worker = server.booted_worker_pids()[0];
    assert!(log.contains(&format!("[{worker}] [INFO] Booting worker with pid: {worker}")), "{log}");
}

/// An output that cannot be written (a full disk, here /dev/full; a closed pipe likewise) is an error with exit 1,
/// never a panic (exit 101 and a backtrace): `--print-config` on stdout, and the error line itself on stderr.
#[test]
fn an_output_that_cannot_be_written_is_an_error_not_a_panic() {
    let full = || std::fs::OpenOptions::new().write(true).open("/dev/full").expect("open /dev/full");
    let printed = command(&["serve", "--print-config"]).stdout(full()).output().expect("run wasmcorn");
    assert_one_line_error(&printed, &["cannot write the configuration to stdout"]);
    assert_eq!(printed.status.code(), Some(1));
    let refused = command(&["serve", "--workers", "0"]).stderr(full()).output().expect("run wasmcorn");
    assert_eq!(refused.status.code(), Some(1), "a refused flag with nowhere to say so still exits 1");
}
