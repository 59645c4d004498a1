//! The compiled-artefact cache and the other files the arbiter writes, as a local user would attack them: modes
//! and owners whatever `--umask` says, no symlink followed, a worker refusing an artefact someone changed (and
//! the arbiter compiling the apps again instead of stopping), the compile step and the workers running as
//! `--user` with that user's groups, and a SIGUSR2 upgrade after the binary was replaced on disk.

use std::fs::Permissions;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::support::{Server, cache_dir, command, eventually, is_alive};

const NOBODY: u32 = 65534;

/// A temporary folder anyone may enter (tempfile makes them 0700), and the path of a cache folder inside it
/// that does not exist yet.
fn fresh_cache() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), Permissions::from_mode(0o755)).unwrap();
    let cache = dir.path().join("cache");
    (dir, cache)
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().mode() & 0o7777
}

/// The one artefact in `cache`.
fn artefact_in(cache: &Path) -> PathBuf {
    let files: Vec<PathBuf> = std::fs::read_dir(cache).unwrap().map(|entry| entry.unwrap().path()).collect();
    assert_eq!(files.len(), 1, "one file, no temporary left: {files:?}");
    assert_eq!(files[0].extension().and_then(|ext| ext.to_str()), Some("cwasm"), "{files:?}");
    files[0].clone()
}

