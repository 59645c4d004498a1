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
use nix::fcntl::OFlag;
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
    // The partial component, named from the output's folder: componentize-py runs there (its current folder is
    // set through the held descriptor), so that it writes where the checks were made, whatever is renamed on the
    // way meanwhile. Every other path it is given is absolute.
    let partial =
        PathBuf::from(beside.path().file_name().context("a temporary folder has a name")?).join("component.wasm");
    let absolute = |path: &Path| std::path::absolute(path).context("cannot find the current folder");
    let mut componentize = command(&absolute(&toolchain.python())?);
    componentize
        .current_dir(output.folder.path())
        .args(["-I", "-c", RUN_COMPONENTIZE_PY, "--quiet", "-d"])
        .arg(absolute(&glue.wit)?)
        .args(["-w", "app", "componentize", GLUE_MODULE, "-p"])
        .arg(absolute(&glue.folder)?);
    for path in python_path {
        componentize.arg("-p").arg(absolute(path)?);
    }
    componentize.arg("-o").arg(&partial).env("VIRTUAL_ENV", absolute(&glue.no_venv)?);
    let result = componentize.output().context("cannot run componentize-py")?;
    if !result.status.success() {
        let text = String::from_utf8_lossy(&result.stderr);
        if let Some(line) = text.lines().find_map(|line| line.split_once(MARKER).map(|(_, rest)| rest.trim())) {
            bail!("{}", crate::log::escape(line));
        }
        bail!("componentize-py failed: {}", last_error_line(&result));
    }
    // Owner-only, as every file wasmcorn makes: the operator widens it if others must read it.
    let cannot_write = || format!("cannot write {}", output.path.display());
    let written = output.folder.open_file(partial.as_os_str(), OFlag::O_RDONLY | OFlag::O_NOFOLLOW, 0);
    written.and_then(|file| file.set_permissions(fs::Permissions::from_mode(0o600))).with_context(cannot_write)?;
    output.folder.rename(&partial, output.name).with_context(cannot_write)?;
    Ok(())
}

/// A new folder in the output's folder (so that the rename stays on one file system), only ours (0700), removed
/// when dropped with whatever is left in it; made and removed through the held folder's descriptor.
fn private_folder_beside(output: &Output<'_>) -> anyhow::Result<TempDir> {
    tempfile::Builder::new().prefix(".wasmcorn-build-").tempdir_in(output.folder.path()).with_context(|| {
        let folder = output.path.parent().filter(|parent| !parent.as_os_str().is_empty());
        format!("cannot write in {}", folder.unwrap_or(Path::new(".")).display())
    })
}
