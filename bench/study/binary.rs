//! The wasmcorn binary the study measures: the one given with `--wasmcorn`, or else the one `cargo build -p
//! wasmcorn` makes with the profile this bench was built with, built now. Under `cargo bench` that is `cargo build
//! --release`'s `target/release/wasmcorn`, the binary as it is deployed (and the one `host/hot-symbols.txt` is
//! written for). The server is another package of the workspace, so its binary is not among this bench's
//! artefacts: the study asks cargo for it and takes its path from cargo's JSON messages.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, bail};

/// Builds the server's binary with this bench's profile and returns its path.
pub(crate) fn build(workspace: &Path) -> anyhow::Result<PathBuf> {
    let profile = own_profile()?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!("study: building the server (cargo build --profile {profile} -p wasmcorn)");
    let output = Command::new(cargo)
        .current_dir(workspace)
        .args(["build", "--profile", &profile, "-p", "wasmcorn", "--bin", "wasmcorn"])
        .args(["--message-format", "json-render-diagnostics"])
        .stderr(Stdio::inherit())
        .output()
        .context("cannot run cargo to build the server")?;
    if !output.status.success() {
        bail!("cargo build --profile {profile} -p wasmcorn failed ({})", output.status);
    }
    executable(&String::from_utf8_lossy(&output.stdout))
        .context("cargo built the server but named no wasmcorn executable (pass --wasmcorn PATH)")
}

/// The cargo profile this bench was built with, from the folder it runs in: `<target>/<folder>/deps/`, where the
/// folder is `debug` for the dev profile and the profile's name otherwise (`release` for `cargo bench`).
fn own_profile() -> anyhow::Result<String> {
    let exe = std::env::current_exe().context("cannot find the study's own executable")?;
    let folder = exe
        .parent()
        .and_then(Path::parent)
        .and_then(Path::file_name)
        .and_then(|name| name.to_str())
        .with_context(|| format!("cannot tell the cargo profile from {}", exe.display()))?;
    Ok(if folder == "debug" { "dev".to_string() } else { folder.to_string() })
}

/// The `executable` of the wasmcorn binary in cargo's `--message-format json` output.
fn executable(messages: &str) -> Option<PathBuf> {
    messages.lines().filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok()).find_map(|message| {
        let target = message.get("target")?;
        let is_server = message.get("reason")?.as_str()? == "compiler-artifact"
            && target.get("name")?.as_str()? == "wasmcorn"
            && target.get("kind")?.as_array()?.iter().any(|kind| kind.as_str() == Some("bin"));
        is_server.then(|| message.get("executable")?.as_str().map(PathBuf::from)).flatten()
    })
}
