//! Which wasmcorn guest the study serves: the Rust sample (`sample:workload`, guest-apps/workload) or, with
//! `--guest python`, the study's own Python app (bench/gunicorn/workload.py, the file Gunicorn serves) packaged by
//! `wasmcorn build python`. workload.py reads its settings from the environment when imported, so it is built
//! with `--defer-import`: its code runs at each fresh instance's first request, with the server's `--env`. It is
//! built with pg8000 (bench/gunicorn/sandbox-requirements.txt), through which it does its IO on PostgreSQL when
//! psycopg2 cannot be imported.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, bail};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Guest {
    /// `sample:workload`, the Rust guest embedded in wasmcorn.
    Rust,
    /// bench/gunicorn/workload.py, packaged with `wasmcorn build python`.
    Python,
}

/// What `wasmcorn serve` is given for `guest`; builds the Python component into `out` first.
pub(crate) fn app_for(
    guest: Guest,
    wasmcorn: &Path,
    python_apps: &Path,
    out: &Path,
    cache: &Path,
) -> anyhow::Result<String> {
    match guest {
        Guest::Rust => Ok("sample:workload".to_string()),
        Guest::Python => {
            let component = out.join("workload-python.wasm");
            eprintln!("study: building {} (wasmcorn build python workload:application)", component.display());
            // pg8000, for the IO through PostgreSQL: psycopg2, a C extension, cannot run in the sandbox.
            let requirements = python_apps.join("sandbox-requirements.txt");
            let output = Command::new(wasmcorn)
                .args(["build", "python", "workload:application", "--defer-import", "--src"])
                .arg(python_apps)
                .arg("--requirements")
                .arg(&requirements)
                .arg("-o")
                .arg(&component)
                .arg("--cache-dir")
                .arg(cache)
                .output()
                .context("cannot run wasmcorn build python")?;
            if !output.status.success() {
                bail!("wasmcorn build python failed: {}", String::from_utf8_lossy(&output.stderr).trim());
            }
            component.to_str().map(str::to_string).context("the study's output folder is not UTF-8")
        }
    }
}

/// How the report names the app wasmcorn serves.
pub(crate) fn describe(guest: Guest) -> &'static str {
    match guest {
        Guest::Rust => "`sample:workload` (guest-apps/workload)",
        Guest::Python => "`bench/gunicorn/workload.py` (`wasmcorn build python --defer-import`)",
    }
}
