//! Builds the sample guests in `guest-apps/` for `wasm32-wasip2` (a nested cargo build into a target directory
//! of its own, the way wasmtime builds its test programs), and tells the host crate where each component is:
//! `WASMCORN_GUEST_<NAME>` holds its path. The binary embeds them as `sample:NAME`; the end-to-end tests use the
//! same files. The target comes with the toolchain: `rust-toolchain.toml` names it, and rustup installs it with
//! the toolchain; when it is missing all the same (a toolchain installed before), the build asks rustup to add it.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

/// `wasmcorn:app` guests, then standard `wasi:http/proxy` components (`proxy-*`).
const GUESTS: &[&str] = &[
    "hello",
    "echo",
    "workload",
    "misbehave",
    "misbehave-small",
    "returning",
    "proxy-hello",
    "proxy-echo",
    "proxy-fetch",
    "proxy-misbehave",
    "proxy-unlinkable",
];
const TARGET: &str = "wasm32-wasip2";

fn main() -> ExitCode {
    order_hot_functions();
    match build_guests() {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn build_guests() -> Result<(), String> {
    let manifest_dir = PathBuf::from(env("CARGO_MANIFEST_DIR")?);
    let root = manifest_dir.parent().ok_or("host/ has no parent folder")?;
    let guest_workspace = root.join("guest-apps");
    println!("cargo:rerun-if-changed={}", guest_workspace.display());
    println!("cargo:rerun-if-changed={}", root.join("wit").display());

    check_target_installed()?;

    let target_dir = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir).join("guest-apps"),
        None => root.join("target").join("guest-apps"),
    };
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let mut command = Command::new(cargo);
    command
        .current_dir(&guest_workspace)
        .args(["build", "--release", "--target", TARGET, "--target-dir"])
        .arg(&target_dir);
    // The outer build's settings are for the host, not for wasm: the nested build starts clean.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if name.starts_with("CARGO_") && name != "CARGO_HOME" || name == "RUSTFLAGS" || name == "RUSTC_WRAPPER" {
            command.env_remove(name.as_ref());
        }
    }
    let output = command.output().map_err(|err| format!("cannot run cargo to build the sample guests: {err}"))?;
    if !output.status.success() {
        return Err(format!(
            "building the sample guests in {} failed:\n{}",
            guest_workspace.display(),
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    for guest in GUESTS {
        // cargo names a cdylib after its crate, `-` turned into `_`.
        let file = format!("{}.wasm", guest.replace('-', "_"));
        let path = target_dir.join(TARGET).join("release").join(file);
        if !path.is_file() {
            return Err(format!("the guest build did not produce {}", path.display()));
        }
        println!("cargo:rustc-env=WASMCORN_GUEST_{}={}", guest.to_uppercase().replace('-', "_"), path.display());
    }
    Ok(())
}

/// In optimised builds, asks the linker to lay out side by side the functions a worker runs, listed in
/// `hot-symbols.txt` (written by `bench/hot-symbols.sh`). The kernel maps a program's code 64 KiB around each page
/// a process touches, so hot code scattered over the 16 MB text costs every worker several MiB; gathered, it costs
/// about its own size. Only with LLVM's lld. Symbols the build does not have are skipped, so a stale list
/// degrades to the linker's own layout, never to a failed link.
fn order_hot_functions() {
    let list = Path::new(env!("CARGO_MANIFEST_DIR")).join("hot-symbols.txt");
    println!("cargo:rerun-if-changed={}", list.display());
    let optimised = std::env::var("PROFILE").as_deref() == Ok("release");
    // The workspace's rust-version (1.95) links x86_64 Linux with lld unless a linker is configured.
    let default_lld = std::env::var("TARGET").as_deref() == Ok("x86_64-unknown-linux-gnu")
        && std::env::var_os("RUSTC_LINKER").is_none()
        && !std::env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default().contains("link");
    if optimised && default_lld && list.is_file() {
        println!("cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={}", list.display());
        println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
    }
}

/// Makes sure the toolchain has the wasm32-wasip2 standard library. rustup adds the targets of
/// `rust-toolchain.toml` when it installs that toolchain, but not to one installed before (a machine's image
/// may hold it already), nor to a toolchain chosen over the file (`cargo +nightly`, `RUSTUP_TOOLCHAIN`): then the
/// build asks rustup to add it, as the first `cargo` command would have, and stops with the command to run only
/// when that fails.
fn check_target_installed() -> Result<(), String> {
    if target_installed()? {
        return Ok(());
    }
    let mut rustup = Command::new("rustup");
    rustup.args(["target", "add", TARGET]);
    if let Ok(toolchain) = std::env::var("RUSTUP_TOOLCHAIN") {
        rustup.args(["--toolchain", &toolchain]);
    }
    let added = rustup.status().is_ok_and(|status| status.success());
    if added && target_installed()? {
        return Ok(());
    }
    Err(format!(
        "the Rust toolchain has no {TARGET} target, which the sample guests are built for, and rustup could not add \
         it: run `rustup target add {TARGET}`"
    ))
}

/// Whether the sysroot of the rustc cargo uses holds the target's standard library.
fn target_installed() -> Result<bool, String> {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_string());
    let sysroot =
        Command::new(rustc).args(["--print", "sysroot"]).output().map_err(|err| format!("cannot run rustc: {err}"))?;
    let sysroot = String::from_utf8_lossy(&sysroot.stdout).trim().to_string();
    Ok(Path::new(&sysroot).join("lib/rustlib").join(TARGET).is_dir())
}

fn env(name: &str) -> Result<String, String> {
    std::env::var(name).map_err(|_| format!("cargo did not set {name}"))
}
