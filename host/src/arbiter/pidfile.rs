//! The pid file (`--pid FILE`): written at start (atomically, owner-only, never through a symlink), removed at
//! exit if it still names this process. A pid file of this user's (or root's) naming a live process stops the
//! start, as in Gunicorn (one another user planted does not); so does anything at the name that is not a pid
//! file, which is never replaced (a `--pid` aimed by mistake at a config file, or at `/dev/null` by root, would
//! destroy it). During a SIGUSR2 upgrade the new arbiter writes `FILE.2` and takes `FILE` over once the old
//! arbiter has gone.

use std::ffi::{OsStr, OsString};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use nix::fcntl::OFlag;
use nix::sys::signal::kill;
use nix::sys::stat::SFlag;
use nix::unistd::{Pid, Uid, geteuid};

use crate::planted::{Folder, kind_called};

#[derive(Debug)]
pub(super) struct Pidfile {
    path: PathBuf,
    /// The predecessor whose pid file this one replaced (a successor left at `FILE.2` by a refused move, upgraded
    /// in turn): given back to it if this arbiter stops first, as when its upgrade is rolled back.
    taken_from: Option<Pid>,
}

impl Pidfile {
    /// Writes this process's pid to `path`, refusing a pid file that names another live process than
    /// `predecessor`: the arbiter whose `USR2` started this one holds the upgrade's pid file still when its own move
    /// to the main name was refused, and its successor takes it over.
    pub(super) fn create(path: &Path, predecessor: Option<Pid>) -> anyhow::Result<Pidfile> {
        let (folder, name) = reach(path)?;
        let held = replaceable(path, &folder, name)?;
        let taken_from = held.filter(|pid| predecessor == Some(*pid));
        let another = |pid: &Pid| *pid != Pid::this() && Some(*pid) != predecessor && kill(*pid, None).is_ok();
        if let Some(pid) = held.filter(another) {
            bail!("already running on pid {pid} (or the pid file {} is stale)", path.display());
        }
        write(path, &folder, name, Pid::this())?;
        Ok(Pidfile { path: path.to_path_buf(), taken_from })
    }

    /// The upgrade's pid file: `FILE.2`.
    pub(super) fn upgrade_path(path: &Path) -> PathBuf {
        let mut name = path.as_os_str().to_os_string();
        name.push(".2");
        PathBuf::from(name)
    }

    /// Moves the pid file to `path` (the new arbiter of an upgrade taking the main name over).
    pub(super) fn move_to(&mut self, path: &Path) -> anyhow::Result<()> {
        let (folder, name) = reach(path)?;
        replaceable(path, &folder, name)?;
        write(path, &folder, name, Pid::this())?;
        if let Ok((folder, name)) = reach(&self.path) {
            let _ = folder.remove(name);
        }
        self.path = path.to_path_buf();
        self.taken_from = None;
        Ok(())
    }

    /// Removes the file if it still names this process, or gives it back to the predecessor it was taken from if
    /// that one still runs.
    pub(super) fn remove(&self) {
        let Ok((folder, name)) = reach(&self.path) else { return };
        if read(&folder, name).map(|(text, _)| text) != Some(PidText::Pid(Pid::this())) {
            return;
        }
        match self.taken_from.filter(|pid| kill(*pid, None).is_ok()) {
            Some(predecessor) => drop(write(&self.path, &folder, name, predecessor)),
            None => drop(folder.remove(name)),
        }
    }
}

/// The folder of the pid file `path`, reached by a walk that refuses links planted on the way (each use walks
/// again, rather than holding a descriptor that every worker would inherit), and its name there.
fn reach(path: &Path) -> anyhow::Result<(Folder, &OsStr)> {
    Folder::holding(path, "the pid file")
        .map_err(|unreachable| unreachable.context(format!("cannot write the pid file {}", path.display())))
}

