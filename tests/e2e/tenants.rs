//! Hosting many apps from one manifest (`--apps`): routing by host and prefix, each app's own environment,
//! a dedicated pool that a tenant can saturate without slowing the others, per-app log lines, reloads that
//! replace only the pool that changed, and one-line errors for bad manifests.

use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use nix::sys::signal::Signal;
use nix::unistd::Pid;

use crate::support::{
    Server, Site, command, concurrently, connect_sending, eventually, held_request, is_alive, leave_room_for,
    listening_on, read_by_server, status_field,
};

/// The issue's three apps: `hello` on host a.test, `echo` under /echo on any host, and the `misbehave` guest
/// on evil.test with a pool of its own (one worker, one-second guest timeout).
fn manifest(echo_value: &str, evil_value: &str) -> String {
    format!(
        r#"
[[app]]
name = "hello"
component = "sample:hello"
hosts = ["a.test"]

[[app]]
name = "echo"
component = "sample:echo"
prefix = "/echo"
env = {{ ECHO_ONLY = "{echo_value}" }}

[[app]]
name = "evil"
component = "misbehave.wasm"
hosts = ["evil.test"]
workers = 1
guest_timeout = 1
env = {{ EVIL_SECRET = "{evil_value}" }}
"#
    )
}

/// The pids of the workers booted for the dedicated pool of `app`, and of the shared pool.
fn pool_pids(server: &Server, app: &str) -> (Vec<Pid>, Vec<Pid>) {
    let suffix = format!("(app {app})");
    let dedicated = server.booted_worker_pids_where(|line| line.ends_with(&suffix));
    let shared = server.booted_worker_pids_where(|line| !line.contains("(app "));
    (dedicated, shared)
}

