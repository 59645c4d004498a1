//! Forking: the short-lived compile child and the workers. The arbiter is single-threaded and holds no
//! wasmtime state, so a forked child starts from a clean, consistent copy of it.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::RawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use nix::fcntl::OFlag;
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, fork, pipe2};

use crate::guest::{self, AppSource, Artefact};
use crate::site::Site;
use crate::worker;

/// Compiles every app of the site in a child process (compilation starts threads, which the arbiter must never
/// have) and returns their artefacts, in the order of `site.tenants`, or the child's error as one line.
pub fn compile(site: &Site, cache_dir: &Path) -> anyhow::Result<Vec<Artefact>> {
    let (reader, writer) = pipe2(OFlag::O_CLOEXEC).context("cannot create a pipe")?;
    // SAFETY: the arbiter is single-threaded here (it never starts threads), so the child is a consistent copy
    // of it; the child only compiles, writes one message and exits.
    match unsafe { fork() }.context("cannot fork the compile step")? {
        ForkResult::Child => {
            drop(reader);
            let message = match prepare_all(site, cache_dir) {
                Ok(paths) => {
                    let mut message = b"ok".to_vec();
                    for path in paths {
                        message.push(0);
                        message.extend_from_slice(path.as_os_str().as_bytes());
                    }
                    message
                }
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
            if let Some(paths) = message.strip_prefix(b"ok") {
                let artefacts: Vec<Artefact> = paths
                    .split(|byte| *byte == 0)
                    .skip(1)
                    .map(|path| Artefact { path: PathBuf::from(std::ffi::OsStr::from_bytes(path)) })
                    .collect();
                if artefacts.len() == site.tenants.len() {
                    return Ok(artefacts);
                }
            }
            if let Some(error) = message.strip_prefix(b"err ") {
                bail!("{}", String::from_utf8_lossy(error).replace('\n', " "));
            }
            bail!("the compile step died ({})", describe_status(status));
        }
    }
}

/// In the compile child: each app compiled for its pool's engine; apps built from the same component for the
/// same engine share one artefact.
fn prepare_all(site: &Site, cache_dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut done: HashMap<(AppSource, usize), PathBuf> = HashMap::new();
    let mut paths = Vec::with_capacity(site.tenants.len());
    for (index, tenant) in site.tenants.iter().enumerate() {
        let memory = site.max_memory_of(&site.pool_of(index));
        let key = (tenant.app.source.clone(), memory);
        let path = match done.get(&key) {
            Some(path) => path.clone(),
            None => {
                let artefact = guest::prepare(&tenant.app, memory, cache_dir).with_context(|| {
                    if site.hosted { format!("app {:?}", tenant.app.name) } else { tenant.app.source.describe() }
                })?;
                done.insert(key, artefact.path.clone());
                artefact.path
            }
        };
        paths.push(path);
    }
    Ok(paths)
}

/// Forks a worker. `close_in_child` are the arbiter's own descriptors, which the worker must not keep.
pub fn worker(setup: worker::Setup<'_>, close_in_child: &[RawFd]) -> anyhow::Result<Pid> {
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
            std::process::exit(worker::run(setup));
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
