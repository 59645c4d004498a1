//! The pid file (`--pid FILE`): written at start (atomically, owner-only, never through a symlink), removed at
//! exit if it still names this process. A pid file naming a live process stops the start, as in Gunicorn.
//! During a SIGUSR2 upgrade the new arbiter writes `FILE.2` and takes `FILE` over once the old arbiter has gone.

use std::fs::OpenOptions;
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use nix::fcntl::OFlag;
use nix::sys::signal::kill;
use nix::unistd::Pid;

#[derive(Debug)]
pub(super) struct Pidfile {
    path: PathBuf,
}

impl Pidfile {
    /// Writes this process's pid to `path`, refusing a pid file that names another live process.
    pub(super) fn create(path: &Path) -> anyhow::Result<Pidfile> {
        if let Some(pid) = read(path).filter(|pid| *pid != Pid::this() && kill(*pid, None).is_ok()) {
            bail!("already running on pid {pid} (or the pid file {} is stale)", path.display());
        }
        write(path)?;
        Ok(Pidfile { path: path.to_path_buf() })
    }

    /// The upgrade's pid file: `FILE.2`.
    pub(super) fn upgrade_path(path: &Path) -> PathBuf {
        let mut name = path.as_os_str().to_os_string();
        name.push(".2");
        PathBuf::from(name)
    }

    /// Moves the pid file to `path` (the new arbiter of an upgrade taking the main name over).
    pub(super) fn move_to(&mut self, path: &Path) -> anyhow::Result<()> {
        write(path)?;
        let _ = std::fs::remove_file(&self.path);
        self.path = path.to_path_buf();
        Ok(())
    }

    /// Removes the file if it still names this process.
    pub(super) fn remove(&self) {
        if read(&self.path) == Some(Pid::this()) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// The most bytes a pid file is read for: a pid and a newline, with room to spare.
const PID_FILE_MOST: u64 = 64;

/// The pid a pid file holds; none when it is not a regular file (a FIFO planted there is never waited on) or is
/// larger than a pid file (a huge file planted there is never read).
fn read(path: &Path) -> Option<Pid> {
    crate::regular_file::read_text_at_most(path, PID_FILE_MOST).ok()?.trim().parse().ok().map(Pid::from_raw)
}

/// Writes the pid to a temporary file beside `path`, created new and owner-only (never through a symlink or
/// over an existing file, whatever the umask), then renames it over `path`.
fn write(path: &Path) -> anyhow::Result<()> {
    crate::planted::refuse_planted_links(path, "the pid file")?;
    let mut temporary = path.as_os_str().to_os_string();
    temporary.push(format!(".{}.tmp", std::process::id()));
    let temporary = PathBuf::from(temporary);
    let written = OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC).bits())
        .mode(0o600)
        .open(&temporary)
        .and_then(|mut file| {
            file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
            file.write_all(format!("{}\n", std::process::id()).as_bytes())
        });
    if let Err(err) = written {
        if err.kind() != ErrorKind::AlreadyExists {
            let _ = std::fs::remove_file(&temporary);
        }
        return Err(err).with_context(|| format!("cannot write the pid file {}", temporary.display()));
    }
    std::fs::rename(&temporary, path).map_err(|err| {
        let _ = std::fs::remove_file(&temporary);
        anyhow::Error::from(err).context(format!("cannot write the pid file {}", path.display()))
    })
}
