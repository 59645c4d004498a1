//! Names in folders that others control. A path the operator gives (a log file, the cache folder) may sit in a
//! folder that users other than the server's can change: one others may write (such as /tmp), or one that
//! belongs to another user. There a symlink, or a file of theirs, may have been planted at that name to make the
//! server write where they choose, or into a file they can read; the callers refuse both. A folder is reached by
//! a walk of descriptors (`Folder`), one name at a time from the root, and what is made in it is made through
//! the descriptor the walk ended on: a link swapped in on the way once the walk has passed is never followed.

use std::ffi::{OsStr, OsString};
use std::fmt::Display;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use anyhow::anyhow;
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, open, openat, readlinkat, renameat};
use nix::sys::stat::{FileStat, Mode, SFlag, fstat, fstatat};
use nix::unistd::{UnlinkatFlags, unlinkat};

/// The effective user id of this process: the owner of what it creates.
pub(crate) fn own_uid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// Whether the folder holding `path` may be changed by users other than this process's: group or others may
/// write it, or it belongs to another user than this one and root. A folder that cannot be read counts as theirs.
pub(crate) fn in_folder_others_control(path: &Path) -> bool {
    match std::fs::metadata(folder_of(path)) {
        Ok(meta) => others_may_change(meta.mode(), meta.uid()),
        Err(_) => true,
    }
}

/// Refuses `path` (`what` names it: "the log file") when the way to its folder passes through a symlink that sits
/// in a folder others control: whoever may change that folder may point the link at a folder of their choosing
/// (/etc, say), and the server would create or write its file there. A way that ends early (a folder not there
/// yet, one that cannot be entered) is left to the caller's own open to report. The checks on the name itself (a
/// symlink or another user's file at it) are the caller's. For a check made now and a file opened later by name:
/// `Folder::holding` leaves no moment between.
pub(crate) fn refuse_planted_links(path: &Path, what: &str) -> anyhow::Result<()> {
    match walk(folder_of(path), path, what) {
        Err(Unreachable::Planted(refusal)) => Err(refusal),
        Ok(_) | Err(Unreachable::Io(_)) => Ok(()),
    }
}

/// The first folder on the way to the existing folder `path` in which another user may rename or replace what
/// leads there: one that belongs to another user (than this one and root), one that others may write, or a group
/// other than this user's own private group (see `own_private_group`), unless it is sticky (as /tmp) and the entry
/// on the way is ours or root's. Whoever controls such a folder may swap the whole tree below it for one of theirs
/// between a check by name and a later use by name (a program the server runs from its cache, say); `None` when no
/// such folder is on the way.
pub(crate) fn folder_others_may_swap(path: &Path) -> io::Result<Option<PathBuf>> {
    let path = std::fs::canonicalize(path)?;
    for entry in path.ancestors() {
        let Some(folder) = entry.parent() else { break };
        let folder_meta = std::fs::metadata(folder)?;
        let entry_owner = std::fs::symlink_metadata(entry)?.uid();
        // The write bits that let someone else at the entry: not the group's when it is ours alone, none when the
        // folder is sticky and the entry ours or root's.
        let mut writers = folder_meta.mode() & 0o022;
        if writers & 0o020 != 0 && own_private_group(folder_meta.gid()) {
            writers &= !0o020;
        }
        if folder_meta.mode() & 0o1000 != 0 && (entry_owner == own_uid() || entry_owner == 0) {
            writers = 0;
        }
        if others_may_change(writers, folder_meta.uid()) {
            return Ok(Some(folder.to_path_buf()));
        }
    }
    Ok(None)
}

/// Whether group `gid` is this user's private group, which systems that give users a umask of 002 make for each
/// (named as the user, the user's own, with no other member): its write permission lets nobody else in.
fn own_private_group(gid: u32) -> bool {
    let Ok(Some(user)) = nix::unistd::User::from_uid(nix::unistd::geteuid()) else { return false };
    let Ok(Some(group)) = nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(gid)) else { return false };
    user.gid.as_raw() == gid && group.name == user.name && group.mem.iter().all(|member| *member == user.name)
}

/// Why a folder could not be reached.
#[derive(Debug)]
pub(crate) enum Unreachable {
    /// The way to it passes through a symlink in a folder others control: the whole message, naming the link.
    Planted(anyhow::Error),
    /// What the system said (no such folder, not a folder, no permission, too many links).
    Io(io::Error),
}

