//! Names in folders that others control. A path the operator gives (a log file, the cache folder) may sit in a
//! folder that users other than the server's can change: one others may write (such as /tmp), or one that
//! belongs to another user. There a symlink, or a file of theirs, may have been planted at that name to make the
//! server write where they choose, or into a file they can read; the callers refuse both.

use std::io::ErrorKind;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use anyhow::bail;

/// The effective user id of this process: the owner of what it creates.
pub(crate) fn own_uid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// Whether the folder holding `path` may be changed by users other than this process's: group or others may
/// write it, or it belongs to another user than this one and root. A folder that cannot be read counts as theirs.
pub(crate) fn in_folder_others_control(path: &Path) -> bool {
    others_control(folder_of(path))
}

/// Refuses `path` (`what` names it: "the log file") when the way to its folder passes through a symlink that sits
/// in a folder others control: whoever may change that folder may point the link at a folder of their choosing
/// (/etc, say), and the server would create or write its file there. The checks on the name itself (a symlink or
/// another user's file at it) are the caller's.
pub(crate) fn refuse_planted_links(path: &Path, what: &str) -> anyhow::Result<()> {
    refuse_links_on_the_way(folder_of(path), path, what)
}

/// Refuses the folder `folder` (`what` names it: "the granted folder") when the way to it, the folder itself
/// included, passes through a symlink that sits in a folder others control: they could point it elsewhere.
pub(crate) fn refuse_planted_links_to_folder(folder: &Path, what: &str) -> anyhow::Result<()> {
    refuse_links_on_the_way(folder, folder, what)
}

/// Refuses `named` when the way to `folder` passes through such a symlink.
fn refuse_links_on_the_way(folder: &Path, named: &Path, what: &str) -> anyhow::Result<()> {
    if let Some(link) = planted_link_on_the_way(folder) {
        bail!(
            "cannot use {what} {}: the way to it passes through the symlink {}, in a folder others may change",
            named.display(),
            link.display()
        );
    }
    Ok(())
}

/// The folder holding `path`.
fn folder_of(path: &Path) -> &Path {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

/// Whether users other than this process's may change `folder`: group or others may write it, or it belongs to
/// another user than this one and root. A folder that cannot be read counts as theirs.
fn others_control(folder: &Path) -> bool {
    match std::fs::metadata(folder) {
        Ok(meta) => meta.mode() & 0o022 != 0 || (meta.uid() != own_uid() && meta.uid() != 0),
        Err(_) => true,
    }
}

/// The first symlink on the way to `folder` that sits in a folder others control, walking it one name at a time
/// from the root and following each link as the kernel would. The walk ends where a name does not exist (nothing
/// below it does either); a name that cannot be looked at is such a symlink, since nothing can be said of it.
fn planted_link_on_the_way(folder: &Path) -> Option<PathBuf> {
    let absolute = if folder.is_absolute() {
        folder.to_path_buf()
    } else {
        match std::env::current_dir() {
            Ok(current) => current.join(folder),
            Err(_) => return Some(folder.to_path_buf()),
        }
    };
    // Always a path without symlinks, `..` or `.`: a parent of it is its real parent.
    let mut reached = PathBuf::from("/");
    for component in absolute.components() {
        let name = match component {
            Component::Normal(name) => name,
            Component::ParentDir => {
                reached.pop();
                continue;
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => continue,
        };
        let next = reached.join(name);
        match std::fs::symlink_metadata(&next) {
            Ok(meta) if meta.file_type().is_symlink() => {
                if others_control(&reached) {
                    return Some(next);
                }
                match std::fs::canonicalize(&next) {
                    Ok(target) => reached = target,
                    Err(err) if err.kind() == ErrorKind::NotFound => return None,
                    Err(_) => return Some(next),
                }
            }
            Ok(_) => reached = next,
            Err(err) if err.kind() == ErrorKind::NotFound => return None,
            Err(_) => return Some(next),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

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
        // Through a link of ours to a shared folder, then its planted link.
        std::os::unix::fs::symlink(&shared, ours.join("to-shared")).unwrap();
        assert!(refuse_planted_links(&ours.join("to-shared/link/x.log"), "the log file").is_err());
    }
}
