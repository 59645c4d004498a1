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
use nix::unistd::{ForkResult, Gid, Pid, Uid, fork, pipe2};

use crate::config::Config;
use crate::guest::{self, AppSource, Artefact};
use crate::site::{App, DedicatedPool, Site};
use crate::{log, process, worker};

/// Who the compile step runs as: the workers' `--user` and `--group`, so that the untrusted wasm is compiled
/// without the arbiter's privileges and the cache belongs to the workers' user.
#[derive(Debug, Clone, Copy)]
pub(super) struct Compiler {
    pub user: Option<Uid>,
    pub group: Option<Gid>,
}

impl Compiler {
    /// The uid that owns what the compile step writes.
    fn owner(self) -> u32 {
        self.user.unwrap_or_else(nix::unistd::geteuid).as_raw()
    }
}

/// The length of an artefact's SHA-256 in hex, as it travels from the compile step to the arbiter.
const DIGEST_HEX: usize = 64;
/// The length of an artefact's initial memory in hex, as it travels the same way.
const MEMORY_HEX: usize = 16;

/// Compiles every app of the site in a child process (compilation starts threads, which the arbiter must never
/// have) and returns their artefacts, in the order of `site.apps`, or the child's error as one line. With
/// `fresh`, the cache is not trusted: every app is compiled and written again.
pub(super) fn compile(site: &Site, cache_dir: &Path, compiler: Compiler, fresh: bool) -> anyhow::Result<Vec<Artefact>> {
    let (message, status) =
        answer_of_child("the compile step", || match prepare_all(site, cache_dir, compiler, fresh) {
            Ok(artefacts) => encode(&artefacts),
            Err(err) => format!("err {err:#}").into_bytes(),
        })?;
    if let Some(artefacts) = decode(&message, compiler.owner())
        && artefacts.len() == site.apps.len()
    {
        return Ok(artefacts);
    }
    if let Some(error) = message.strip_prefix(b"err ") {
        bail!("{}", String::from_utf8_lossy(error).replace('\n', " "));
    }
    bail!("the compile step died ({})", describe_status(status));
}

/// Runs `work` in a child process, `what` (as messages name it: `the compile step`), and returns the message it
/// made and how the child ended. The child writes the message to a pipe and exits 0.
fn answer_of_child(what: &str, work: impl FnOnce() -> Vec<u8>) -> anyhow::Result<(Vec<u8>, nix::Result<WaitStatus>)> {
    let (reader, writer) = pipe2(OFlag::O_CLOEXEC).context("cannot create a pipe")?;
    // SAFETY: the arbiter, and a `--check-config` run, are single-threaded (they never start threads; the compile
    // step is a child of its own), so the child is a consistent copy; it only runs `work`, writes one message and
    // exits.
    match unsafe { fork() }.with_context(|| format!("cannot fork {what}"))? {
        ForkResult::Child => {
            drop(reader);
            let message = work();
            let _ = File::from(writer).write_all(&message);
            std::process::exit(0);
        }
        ForkResult::Parent { child } => {
            drop(writer);
            let mut message = Vec::new();
            let read = File::from(reader).read_to_end(&mut message);
            let status = waitpid(child, None);
            read.with_context(|| format!("cannot read {what}'s answer"))?;
            Ok((message, status))
        }
    }
}

/// The compile step's answer: `ok`, then for each artefact NUL, its digest in hex, its kind (one byte), its
/// initial memory in hex and its path.
fn encode(artefacts: &[Artefact]) -> Vec<u8> {
    let mut message = b"ok".to_vec();
    for artefact in artefacts {
        message.push(0);
        message.extend_from_slice(artefact.digest.as_bytes());
        message.push(artefact.kind.tag());
        message.extend_from_slice(format!("{:0width$x}", artefact.initial_memory, width = MEMORY_HEX).as_bytes());
        message.extend_from_slice(artefact.path.as_os_str().as_bytes());
    }
    message
}

/// The artefacts of an `ok` answer, owned by `owner`; an item that does not parse is left out.
fn decode(message: &[u8], owner: u32) -> Option<Vec<Artefact>> {
    let items = message.strip_prefix(b"ok")?;
    let artefacts = items
        .split(|byte| *byte == 0)
        .skip(1)
        .filter(|item| item.len() > DIGEST_HEX + 1 + MEMORY_HEX)
        .filter_map(|item| {
            let (memory, path) = item[DIGEST_HEX + 1..].split_at(MEMORY_HEX);
            Some(Artefact {
                digest: String::from_utf8_lossy(&item[..DIGEST_HEX]).into_owned(),
                kind: guest::Kind::from_tag(item[DIGEST_HEX])?,
                initial_memory: u64::from_str_radix(std::str::from_utf8(memory).ok()?, 16).ok()?,
                path: PathBuf::from(std::ffi::OsStr::from_bytes(path)),
                owner,
            })
        })
        .collect();
    Some(artefacts)
}

