//! Whether the measured binary has the code layout the release profile asks for: whether `host/hot-symbols.txt`
//! (the functions a worker runs, which the linker places side by side) was written for this very build. The
//! list names functions with a hash of their crate and of everything it depends on, as `cargo build --release`
//! names them (the binary the study builds and measures); it was written for this build when it lists this
//! binary's `wasmcorn::worker::run`. A list written for other versions of Rust or of the dependencies matches few names:
//! the workers then map several MiB more code, and the report says so rather than showing that memory as
//! wasmcorn's own.

use std::collections::HashSet;
use std::path::Path;
use std::process::Command;

/// How many of the listed functions the binary defines, out of how many are listed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HotLayout {
    pub found: usize,
    pub listed: usize,
    /// The list names this binary's `wasmcorn::worker::run`: it was written for this build.
    pub for_this_build: bool,
}

/// `wasmcorn::worker::run` as a mangled name, up to its hash.
const WORKER_ENTRY: &str = "_ZN8wasmcorn6worker3run17h";

impl HotLayout {
    /// Reads the list and the binary's symbols (`nm`); `None` when either cannot be read.
    pub(crate) fn of(binary: &Path, list: &Path) -> Option<HotLayout> {
        let list = std::fs::read_to_string(list).ok()?;
        let output = Command::new("nm").arg("--defined-only").arg(binary).output().ok()?;
        if !output.status.success() {
            return None;
        }
        let symbols = String::from_utf8_lossy(&output.stdout);
        let defined: HashSet<&str> = symbols.lines().filter_map(|line| line.split_whitespace().nth(2)).collect();
        let listed: Vec<&str> =
            list.lines().map(str::trim).filter(|line| !line.is_empty() && !line.starts_with('#')).collect();
        let found = listed.iter().filter(|name| defined.contains(*name)).count();
        let for_this_build =
            defined.iter().filter(|name| name.starts_with(WORKER_ENTRY)).any(|entry| listed.contains(entry));
        Some(HotLayout { found, listed: listed.len(), for_this_build })
    }
}