impl Unreachable {
    /// The error to report: a planted link's message as it is, the system's answer after `context`.
    pub(crate) fn context(self, context: impl Display + Send + Sync + 'static) -> anyhow::Error {
        match self {
            Unreachable::Planted(refusal) => refusal,
            Unreachable::Io(err) => anyhow::Error::from(err).context(context),
        }
    }
}

/// A folder reached by a walk that refused symlinks planted on the way, held open: a file created, opened or
/// renamed through it is in that folder, whatever has been renamed on the way to it since.
#[derive(Debug)]
pub(crate) struct Folder {
    fd: OwnedFd,
    others_control: bool,
}

impl Folder {
    /// The folder holding `path` (`what` names it: "the log file"), and the name in it. A path that ends with a
    /// slash names a folder, as for the kernel.
    pub(crate) fn holding<'a>(path: &'a Path, what: &str) -> Result<(Folder, &'a OsStr), Unreachable> {
        let bytes = path.as_os_str().as_bytes();
        if bytes.is_empty() {
            return Err(io_error(Errno::ENOENT));
        }
        let name = match path.file_name() {
            Some(name) if !bytes.ends_with(b"/") && !bytes.ends_with(b"/.") => name,
            _ => return Err(io_error(Errno::EISDIR)),
        };
        Ok((walk(folder_of(path), path, what)?, name))
    }

    /// The folder `folder` itself (`what` names it: "the granted folder"); a symlink at its own name is followed
    /// on the same terms as those on the way.
    pub(crate) fn open(folder: &Path, what: &str) -> Result<Folder, Unreachable> {
        walk(folder, folder, what)
    }

    /// Whether users other than this process's may change this folder's entries.
    pub(crate) fn others_control(&self) -> bool {
        self.others_control
    }

    /// Opens `name` in this folder (`.` for the folder itself) with `flags` (close-on-exec added), creating it
    /// with `mode` if `flags` say so.
    pub(crate) fn open_file(&self, name: &OsStr, flags: OFlag, mode: u32) -> io::Result<File> {
        let fd = openat(&self.fd, name, flags | OFlag::O_CLOEXEC, Mode::from_bits_truncate(mode))?;
        Ok(File::from(fd))
    }

    /// What kind of entry `name` is in this folder, a symlink itself rather than what it points to; none when
    /// there is no such entry.
    pub(crate) fn entry_kind(&self, name: &OsStr) -> io::Result<Option<SFlag>> {
        match fstatat(&self.fd, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(stat) => Ok(Some(SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT)),
            Err(Errno::ENOENT) => Ok(None),
            Err(err) => Err(err.into()),
        }
    }

    /// Renames `from` to `to`, both in this folder (`from` may name a file in a folder below).
    pub(crate) fn rename(&self, from: &Path, to: &OsStr) -> io::Result<()> {
        Ok(renameat(&self.fd, from, &self.fd, to)?)
    }

    /// Removes the file `name` from this folder.
    pub(crate) fn remove(&self, name: &OsStr) -> io::Result<()> {
        Ok(unlinkat(&self.fd, name, UnlinkatFlags::NoRemoveDir)?)
    }

    /// A path that names this very folder while it is held, for an API that takes only a path (wasmtime-wasi's
    /// preopens; a child's current folder, set before it runs): its descriptor under /proc/self.
    pub(crate) fn path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.fd.as_raw_fd()))
    }
}

/// What an entry of `kind` (from `Folder::entry_kind`) is called in a message.
pub(crate) fn kind_called(kind: SFlag) -> &'static str {
    match kind {
        SFlag::S_IFREG => "a regular file",
        SFlag::S_IFLNK => "a symlink",
        SFlag::S_IFDIR => "a folder",
        SFlag::S_IFIFO => "a FIFO",
        SFlag::S_IFSOCK => "a socket",
        _ => "a device",
    }
}

/// The most symlinks a walk follows, as the kernel (`MAXSYMLINKS`).
const MOST_LINKS: usize = 40;

