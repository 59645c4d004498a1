//! The compile step: turns an app's component into a precompiled artefact in a content-addressed cache, so that
//! every worker maps the same file (its code pages are then shared through the page cache). It compiles with
//! parallel compilation and so must run in a short-lived process of its own, never in the arbiter or a worker.
//! It records the SHA-256 of each artefact's bytes, which workers check before they map the file (see `trust`),
//! and the component's largest initial linear memory, from which a worker's pool chooses how to reset memory.

use std::fs;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

use super::app::{AppSource, Guest};
use super::engine::{engine_config, instance_pre};
use super::exchange::{Exchange, ResponseHeaders};
use super::kind::Kind;
use super::pool_fit::explain;
use super::{proxy, samples, trust};

/// A compiled app, ready for workers to load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artefact {
    pub path: PathBuf,
    /// The SHA-256 (hex) of the bytes the compile step wrote or checked.
    pub digest: String,
    /// The uid that must own the file and its folder: the user the compile step ran as.
    pub owner: u32,
    /// What the component is (read from its exports when it was compiled): how workers call it.
    pub kind: Kind,
    /// The largest initial linear memory of the component's modules, in bytes (`u64::MAX` when wasmtime cannot
    /// tell): how the workers' pool resets memory (see `engine::resident_memory_bytes`).
    pub initial_memory: u64,
}

impl Artefact {
    /// What a worker checks before it maps the artefact (see `trust::verify`): the file and its folder belong to
    /// the compile step's user and no one else may write them, and the file holds the bytes that step wrote. An
    /// error also says when this process's user cannot read it.
    pub fn check_as_a_worker_would(&self) -> anyhow::Result<()> {
        super::trust::verify(&self.path, self.owner, &self.digest)
            .map(drop)
            .with_context(|| format!("the compiled guest {}", self.path.display()))
    }
}

/// Compiles the app's component `wasm` for a pool whose apps use at most `max_memory_bytes` (or finds it in
/// the cache, unless `fresh`), tells its kind from its exports, checks that the host provides what it imports,
/// and returns the artefact.
/// A cached file that fails the owner and mode checks, or that wasmtime refuses, is compiled and written again.
pub fn prepare(
    app: &Guest,
    wasm: &[u8],
    max_memory_bytes: usize,
    cache_dir: &Path,
    fresh: bool,
) -> anyhow::Result<Artefact> {
    let engine = Engine::new(&engine_config(max_memory_bytes, true, 0, 0))
        .map_err(anyhow::Error::from)
        .context("cannot create the wasm engine")?;
    let path = cache_dir.join(format!("{}.cwasm", cache_key(&engine, wasm)));
    let cached = if fresh { None } else { trust::read_cached(&path) };
    let loaded = cached.and_then(|bytes| {
        // SAFETY: `read_cached` returns only a regular file of this process's user that no one else may write,
        // in a folder `prepare_folder` checked the same way; wasmtime checks its header and configuration.
        let component = unsafe { Component::deserialize(&engine, &bytes) }.ok()?;
        Some((component, trust::digest(&bytes)))
    });
    let (component, digest) = match loaded {
        Some(found) => found,
        None => compile_and_store(&engine, wasm, &path, &app.source)?,
    };
    let kind = Kind::of(&engine, &component).with_context(|| app.source.describe())?;
    match kind {
        Kind::App => instance_pre::<NoExchange>(&engine, &component).map(drop),
        Kind::Proxy => proxy::instance_pre(&engine, &component).map(drop),
    }
    .with_context(|| app.source.describe())?;
    Ok(Artefact { path, digest, owner: crate::planted::own_uid(), kind, initial_memory: initial_memory(&component) })
}

/// The largest initial linear memory of the component's modules, in bytes.
fn initial_memory(component: &Component) -> u64 {
    const WASM_PAGE: u64 = 64 << 10;
    component
        .resources_required()
        .map_or(u64::MAX, |needs| needs.max_initial_memory_size.unwrap_or(0).saturating_mul(WASM_PAGE))
}

/// The bytes of an app's component.
pub fn read_source(source: &AppSource) -> anyhow::Result<Vec<u8>> {
    match source {
        AppSource::Sample(name) => match samples::find(name) {
            Some(sample) => Ok(sample.wasm.to_vec()),
            None => bail!("unknown sample:{name}"),
        },
        AppSource::File(path) => crate::regular_file::read_with_magic(path, WASM_MAGIC, MOST_COMPONENT_BYTES)
            .with_context(|| format!("cannot read {}", path.display()))?
            .ok_or_else(|| not_wasm(source)),
    }
}

