//! Runs componentize-py: it imports the generated module (and so the app, and the warm-up requests) inside the
//! CPython it bundles, snapshots the initialised interpreter, and writes the component. An error the SDK's loader
//! reports is the line after its marker; any other failure is componentize-py's last error line.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use super::glue::{GLUE_MODULE, Glue};
use super::tool::{command, last_error_line};
use super::toolchain::Toolchain;

/// What the SDK's loader prints before a build error (see sdk/python/wasmcorn_wsgi/loader.py).
const MARKER: &str = "wasmcorn-build-error:";

const RUN_COMPONENTIZE_PY: &str =
    "import sys; from componentize_py import script; sys.argv[0] = 'componentize-py'; sys.exit(script())";

/// Packages the app into `output` (written whole or not at all).
pub(super) fn run(toolchain: &Toolchain, glue: &Glue, python_path: &[PathBuf], output: &Path) -> anyhow::Result<()> {
    let partial = partial_name(output);
    let mut componentize = command(&toolchain.python());
    componentize
        .args(["-c", RUN_COMPONENTIZE_PY, "--quiet", "-d"])
        .arg(&glue.wit)
        .args(["-w", "app", "componentize", GLUE_MODULE, "-p"])
        .arg(&glue.folder);
    for path in python_path {
        componentize.arg("-p").arg(path);
    }
    componentize.arg("-o").arg(&partial).env("VIRTUAL_ENV", &glue.no_venv);
    let result = componentize.output().context("cannot run componentize-py")?;
    if !result.status.success() {
        let _ = fs::remove_file(&partial);
        let text = String::from_utf8_lossy(&result.stderr);
        if let Some(line) = text.lines().find_map(|line| line.split_once(MARKER).map(|(_, rest)| rest.trim())) {
            bail!("{}", crate::log::escape(line));
        }
        bail!("componentize-py failed: {}", last_error_line(&result));
    }
    fs::rename(&partial, output).with_context(|| format!("cannot write {}", output.display()))?;
    Ok(())
}

/// `output` with `.partial` appended, beside it.
fn partial_name(output: &Path) -> PathBuf {
    let mut name = output.as_os_str().to_owned();
    name.push(".partial");
    PathBuf::from(name)
}
