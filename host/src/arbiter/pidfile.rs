//! The pid file (`--pid FILE`): written at start (atomically, owner-only, never through a symlink), removed at
//! exit if it still names this process. A pid file naming a live process stops the start, as in Gunicorn.
//! During a SIGUSR2 upgrade the new arbiter writes `FILE.2` and takes `FILE` over once the old arbiter has gone.

use std::ffi::{OsStr, OsString};
use std::fs::OpenOptions;
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use nix::fcntl::OFlag;
use nix::sys::signal::kill;
use nix::unistd::Pid;

use crate::planted::Folder;

/// A pid file: its path as given, and its name in the folder it is written in, held open since it was checked
/// (renaming a folder on the way to it afterwards moves nothing the server writes or removes).
#[derive(Debug)]
pub(super) struct Pidfile {
    path: PathBuf,
    folder: Folder,
    name: OsString,
}

impl Pidfile {
    /// Writes this process's pid to `path`, refusing a pid file that names another live process.
    pub(super) fn create(path: &Path) -> anyhow::Result<Pidfile> {
        let pidfile = Pidfile::at(path)?;
        if let Some(pid) = read(&pidfile.entry()).filter(|pid| *pid != Pid::this() && kill(*pid, None).is_ok()) {
            bail!("already running on pid {pid} (or the pid file {} is stale)", path.display());
        }
        pidfile.write()?;
        Ok(pidfile)
    }

    /// The upgrade's pid file: `FILE.2`.
    pub(super) fn upgrade_path(path: &Path) -> PathBuf {
        let mut name = path.as_os_str().to_os_string();
        name.push(".2");
        PathBuf::from(name)
    }

    /// Moves the pid file to `path` (the new arbiter of an upgrade taking the main name over).
    pub(super) fn move_to(&mut self, path: &Path) -> anyhow::Result<()> {
        let moved = Pidfile::at(path)?;
        moved.write()?;
        let _ = std::fs::remove_file(std::mem::replace(self, moved).entry());
        Ok(())
    }

    /// Removes the file if it still names this process.
    pub(super) fn remove(&self) {
        if read(&self.entry()) == Some(Pid::this()) {
            let _ = std::fs::remove_file(self.entry());
        }
    }

    /// The pid file `path`, its folder reached and held.
    fn at(path: &Path) -> anyhow::Result<Pidfile> {
        let (folder, name) = Folder::holding(path, "the pid file")
            .map_err(|unreachable| unreachable.context(format!("cannot write the pid file {}", path.display())))?;
        Ok(Pidfile { path: path.to_path_buf(), folder, name: name.to_os_string() })
    }

    /// The pid file, named through its held folder.
    fn entry(&self) -> PathBuf {
        self.folder.entry(&self.name)
    }

    /// Writes the pid to a temporary file beside the pid file, created new and owner-only (never through a
    /// symlink or over an existing file, whatever the umask), then renames it over the pid file.
    fn write(&self) -> anyhow::Result<()> {
        let suffix = format!(".{}.tmp", std::process::id());
        let temporary = self.folder.entry(&with_suffix(&self.name, &suffix));
        let shown = with_suffix(self.path.as_os_str(), &suffix);
        let shown = Path::new(&shown).display();
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
            return Err(err).with_context(|| format!("cannot write the pid file {shown}"));
        }
        std::fs::rename(&temporary, self.entry()).map_err(|err| {
            let _ = std::fs::remove_file(&temporary);
            anyhow::Error::from(err).context(format!("cannot write the pid file {}", self.path.display()))
        })
    }
}

/// `name` with `suffix` appended.
fn with_suffix(name: &OsStr, suffix: &str) -> OsString {
    let mut name = name.to_os_string();
    name.push(suffix);
    name
}

/// The most bytes a pid file is read for: a pid and a newline, with room to spare.
const PID_FILE_MOST: u64 = 64;

/// The pid a pid file holds; none when it is not a regular file (a FIFO planted there is never waited on) or is
/// larger than a pid file (a huge file planted there is never read).
fn read(path: &Path) -> Option<Pid> {
    crate::regular_file::read_text_at_most(path, PID_FILE_MOST).ok()?.trim().parse().ok().map(Pid::from_raw)
}