/// In the compile child: reads every component (with the arbiter's rights, which gave their paths), takes the
/// compiler's user and group, makes sure the cache folder is its own, then compiles each app for its pool's
/// engine; apps built from the same component for the same engine share one artefact.
fn prepare_all(site: &Site, cache_dir: &Path, compiler: Compiler, fresh: bool) -> anyhow::Result<Vec<Artefact>> {
    let mut sources: HashMap<AppSource, Vec<u8>> = HashMap::new();
    for app in &site.apps {
        if !sources.contains_key(&app.guest.source) {
            let wasm = in_app(site, app, guest::read_source(&app.guest.source))?;
            sources.insert(app.guest.source.clone(), wasm);
        }
    }
    process::drop_privileges(compiler.user, compiler.group).context("the compile step")?;
    if let Some(mode) = guest::prepare_folder(cache_dir)? {
        log::warning(format_args!(
            "The cache folder {} was writable by others (mode {mode:04o}): that write access is removed, and \
             each cached artefact is checked before use",
            cache_dir.display()
        ));
    }
    let mut done: HashMap<(AppSource, usize), Artefact> = HashMap::new();
    let mut artefacts = Vec::with_capacity(site.apps.len());
    for (id, app) in site.ids() {
        let memory = site.max_memory_of(&site.pool_of(id));
        let key = (app.guest.source.clone(), memory);
        let artefact = match done.get(&key) {
            Some(artefact) => artefact.clone(),
            None => {
                let wasm = sources.get(&app.guest.source).map_or(&[][..], Vec::as_slice);
                let artefact = in_app(site, app, guest::prepare(&app.guest, wasm, memory, cache_dir, fresh))?;
                done.insert(key, artefact.clone());
                artefact
            }
        };
        artefacts.push(artefact);
    }
    Ok(artefacts)
}

/// `result`, its error naming the app of a site of several (`--apps`); the errors of reading and preparing a
/// component name its source (path or sample) themselves, which is all a single app has.
fn in_app<T>(site: &Site, app: &App, result: anyhow::Result<T>) -> anyhow::Result<T> {
    if site.hosted { result.with_context(|| format!("app {:?}", app.guest.name)) } else { result }
}

/// Compiles the apps of `config` in the compile step, as the workers' user; `fresh` distrusts the cache.
pub(super) fn compile_apps(config: &Config, fresh: bool) -> anyhow::Result<Vec<Artefact>> {
    let compiler = Compiler { user: config.user, group: config.group };
    compile(&config.site, &config.cache_dir, compiler, fresh)
}

/// `--check-config`: whether each dedicated pool that runs under credentials of its own (`user`, `group`) can load
/// its apps' compiled artefacts with them, as its workers must: one that cannot fails to boot, and its app is
/// stopped (answered `503`). A child per such app takes the credentials its workers would run with and checks the
/// artefact as a worker does before mapping it; what failed comes back as one line.
pub(super) fn check_pool_credentials(config: &Config, artefacts: &[Artefact]) -> anyhow::Result<()> {
    for (id, app) in config.site.ids() {
        let Some(pool) = app.pool.filter(|pool| pool.user.is_some() || pool.group.is_some()) else { continue };
        let Some(artefact) = artefacts.get(id.index()) else { continue };
        let (user, group) = worker_credentials(config, Some(pool));
        let (message, status) = answer_of_child("the credentials check", || {
            match process::drop_privileges(user, group).and_then(|()| artefact.check_as_a_worker_would()) {
                Ok(()) => Vec::new(),
                Err(err) => format!("{err:#}").into_bytes(),
            }
        })?;
        if !matches!(status, Ok(WaitStatus::Exited(_, 0))) {
            bail!("the check of app {}'s pool credentials died ({})", app.guest.name, describe_status(status));
        }
        if !message.is_empty() {
            let user = user.map(|uid| format!("uid {uid}"));
            let group = group.map(|gid| format!("gid {gid}"));
            bail!(
                "app {}: its pool's workers ({}) would fail to boot: {}",
                app.guest.name,
                [user, group].into_iter().flatten().collect::<Vec<_>>().join(", "),
                String::from_utf8_lossy(&message)
            );
        }
    }
    Ok(())
}

/// The user and group a worker of a pool runs as: a dedicated pool's `pool` with a user of its own runs with that
/// user's group (or its primary group), not the server's `--group`; one with a group alone, with the server's
/// `--user`; the shared pool (`None`), with the server's `--user` and `--group`.
pub(super) fn worker_credentials(config: &Config, pool: Option<DedicatedPool>) -> (Option<Uid>, Option<Gid>) {
    match pool {
        Some(pool) if pool.user.is_some() => (pool.user, pool.group),
        Some(pool) => (config.user, pool.group.or(config.group)),
        None => (config.user, config.group),
    }
}

/// Forks a worker. `close_in_child` are the arbiter's own descriptors, which the worker must not keep.
pub(super) fn worker(setup: worker::Setup<'_>, close_in_child: &[RawFd]) -> anyhow::Result<Pid> {
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

/// How a child process ended, in words: `exit code 7`, `killed by SIGKILL`.
pub(super) fn describe_status(status: nix::Result<WaitStatus>) -> String {
    match status {
        Ok(WaitStatus::Exited(_, code)) => format!("exit code {code}"),
        Ok(WaitStatus::Signaled(_, signal, _)) => format!("killed by {signal}"),
        Ok(other) => format!("{other:?}"),
        Err(err) => err.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn artefacts_travel_from_the_compile_step_whole() {
        let artefacts = vec![
            Artefact {
                path: "/cache/aa.cwasm".into(),
                digest: "a".repeat(DIGEST_HEX),
                owner: 7,
                kind: guest::Kind::App,
                initial_memory: 128 << 10,
            },
            Artefact {
                path: "/cache/bb.cwasm".into(),
                digest: "b".repeat(DIGEST_HEX),
                owner: 7,
                kind: guest::Kind::Proxy,
                initial_memory: u64::MAX,
            },
        ];
        assert_eq!(decode(&encode(&artefacts), 7), Some(artefacts));
        assert_eq!(decode(b"err no", 7), None);
    }
}