/// Writes `pid` to a temporary file beside the pid file `name` in `folder` (`path` as given), created new and
/// owner-only (never through a symlink or over an existing file, whatever the umask), then renames it over the pid
/// file.
fn write(path: &Path, folder: &Folder, name: &OsStr, pid: Pid) -> anyhow::Result<()> {
    let suffix = format!(".{}.tmp", std::process::id());
    let temporary = with_suffix(name, &suffix);
    let shown = PathBuf::from(with_suffix(path.as_os_str(), &suffix));
    let flags = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW;
    let written = folder.open_file(&temporary, flags, 0o600).and_then(|mut file| {
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        file.write_all(format!("{pid}\n").as_bytes())
    });
    if let Err(err) = written {
        if err.kind() != ErrorKind::AlreadyExists {
            let _ = folder.remove(&temporary);
        }
        return Err(err).with_context(|| format!("cannot write the pid file {}", shown.display()));
    }
    folder.rename(Path::new(&temporary), name).map_err(|err| {
        let _ = folder.remove(&temporary);
        anyhow::Error::from(err).context(format!("cannot write the pid file {}", path.display()))
    })
}

/// Whether what is at the pid file's `name` in `folder` (`path` as given) may be replaced, and the pid it holds:
/// nothing, a symlink (the link is replaced, never what it points to), or a regular file that holds a pid or
/// nothing may. Anything else is refused, with what it is. The pid in a file that neither this user nor root owns
/// is not this user's server's, whatever it says: another local user who planted a pid file naming a live process
/// in a shared folder does not stop the start where this user may replace the file (root, or a folder without the
/// sticky bit; elsewhere the kernel refuses the rename, and the start stops saying so).
fn replaceable(path: &Path, folder: &Folder, name: &OsStr) -> anyhow::Result<Option<Pid>> {
    let refuse = |what: &str| {
        anyhow::anyhow!(
            "the pid file {} is {what}, not a pid file; it is left as it is (remove it or name another --pid)",
            path.display()
        )
    };
    let kind = folder.entry_kind(name).with_context(|| format!("cannot look at the pid file {}", path.display()))?;
    match kind {
        None | Some(SFlag::S_IFLNK) => Ok(None),
        Some(SFlag::S_IFREG) => match read(folder, name) {
            Some((PidText::Empty, _)) => Ok(None),
            Some((PidText::Pid(_), owner)) if owner != geteuid() && !owner.is_root() => Ok(None),
            Some((PidText::Pid(pid), _)) => Ok(Some(pid)),
            Some((PidText::Other, _)) => Err(refuse("a file that holds something other than a process id")),
            None => Err(refuse("a file that cannot be read")),
        },
        Some(other) => Err(refuse(kind_called(other))),
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

/// What a pid file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PidText {
    Empty,
    Pid(Pid),
    Other,
}

/// What the pid file `name` holds, and the user who owns what was read (asked of the same descriptor); none when it
/// cannot be opened. A file that is not a regular one (a FIFO planted there is never waited on), larger than a pid
/// file (a huge file planted there is never read) or not text holds something else.
fn read(folder: &Folder, name: &OsStr) -> Option<(PidText, Uid)> {
    // A pid file is put at its name by a rename, never as a link; and a terminal planted there would become the
    // arbiter's controlling terminal (when it has none), whose ^C would stop the server.
    let flags = OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_NOFOLLOW | OFlag::O_NOCTTY;
    let file = folder.open_file(name, flags, 0).ok()?;
    let owner = Uid::from_raw(file.metadata().ok()?.uid());
    let text = crate::regular_file::read_text_of(file, PID_FILE_MOST).ok();
    Some((text.map_or(PidText::Other, |text| held_text(&text)), owner))
}

/// What the text of a pid file says.
fn held_text(text: &str) -> PidText {
    match text.trim() {
        "" => PidText::Empty,
        // Only a process's id: `0` and negative numbers name process groups to `kill`.
        trimmed => match trimmed.parse::<i32>() {
            Ok(pid) if pid > 0 => PidText::Pid(Pid::from_raw(pid)),
            _ => PidText::Other,
        },
    }
}
