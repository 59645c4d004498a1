//! Process-wide settings that Gunicorn users expect: the process title, daemonizing, dropping privileges,
//! the umask and the working folder. Only the arbiter and the workers call these.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};

use anyhow::{Context, bail};
use nix::fcntl::OFlag;
use nix::unistd::{ForkResult, Gid, Uid, User, fork, setsid};

/// Sets the process title: the kernel's 15-byte name (`ps -o comm`, `top`) and, as far as the original
/// argument area allows, the full command line (`ps -f`), the way setproctitle does, by writing the area
/// through /proc/self/mem. Failure is harmless and ignored.
pub(crate) fn set_title(title: &str) {
    let short: String = title.chars().take(15).collect();
    if let Ok(name) = std::ffi::CString::new(short) {
        let _ = nix::sys::prctl::set_name(&name);
    }
    let _ = rewrite_command_line(title);
}

fn rewrite_command_line(title: &str) -> std::io::Result<()> {
    let mut stat = String::new();
    std::fs::File::open("/proc/self/stat")?.read_to_string(&mut stat)?;
    // Fields after the parenthesised name; arg_start and arg_end are fields 48 and 49 of the whole line.
    let fields: Vec<&str> =
        stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
    let (Some(start), Some(end)) = (fields.get(45), fields.get(46)) else { return Ok(()) };
    let (Ok(start), Ok(end)) = (start.parse::<u64>(), end.parse::<u64>()) else { return Ok(()) };
    let capacity = usize::try_from(end.saturating_sub(start)).unwrap_or(0);
    if capacity < 2 {
        return Ok(());
    }
    let mut area = vec![0u8; capacity];
    let bytes = title.as_bytes();
    let length = bytes.len().min(capacity - 1);
    area[..length].copy_from_slice(&bytes[..length]);
    let mut memory = OpenOptions::new().write(true).open("/proc/self/mem")?;
    memory.seek(SeekFrom::Start(start))?;
    memory.write_all(&area)
}

/// The detached server's line to the process that started it (see `daemonize`), which waits to hear whether the
/// start succeeded: `wasmcorn serve -D` exits 0 for a server that runs, and 1 with its error line otherwise.
pub(crate) struct StartReport(File);

impl StartReport {
    /// The server has started (its pid file written, its metrics address bound): the launcher exits 0.
    pub(crate) fn started(self) {
        let _ = (&self.0).write_all(STARTED);
    }

    /// The start failed: the launcher prints `line` (one line: `Error: ...`) and exits 1.
    pub(crate) fn failed(self, line: &str) {
        let _ = (&self.0).write_all(line.as_bytes());
    }
}

/// What `StartReport::started` says.
const STARTED: &[u8] = b"started";

/// Detaches from the terminal: forks twice, starts a new session and points stdin, stdout and stderr at /dev/null.
/// The first process waits for the detached one's `StartReport` and exits with it: 0 once the server has started,
/// 1 with the error's line on its stderr if the start failed, or if the server died before it said (its error log
/// then tells). Call it while the process is single-threaded, and report before forking again.
pub(crate) fn daemonize() -> anyhow::Result<StartReport> {
    let (reader, writer) = nix::unistd::pipe2(OFlag::O_CLOEXEC).context("cannot create a pipe")?;
    // SAFETY: the arbiter is single-threaded when it daemonizes; the parent only waits for the report and exits,
    // and the child continues as the only copy of the server.
    match unsafe { fork() }.context("cannot fork to daemonize")? {
        ForkResult::Parent { .. } => {
            drop(writer);
            std::process::exit(await_start(File::from(reader)));
        }
        ForkResult::Child => drop(reader),
    }
    let report = StartReport(File::from(writer));
    let detached = setsid().context("cannot start a new session").and_then(|_| {
        // SAFETY: as above; the intermediate parent exits at once.
        match unsafe { fork() }.context("cannot fork to daemonize")? {
            ForkResult::Parent { .. } => std::process::exit(0),
            ForkResult::Child => stdio_to_dev_null(),
        }
    });
    match detached {
        Ok(()) => Ok(report),
        Err(err) => {
            report.failed(&crate::error_line(&err));
            std::process::exit(1);
        }
    }
}

