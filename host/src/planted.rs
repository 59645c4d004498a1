//! Names in folders that others control. A path the operator gives (a log file, the cache folder) may sit in a
//! folder that users other than the server's can change: one others may write (such as /tmp), or one that
//! belongs to another user. There a symlink, or a file of theirs, may have been planted at that name to make the
//! server write where they choose, or into a file they can read; the callers refuse both.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// The effective user id of this process: the owner of what it creates.
pub(crate) fn own_uid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// Whether the folder holding `path` may be changed by users other than this process's: group or others may
/// write it, or it belongs to another user than this one and root. A folder that cannot be read counts as theirs.
pub(crate) fn in_folder_others_control(path: &Path) -> bool {
    let folder = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    match std::fs::metadata(folder) {
        Ok(meta) => meta.mode() & 0o022 != 0 || (meta.uid() != own_uid() && meta.uid() != 0),
        Err(_) => true,
    }
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
}