/// The first bytes of every WebAssembly binary, component or core module.
const WASM_MAGIC: &[u8] = b"\0asm";

/// The largest component file read: far above any app's (a Python app with its interpreter is tens of MiB), and
/// small enough that a wrong file named by mistake, read at a start or a reload, never exhausts the arbiter.
const MOST_COMPONENT_BYTES: u64 = 1 << 30;

/// What a source that does not start with `WASM_MAGIC` is told.
fn not_wasm(source: &AppSource) -> anyhow::Error {
    anyhow::anyhow!(
        "{} is not a WebAssembly component (it does not start with the wasm magic bytes)",
        source.describe()
    )
}

fn compile_and_store(
    engine: &Engine,
    wasm: &[u8],
    path: &Path,
    source: &AppSource,
) -> anyhow::Result<(Component, String)> {
    if !wasm.starts_with(WASM_MAGIC) {
        return Err(not_wasm(source));
    }
    let component =
        Component::new(engine, wasm).map_err(|err| anyhow::anyhow!("{}", explain(&source.describe(), &err)))?;
    let bytes = component
        .serialize()
        .map_err(anyhow::Error::from)
        .with_context(|| format!("cannot serialize the compiled {}", source.describe()))?;
    let name = path.file_name().map_or_else(Default::default, |name| name.to_string_lossy());
    let temporary = path.with_file_name(format!(".{name}.{:016x}.tmp", fastrand::u64(..)));
    store(path, &temporary, &bytes)?;
    Ok((component, trust::digest(&bytes)))
}

/// Writes the artefact to `temporary` (created new: never through a symlink or over an existing file), syncs
/// it and renames it to `path`, so that a reader never sees a partial file.
fn store(path: &Path, temporary: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = path.parent().context("the cache path has no folder")?;
    let mut file = trust::create_new(temporary).with_context(|| format!("cannot create {}", temporary.display()))?;
    let written = file.write_all(bytes).and_then(|()| file.sync_all());
    if let Err(err) = written {
        let _ = fs::remove_file(temporary);
        return Err(err).with_context(|| format!("cannot write {}", temporary.display()));
    }
    fs::rename(temporary, path).with_context(|| format!("cannot rename {} into place", temporary.display()))?;
    if let Ok(folder) = fs::File::open(dir) {
        // Best effort: the rename is durable once the folder is synced.
        let _ = folder.sync_all();
    }
    Ok(())
}

/// The artefact's name: a SHA-256 of the component bytes and of everything in the engine that makes compiled
/// code compatible or not (wasmtime's version, the target, the configuration).
fn cache_key(engine: &Engine, wasm: &[u8]) -> String {
    let mut hasher = Sha256Hasher(Sha256::new());
    wasm.hash(&mut hasher);
    engine.precompile_compatibility_hash().hash(&mut hasher);
    trust::hex(&hasher.0.finalize())
}

/// Feeds `Hash` into SHA-256, which, unlike `DefaultHasher`, is the same in every process and version.
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    fn finish(&self) -> u64 {
        let digest = self.0.clone().finalize();
        u64::from_le_bytes([digest[0], digest[1], digest[2], digest[3], digest[4], digest[5], digest[6], digest[7]])
    }
}

/// The exchange type used only to check a component's imports and exports.
pub(super) struct NoExchange;

impl Exchange for NoExchange {
    fn read_body(&mut self, _max: usize) -> Result<Vec<u8>, String> {
        Ok(Vec::new())
    }
    fn start_response(&mut self, _status: &str, _headers: ResponseHeaders) -> Result<(), String> {
        Ok(())
    }
    fn write_body(&mut self, _chunk: &[u8]) -> Result<(), String> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_fails_on_a_symlink_planted_at_the_temporary_name_and_leaves_its_target_alone() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("root-only-file");
        fs::write(&target, b"precious").unwrap();
        let temporary = dir.path().join(".a.cwasm.0123.tmp");
        std::os::unix::fs::symlink(&target, &temporary).unwrap();
        let path = dir.path().join("a.cwasm");
        let err = store(&path, &temporary, b"compiled code").unwrap_err();
        assert!(format!("{err:#}").contains("cannot create"), "{err:#}");
        assert_eq!(fs::read(&target).unwrap(), b"precious");
        assert!(!path.exists());
    }
}
