//! The compile step: turns an app's component into a precompiled artefact in a content-addressed cache, so that
//! every worker maps the same file (its code pages are then shared through the page cache). It compiles with
//! parallel compilation and so must run in a short-lived process of its own, never in the arbiter or a worker.

use std::fs;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

use super::runtime::{engine_config, instance_pre};
use super::{App, AppSource, samples};

/// A compiled app, ready for workers to load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artefact {
    pub path: PathBuf,
}

/// Compiles the app for a pool whose apps use at most `max_memory_bytes` (or finds it in the cache), checks
/// that it is a wasmcorn app, and returns the artefact.
pub fn prepare(app: &App, max_memory_bytes: usize, cache_dir: &Path) -> anyhow::Result<Artefact> {
    let wasm = read_source(&app.source)?;
    let engine = Engine::new(&engine_config(max_memory_bytes, true))
        .map_err(anyhow::Error::from)
        .context("cannot create the wasm engine")?;
    let path = cache_dir.join(format!("{}.cwasm", cache_key(&engine, &wasm)));
    let component = if path.is_file() {
        // SAFETY: files in the cache are written only by `store` below, complete and synced before they are
        // renamed to their content-addressed name; wasmtime checks the header and the engine configuration.
        match unsafe { Component::deserialize_file(&engine, &path) } {
            Ok(component) => component,
            Err(_) => compile_and_store(&engine, &wasm, &path, &app.source)?,
        }
    } else {
        compile_and_store(&engine, &wasm, &path, &app.source)?
    };
    instance_pre::<NoExchange>(&engine, &component).with_context(|| app.source.describe())?;
    Ok(Artefact { path })
}

fn read_source(source: &AppSource) -> anyhow::Result<Vec<u8>> {
    match source {
        AppSource::Sample(name) => match samples::find(name) {
            Some(sample) => Ok(sample.wasm.to_vec()),
            None => bail!("unknown sample:{name}"),
        },
        AppSource::File(path) => fs::read(path).with_context(|| format!("cannot read {}", path.display())),
    }
}

fn compile_and_store(engine: &Engine, wasm: &[u8], path: &Path, source: &AppSource) -> anyhow::Result<Component> {
    if !wasm.starts_with(b"\0asm") {
        bail!("{} is not a WebAssembly component (it does not start with the wasm magic bytes)", source.describe());
    }
    let component = Component::new(engine, wasm)
        .map_err(|err| anyhow::anyhow!("{} is not a valid WebAssembly component: {err}", source.describe()))?;
    let bytes = component.serialize().map_err(anyhow::Error::from).context("cannot serialize the compiled guest")?;
    store(path, &bytes)?;
    Ok(component)
}

/// Writes the artefact to a temporary file, syncs it and renames it into place, so that a reader never sees
/// a partial file.
fn store(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = path.parent().context("the cache path has no folder")?;
    fs::create_dir_all(dir).with_context(|| format!("cannot create the cache folder {}", dir.display()))?;
    let temporary = dir.join(format!(
        ".{}.{}.tmp",
        std::process::id(),
        path.file_name().map_or_else(Default::default, |n| n.to_string_lossy())
    ));
    let mut file =
        fs::File::create(&temporary).with_context(|| format!("cannot write to the cache folder {}", dir.display()))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", temporary.display()))?;
    fs::rename(&temporary, path).with_context(|| format!("cannot rename {} into place", temporary.display()))?;
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
    hasher.0.finalize().iter().map(|byte| format!("{byte:02x}")).collect()
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
struct NoExchange;

impl super::Exchange for NoExchange {
    fn read_body(&mut self, _max: usize) -> Result<Vec<u8>, String> {
        Ok(Vec::new())
    }
    fn start_response(&mut self, _status: &str, _headers: Vec<(String, String)>) -> Result<(), String> {
        Ok(())
    }
    fn write_body(&mut self, _chunk: &[u8]) -> Result<(), String> {
        Ok(())
    }
}