/// Walks to `folder` one name at a time through descriptors, from the root (or the current folder for a relative
/// path), following each symlink as the kernel would unless it sits in a folder others control: that one is
/// refused (`named` and `what` say what for). Each name is opened relative to the descriptor of the folder that
/// holds it, so the folder reached is the one whose way was checked.
fn walk(folder: &Path, named: &Path, what: &str) -> Result<Folder, Unreachable> {
    let (mut fd, mut reached) = if folder.is_absolute() {
        (open_folder("/")?, PathBuf::from("/"))
    } else {
        (open_folder(".")?, std::env::current_dir().unwrap_or_else(|_| PathBuf::from(".")))
    };
    // The names still to walk, the next one last.
    let mut pending = steps(folder);
    let mut links = 0;
    while let Some(step) = pending.pop() {
        let Some(name) = step else {
            fd = openat(&fd, "..", folder_flags(), Mode::empty()).map_err(io_error)?;
            reached.pop();
            continue;
        };
        let next = openat(&fd, name.as_os_str(), OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC, Mode::empty())
            .map_err(io_error)?;
        if !is(&stat(&next)?, SFlag::S_IFLNK) {
            fd = next;
            reached.push(&name);
            continue;
        }
        if others_control(&fd)? {
            return Err(Unreachable::Planted(anyhow!(
                "cannot use {what} {}: the way to it passes through the symlink {}, in a folder others may change",
                named.display(),
                reached.join(&name).display()
            )));
        }
        links += 1;
        if links > MOST_LINKS {
            return Err(io_error(Errno::ELOOP));
        }
        // The link opened, read through its own descriptor.
        let target = PathBuf::from(readlinkat(&next, "").map_err(io_error)?);
        if target.is_absolute() {
            (fd, reached) = (open_folder("/")?, PathBuf::from("/"));
        }
        pending.extend(steps(&target));
    }
    // One look at the folder reached says both what it is and who may change it.
    let end = stat(&fd)?;
    if !is(&end, SFlag::S_IFDIR) {
        return Err(io_error(Errno::ENOTDIR));
    }
    Ok(Folder { others_control: others_may_change(end.st_mode, end.st_uid), fd })
}

/// The names of `path` to walk, the first one last: `None` for `..`.
fn steps(path: &Path) -> Vec<Option<OsString>> {
    let steps = path.components().filter_map(|component| match component {
        Component::Normal(name) => Some(Some(name.to_os_string())),
        Component::ParentDir => Some(None),
        Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
    });
    let mut steps: Vec<_> = steps.collect();
    steps.reverse();
    steps
}

fn folder_flags() -> OFlag {
    OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC
}

fn open_folder(path: &str) -> Result<OwnedFd, Unreachable> {
    open(path, folder_flags(), Mode::empty()).map_err(io_error)
}

fn stat(fd: impl AsFd) -> Result<FileStat, Unreachable> {
    fstat(fd).map_err(io_error)
}

fn is(stat: &FileStat, kind: SFlag) -> bool {
    SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT == kind
}

fn io_error(errno: Errno) -> Unreachable {
    Unreachable::Io(errno.into())
}

/// Whether users other than this process's may change the entries of the folder `fd` holds.
fn others_control(fd: impl AsFd) -> Result<bool, Unreachable> {
    let stat = stat(fd)?;
    Ok(others_may_change(stat.st_mode, stat.st_uid))
}

/// Whether a folder of mode `mode` that belongs to uid `owner` may be changed by users other than this process's:
/// group or others may write it, or it belongs to another user than this one and root.
fn others_may_change(mode: u32, owner: u32) -> bool {
    mode & 0o022 != 0 || (owner != own_uid() && owner != 0)
}

