//! The binary upgrade (SIGUSR2), as in Gunicorn: the arbiter starts a new arbiter from the current binary, with
//! the same arguments, handing it the listening sockets through `WASMCORN_LISTEN_FDS`. Both serve until the old
//! one gets SIGTERM; no connection is refused meanwhile.

use std::ffi::OsString;
use std::os::fd::AsRawFd;
use std::process::Command;

use anyhow::Context;
use nix::unistd::Pid;

use crate::listener::{Listener, UPGRADE_FDS_VAR};

/// The variable that tells the new arbiter which pid it succeeds.
pub const PREDECESSOR_VAR: &str = "WASMCORN_PREDECESSOR_PID";

/// Starts the successor arbiter with `serve SERVE_ARGS` (captured at start: the process title has since
/// overwritten the original argument area); returns its pid.
pub fn start_successor(listeners: &[Listener], serve_args: &[OsString]) -> anyhow::Result<Pid> {
    let binary = std::env::current_exe().context("cannot find the wasmcorn binary")?;
    let fds: Vec<String> = listeners.iter().map(|listener| listener.fd().as_raw_fd().to_string()).collect();
    for listener in listeners {
        listener.set_inheritable(true)?;
    }
    let started = Command::new(&binary)
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
pub fn predecessor() -> Option<Pid> {
    let pid: i32 = std::env::var(PREDECESSOR_VAR).ok()?.parse().ok()?;
    let pid = Pid::from_raw(pid);
    (nix::unistd::getppid() == pid).then_some(pid)
}
