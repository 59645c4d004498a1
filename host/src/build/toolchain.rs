//! The build toolchain: a virtual environment, made with the chosen Python, holding a pinned componentize-py
//! (which bundles the CPython that runs in the component) and pip. It is cached, keyed by the pin and the
//! interpreter, and never packaged into an app.

use std::path::{Path, PathBuf};

use anyhow::bail;

use super::cache::{Cache, key};
use super::tool::{command, run};

/// The componentize-py release the build uses (its CPython is the one apps run on).
pub(super) const COMPONENTIZE_PY: &str = "componentize-py==0.25.1";

pub(super) struct Toolchain {
    /// The virtual environment's folder.
    pub venv: PathBuf,
    /// The interpreter's `major.minor.micro`.
    pub python_version: String,
}

impl Toolchain {
    /// The cached toolchain for `python`, created when missing.
    pub(super) fn ensure(cache: &Cache, python: &Path) -> anyhow::Result<Toolchain> {
        let mut probe = command(python);
        probe.args(["-I", "-c", "import sys; print('%d.%d.%d' % sys.version_info[:3]); print(sys.executable)"]);
        let output = run(probe, &format!("cannot run the Python interpreter {}", python.display()))?;
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        let mut lines = text.lines();
        let (Some(version), Some(executable)) = (lines.next(), lines.next()) else {
            bail!("{} did not say its version", python.display());
        };
        let name = format!(
            "toolchain-{}",
            &key(&[COMPONENTIZE_PY.as_bytes(), version.as_bytes(), executable.as_bytes()])[..24]
        );
        let toolchain = |venv| Toolchain { venv, python_version: version.to_string() };
        if let Some(venv) = cache.entry(&name) {
            return Ok(toolchain(venv));
        }
        super::say(format_args!("Installing {COMPONENTIZE_PY} into the build cache (once)"));
        let scratch = cache.scratch("toolchain")?;
        let mut venv = command(python);
        venv.args(["-I", "-m", "venv"]).arg(scratch.path());
        run(
            venv,
            &format!(
                "cannot create a virtual environment with {} (on Debian: apt-get install python3-venv)",
                python.display()
            ),
        )?;
        let mut pip = command(&scratch.path().join("bin/pip"));
        pip.args(["install", "--quiet", COMPONENTIZE_PY]);
        run(pip, &format!("cannot install {COMPONENTIZE_PY}"))?;
        // The entry's final place: scripts in a venv name their interpreter by absolute path, so the venv is
        // used through its interpreter (`bin/python -m ...`), which works from any folder.
        let venv = cache.commit(scratch, &name)?;
        Ok(toolchain(venv))
    }

    /// The venv's interpreter.
    pub(super) fn python(&self) -> PathBuf {
        self.venv.join("bin/python")
    }
}
