//! Runs componentize-py: it imports the generated module (and so the app, and the warm-up requests) inside the
//! CPython it bundles, snapshots the initialised interpreter, and writes the component. An error the SDK's loader
//! reports is the line after its marker; any other failure is componentize-py's last error line. It writes into
//! a new owner-only folder beside the output, named at random, so that no name someone else could plant in a
//! shared folder (a symlink at `OUTPUT.partial`) is ever written through; the finished file is renamed into place.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use tempfile::TempDir;

use super::glue::{GLUE_MODULE, Glue};
use super::tool::{command, last_error_line};
use super::toolchain::Toolchain;
use crate::planted::Folder;

/// What the SDK's loader prints before a build error (see sdk/python/wasmcorn_wsgi/loader.py).
const MARKER: &str = "wasmcorn-build-error:";

const RUN_COMPONENTIZE_PY: &str =
    "import sys; from componentize_py import script; sys.argv[0] = 'componentize-py'; sys.exit(script())";

/// Where the component goes: `name` in `folder`, held since it was checked; `path` as the operator gave it.
pub(super) struct Output<'a> {
    pub(super) folder: &'a Folder,
    pub(super) name: &'a OsStr,
    pub(super) path: &'a Path,
}

/// Packages the app into `output` (written whole or not at all).
pub(super) fn run(
    toolchain: &Toolchain,
    glue: &Glue,
    python_path: &[PathBuf],
    output: Output<'_>,
) -> anyhow::Result<()> {
    let beside = private_folder_beside(&output)?;
    let partial = beside.path().join("component.wasm");
    let mut componentize = command(&toolchain.python());
    componentize
        .args(["-I", "-c", RUN_COMPONENTIZE_PY, "--quiet", "-d"])
        .arg(&glue.wit)
        .args(["-w", "app", "componentize", GLUE_MODULE, "-p"])
        .arg(&glue.folder);
    for path in python_path {
        componentize.arg("-p").arg(path);
    }
    componentize.arg("-o").arg(&partial).env("VIRTUAL_ENV", &glue.no_venv);
    let result = componentize.output().context("cannot run componentize-py")?;
    if !result.status.success() {
        let text = String::from_utf8_lossy(&result.stderr);
        if let Some(line) = text.lines().find_map(|line| line.split_once(MARKER).map(|(_, rest)| rest.trim())) {
            bail!("{}", crate::log::escape(line));
        }
        bail!("componentize-py failed: {}", last_error_line(&result));
    }
    // Owner-only, as every file wasmcorn makes: the operator widens it if others must read it.
    fs::set_permissions(&partial, fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot write {}", output.path.display()))?;
    fs::rename(&partial, output.folder.entry(output.name))
        .with_context(|| format!("cannot write {}", output.path.display()))?;
    Ok(())
}

/// A new folder in the output's folder (so that the rename stays on one file system), only ours (0700), removed
/// when dropped with whatever is left in it. componentize-py, a child process, reaches it through the held
/// folder's descriptor too.
fn private_folder_beside(output: &Output<'_>) -> anyhow::Result<TempDir> {
    tempfile::Builder::new().prefix(".wasmcorn-build-").tempdir_in(output.folder.path()).with_context(|| {
        let folder = output.path.parent().filter(|parent| !parent.as_os_str().is_empty());
        format!("cannot write in {}", folder.unwrap_or(Path::new(".")).display())
    })
}
