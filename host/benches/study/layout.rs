//! Whether the measured binary has the code layout the release profile asks for: how many of the functions in
//! `host/hot-symbols.txt` (the ones a worker runs, which the linker places side by side) it contains. A list
//! written for other versions of Rust or of the dependencies matches few of them: the workers then map several
//! MiB more code, and the report says so rather than showing that memory as wasmcorn's own.

use std::collections::HashSet;
use std::path::Path;
use std::process::Command;

/// How many of the listed functions the binary defines, out of how many are listed.
#[derive(Debug, Clone, Copy)]
pub struct HotLayout {
    pub found: usize,
    pub listed: usize,
}

impl HotLayout {
    /// Reads the list and the binary's symbols (`nm`); `None` when either cannot be read.
    pub fn of(binary: &Path, list: &Path) -> Option<HotLayout> {
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
        Some(HotLayout { found, listed: listed.len() })
    }

    /// At least nine in ten of the listed functions are there.
    pub fn holds(&self) -> bool {
        self.found * 10 >= self.listed * 9
    }
}