#[test]
fn each_request_reaches_its_app_with_its_mount_and_environment() {
    let site = Site::new(&manifest("echo-value", "evil-value"));
    let server = site.serve(2, 3, &[]);

    let hello = server.get_from("a.test", "/anything");
    assert_eq!((hello.status, hello.text().as_str()), (200, "Hello, World!"));
    // A named host comes before a prefix that holds for every host.
    assert_eq!(server.get_from("A.Test:8000", "/echo/x").text(), "Hello, World!");

    let echo = server.get_from("b.test", "/echo/x/y?q=1").json();
    assert_eq!(echo["environ"]["SCRIPT_NAME"], "/echo");
    assert_eq!(echo["environ"]["PATH_INFO"], "/x/y");
    assert_eq!(echo["environ"]["QUERY_STRING"], "q=1");
    assert_eq!(echo["env"]["ECHO_ONLY"], "echo-value");
    assert!(echo["env"].get("EVIL_SECRET").is_none(), "echo sees only its own environment: {echo}");
    let mount = server.get_from("b.test", "/echo").json();
    assert_eq!(
        (mount["environ"]["SCRIPT_NAME"].as_str(), mount["environ"]["PATH_INFO"].as_str()),
        (Some("/echo"), Some(""))
    );
    assert_eq!(server.get_from("b.test", "/echoes").status, 404, "a prefix holds whole segments only");

    let evil = server.get_from("evil.test", "/env");
    assert_eq!(evil.status, 200);
    assert_eq!(evil.text(), "EVIL_SECRET=evil-value\n", "the misbehave guest sees only its own environment");

    let nowhere = server.get_from("b.test", "/");
    assert_eq!((nowhere.status, nowhere.text().as_str()), (404, "Not Found\n"));
    let head = crate::http::head_exchange(server.port, "/", "b.test");
    assert!(head.starts_with("HTTP/1.1 404 ") && head.ends_with("\r\n\r\n"), "a head alone: {head:?}");

    // Access-log lines lead with the app's name; the 404 has none.
    server.wait_for_line("hello 127.0.0.1 - - [");
    server.wait_for_line(r#"echo 127.0.0.1 - - ["#);
    server.wait_for_line(r#"evil 127.0.0.1 - - ["#);
    eventually("the 404's access-log line, under no app", || {
        server
            .log_lines()
            .iter()
            .any(|line| line.starts_with("- 127.0.0.1 - - [") && line.contains(r#""GET / HTTP/1.1" 404 10"#))
    });

    // evil runs in its own process: its guest output is logged by its dedicated worker, under its name.
    let (dedicated, shared) = pool_pids(&server, "evil");
    assert_eq!((dedicated.len(), shared.len()), (1, 2), "{}", server.log_text());
    assert_eq!(server.get_from("evil.test", "/trap").status, 500);
    let trap = server.wait_for_line("Guest failure handling request GET /trap HTTP/1.1 (app evil)");
    assert!(trap.contains(&format!("[{}]", dedicated[0])), "logged by the evil pool's worker: {trap}");
    let title = std::fs::read(format!("/proc/{}/cmdline", dedicated[0])).unwrap_or_default();
    assert!(String::from_utf8_lossy(&title).starts_with("wasmcorn: worker (app evil)"));
}

#[test]
fn guest_output_lines_carry_the_app_name() {
    let site = Site::new(&manifest("e", "v"));
    let server = site.serve(2, 3, &[]);
    assert_eq!(server.get_from("evil.test", "/panic").status, 500);
    server.wait_for_line("[guest stderr app=evil] the misbehave guest panics on purpose");
    assert!(!server.log_text().contains("[guest stderr] "), "every guest line names its app");
}

#[test]
fn a_tenant_that_saturates_its_pool_does_not_slow_the_others() {
    let site = Site::new(&manifest("e", "v"));
    let server = site.serve(2, 3, &[]);
    let loops_done = AtomicBool::new(false);
    let (loops, others) = std::thread::scope(|scope| {
        let loops = scope.spawn(|| {
            let responses = concurrently(20, |_| server.get_from("evil.test", "/loop"));
            loops_done.store(true, Ordering::SeqCst);
            responses
        });
        // Wait until evil's worker has timed one loop out (19 more are queued), then ask the other app 200 times.
        eventually("evil's pool to be busy", || {
            server.log_text().contains("Guest timeout handling request GET /loop HTTP/1.1 (app evil)")
        });
        let others: Vec<u16> = (0..200).map(|_| server.get_from("a.test", "/").status).collect();
        let still_looping = !loops_done.load(Ordering::SeqCst);
        (loops.join().unwrap(), (others, still_looping))
    });
    let (others, still_looping) = others;
    assert!(others.iter().all(|status| *status == 200), "every request to a.test succeeded: {others:?}");
    assert!(still_looping, "the 200 requests were answered while evil's pool was still saturated");
    assert!(
        loops.iter().all(|response| response.status == 503),
        "{:?}",
        loops.iter().map(|r| r.status).collect::<Vec<_>>()
    );
}

#[test]
fn reload_after_editing_one_app_replaces_only_its_pool_and_fails_no_request() {
    let site = Site::new(&manifest("echo-1", "evil-1"));
    let server = site.serve(2, 3, &["--graceful-timeout", "5"]);
    let (evil_before, shared_before) = pool_pids(&server, "evil");

    // Edit evil's environment while a.test (the shared pool) is under a load loop.
    let failures = load_loop_during(&server, "a.test", "/", "Hello, World!", || {
        site.write(&manifest("echo-1", "evil-2"));
        server.signal(Signal::SIGHUP);
        server.wait_for_line("Reloading: new workers for the pool of app evil");
        server.wait_for_line("Reload complete");
    });
    assert_eq!(failures, 0, "{}", server.log_text());
    assert_eq!(server.get_from("evil.test", "/env").text(), "EVIL_SECRET=evil-2\n");
    let (evil_after, _) = pool_pids(&server, "evil");
    assert_eq!(evil_after.len(), 2, "one new worker for evil: {evil_after:?}");
    eventually("evil's old worker to leave", || !is_alive(evil_before[0]));
    for pid in &shared_before {
        assert!(is_alive(*pid), "the shared pool kept its workers");
    }
    assert_eq!(pool_pids(&server, "evil").1, shared_before, "no shared worker was booted");

    // Edit echo's environment (the shared pool) while evil.test is under a load loop.
    let failures = load_loop_during(&server, "evil.test", "/count", "1", || {
        site.write(&manifest("echo-2", "evil-2"));
        server.signal(Signal::SIGHUP);
        server.wait_for_line("Reloading: new workers for the shared pool");
        server.wait_for_count("Reload complete", 2);
    });
    assert_eq!(failures, 0, "{}", server.log_text());
    assert_eq!(server.get_from("b.test", "/echo").json()["env"]["ECHO_ONLY"], "echo-2");
    assert!(is_alive(evil_after[1]), "evil's pool kept its worker");
    assert_eq!(pool_pids(&server, "evil").0, evil_after, "no evil worker was booted");
    for pid in &shared_before {
        eventually("the old shared workers to leave", || !is_alive(*pid));
    }
}

/// Sends requests to `host` `path` in a loop while `during` runs (and a few after); returns how many did not
/// answer 200 with `body`.
fn load_loop_during(server: &Server, host: &str, path: &str, body: &str, during: impl FnOnce()) -> usize {
    let stop = AtomicBool::new(false);
    let failures = AtomicUsize::new(0);
    let sent = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            while !stop.load(Ordering::SeqCst) {
                let response = server.get_from(host, path);
                if response.status != 200 || response.text() != body {
                    failures.fetch_add(1, Ordering::SeqCst);
                }
                sent.fetch_add(1, Ordering::SeqCst);
            }
        });
        during();
        let after = sent.load(Ordering::SeqCst) + 20;
        eventually("20 more requests after the reload", || sent.load(Ordering::SeqCst) >= after);
        stop.store(true, Ordering::SeqCst);
    });
    assert!(sent.load(Ordering::SeqCst) > 20);
    failures.load(Ordering::SeqCst)
}