/// The folder holding `path`.
fn folder_of(path: &Path) -> &Path {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    /// A folder (ours, 0700, in /tmp) and an empty `cache` folder in it.
    fn team_with_cache() -> (tempfile::TempDir, PathBuf) {
        let team = tempfile::tempdir().unwrap();
        let cache = team.path().join("cache");
        std::fs::create_dir(&cache).unwrap();
        (team, cache)
    }

    #[test]
    fn a_way_through_a_folder_others_may_write_may_be_swapped_unless_it_is_sticky() {
        let (team, cache) = team_with_cache();
        assert_eq!(folder_others_may_swap(&cache).unwrap(), None, "a folder of ours, 0700, in /tmp (sticky)");
        std::fs::set_permissions(team.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
        assert_eq!(folder_others_may_swap(&cache).unwrap(), None, "sticky: others may not rename our entry");
        std::fs::set_permissions(team.path(), std::fs::Permissions::from_mode(0o2777)).unwrap();
        let canonical = std::fs::canonicalize(team.path()).unwrap();
        assert_eq!(folder_others_may_swap(&cache).unwrap(), Some(canonical), "anyone may write, not sticky");
    }

    #[test]
    fn a_folder_a_shared_group_may_write_may_be_swapped_and_ones_private_group_not() {
        let (team, cache) = team_with_cache();
        std::fs::set_permissions(team.path(), std::fs::Permissions::from_mode(0o2775)).unwrap();
        let own = nix::unistd::getegid().as_raw();
        let private = own_private_group(own);
        let expected = if private { None } else { Some(std::fs::canonicalize(team.path()).unwrap()) };
        assert_eq!(folder_others_may_swap(&cache).unwrap(), expected, "our own group, private: {private}");
        // A group others are in (the tests run as root, which may give the folder to any group).
        let shared = nix::unistd::Group::from_name("nogroup").unwrap().expect("Debian's nogroup").gid;
        nix::unistd::chown(team.path(), None, Some(shared)).unwrap();
        assert!(!own_private_group(shared.as_raw()));
        let canonical = std::fs::canonicalize(team.path()).unwrap();
        assert_eq!(folder_others_may_swap(&cache).unwrap(), Some(canonical), "a shared group may write");
    }

    #[test]
    fn a_folder_others_may_write_or_of_another_user_is_theirs() {
        let dir = tempfile::tempdir().unwrap();
        let name = dir.path().join("name");
        assert!(!in_folder_others_control(&name), "a folder of ours, 0700");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
        assert!(in_folder_others_control(&name), "a sticky folder everyone may write, like /tmp");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o775)).unwrap();
        assert!(in_folder_others_control(&name), "a folder its group may write");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        if own_uid() == 0 {
            std::os::unix::fs::chown(dir.path(), Some(65534), None).unwrap();
            assert!(in_folder_others_control(&name), "a folder of another user");
        }
        assert!(in_folder_others_control(Path::new("/nonexistent-folder/name")), "a folder that cannot be read");
    }

    /// The inode of the folder `folder` holds.
    fn inode(folder: &Folder) -> u64 {
        fstat(&folder.fd).unwrap().st_ino
    }

    #[test]
    fn the_folder_reached_is_the_one_the_path_names() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        std::fs::create_dir_all(real.join("deeper")).unwrap();
        std::os::unix::fs::symlink("real/deeper", dir.path().join("relative")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("relative"), dir.path().join("absolute")).unwrap();
        let expected = std::fs::metadata(real.join("deeper")).unwrap().ino();
        for path in ["real/deeper", "relative", "absolute", "absolute/../deeper", "real/./deeper/../deeper"] {
            let folder = Folder::open(&dir.path().join(path), "the folder").unwrap();
            assert_eq!(inode(&folder), expected, "{path}");
            assert!(!folder.others_control(), "{path}: a folder of ours");
            assert_eq!(std::fs::metadata(folder.path()).unwrap().ino(), expected, "{path}: its path names it");
        }
        let log = dir.path().join("absolute/x.log");
        let (folder, name) = Folder::holding(&log, "the log file").unwrap();
        assert_eq!((inode(&folder), name), (expected, OsStr::new("x.log")));
        let mut file = folder.open_file(name, OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL, 0o600).unwrap();
        std::io::Write::write_all(&mut file, b"written\n").unwrap();
        assert_eq!(std::fs::read_to_string(real.join("deeper/x.log")).unwrap(), "written\n");
        // A file, a missing name and a loop of links are the system's answers.
        for (path, errno) in [("real/deeper/x.log", Errno::ENOTDIR), ("missing", Errno::ENOENT)] {
            match Folder::open(&dir.path().join(path), "the folder") {
                Err(Unreachable::Io(err)) => assert_eq!(err.raw_os_error(), Some(errno as i32), "{path}"),
                other => panic!("{path}: {other:?}"),
            }
        }
        std::os::unix::fs::symlink("loop", dir.path().join("loop")).unwrap();
        match Folder::open(&dir.path().join("loop"), "the folder") {
            Err(Unreachable::Io(err)) => assert_eq!(err.raw_os_error(), Some(Errno::ELOOP as i32)),
            other => panic!("{other:?}"),
        }
        // A path that ends with a slash names a folder; an empty one names nothing.
        for path in ["absolute/x.log/", "absolute/x.log/.", ""] {
            match Folder::holding(Path::new(path), "the log file") {
                Err(Unreachable::Io(err)) => assert!(matches!(err.raw_os_error(), Some(21 | 2)), "{path}: {err}"),
                other => panic!("{path}: {other:?}"),
            }
        }
        // A relative path starts from the current folder.
        let folder = Folder::open(Path::new("."), "the folder").unwrap();
        assert_eq!(inode(&folder), std::fs::metadata(".").unwrap().ino());
    }

    /// A local user swaps, as fast as they can, a folder in a folder others may write (like /tmp) with a symlink to
    /// a folder of their choosing. Checking the way by name and then opening by name would sometimes check the
    /// folder and open through the link; the walk either refuses the link or reaches the folder itself.
    #[test]
    fn a_link_swapped_in_on_the_way_is_never_followed() {
        use std::sync::atomic::{AtomicBool, Ordering};

        use nix::fcntl::{AT_FDCWD, RenameFlags, renameat2};

        let dir = tempfile::tempdir().unwrap();
        let shared = dir.path().join("shared");
        let elsewhere = dir.path().join("elsewhere");
        std::fs::create_dir_all(shared.join("logs")).unwrap();
        std::fs::create_dir(&elsewhere).unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
        std::os::unix::fs::symlink(&elsewhere, shared.join("swapped")).unwrap();
        let logs = std::fs::metadata(shared.join("logs")).unwrap().ino();
        /// Stops the swapping when dropped, a failed assertion's unwinding included (the scope waits for it).
        struct Stop<'a>(&'a AtomicBool);
        impl Drop for Stop<'_> {
            fn drop(&mut self) {
                self.0.store(true, Ordering::Relaxed);
            }
        }
        let (names, swapped) = (shared.join("logs"), shared.join("swapped"));
        let swap = || renameat2(AT_FDCWD, &names, AT_FDCWD, &swapped, RenameFlags::RENAME_EXCHANGE).unwrap();
        // Once each way first: a file system that cannot exchange fails here.
        swap();
        swap();
        let stopped = AtomicBool::new(false);
        let (reached, refused) = std::thread::scope(|scope| {
            let _stop = Stop(&stopped);
            scope.spawn(|| {
                while !stopped.load(Ordering::Relaxed) {
                    swap();
                }
            });
            let (mut reached, mut refused) = (0, 0);
            for _ in 0..20_000 {
                match Folder::holding(&shared.join("logs/x.log"), "the log file") {
                    Ok((folder, _)) => {
                        assert_eq!(inode(&folder), logs, "the folder reached is the folder checked");
                        reached += 1;
                    }
                    Err(Unreachable::Planted(refusal)) => {
                        assert!(refusal.to_string().contains("passes through the symlink"), "{refusal}");
                        refused += 1;
                    }
                    // Between the two names of an exchange, none is missing: any other answer is a failure.
                    Err(Unreachable::Io(err)) => panic!("{err}"),
                }
            }
            (reached, refused)
        });
        assert!(reached > 0 && refused > 0, "both names were met: {reached} reached, {refused} refused");
        assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);
    }

    #[test]
    fn a_symlink_on_the_way_in_a_folder_others_control_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let shared = dir.path().join("shared");
        let ours = dir.path().join("ours");
        std::fs::create_dir(&shared).unwrap();
        std::fs::create_dir(&ours).unwrap();
        std::fs::create_dir(ours.join("logs")).unwrap();
        std::os::unix::fs::symlink(&ours, shared.join("link")).unwrap();
        std::os::unix::fs::symlink(&ours, ours.join("link")).unwrap();
        // A link in a folder of ours is followed, and so is one in a folder others may write once it is gone.
        assert!(refuse_planted_links(&ours.join("link/logs/x.log"), "the log file").is_ok());
        assert!(refuse_planted_links(&shared.join("link/logs/x.log"), "the log file").is_ok());
        assert!(refuse_planted_links(&shared.join("link/logs/../logs/./x.log"), "the log file").is_ok());
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
        for path in ["link/x.log", "link/logs/x.log", "link/logs/../x.log", "../shared/link/x.log"] {
            let refused = refuse_planted_links(&shared.join(path), "the log file").unwrap_err().to_string();
            let expected = format!("the symlink {}, in a folder others may change", shared.join("link").display());
            assert!(refused.contains(&expected), "{path}: {refused}");
        }
        // The name itself is the caller's to check; a folder not there yet has nothing on the way to follow.
        assert!(refuse_planted_links(&shared.join("link"), "the log file").is_ok());
        assert!(refuse_planted_links(&shared.join("missing/deeper/x.log"), "the log file").is_ok());
        // A folder named with a slash at its end (the cache folder), and the current folder.
        assert!(refuse_planted_links(&ours.join("logs/"), "the cache folder").is_ok());
        assert!(refuse_planted_links(Path::new("."), "the cache folder").is_ok());
        // Through a link of ours to a shared folder, then its planted link.
        std::os::unix::fs::symlink(&shared, ours.join("to-shared")).unwrap();
        assert!(refuse_planted_links(&ours.join("to-shared/link/x.log"), "the log file").is_err());
    }
}
