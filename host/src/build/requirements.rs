//! An app's requirements: installed with pip into a cached folder keyed by the requirements file and the
//! interpreter, then packaged from there. Native extension modules (`.so`) cannot run in the component: they are
//! listed (module and the distribution that brought it) and removed, so that an app that needs one fails its
//! build with a line naming the requirement, while a package with a pure-Python fallback keeps working.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::Context;

use super::cache::{Cache, key};
use super::tool::{command, run};
use super::toolchain::{COMPONENTIZE_PY, Toolchain};

/// Where the list of removed extension modules is kept in an entry: `module<TAB>distribution` lines.
const NATIVE_LIST: &str = ".wasmcorn-native-extensions";

pub(super) struct Site {
    pub path: PathBuf,
    /// (module, distribution) for each native extension module that was removed.
    pub native_extensions: Vec<(String, String)>,
}

impl Site {
    /// The cached install of `requirements`, created when missing.
    pub(super) fn ensure(cache: &Cache, toolchain: &Toolchain, requirements: &[u8]) -> anyhow::Result<Site> {
        let digest = key(&[requirements, toolchain.python_version.as_bytes(), COMPONENTIZE_PY.as_bytes()]);
        let name = format!("site-{}", &digest[..24]);
        let path = match cache.entry(&name) {
            Some(path) => path,
            None => {
                let scratch = cache.scratch("site")?;
                let file = scratch.path().join(".requirements.txt");
                fs::write(&file, requirements).context("cannot copy the requirements into the build folder")?;
                let mut pip = command(&toolchain.python());
                pip.args(["-I", "-m", "pip", "install", "--quiet", "--no-compile", "--target"])
                    .arg(scratch.path())
                    .arg("-r")
                    .arg(&file);
                run(pip, "cannot install the requirements")?;
                let native = remove_native_extensions(scratch.path())?;
                let list: String = native.iter().map(|(module, dist)| format!("{module}\t{dist}\n")).collect();
                fs::write(scratch.path().join(NATIVE_LIST), list).context("cannot write the build cache")?;
                cache.commit(scratch, &name)?
            }
        };
        let list = fs::read_to_string(path.join(NATIVE_LIST)).unwrap_or_default();
        let native_extensions = list
            .lines()
            .filter_map(|line| line.split_once('\t'))
            .map(|(module, dist)| (module.to_string(), dist.to_string()))
            .collect();
        Ok(Site { path, native_extensions })
    }
}

/// Removes every shared object under `site` and returns (module, distribution) for each extension module.
fn remove_native_extensions(site: &Path) -> anyhow::Result<Vec<(String, String)>> {
    let owners = record_owners(site);
    let mut found = Vec::new();
    let mut stack = vec![site.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).with_context(|| format!("cannot list {}", dir.display()))? {
            let entry = entry.with_context(|| format!("cannot list {}", dir.display()))?;
            let path = entry.path();
            let kind = entry.file_type().with_context(|| format!("cannot check {}", path.display()))?;
            if kind.is_dir() {
                stack.push(path);
                continue;
            }
            let Ok(relative) = path.strip_prefix(site) else { continue };
            let Some(relative) = relative.to_str() else { continue };
            if !is_shared_object(relative) {
                continue;
            }
            if let Some(module) = module_name(relative) {
                let dist = owners
                    .iter()
                    .find(|(file, _)| file == relative)
                    .map_or_else(|| module.split('.').next().unwrap_or_default().to_string(), |(_, dist)| dist.clone());
                found.push((module, dist));
            }
            fs::remove_file(&path).with_context(|| format!("cannot remove {}", path.display()))?;
        }
    }
    found.sort();
    Ok(found)
}

fn is_shared_object(relative: &str) -> bool {
    let file = relative.rsplit('/').next().unwrap_or(relative);
    file.ends_with(".so") || file.contains(".so.") || file.ends_with(".pyd")
}

/// `pkg/_speedups.cpython-311-x86_64-linux-gnu.so` -> `pkg._speedups`; `None` for a library that is no module.
fn module_name(relative: &str) -> Option<String> {
    let (folder, file) = relative.rsplit_once('/').unwrap_or(("", relative));
    if folder.split('/').any(|part| part.ends_with(".libs") || part.contains('-') || part.contains('.')) {
        return None;
    }
    let stem = file.split('.').next()?;
    if stem.is_empty() || stem.starts_with("lib") && file.contains(".so.") {
        return None;
    }
    Some(if folder.is_empty() { stem.to_string() } else { format!("{}.{stem}", folder.replace('/', ".")) })
}

/// (file, distribution) from each installed distribution's RECORD.
fn record_owners(site: &Path) -> Vec<(String, String)> {
    let mut owners = Vec::new();
    let Ok(entries) = fs::read_dir(site) else { return owners };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(stem) = name.strip_suffix(".dist-info") else { continue };
        let dist = stem.split('-').next().unwrap_or(stem).to_string();
        let Ok(record) = fs::read_to_string(entry.path().join("RECORD")) else { continue };
        for line in record.lines() {
            if let Some(file) = line.split(',').next() {
                owners.push((file.to_string(), dist.clone()));
            }
        }
    }
    owners
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extension_files_name_their_module() {
        assert_eq!(module_name("ujson.cpython-311-x86_64-linux-gnu.so").as_deref(), Some("ujson"));
        assert_eq!(
            module_name("markupsafe/_speedups.cpython-311-x86_64-linux-gnu.so").as_deref(),
            Some("markupsafe._speedups")
        );
        assert_eq!(module_name("numpy.libs/libopenblas-r0.so.0.3"), None);
        assert!(is_shared_object("numpy.libs/libgfortran.so.5"));
        assert!(!is_shared_object("pkg/some.py"));
    }
}
