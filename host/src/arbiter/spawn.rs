//! Forking: the short-lived compile child and the workers. The arbiter is single-threaded and holds no
//! wasmtime state, so a forked child starts from a clean, consistent copy of it.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::RawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use nix::fcntl::OFlag;
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, fork, pipe2};

use crate::guest::{self, App, Artefact};
use crate::listener::Listener;
use crate::worker::{self, HttpSettings};

/// Compiles the app in a child process (compilation starts threads, which the arbiter must never have) and
/// returns the artefact, or the child's error as one line.
pub fn compile(app: &App, cache_dir: &Path) -> anyhow::Result<Artefact> {
    let (reader, writer) = pipe2(OFlag::O_CLOEXEC).context("cannot create a pipe")?;
    // SAFETY: the arbiter is single-threaded here (it never starts threads), so the child is a consistent copy
    // of it; the child only compiles, writes one message and exits.
    match unsafe { fork() }.context("cannot fork the compile step")? {
        ForkResult::Child => {
            drop(reader);
            let message = match guest::prepare(app, cache_dir) {
                Ok(artefact) => [b"ok ".as_slice(), artefact.path.as_os_str().as_bytes()].concat(),
                Err(err) => format!("err {err:#}").into_bytes(),
            };
            let _ = File::from(writer).write_all(&message);
            std::process::exit(0);
        }
        ForkResult::Parent { child } => {
            drop(writer);
            let mut message = Vec::new();
            let read = File::from(reader.try_clone()?).read_to_end(&mut message);
            drop(reader);
            let status = waitpid(child, None);
            read.context("cannot read the compile step's answer")?;
            if let Some(path) = message.strip_prefix(b"ok ") {
                return Ok(Artefact { path: PathBuf::from(std::ffi::OsStr::from_bytes(path)) });
            }
            if let Some(error) = message.strip_prefix(b"err ") {
                bail!("{}", String::from_utf8_lossy(error).replace('\n', " "));
            }
            bail!("the compile step for {} died ({})", app.source.describe(), describe_status(status));
        }
    }
}

/// Forks a worker that serves `app` on `listeners`, with the HTTP settings `http`, until told to stop.
/// `close_in_child` are the arbiter's own descriptors, which the worker must not keep.
pub fn worker(
    app: &App,
    http: &HttpSettings,
    artefact: &Artefact,
    listeners: &[Listener],
    close_in_child: &[RawFd],
) -> anyhow::Result<Pid> {
    let arbiter = nix::unistd::getpid();
    // SAFETY: the arbiter is single-threaded (it never starts threads), so the child is a consistent copy of
    // it. The child never returns into the arbiter's loop: it runs the worker and exits.
    match unsafe { fork() }.context("cannot fork a worker")? {
        ForkResult::Parent { child } => Ok(child),
        ForkResult::Child => {
            // The arbiter's objects that own these descriptors are never used again in this process (it exits
            // below without returning), so closing the numbers is safe.
            for fd in close_in_child {
                let _ = nix::unistd::close(*fd);
            }
            let code = worker::run(worker::Setup { app, artefact, listeners, http, arbiter });
            std::process::exit(code);
        }
    }
}

fn describe_status(status: nix::Result<WaitStatus>) -> String {
    match status {
        Ok(WaitStatus::Exited(_, code)) => format!("exit code {code}"),
        Ok(WaitStatus::Signaled(_, signal, _)) => format!("killed by {signal}"),
        Ok(other) => format!("{other:?}"),
        Err(err) => err.to_string(),
    }
}