#[test]
fn default_app_takes_what_no_route_matches() {
    let site = Site::new(&format!("default_app = \"echo\"\n{}", manifest("e", "v")));
    let server = site.serve(2, 3, &[]);
    let echo = server.get_from("unknown.test", "/elsewhere").json();
    assert_eq!(
        (echo["environ"]["SCRIPT_NAME"].as_str(), echo["environ"]["PATH_INFO"].as_str()),
        (Some(""), Some("/elsewhere"))
    );
    assert_eq!(server.get_from("a.test", "/").text(), "Hello, World!");
}

#[test]
fn apps_may_be_listed_in_the_config_file() {
    let site = Site::new("");
    let config = site.dir.path().join("wasmcorn.toml");
    std::fs::write(
        &config,
        format!("workers = 2\naccess_logformat = \"%(app)s %(s)s\"\n{}", manifest("from-config", "v")),
    )
    .unwrap();
    let server = Server::spawn(command(&["serve", "-c", config.to_str().unwrap(), "--bind", "127.0.0.1:0"]));
    server.wait_for_count("Booting worker with pid", 3);
    assert_eq!(server.get_from("x.test", "/echo").json()["env"]["ECHO_ONLY"], "from-config");
    server.wait_for_line("echo 200");
}

#[test]
fn a_dedicated_pool_runs_under_its_own_user() {
    let cache = tempfile::tempdir().unwrap();
    std::fs::set_permissions(cache.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let text = manifest("e", "v").replace("workers = 1\n", "workers = 1\nuser = \"nobody\"\ngroup = \"nogroup\"\n");
    let site = Site::new(&text);
    let server = site.serve(2, 3, &["--cache-dir", cache.path().to_str().unwrap()]);
    let (dedicated, shared) = pool_pids(&server, "evil");
    assert_eq!(status_field(dedicated[0], "Uid:"), "65534");
    assert_eq!(status_field(shared[0], "Uid:"), nix::unistd::getuid().to_string());
    assert_eq!(server.get_from("evil.test", "/count").text(), "1");
}

/// `serve --apps FILE --check-config`: its exit status and its stderr.
fn check(dir: &Path, text: &str) -> (Option<i32>, String) {
    let path = dir.join("check.toml");
    std::fs::write(&path, text).unwrap();
    let output = command(&["serve", "--apps", path.to_str().unwrap(), "--check-config"]).output().unwrap();
    (output.status.code(), String::from_utf8_lossy(&output.stderr).into_owned())
}

#[test]
fn check_config_reports_manifest_mistakes_in_one_line_naming_the_app_and_the_key() {
    let site = Site::new(&manifest("e", "v"));
    let dir = site.dir.path();
    assert_eq!(check(dir, &manifest("e", "v")), (Some(0), String::new()));
    let app = |name: &str, extra: &str| format!("[[app]]\nname = \"{name}\"\ncomponent = \"sample:hello\"\n{extra}\n");
    let cases = [
        (app("shop", "wrokers = 2"), r#"app "shop": unknown key "wrokers""#),
        (
            app("shop", "prefix = \"/a\"") + &app("shop", "prefix = \"/b\""),
            r#"app "shop": key "name": another app has the same name"#,
        ),
        (
            app("one", "hosts = \"x.test\"") + &app("two", "hosts = [\"X.test\"]"),
            r#"app "two": keys "hosts"/"prefix": the route x.test/ is already app "one"'s"#,
        ),
        ("[[app]]\nname = \"gone\"\ncomponent = \"nowhere.wasm\"\n".to_string(), r#"app "gone": key "component": "#),
        (
            "[[app]]\nname = \"dev\"\ncomponent = \"/dev/null\"\n".to_string(),
            r#"app "dev": key "component": /dev/null is not a regular file"#,
        ),
        (app("shop", "workers = 0"), r#"app "shop": key "workers" must be at least 1"#),
        (app("shop", "workers = 100000000"), "come to 100000001 workers: at most 512"),
        (app("shop", "env = { A = \"a\\u0000b\" }"), r#"app "shop": key "env": the value of "A" holds a NUL"#),
        (app("shop", "name = \"again\""), "line 4, column 1: duplicate key"),
        (app("shared", "workers = 1"), r#"key "name": "shared" is reserved"#),
        (app("-", ""), r#"key "name": "-" is reserved"#),
        ("[[app]]\nname = \"bad\"\ncomponent = \"check.toml\"\n".to_string(), r#"app "bad": "#),
    ];
    for (text, expected) in cases {
        let (code, stderr) = check(dir, &text);
        assert_eq!(code, Some(1), "{text}\n{stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
        assert!(stderr.contains(expected), "{stderr:?} should contain {expected:?}");
        assert!(stderr.contains("check.toml"), "names the file: {stderr}");
    }
}

#[test]
fn flags_that_belong_to_each_app_are_refused_with_apps() {
    let site = Site::new(&manifest("e", "v"));
    let path = site.path();
    for extra in [&["sample:echo"][..], &["--env", "A=1"], &["--dir", "/tmp"], &["--allow-net", "127.0.0.1:1"]] {
        let mut args = vec!["serve", "--apps", path.to_str().unwrap(), "--check-config"];
        args.extend_from_slice(extra);
        let output = command(&args).output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{extra:?}");
        assert!(stderr.contains("cannot be used with --apps"), "{stderr}");
    }
}

#[test]
fn each_app_has_its_own_limits_and_folders() {
    let shared = tempfile::tempdir().unwrap();
    std::fs::write(shared.path().join("note.txt"), "for echo only").unwrap();
    let text = format!(
        r#"
[[app]]
name = "small"
component = "sample:echo"
prefix = "/small"
limit_request_body = 10

[[app]]
name = "reader"
component = "misbehave.wasm"
hosts = "reader.test"
dirs = ["{}::/data:ro"]

[[app]]
name = "blind"
component = "misbehave.wasm"
hosts = "blind.test"
workers = 1
max_requests = 2
"#,
        shared.path().display()
    );
    let site = Site::new(&text);
    let server = site.serve(2, 3, &[]);
    let post = |path: &str, body: &str| {
        let head = format!("POST {path} HTTP/1.1\r\nHost: x.test\r\nContent-Length: {}\r\n\r\n{body}", body.len());
        server.request(head.as_bytes())
    };
    assert_eq!(post("/small/x", "0123456789").status, 200);
    assert_eq!(post("/small/x", "0123456789!").status, 413, "small's own body limit");

    let read = server.get_from("reader.test", "/read?path=/data/note.txt");
    assert_eq!((read.status, read.text().as_str()), (200, "ok: for echo only"));
    let blind = server.get_from("blind.test", "/read?path=/data/note.txt");
    assert!(!blind.text().contains("for echo only"), "another app's folder is not granted to blind: {}", blind.text());

    // blind's pool replaces its worker after two of its requests.
    let (before, _) = pool_pids(&server, "blind");
    assert_eq!(server.get_from("blind.test", "/count").text(), "1");
    server.wait_for_line("Autorestarting worker after 2 requests");
    eventually("a new worker for blind", || pool_pids(&server, "blind").0.len() == 2);
    eventually("blind's first worker to leave", || !is_alive(before[0]));
    assert_eq!(server.get_from("blind.test", "/count").text(), "1");
}

/// A request for a dedicated pool crosses to it with its head, at most 200 KiB: a larger one gets `431`, and the
/// connection is closed; the same head for an app of the shared pool is served.
#[test]
fn a_head_too_large_to_hand_to_a_dedicated_pool_gets_431() {
    let site = Site::new(&manifest("e", "v"));
    let server = site.serve(1, 2, &[]);
    let padding: String = (0..32).map(|index| format!("X-Pad-{index}: {}\r\n", "p".repeat(7900))).collect();
    let head = |host: &str| format!("GET /count HTTP/1.1\r\nHost: {host}\r\n{padding}Connection: close\r\n\r\n");
    assert!(head("evil.test").len() > 240 * 1024 && head("evil.test").len() < 260 * 1024);
    let refused = crate::support::read_response(connect_sending(server.port, head("evil.test").as_bytes()));
    assert_eq!(refused.status, 431, "{}", refused.text());
    assert_eq!(server.get_from("evil.test", "/count").status, 200, "the pool still serves");
    let served = crate::support::read_response(connect_sending(server.port, head("a.test").as_bytes()));
    assert_eq!((served.status, served.text().as_str()), (200, "Hello, World!"));
}

/// At the start and after each reload, one line per app says what it runs, its routes and its pool, and one line
/// where requests no route matches go.
#[test]
fn the_log_names_each_app_with_its_routes_and_pool() {
    let site = Site::new(&manifest("e", "v"));
    let server = site.serve(1, 2, &[]);
    let lines = [
        "App hello: sample:hello at a.test/ on the shared pool",
        "App echo: sample:echo at */echo on the shared pool",
        "App evil: ",
        "Requests no route matches get 404",
    ];
    for line in lines {
        server.wait_for_line(line);
    }
    let evil = server.wait_for_line("App evil: ");
    assert!(evil.ends_with("misbehave.wasm at evil.test/ on its own pool of 1"), "{evil}");
    site.write(&format!("default_app = \"hello\"\n{}", manifest("e", "v")));
    server.signal(Signal::SIGHUP);
    server.wait_for_line("Reload complete");
    for line in lines.iter().take(3) {
        server.wait_for_count(line, 2);
    }
    server.wait_for_line("Requests no route matches go to app hello");
}

#[test]
fn reload_adds_and_removes_apps_and_keeps_serving_on_a_bad_manifest() {
    let site = Site::new(&manifest("e", "v"));
    let server = site.serve(2, 3, &[]);
    // A broken manifest: the reload fails in one line and every app keeps serving.
    site.write(&format!("{}\n[[app]]\nname = \"hello\"\ncomponent = \"sample:echo\"\n", manifest("e", "v")));
    server.signal(Signal::SIGHUP);
    let failed = server.wait_for_line("Reload failed, the current workers keep serving");
    assert!(failed.contains(r#"app "hello": key "name": another app has the same name"#), "{failed}");
    assert_eq!(server.get_from("a.test", "/").text(), "Hello, World!");
    // A guest timeout past a year: refused the same way (it made the arbiter panic, and the server go down).
    site.write(&format!(
        "{}\n[[app]]\nname = \"slow\"\ncomponent = \"sample:echo\"\nhosts = \"slow.test\"\nguest_timeout = 1e300\n",
        manifest("e", "v")
    ));
    server.signal(Signal::SIGHUP);
    let failed = server.wait_for_count("Reload failed, the current workers keep serving", 2).remove(1);
    assert!(failed.contains(r#"app "slow": key "guest_timeout" must be a positive number"#), "{failed}");
    assert!(failed.contains("at most 31536000 (a year), not 1e300"), "{failed}");
    assert_eq!(server.get_from("a.test", "/").text(), "Hello, World!");
    // A manifest past 4 MiB: refused before it is read (the arbiter read any file whole).
    site.write(&format!("{}\n#{}\n", manifest("e", "v"), "x".repeat(4 << 20)));
    server.signal(Signal::SIGHUP);
    let failed = server.wait_for_count("Reload failed, the current workers keep serving", 3).remove(2);
    assert!(failed.contains("cannot read the app manifest") && failed.contains("more than 4194304"), "{failed}");
    assert_eq!(server.get_from("a.test", "/").text(), "Hello, World!");

    // Remove evil, add a pool for a new app on its host.
    let (evil, _) = pool_pids(&server, "evil");
    let without_evil = manifest("e", "v").split("[[app]]\nname = \"evil\"").next().unwrap().to_string();
    site.write(&format!(
        "{without_evil}[[app]]\nname = \"fresh\"\ncomponent = \"sample:echo\"\nhosts = \"fresh.test\"\nworkers = 1\n"
    ));
    server.signal(Signal::SIGHUP);
    server.wait_for_line(
        "Reloading: new workers for the shared pool, the pool of app fresh; retiring the pool of app evil",
    );
    server.wait_for_line("Reload complete");
    eventually("evil's worker to leave", || !is_alive(evil[0]));
    assert_eq!(server.get_from("evil.test", "/env").status, 404);
    let fresh = server.get_from("fresh.test", "/x").json();
    assert_eq!(fresh["environ"]["PATH_INFO"], "/x");
    assert_eq!(pool_pids(&server, "fresh").0.len(), 1);
}

/// The channel of a pool a reload removed is kept for a while, to pass on what still waits in it; a worker forked
/// meanwhile (the replacement of one that died), of a pool of the new site, holds none of its descriptors (its
/// copies kept the channel open for as long as it lived).
#[test]
fn workers_forked_by_a_reload_hold_nothing_of_a_removed_pools_channel() {
    let site = Site::new(&manifest("e", "v"));
    let server = site.serve(1, 2, &[]);
    let (evil, shared) = pool_pids(&server, "evil");
    // The receiving end of evil's channel: the one socket evil's worker holds and the shared worker does not.
    let evil_only: Vec<u64> =
        sockets(evil[0]).into_iter().filter(|inode| !sockets(shared[0]).contains(inode)).collect();
    assert_eq!(evil_only.len(), 1, "evil's worker holds one socket of its own: {evil_only:?}");
    let without_evil = manifest("e", "v").split("[[app]]\nname = \"evil\"").next().unwrap().to_string();
    site.write(&without_evil);
    server.signal(Signal::SIGHUP);
    server.wait_for_line("Reload complete");
    // A worker forked while the channel is kept: the replacement of the new shared worker, killed.
    let (_, shared_now) = pool_pids(&server, "evil");
    let forked: Vec<Pid> = shared_now.into_iter().filter(|pid| !shared.contains(pid)).collect();
    assert_eq!(forked.len(), 1, "the reload forked one shared worker");
    nix::sys::signal::kill(forked[0], Signal::SIGKILL).unwrap();
    server.wait_for_count("Booting worker with pid", 4);
    let (_, shared_last) = pool_pids(&server, "evil");
    let replacement = *shared_last.last().expect("the replacement");
    let held = sockets(replacement);
    assert!(!held.contains(&evil_only[0]), "the replacement holds evil's channel: {held:?}");
    assert_eq!(server.get_from("a.test", "/").text(), "Hello, World!");
}

/// The inodes of the sockets process `pid` holds, each once.
fn sockets(pid: Pid) -> std::collections::BTreeSet<u64> {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).expect("list the worker's descriptors");
    fds.filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
        .filter_map(|target| target.to_str()?.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok())
        .collect()
}

#[test]
fn a_connection_on_a_unix_socket_reaches_a_dedicated_pool() {
    let site = Site::new(
        "[[app]]\nname = \"hello\"\ncomponent = \"sample:hello\"\n\n[[app]]\nname = \"local\"\ncomponent = \"sample:echo\"\nhosts = \"local\"\nworkers = 1\n",
    );
    let socket = site.dir.path().join("wasmcorn.sock");
    let bind = format!("unix:{}", socket.display());
    let server = site.serve(2, 3, &["--bind", &bind]);
    let mut stream = std::os::unix::net::UnixStream::connect(&socket).unwrap();
    stream.write_all(b"POST /unix HTTP/1.1\r\nHost: local\r\nContent-Length: 4\r\n\r\nbody").unwrap();
    let mut raw = Vec::new();
    std::io::Read::read_to_end(&mut stream, &mut raw).unwrap();
    let response = crate::support::parse_response(&raw);
    assert_eq!(response.status, 200);
    let echo = response.json();
    assert_eq!((echo["environ"]["PATH_INFO"].as_str(), echo["body"].as_str()), (Some("/unix"), Some("body")));
    let (dedicated, _) = pool_pids(&server, "local");
    let line = server.wait_for_line("local - - - [");
    assert!(line.contains(r#""POST /unix HTTP/1.1" 200"#), "{line}");
    assert_eq!(dedicated.len(), 1);
}

#[test]
fn an_app_max_requests_recycles_a_shared_worker() {
    let site = Site::new(
        "[[app]]\nname = \"hello\"\ncomponent = \"sample:hello\"\nhosts = \"a.test\"\nmax_requests = 3\n\n[[app]]\nname = \"echo\"\ncomponent = \"sample:echo\"\n",
    );
    let path = site.path();
    let server = Server::spawn(command(&["serve", "--apps", path.to_str().unwrap(), "--bind", "127.0.0.1:0"]));
    server.wait_for_count("Booting worker with pid", 1);
    // echo's requests do not count towards hello's limit.
    for _ in 0..4 {
        assert_eq!(server.get_from("b.test", "/").status, 200);
    }
    for _ in 0..3 {
        assert_eq!(server.get_from("a.test", "/").text(), "Hello, World!");
    }
    server.wait_for_line("Autorestarting worker after 3 requests of app hello (its max_requests)");
    server.wait_for_count("Booting worker with pid", 2);
    assert_eq!(server.get_from("a.test", "/").text(), "Hello, World!");
    assert_eq!(server.log_text().matches("Autorestarting").count(), 1, "{}", server.log_text());
}

#[test]
fn reload_that_only_resizes_a_pool_keeps_every_worker() {
    let site = Site::new(&manifest("e", "v"));
    let server = site.serve(2, 3, &[]);
    let (evil, shared) = pool_pids(&server, "evil");
    site.write(&manifest("e", "v").replace("workers = 1", "workers = 2"));
    server.signal(Signal::SIGHUP);
    server.wait_for_line("Reloading: resizing pools");
    server.wait_for_line("Reload complete");
    eventually("a second worker for evil", || pool_pids(&server, "evil").0.len() == 2);
    assert!(is_alive(evil[0]), "evil's first worker stays");
    assert_eq!(pool_pids(&server, "evil").1, shared, "no shared worker was booted");
    assert!(shared.iter().all(|pid| is_alive(*pid)));
}

/// The front door tests' site: `slow` (the misbehave guest) and `hello` on the shared pool, `own` (hello) with a
/// pool of its own.
const BUSY_DOOR: &str = r#"
[[app]]
name = "slow"
component = "misbehave.wasm"
hosts = ["slow.test"]

[[app]]
name = "hello"
component = "sample:hello"
hosts = ["hello.test"]

[[app]]
name = "own"
component = "sample:hello"
hosts = ["own.test"]
workers = 1
"#;

/// Runs `during` while a request to `slow` holds the one shared worker's guest (`/stash`, which waits for the
/// body the test sends when `during` is done), checks that it was still unanswered then and that it is answered
/// after, and gives back what `during` returned.
fn while_the_shared_worker_is_held<T>(server: &Server, during: impl FnOnce() -> T) -> T {
    let mut held = held_request(server.port, "slow.test");
    server.wait_for_line("app=slow] stashed");
    let done = during();
    held.set_nonblocking(true).unwrap();
    let answered = !matches!(held.peek(&mut [0u8; 1]), Err(err) if err.kind() == std::io::ErrorKind::WouldBlock);
    held.set_nonblocking(false).unwrap();
    assert!(!answered, "done only once the shared worker was free");
    held.write_all(b"x").unwrap();
    assert_eq!(crate::support::read_response(held).status, 200);
    done
}

/// A request for the dedicated app and one no app takes are answered (see `while_the_shared_worker_is_held`).
fn assert_the_door_is_open(server: &Server) {
    let own = server.get_from("own.test", "/");
    assert_eq!((own.status, own.text().as_str()), (200, "Hello, World!"), "{}", server.log_text());
    assert_eq!(server.get_from("nobody.test", "/").status, 404);
}

/// The shared pool is the front door: its workers accept every connection and route it. A tenant of the shared
/// pool whose requests hold every shared worker (here one guest that waits) kept every other app's requests, those
/// of apps with pools of their own included, in the listen queue until a shared worker was free. The busy worker's
/// relay now keeps the door open while its guest runs: it accepts, reads the head and hands a request for a
/// dedicated pool over, and answers a request no app takes.
#[test]
fn a_tenant_holding_every_shared_worker_does_not_hold_the_front_door() {
    let site = Site::new(BUSY_DOOR);
    let server = site.serve(1, 2, &[]);
    while_the_shared_worker_is_held(&server, || assert_the_door_is_open(&server));
}

/// The front door of a busy shared worker, when the shared pool's queue is full: a shared app's request gets 503 at
/// once (as for a full dedicated pool), and the door stays open for the other apps. The request the queue refused
/// used to wait in the busy worker, which then took no more connections: the door was shut again.
#[test]
fn a_full_shared_queue_does_not_shut_the_front_door() {
    let site = Site::new(BUSY_DOOR);
    let server = site.serve(1, 2, &[]);
    let queued = while_the_shared_worker_is_held(&server, || {
        // Requests of 4 KiB: a few hundred fill the shared pool's queue (a socket buffer of messages).
        let padding = "p".repeat(4 * 1024);
        let request =
            format!("GET / HTTP/1.1\r\nHost: hello.test\r\nX-Padding: {padding}\r\nConnection: close\r\n\r\n");
        let queued: Vec<std::net::TcpStream> = (0..300)
            .map(|_| {
                let mut stream = std::net::TcpStream::connect(("127.0.0.1", server.port)).unwrap();
                stream.write_all(request.as_bytes()).unwrap();
                stream
            })
            .collect();
        eventually("the shared pool's queue to be full", || server.log_text().contains("The shared pool is full"));
        assert_the_door_is_open(&server);
        queued
    });
    // Those the queue took are served once the held request is over.
    let statuses: Vec<u16> = queued
        .into_iter()
        .map(|stream| {
            stream.set_read_timeout(Some(std::time::Duration::from_secs(60))).unwrap();
            crate::support::read_response(stream).status
        })
        .collect();
    assert!(statuses.iter().all(|status| matches!(status, 200 | 503)), "{statuses:?}");
    assert!(statuses.contains(&503) && statuses.contains(&200), "{statuses:?}");
}

/// A reload that removes a dedicated app while a shared worker's guest runs: the old worker, retired, stops keeping
/// the door (its site is the old one), so that the app's requests get the new site's 404, not a 503 from a
/// hand-over to the pool that is gone.
#[test]
fn a_retired_shared_worker_stops_routing_with_the_old_site() {
    let site = Site::new(BUSY_DOOR);
    let server = site.serve(1, 2, &["--graceful-timeout", "30"]);
    let statuses = while_the_shared_worker_is_held(&server, || {
        site.write(
            &BUSY_DOOR.replace("workers = 1\n", "").replace("name = \"own\"", "name = \"own\"\nprefix = \"/gone\""),
        );
        server.signal(Signal::SIGHUP);
        // The old generation is retired once the new one is ready: until then it routes by the old site.
        server.wait_for_line("Worker retiring");
        (0..60)
            .map(|_| {
                std::thread::sleep(std::time::Duration::from_millis(20));
                server.get_from("own.test", "/").status
            })
            .collect::<Vec<u16>>()
    });
    assert!(statuses.iter().all(|status| *status == 404), "{statuses:?}\n{}", server.log_text());
}

/// `slow` (the misbehave guest) on slow.test with a pool of one worker, beside hello for every other host.
const SLOW_POOL: &str = r#"
[[app]]
name = "www"
component = "sample:hello"

[[app]]
name = "slow"
component = "misbehave.wasm"
hosts = ["slow.test"]
workers = 1
"#;

#[test]
fn requests_waiting_for_a_pool_a_reload_removes_are_served_by_the_shared_pool() {
    let site = Site::new(SLOW_POOL);
    let server = site.serve(2, 3, &[]);
    // One request holds slow's only worker (it waits for its body); the others wait in its pool's channel, where
    // a shared worker put them once it had read them.
    let mut held = held_request(server.port, "slow.test");
    server.wait_for_line("app=slow] stashed");
    let waiting: Vec<std::net::TcpStream> = (0..3)
        .map(|_| {
            connect_sending(
                server.port,
                b"GET /sleep?seconds=0 HTTP/1.1\r\nHost: slow.test\r\nConnection: close\r\n\r\n",
            )
        })
        .collect();
    for stream in &waiting {
        eventually("a shared worker to read the request", || read_by_server(server.port, stream));
    }
    // slow moves to the shared pool: its own pool is removed with requests waiting for it.
    site.write(&SLOW_POOL.replace("workers = 1\n", ""));
    server.signal(Signal::SIGHUP);
    server.wait_for_line("Reload complete");
    server.wait_for_line("connections waiting for the pool of app slow to the shared pool");
    for stream in waiting {
        let response = crate::support::read_response(stream);
        assert_eq!((response.status, response.text().as_str()), (200, "slept 0 s"), "{}", server.log_text());
    }
    // The retired worker finishes the request it held.
    held.write_all(b"x").unwrap();
    let response = crate::support::read_response(held);
    assert_eq!((response.status, response.text().as_str()), (200, "stashed"), "{}", server.log_text());
}

#[test]
fn a_request_for_a_dedicated_pool_read_before_a_graceful_stop_is_served() {
    let site = Site::new(SLOW_POOL);
    let server = site.serve(1, 2, &[]);
    let (slow, shared) = pool_pids(&server, "slow");
    let half = half_a_head_for_slow(&server);
    stop_gracefully(&server);
    // slow's worker held nothing: it left at once, and the head, once whole, was handed to nobody and answered
    // 503. It now stays until the shared pool has left.
    the_rest_of_the_head_is_served(server, slow[0], shared[0], half);
}

#[test]
fn a_dedicated_worker_reaching_max_requests_during_a_graceful_stop_stays_for_what_is_handed_to_it() {
    let site = Site::new(SLOW_POOL);
    let server = site.serve(1, 2, &["--max-requests", "1"]);
    let (slow, shared) = pool_pids(&server, "slow");
    // slow's worker runs its one request (it waits for its body) when the stop begins.
    let mut held = held_request(server.port, "slow.test");
    server.wait_for_line("app=slow] stashed");
    let half = half_a_head_for_slow(&server);
    stop_gracefully(&server);
    held.write_all(b"x").unwrap();
    let response = crate::support::read_response(held);
    assert_eq!((response.status, response.text().as_str()), (200, "stashed"), "{}", server.log_text());
    // It is not recycled by --max-requests: nothing would replace it during the stop.
    the_rest_of_the_head_is_served(server, slow[0], shared[0], half);
}

/// Sends `TERM` and waits until the shared worker has let go of the listeners: it got its SIGTERM, which the
/// arbiter sends after it has marked every worker's slot with the stop.
fn stop_gracefully(server: &Server) {
    server.signal(Signal::SIGTERM);
    eventually("the shared worker to close the listeners", || !listening_on(server.port));
}

/// The start of a head for slow, which the shared worker has read.
fn half_a_head_for_slow(server: &Server) -> std::net::TcpStream {
    let stream = connect_sending(server.port, b"GET /sleep?seconds=0 HTTP/1.1\r\nHost: slow.test\r\n");
    eventually("the shared worker to read it", || read_by_server(server.port, &stream));
    stream
}

/// After `TERM`, while the shared worker holds the start of a head for slow: slow's worker stays (before, it
/// left within a second), the head once whole is served, and the server exits 0 having answered nothing 503.
fn the_rest_of_the_head_is_served(mut server: Server, slow: Pid, shared: Pid, mut half: std::net::TcpStream) {
    let deadline = std::time::Instant::now() + Duration::from_secs(1);
    while is_alive(slow) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(is_alive(slow), "slow's worker stays while the shared pool may hand it a request");
    assert!(is_alive(shared), "the shared worker waits for the head it holds");
    half.write_all(b"\r\n").unwrap();
    let response = crate::support::read_response(half);
    assert_eq!((response.status, response.text().as_str()), (200, "slept 0 s"), "{}", server.log_text());
    assert_eq!(server.wait_exit().code(), Some(0), "{}", server.log_text());
    let log = server.log_text();
    assert!(!log.contains("left in the pools' channels 503"), "{log}");
    assert!(!log.contains("Autorestarting"), "{log}");
}

#[test]
fn a_dedicated_worker_out_of_descriptors_loses_no_request_handed_to_it() {
    let site = Site::new(SLOW_POOL);
    let server = site.serve(1, 2, &["--keep-alive", "3"]);
    let (slow, _) = pool_pids(&server, "slow");
    // Room for a few more descriptors in slow's worker: each kept connection takes one, until there is none.
    leave_room_for(slow[0], 4);
    let mut kept = Vec::new();
    for index in 0..12 {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", server.port)).expect("connect");
        stream.set_read_timeout(Some(crate::support::PATIENCE)).unwrap();
        let request = format!("GET /count?n={index} HTTP/1.1\r\nHost: slow.test\r\n\r\n");
        stream.write_all(request.as_bytes()).unwrap();
        let mut head = [0u8; 12];
        // A request that waits for room is served once kept connections time out (--keep-alive 3).
        std::io::Read::read_exact(&mut stream, &mut head).expect("a response, not a lost connection");
        assert_eq!(&head, b"HTTP/1.1 200", "request {index}");
        kept.push(stream);
    }
    server.wait_for_line("no descriptor left for");
    assert!(!server.log_text().contains("was lost"), "{}", server.log_text());
}
