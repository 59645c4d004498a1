//! Runs the build's tools (python, pip, componentize-py) with a clean Python environment, and turns a failure
//! into one line: the tool's own last `ERROR:` line when it has one. The interpreter always runs isolated (`-I`):
//! with `-m` or `-c` Python otherwise puts the current folder first on its module path, and a `venv.py`,
//! `pip.py` or `componentize_py.py` planted in the folder the build runs from would run as the builder.

use std::path::Path;
use std::process::{Command, Output};

use anyhow::{Context, bail};

/// Environment variables that would let the caller's Python setup leak into the build.
const PYTHON_VARIABLES: [&str; 6] =
    ["PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONUSERBASE", "PIP_TARGET", "PIP_PREFIX"];

/// A command for `program` without the caller's Python environment variables.
pub(super) fn command(program: &Path) -> Command {
    let mut command = Command::new(program);
    for name in PYTHON_VARIABLES {
        command.env_remove(name);
    }
    command.env("PIP_DISABLE_PIP_VERSION_CHECK", "1").env("PIP_NO_INPUT", "1");
    command
}

/// Runs `command`; on failure, `what` and the tool's last error line.
pub(super) fn run(mut command: Command, what: &str) -> anyhow::Result<Output> {
    let output = command.output().with_context(|| format!("{what}: cannot run {:?}", command.get_program()))?;
    if !output.status.success() {
        bail!("{what}: {}", last_error_line(&output));
    }
    Ok(output)
}

/// The last line starting with `ERROR:` (pip's way), else the last non-empty line of stderr, else of stdout.
pub(super) fn last_error_line(output: &Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let lines = || stderr.lines().chain(stdout.lines()).map(str::trim).filter(|line| !line.is_empty());
    let line = lines()
        .rev()
        .find_map(|line| line.strip_prefix("ERROR:"))
        .map(str::trim)
        .or_else(|| stderr.lines().map(str::trim).rfind(|line| !line.is_empty()))
        .or_else(|| stdout.lines().map(str::trim).rfind(|line| !line.is_empty()))
        .unwrap_or("it failed and said nothing");
    crate::log::escape(line).to_string()
}