/// The whole value of a line of /proc/PID/status (`Gid:` has four numbers, `Groups:` a list).
fn status_line(pid: Pid, field: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find_map(|line| line.strip_prefix(field)).unwrap_or_default();
    line.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[test]
fn cache_folder_and_artefacts_are_written_only_by_their_owner_even_with_umask_0() {
    let (_dir, cache) = fresh_cache();
    let server = Server::start("sample:hello", 1, &["--umask", "0", "--cache-dir", cache.to_str().unwrap()]);
    assert_eq!(mode(&cache), 0o755);
    assert_eq!(mode(&artefact_in(&cache)), 0o644);
    assert_eq!(server.get("/").status, 200);
}

#[test]
fn a_cache_folder_others_may_write_is_repaired_and_a_foreign_artefact_rewritten() {
    let (_dir, cache) = fresh_cache();
    let cache_arg = cache.to_str().unwrap();
    drop(Server::start("sample:hello", 1, &["--cache-dir", cache_arg]));
    // Someone could write the folder and the file: the file is now another user's, writable by all.
    let artefact = artefact_in(&cache);
    std::fs::set_permissions(&cache, Permissions::from_mode(0o777)).unwrap();
    std::os::unix::fs::chown(&artefact, Some(NOBODY), Some(NOBODY)).unwrap();
    std::fs::set_permissions(&artefact, Permissions::from_mode(0o666)).unwrap();
    let server = Server::start("sample:hello", 1, &["--umask", "0", "--cache-dir", cache_arg]);
    let line = server.wait_for_line("The cache folder");
    assert!(line.contains("was writable by others (mode 0777)"), "{line}");
    assert_eq!(mode(&cache), 0o755);
    let rewritten = std::fs::metadata(artefact_in(&cache)).unwrap();
    assert_eq!((rewritten.uid(), rewritten.mode() & 0o7777), (nix::unistd::geteuid().as_raw(), 0o644));
    assert_eq!(server.get("/").status, 200);
}

#[test]
fn a_worker_refuses_a_changed_artefact_and_the_arbiter_compiles_it_again() {
    let (_dir, cache) = fresh_cache();
    let server = Server::start("sample:hello", 2, &["--cache-dir", cache.to_str().unwrap()]);
    let artefact = artefact_in(&cache);
    // Other bytes under the artefact's name (renamed over it, so that the serving workers keep their mapping).
    let mut forged = std::fs::read(&artefact).unwrap();
    let middle = forged.len() / 2;
    forged[middle] ^= 0xff;
    let planted = cache.join("planted");
    std::fs::write(&planted, &forged).unwrap();
    std::fs::set_permissions(&planted, Permissions::from_mode(0o644)).unwrap();
    std::fs::rename(&planted, &artefact).unwrap();
    kill(server.live_workers()[0], Signal::SIGKILL).unwrap();
    let refused = server.wait_for_line("Worker refused");
    assert!(refused.contains(artefact.to_str().unwrap()) && refused.contains("SHA-256"), "{refused}");
    server.wait_for_line("Compiled the apps again");
    server.wait_for_count("Booting worker with pid", 3);
    assert_ne!(std::fs::read(&artefact).unwrap(), forged, "the artefact was written again");
    // The same file made writable by others: refused too, and written again 0644.
    std::fs::set_permissions(&artefact, Permissions::from_mode(0o666)).unwrap();
    kill(server.live_workers()[0], Signal::SIGKILL).unwrap();
    let refused = server.wait_for_count("Worker refused", 2).pop().unwrap();
    assert!(refused.contains("mode 0666"), "{refused}");
    server.wait_for_count("Compiled the apps again", 2);
    server.wait_for_count("Booting worker with pid", 4);
    assert_eq!(mode(&artefact), 0o644);
    assert!(is_alive(server.pid), "the server keeps running");
    for _ in 0..4 {
        assert_eq!(server.get("/").status, 200);
    }
    assert_eq!(server.log_lines().iter().filter(|line| line.contains("Worker refused")).count(), 2, "one line each");
    assert!(!server.log_text().contains("failed to boot"));
}

#[test]
fn with_user_alone_the_compile_step_and_the_workers_run_with_that_users_groups() {
    let (_dir, cache) = fresh_cache();
    std::fs::create_dir(&cache).unwrap();
    std::os::unix::fs::chown(&cache, Some(NOBODY), Some(NOBODY)).unwrap();
    let server = Server::start("sample:hello", 1, &["--user", "nobody", "--cache-dir", cache.to_str().unwrap()]);
    let worker = server.live_workers()[0];
    assert_eq!(status_line(worker, "Uid:"), "65534 65534 65534 65534");
    assert_eq!(status_line(worker, "Gid:"), "65534 65534 65534 65534", "nobody's primary group, not root's");
    assert_eq!(status_line(worker, "Groups:"), "65534", "nobody's groups (initgroups)");
    let artefact = std::fs::metadata(artefact_in(&cache)).unwrap();
    assert_eq!((artefact.uid(), artefact.gid()), (NOBODY, NOBODY), "written by the compile step as nobody");
    assert_eq!(server.get("/").status, 200);
}

#[test]
fn a_dedicated_pool_with_a_user_alone_runs_with_that_users_groups() {
    let (dir, cache) = fresh_cache();
    let manifest = dir.path().join("apps.toml");
    let text = "[[app]]\nname = \"solo\"\ncomponent = \"sample:hello\"\nhosts = [\"solo.test\"]\nworkers = 1\n\
                user = \"nobody\"\n";
    std::fs::write(&manifest, text).unwrap();
    let server = Server::spawn(command(&[
        "serve",
        "--apps",
        manifest.to_str().unwrap(),
        "--bind",
        "127.0.0.1:0",
        "--workers",
        "1",
        "--cache-dir",
        cache.to_str().unwrap(),
    ]));
    server.wait_for_count("Booting worker with pid", 2);
    let solo = server.booted_worker_pids_where(|line| line.contains("(app solo)"));
    assert_eq!(status_line(solo[0], "Gid:"), "65534 65534 65534 65534");
    assert_eq!(status_line(solo[0], "Groups:"), "65534");
    assert_eq!(server.get_from("solo.test", "/").status, 200);
}

#[test]
fn check_config_says_when_a_dedicated_pools_user_cannot_read_the_compiled_guest() {
    // The cache in a folder only root may enter: the compile step (root's) writes there, and the pool's workers,
    // as nobody, could not load the app (the app would be stopped, its requests answered 503).
    let check = |cache: &Path, manifest: &Path| {
        let args = ["serve", "--apps", manifest.to_str().unwrap(), "--check-config", "--cache-dir"];
        command(&args).arg(cache).output().unwrap()
    };
    let private = tempfile::tempdir().unwrap();
    std::fs::set_permissions(private.path(), Permissions::from_mode(0o700)).unwrap();
    let (dir, reachable) = fresh_cache();
    let manifest = dir.path().join("apps.toml");
    let text = "[[app]]\nname = \"solo\"\ncomponent = \"sample:hello\"\nhosts = [\"solo.test\"]\nworkers = 1\n\
                user = \"nobody\"\n";
    std::fs::write(&manifest, text).unwrap();
    let output = check(&private.path().join("cache"), &manifest);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    let said = "app solo: its pool's workers (uid 65534) would fail to boot: the compiled guest";
    assert!(stderr.contains(said) && stderr.contains("Permission denied"), "{stderr}");
    // A cache they can reach passes.
    let output = check(&reachable, &manifest);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
}

#[test]
fn a_cache_folder_of_another_user_stops_the_start_with_one_line() {
    // The folder is root's; the compile step runs as nobody and cannot own what it writes there.
    let (_dir, cache) = fresh_cache();
    std::fs::create_dir(&cache).unwrap();
    let output = command(&[
        "serve",
        "sample:hello",
        "--check-config",
        "--user",
        "nobody",
        "--cache-dir",
        cache.to_str().unwrap(),
    ])
    .output()
    .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains(cache.to_str().unwrap()) && stderr.contains("belongs to uid 0"), "{stderr}");
}

