//! Whether a compiled artefact may be mapped. wasmtime's `deserialize_file` runs the file's native code as it
//! is, so an artefact is used only if it is a regular file (never reached through a symlink) owned by the user
//! that compiles the apps, in a folder of that same user, neither writable by group or others, and, in a
//! worker, holding exactly the bytes whose SHA-256 the compile step recorded. This module also creates the
//! cache folder and the artefact's temporary file with those modes, whatever the umask.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, ErrorKind, Read};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use anyhow::{Context, bail};
use sha2::{Digest, Sha256};

use crate::planted::{in_folder_others_control, own_uid};

/// The cache folder's mode: other users' pools (a dedicated pool's own `user`) may read, only its owner writes.
const FOLDER_MODE: u32 = 0o755;
/// An artefact's mode, for the same reason.
const FILE_MODE: u32 = 0o644;
/// The bits that would let someone other than the owner change a file or a folder's entries.
const WRITABLE_BY_OTHERS: u32 = 0o022;

/// A worker's reason to refuse an artefact (as opposed to an error reading it): compiling again repairs it.
#[derive(Debug)]
pub(crate) struct Refusal(String);

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refusal {}

/// The SHA-256 of `bytes`, in hex.
pub(super) fn digest(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// In the compile step: makes sure `dir` exists, belongs to this process's user and is writable by nobody
/// else. A missing folder is created `0755`; a folder of ours that group or others may write is repaired
/// (their write bits taken away) and the mode it had is returned; a folder of another user, or a shared one
/// (sticky, like /tmp), is an error, and so is a symlink in a folder others may change (it is not followed).
/// The folder is checked and repaired through one descriptor, opened without following a symlink there: a
/// symlink planted meanwhile is refused, not followed.
pub fn prepare_folder(dir: &Path) -> anyhow::Result<Option<u32>> {
    crate::planted::refuse_planted_links(dir, "the cache folder")?;
    let follow = !in_folder_others_control(dir);
    let (folder, created) =
        match open_folder(dir, follow) {
            Ok(folder) => (folder, false),
            Err(err) if err.kind() == ErrorKind::NotFound => {
                fs::DirBuilder::new().recursive(true).mode(FOLDER_MODE).create(dir).with_context(|| {
                    format!("cannot create the cache folder {} as uid {}", dir.display(), own_uid())
                })?;
                (open_folder(dir, follow).map_err(|err| folder_error(dir, follow, err))?, true)
            }
            Err(err) => return Err(folder_error(dir, follow, err)),
        };
    let meta = folder.metadata().with_context(|| format!("cannot check the cache folder {}", dir.display()))?;
    if meta.uid() != own_uid() {
        bail!(
            "the cache folder {} belongs to uid {}, not to uid {} that compiles the apps (the workers' user): remove it \
             or create it for that user (install -d -o USER FOLDER), or choose another --cache-dir",
            dir.display(),
            meta.uid(),
            own_uid()
        );
    }
    if created {
        // The umask may have taken bits away that other users' pools need. (Checked first: another user may have
        // made the folder between the open that found none and the creation, which then found it there.)
        folder
            .set_permissions(fs::Permissions::from_mode(FOLDER_MODE))
            .with_context(|| format!("cannot set the mode of the cache folder {}", dir.display()))?;
        return Ok(None);
    }
    let mode = meta.mode() & 0o7777;
    if mode & WRITABLE_BY_OTHERS == 0 {
        return Ok(None);
    }
    if mode & 0o1000 != 0 {
        // A shared folder such as /tmp: its mode is not ours to change.
        bail!("the cache folder {} is a shared folder (mode {mode:04o}): choose a folder of its own", dir.display());
    }
    folder
        .set_permissions(fs::Permissions::from_mode(mode & !WRITABLE_BY_OTHERS))
        .with_context(|| format!("cannot repair the mode of the cache folder {}", dir.display()))?;
    Ok(Some(mode))
}

/// Opens the folder `dir` itself, following a symlink there only if `follow`.
fn open_folder(dir: &Path, follow: bool) -> io::Result<File> {
    let mut flags = nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC;
    if !follow {
        flags |= nix::fcntl::OFlag::O_NOFOLLOW;
    }
    OpenOptions::new().read(true).custom_flags(flags.bits()).open(dir)
}

/// What `open_folder`'s failure means for the cache folder `dir`.
fn folder_error(dir: &Path, followed: bool, err: io::Error) -> anyhow::Error {
    // Not followed, a symlink fails with ENOTDIR (or ELOOP); the name is looked at again only to say so.
    if !followed && fs::symlink_metadata(dir).is_ok_and(|meta| meta.file_type().is_symlink()) {
        return anyhow::anyhow!(
            "the cache folder {} is a symlink in a folder others may change: give the folder itself",
            dir.display()
        );
    }
    if err.raw_os_error() == Some(nix::errno::Errno::ENOTDIR as i32) {
        return anyhow::anyhow!("the cache folder {} is not a folder", dir.display());
    }
    anyhow::Error::new(err).context(format!("cannot use the cache folder {} as uid {}", dir.display(), own_uid()))
}

/// In the compile step: the bytes of the cached artefact at `path` if it passes the owner and mode checks, or
/// `None` (missing, or not to be trusted: then it is compiled and written again).
pub(super) fn read_cached(path: &Path) -> Option<Vec<u8>> {
    let mut file = open_no_follow(path).ok()?;
    check_file(path, &file.metadata().ok()?, own_uid()).ok()?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).ok()?;
    Some(bytes)
}