/// The launcher's side of `daemonize`: reads the report and returns the exit code it means.
fn await_start(mut report: File) -> i32 {
    let mut said = Vec::new();
    let read = report.read_to_end(&mut said);
    if read.is_ok() && said == STARTED {
        return 0;
    }
    let line = if said.is_empty() {
        "Error: the detached server ended before it said it had started (its error log may say why)".to_string()
    } else {
        String::from_utf8_lossy(&said).into_owned()
    };
    // A stderr that cannot take the line loses it: the exit status still says it.
    let _ = writeln!(std::io::stderr(), "{line}");
    1
}

/// Detaches from the terminal without forking, for an arbiter that must keep its pid and its parent: the successor
/// of a `USR2` upgrade, whose parent is the old arbiter (it finds its predecessor by it, and the old arbiter waits
/// for it as its child). Starts a new session when it can (a process group leader cannot) and points stdin,
/// stdout and stderr at /dev/null.
pub(crate) fn detach_in_place() -> anyhow::Result<()> {
    // A process spawned by the old arbiter is in that arbiter's group, so not a leader: setsid succeeds. If it
    // fails all the same, the process has no terminal of its own to leave (the old arbiter was detached).
    let _ = setsid();
    stdio_to_dev_null()
}

fn stdio_to_dev_null() -> anyhow::Result<()> {
    let null = OpenOptions::new().read(true).write(true).open("/dev/null").context("cannot open /dev/null")?;
    nix::unistd::dup2_stdin(&null)
        .and_then(|()| nix::unistd::dup2_stdout(&null))
        .and_then(|()| nix::unistd::dup2_stderr(&null))
        .context("cannot redirect stdio to /dev/null")
}

/// Switches to `group` and `user`, in that order (a process that gave up root can no longer change group). A
/// `user` without a `group` takes that user's primary group and its supplementary groups (initgroups), never
/// the groups of the process that started it.
pub(crate) fn drop_privileges(user: Option<Uid>, group: Option<Gid>) -> anyhow::Result<()> {
    match (user, group) {
        (_, Some(group)) => {
            nix::unistd::setgroups(&[group]).context("cannot set the supplementary groups")?;
            nix::unistd::setgid(group).with_context(|| format!("cannot switch to group {group}"))?;
        }
        (Some(user), None) => {
            let account = account_of(user)?;
            let name = std::ffi::CString::new(account.name.as_bytes())
                .with_context(|| format!("user {user} has a name with a NUL byte"))?;
            nix::unistd::initgroups(&name, account.gid)
                .with_context(|| format!("cannot set the groups of user {}", account.name))?;
            nix::unistd::setgid(account.gid).with_context(|| format!("cannot switch to group {}", account.gid))?;
        }
        (None, None) => {}
    }
    if let Some(user) = user {
        nix::unistd::setuid(user).with_context(|| format!("cannot switch to user {user}"))?;
    }
    Ok(())
}

/// The user database's entry for `user`, whose primary group a `--user` without `--group` runs with.
pub(crate) fn account_of(user: Uid) -> anyhow::Result<User> {
    match User::from_uid(user) {
        Ok(Some(account)) => Ok(account),
        Ok(None) => bail!("user {user} has no entry in the user database, so its group is unknown: give a group too"),
        Err(err) => Err(err).with_context(|| format!("cannot look user {user} up")),
    }
}

/// A worker that is killed with SIGABRT after a timeout must not write a core file as large as its guest.
pub(crate) fn disable_core_dumps() {
    let _ = nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_CORE, 0, 0);
}