/// A cache folder named through a symlink that another user may have planted (its folder is everyone's, like
/// /tmp) is refused: followed, it made the compile step take group write away from the folder it points to, and
/// write there.
#[test]
fn a_cache_folder_that_is_a_symlink_in_a_shared_folder_stops_the_start_with_one_line() {
    let (_dir, target) = fresh_cache();
    std::fs::create_dir(&target).unwrap();
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o775)).unwrap();
    let shared = crate::support::shared_folder();
    let planted = shared.path().join("cache");
    std::os::unix::fs::symlink(&target, &planted).unwrap();
    let output = command(&["serve", "sample:hello", "--check-config", "--cache-dir", planted.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("is a symlink in a folder others may change"), "{stderr}");
    assert_eq!(mode(&target), 0o775, "the folder it points to is left alone");
    assert_eq!(std::fs::read_dir(&target).unwrap().count(), 0, "nothing is written there");
}

/// A copy of the binary at `dir/wasmcorn` (a hard link where it can be), as a package would install it.
fn installed_binary(dir: &Path) -> PathBuf {
    let installed = dir.join("wasmcorn");
    if std::fs::hard_link(crate::support::binary(), &installed).is_err() {
        std::fs::copy(crate::support::binary(), &installed).unwrap();
    }
    installed
}

/// `program serve sample:hello` on one worker, with the tests' cache and `extra` flags.
fn serve_as(program: &Path, extra: &[&str]) -> Command {
    let mut started = Command::new(program);
    started
        .args(["serve", "sample:hello", "--bind", "127.0.0.1:0", "--workers", "1"])
        .args(extra)
        .env("WASMCORN_CACHE_DIR", cache_dir())
        .env_remove("WEB_CONCURRENCY")
        .env_remove("FORWARDED_ALLOW_IPS");
    started
}

