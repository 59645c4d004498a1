//! The binary upgrade (SIGUSR2), as in Gunicorn: the arbiter starts a new arbiter from the binary at the path
//! it was itself started with (after a package upgrade, the new binary), with the same arguments, handing it the
//! listening sockets through `WASMCORN_LISTEN_FDS`. Both serve until the old one gets SIGTERM; no connection is
//! refused meanwhile.

use std::ffi::OsString;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;
use nix::unistd::Pid;

use crate::listener::{Listener, UPGRADE_FDS_VAR};

/// The variable that tells the new arbiter which pid it succeeds.
pub(super) const PREDECESSOR_VAR: &str = "WASMCORN_PREDECESSOR_PID";

/// The path this server was started with (argv[0]), made absolute: what `USR2` starts. Call it at start,
/// before `--chdir` and before the process title overwrites the argument area. Unlike the running executable's
/// own link (`/proc/self/exe`), this path still names the binary after a package upgrade replaced the file.
pub(super) fn started_binary() -> anyhow::Result<PathBuf> {
    let argv0 = std::env::args_os().next().map(PathBuf::from).unwrap_or_default();
    if argv0.as_os_str().as_bytes().contains(&b'/') {
        return std::path::absolute(&argv0).with_context(|| format!("cannot make {} absolute", argv0.display()));
    }
    // Found through $PATH, as a shell does.
    let found = std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(&argv0))
        .find(|candidate| !argv0.as_os_str().is_empty() && candidate.is_file());
    match found {
        Some(path) => std::path::absolute(&path).with_context(|| format!("cannot make {} absolute", path.display())),
        None => std::env::current_exe().context("cannot find the wasmcorn binary"),
    }
}

/// Starts the successor arbiter `BINARY serve SERVE_ARGS` (both captured at start: the process title has since
/// overwritten the original argument area) in `start_folder`, the folder this server was started in when
/// `--chdir` left it, so that the arguments mean what they meant at start (a relative `--chdir`, config file or
/// manifest); returns its pid.
pub(super) fn start_successor(
    binary: &Path,
    listeners: &[Listener],
    serve_args: &[OsString],
    start_folder: Option<&Path>,
) -> anyhow::Result<Pid> {
    let fds: Vec<String> = listeners.iter().map(|listener| listener.fd().as_raw_fd().to_string()).collect();
    for listener in listeners {
        listener.set_inheritable(true)?;
    }
    let mut command = Command::new(binary);
    if let Some(folder) = start_folder {
        command.current_dir(folder);
    }
    let started = command
        .arg("serve")
        .args(serve_args)
        .env(UPGRADE_FDS_VAR, fds.join(","))
        .env(PREDECESSOR_VAR, std::process::id().to_string())
        .env_remove("LISTEN_FDS")
        .env_remove("LISTEN_PID")
        .spawn();
    for listener in listeners {
        listener.set_inheritable(false)?;
    }
    let child = started.with_context(|| format!("cannot start {}", binary.display()))?;
    Ok(Pid::from_raw(child.id() as i32))
}

/// The old arbiter this one succeeds, if it was started by an upgrade and the old one is still its parent.
pub(super) fn predecessor() -> Option<Pid> {
    let pid: i32 = std::env::var(PREDECESSOR_VAR).ok()?.parse().ok()?;
    let pid = Pid::from_raw(pid);
    (nix::unistd::getppid() == pid).then_some(pid)
}
