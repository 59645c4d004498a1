//! The build's cache: `python/` under the cache folder, owner-only (0700), never reached through a symlink.
//! Entries (a virtual environment, installed requirements) are named by a hash of what goes into them, built in a
//! scratch folder beside them and renamed into place once complete, so that a half-built entry is never used.

use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// Marks a complete entry.
const READY: &str = ".wasmcorn-ready";

pub(super) struct Cache {
    root: PathBuf,
}

/// A folder that is removed when dropped.
pub(super) struct Scratch {
    path: PathBuf,
}

impl Cache {
    /// `dir/python`, created owner-only; `dir` itself is checked as the compile step checks its cache folder, and
    /// refused when a folder on its way is one where another user may swap it: the build runs the programs its
    /// cache holds (the toolchain's Python), found by name after they were checked.
    pub(super) fn open(dir: &Path) -> anyhow::Result<Cache> {
        crate::guest::prepare_folder(dir)?;
        let swappable = crate::planted::folder_others_may_swap(dir)
            .with_context(|| format!("cannot check the way to the cache folder {}", dir.display()))?;
        if let Some(folder) = swappable {
            bail!(
                "the cache folder {} lies in {}, where other users may rename or replace folders: they could swap in \
                 programs the build runs; choose a cache folder (--cache-dir) whose way only you and root may change",
                dir.display(),
                folder.display()
            );
        }
        let root = dir.join("python");
        owner_only_folder(&root)?;
        Ok(Cache { root })
    }

    /// The complete entry named `name`, if there is one.
    pub(super) fn entry(&self, name: &str) -> Option<PathBuf> {
        let path = self.root.join(name);
        let meta = fs::symlink_metadata(&path).ok()?;
        let ours = meta.is_dir() && meta.uid() == nix::unistd::geteuid().as_raw() && meta.mode() & 0o022 == 0;
        (ours && path.join(READY).is_file()).then_some(path)
    }

    /// A new empty scratch folder in the cache.
    pub(super) fn scratch(&self, what: &str) -> anyhow::Result<Scratch> {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let path = self.root.join(format!(".{what}-{}-{nanos}", std::process::id()));
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .with_context(|| format!("cannot create the build folder {}", path.display()))?;
        Ok(Scratch { path })
    }

    /// Makes `scratch` the complete entry `name` (another build may have made it meanwhile: that one is kept).
    pub(super) fn commit(&self, scratch: Scratch, name: &str) -> anyhow::Result<PathBuf> {
        fs::write(scratch.path.join(READY), b"")
            .with_context(|| format!("cannot write in the build folder {}", scratch.path.display()))?;
        let path = self.root.join(name);
        match fs::rename(&scratch.path, &path) {
            Ok(()) => {}
            Err(_) if self.entry(name).is_some() => {}
            Err(err) => return Err(err).with_context(|| format!("cannot move the cache entry to {}", path.display())),
        }
        Ok(path)
    }
}

impl Scratch {
    pub(super) fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// Creates `path` as a folder only its owner may use, or checks that it is one of ours (not a symlink).
fn owner_only_folder(path: &Path) -> anyhow::Result<()> {
    match fs::DirBuilder::new().mode(0o700).create(path) {
        Ok(()) => {}
        Err(err) if err.kind() == ErrorKind::AlreadyExists => {}
        Err(err) => return Err(err).with_context(|| format!("cannot create the build cache {}", path.display())),
    }
    let meta = fs::symlink_metadata(path).with_context(|| format!("cannot check {}", path.display()))?;
    if !meta.is_dir() {
        bail!("the build cache {} is not a folder (a symlink?): remove it", path.display());
    }
    if meta.uid() != nix::unistd::geteuid().as_raw() {
        bail!("the build cache {} belongs to uid {}, not to this user: remove it", path.display(), meta.uid());
    }
    if meta.mode() & 0o077 != 0 {
        fs::set_permissions(path, fs::Permissions::from_mode(0o700))
            .with_context(|| format!("cannot make the build cache {} owner-only", path.display()))?;
    }
    Ok(())
}

/// The hex SHA-256 of `parts`, each length-prefixed so that no two lists hash alike.
pub(super) fn key(parts: &[&[u8]]) -> String {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part);
    }
    hasher.finalize().iter().map(|byte| format!("{byte:02x}")).collect()
}
