//! The outside tools the study drives: `hey` (load), a TrueType font (chart text), PostgreSQL (the IO of the
//! Gunicorn app) from Debian's packages, and Gunicorn with psycopg2 from PyPI in a virtual environment the study
//! creates once and reuses.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

/// The font plotters measures the chart's text with, from Debian's `fonts-dejavu-core`.
pub(crate) const FONT_FILE: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

/// Where Debian installs PostgreSQL's server binaries: `/usr/lib/postgresql/VERSION/bin`.
const POSTGRES_ROOT: &str = "/usr/lib/postgresql";

/// Makes sure `hey` and the chart font are there, installing the Debian packages that are missing.
pub(crate) fn ensure_load_and_font() -> anyhow::Result<()> {
    let mut missing = Vec::new();
    if !on_path("hey") {
        missing.push("hey");
    }
    if !Path::new(FONT_FILE).is_file() {
        missing.push("fonts-dejavu-core");
    }
    apt_install(&missing)
}

/// The folder holding `initdb` and `postgres`, installing Debian's `postgresql` if need be.
pub(crate) fn ensure_postgres() -> anyhow::Result<PathBuf> {
    if let Some(bin) = postgres_bin() {
        return Ok(bin);
    }
    apt_install(&["postgresql"])?;
    postgres_bin().with_context(|| format!("no PostgreSQL server under {POSTGRES_ROOT} after installing it"))
}

fn postgres_bin() -> Option<PathBuf> {
    let versions = std::fs::read_dir(POSTGRES_ROOT).ok()?;
    let mut bins: Vec<(u32, PathBuf)> = versions
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| {
            let version = entry.file_name().to_string_lossy().parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            bin.join("postgres").is_file().then_some((version, bin))
        })
        .collect();
    bins.sort();
    bins.pop().map(|(_, bin)| bin)
}

/// A virtual environment with Gunicorn and psycopg2, created at `venv` the first time. Returns its `gunicorn`.
pub(crate) fn ensure_gunicorn(venv: &Path) -> anyhow::Result<PathBuf> {
    let gunicorn = venv.join("bin").join("gunicorn");
    let python = venv.join("bin").join("python");
    let ready = gunicorn.is_file()
        && Command::new(&python).args(["-c", "import psycopg2"]).output().is_ok_and(|out| out.status.success());
    if ready {
        return Ok(gunicorn);
    }
    eprintln!("study: creating {} with gunicorn and psycopg2-binary from PyPI", venv.display());
    run(Command::new("python3").args(["-m", "venv"]).arg(venv), "python3 -m venv")?;
    run(
        Command::new(venv.join("bin").join("pip")).args(["install", "--quiet", "gunicorn", "psycopg2-binary"]),
        "pip install gunicorn psycopg2-binary",
    )?;
    Ok(gunicorn)
}

/// The installed Gunicorn's version, for the report.
pub(crate) fn gunicorn_version(gunicorn: &Path) -> String {
    Command::new(gunicorn)
        .arg("--version")
        .output()
        .ok()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .filter(|text| !text.is_empty())
        .unwrap_or_else(|| "gunicorn (unknown version)".to_string())
}

/// Whether this Gunicorn has the control socket of recent versions, which `--no-control-socket` turns off.
pub(crate) fn gunicorn_has_control_socket(gunicorn: &Path) -> bool {
    Command::new(gunicorn)
        .arg("--help")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).contains("--no-control-socket"))
}

fn apt_install(packages: &[&str]) -> anyhow::Result<()> {
    if packages.is_empty() {
        return Ok(());
    }
    eprintln!("study: installing {} with apt-get", packages.join(" "));
    run(Command::new("apt-get").args(["update", "-qq"]), "apt-get update")?;
    run(
        Command::new("apt-get").args(["install", "-y", "-qq"]).args(packages).env("DEBIAN_FRONTEND", "noninteractive"),
        "apt-get install",
    )
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

/// Runs a setup command to completion; its output goes to the terminal.
pub(crate) fn run(command: &mut Command, what: &str) -> anyhow::Result<()> {
    let status = command.status().with_context(|| format!("cannot run {what}"))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}
