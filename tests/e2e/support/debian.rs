//! The Debian packages of the programs a test runs (nginx, curl, openssl, systemd's tools), installed with
//! apt-get when the program is missing, one install at a time, as the PostgreSQL test installs its server.

use std::path::Path;
use std::process::Command;
use std::sync::Mutex;

/// Installs are serialised: apt takes a lock anyway, and a second test should wait for the first install.
static INSTALL: Mutex<()> = Mutex::new(());

/// Makes sure `program` (a full path) exists, installing `package` when it does not; returns `program`.
pub(crate) fn installed<'a>(program: &'a str, package: &str) -> &'a str {
    let _installing = INSTALL.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if Path::new(program).is_file() {
        return program;
    }
    if !apt_install(package) {
        let update = Command::new("apt-get").args(["update"]).status().expect("run apt-get update");
        assert!(update.success(), "apt-get update failed ({update})");
        assert!(apt_install(package), "apt-get install -y {package} failed");
    }
    assert!(Path::new(program).is_file(), "the {package} package installs {program}");
    program
}

fn apt_install(package: &str) -> bool {
    Command::new("apt-get")
        .args(["install", "-y", "--no-install-recommends", package])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .is_ok_and(|status| status.success())
}