/// Upgrades `server` with `USR2` and checks that the new arbiter runs `installed` (`how` says why it should);
/// completes the upgrade with `TERM`, checks that the new arbiter serves, and stops it.
fn upgrade_runs(mut server: Server, installed: &Path, how: &str) {
    server.wait_for_count("Booting worker with pid", 1);
    server.signal(Signal::SIGUSR2);
    let new_pid = server.successor_pid();
    server.also_stop(new_pid);
    server.wait_for_count("Booting worker with pid", 2);
    let exe = std::fs::read_link(format!("/proc/{new_pid}/exe")).unwrap();
    assert_eq!(exe, installed, "the new arbiter runs {how}");
    server.signal(Signal::SIGTERM);
    assert_eq!(server.wait_exit().code(), Some(0));
    assert!(is_alive(new_pid));
    assert_eq!(crate::support::send(server.port, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n").status, 200);
    kill(new_pid, Signal::SIGTERM).unwrap();
    eventually("the new arbiter stops", || !is_alive(new_pid));
}

/// The binary a `USR2` starts is the one the server was started from: a bare name is looked up in `$PATH`, and a
/// relative path is made absolute before `--chdir` moves the server elsewhere.
#[test]
fn sigusr2_finds_a_binary_started_by_a_bare_name_or_a_relative_path() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let installed = installed_binary(dir.path());
    let path = format!("{}:{}", dir.path().display(), std::env::var("PATH").unwrap_or_default());
    for (program, from) in [("wasmcorn", None), ("./wasmcorn", Some(dir.path()))] {
        let mut started = serve_as(Path::new(program), &["--chdir", "/"]);
        started.env("PATH", &path);
        if let Some(from) = from {
            started.current_dir(from);
        }
        upgrade_runs(Server::spawn(started), &installed, &format!("the file started as {program}"));
    }
}

#[test]
fn sigusr2_starts_the_binary_that_replaced_the_running_one_on_disk() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let installed = installed_binary(dir.path());
    let server = Server::spawn(serve_as(&installed, &[]));
    server.wait_for_count("Booting worker with pid", 1);
    // A package upgrade: the new binary is written beside the old one and renamed over it.
    let upgraded = dir.path().join("wasmcorn.new");
    std::fs::copy(crate::support::binary(), &upgraded).unwrap();
    std::fs::rename(&upgraded, &installed).unwrap();
    upgrade_runs(server, &installed, "the new file");
}

/// A new arbiter of an upgrade that dies is said in words, and the old one goes on serving. The log line held
/// Rust's debug text of the wait status (`Signaled(Pid(N), SIGKILL, false)`).
#[test]
fn an_upgrade_whose_new_arbiter_dies_is_said_in_words_and_the_old_one_serves() {
    let mut server = Server::start("sample:hello", 1, &[]);
    server.signal(Signal::SIGUSR2);
    let new_pid = server.successor_pid();
    server.also_stop(new_pid);
    kill(new_pid, Signal::SIGKILL).unwrap();
    server.wait_for_line(&format!("The new arbiter (pid:{new_pid}) of the upgrade exited: killed by SIGKILL"));
    assert_eq!(server.get("/").status, 200);
    server.signal(Signal::SIGTERM);
    assert_eq!(server.wait_exit().code(), Some(0));
}

#[test]
fn the_pid_file_is_owner_only_and_its_temporary_file_never_follows_a_symlink() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("wasmcorn.pid");
    let mut server = Server::start("sample:hello", 1, &["--umask", "0", "--pid", pidfile.to_str().unwrap()]);
    assert_eq!(mode(&pidfile), 0o600);
    server.signal(Signal::SIGUSR2);
    let new_pid = server.successor_pid();
    server.also_stop(new_pid);
    server.wait_for_count("Booting worker with pid", 2);
    // The new arbiter takes the main name over through `wasmcorn.pid.<its pid>.tmp` once the old one is gone:
    // a link planted there must not be followed.
    let victim = dir.path().join("victim");
    std::fs::write(&victim, "precious\n").unwrap();
    let planted = dir.path().join(format!("wasmcorn.pid.{new_pid}.tmp"));
    std::os::unix::fs::symlink(&victim, &planted).unwrap();
    server.signal(Signal::SIGTERM);
    assert_eq!(server.wait_exit().code(), Some(0));
    eventually("the new arbiter's attempt at the main name", || {
        server.log_text().contains("cannot write the pid file") || pidfile.exists()
    });
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n", "the link's target is unchanged");
    let line = server.wait_for_line("cannot write the pid file");
    assert!(line.contains(planted.to_str().unwrap()), "{line}");
    assert!(std::fs::symlink_metadata(&planted).unwrap().file_type().is_symlink());
    kill(new_pid, Signal::SIGTERM).unwrap();
    eventually("the new arbiter stops", || !is_alive(new_pid));
}