/// Creates `path` for writing, `0644` whatever the umask; fails if anything (a symlink included) is there.
pub(super) fn create_new(path: &Path) -> io::Result<File> {
    let file =
        OpenOptions::new().write(true).create_new(true).custom_flags(no_follow_flags()).mode(FILE_MODE).open(path)?;
    file.set_permissions(fs::Permissions::from_mode(FILE_MODE))?;
    Ok(file)
}

fn no_follow_flags() -> i32 {
    (nix::fcntl::OFlag::O_NOFOLLOW | nix::fcntl::OFlag::O_CLOEXEC).bits()
}

fn open_no_follow(path: &Path) -> io::Result<File> {
    OpenOptions::new().read(true).custom_flags(no_follow_flags()).open(path)
}

/// In a worker, before mapping: the artefact and its folder belong to uid `owner` and are not writable by
/// others, and the file's SHA-256 is `expected`. Returns the open file that was checked, so that the worker maps
/// that very file and not whatever the name points at a moment later. A `Refusal` says what is wrong; any other
/// error is a failure to read (a folder this worker's user may not enter, say) that compiling again would not
/// repair.
pub(super) fn verify(path: &Path, owner: u32, expected: &str) -> anyhow::Result<File> {
    let dir = path.parent().context("the artefact's path has no folder")?;
    let folder = fs::metadata(dir).with_context(|| format!("cannot check the cache folder {}", dir.display()))?;
    if folder.uid() != owner || folder.mode() & WRITABLE_BY_OTHERS != 0 {
        return Err(refusal(format!(
            "its folder {} belongs to uid {} with mode {:04o} (wanted uid {owner}, not writable by others)",
            dir.display(),
            folder.uid(),
            folder.mode() & 0o7777
        )));
    }
    let mut file = match open_no_follow(path) {
        Ok(file) => file,
        Err(err) if err.kind() == ErrorKind::NotFound => return Err(refusal("it is missing".to_string())),
        // O_NOFOLLOW: the name is a symlink.
        Err(err) if err.raw_os_error() == Some(nix::errno::Errno::ELOOP as i32) => {
            return Err(refusal("it is a symlink".to_string()));
        }
        Err(err) => return Err(err).with_context(|| format!("cannot open {}", path.display())),
    };
    let meta = file.metadata().with_context(|| format!("cannot check {}", path.display()))?;
    check_file(path, &meta, owner).map_err(refusal)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0; 64 * 1024];
    loop {
        match file.read(&mut buffer) {
            Ok(0) => break,
            Ok(read) => hasher.update(&buffer[..read]),
            Err(err) if err.kind() == ErrorKind::Interrupted => {}
            Err(err) => return Err(err).with_context(|| format!("cannot read {}", path.display())),
        }
    }
    let actual = hex(&hasher.finalize());
    if actual != expected {
        return Err(refusal(format!("its SHA-256 is {actual}, not {expected} as the compile step wrote it")));
    }
    Ok(file)
}

fn refusal(reason: String) -> anyhow::Error {
    anyhow::Error::new(Refusal(reason))
}

/// A regular file of uid `owner` that no one else may write.
fn check_file(path: &Path, meta: &fs::Metadata, owner: u32) -> Result<(), String> {
    if !meta.is_file() {
        return Err(format!("{} is not a regular file", path.display()));
    }
    if meta.uid() != owner || meta.mode() & WRITABLE_BY_OTHERS != 0 {
        return Err(format!(
            "it belongs to uid {} with mode {:04o} (wanted uid {owner}, not writable by others)",
            meta.uid(),
            meta.mode() & 0o7777
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_new_refuses_a_planted_symlink_and_leaves_its_target_alone() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("victim");
        fs::write(&target, b"precious").unwrap();
        let planted = dir.path().join("artefact.tmp");
        std::os::unix::fs::symlink(&target, &planted).unwrap();
        assert_eq!(create_new(&planted).unwrap_err().kind(), ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&target).unwrap(), b"precious");
    }

    #[test]
    fn a_shared_sticky_folder_is_refused_and_left_as_it_is() {
        let dir = tempfile::tempdir().unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o1777)).unwrap();
        let err = prepare_folder(dir.path()).unwrap_err();
        assert!(format!("{err:#}").contains("shared folder (mode 1777)"), "{err:#}");
        assert_eq!(fs::metadata(dir.path()).unwrap().mode() & 0o7777, 0o1777);
    }

    #[test]
    fn verify_refuses_other_bytes_and_accepts_the_recorded_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.cwasm");
        fs::write(&path, b"compiled").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        verify(&path, own_uid(), &digest(b"compiled")).unwrap();
        let err = verify(&path, own_uid(), &digest(b"other")).unwrap_err();
        assert!(err.downcast_ref::<Refusal>().is_some(), "{err:#}");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o666)).unwrap();
        let err = verify(&path, own_uid(), &digest(b"compiled")).unwrap_err();
        assert!(format!("{err:#}").contains("mode 0666"), "{err:#}");
    }
}
