//! A private PostgreSQL cluster for a test: installed from Debian's packages when missing, created with initdb
//! in a temporary folder, run as the `postgres` user (PostgreSQL refuses root) on a free loopback port, and
//! stopped by pid when the value is dropped.
//!
//! Authentication: `trust` for every user but three, created by `start`: `md5user` (MD5, password `md5secret`),
//! `pwuser` (cleartext, password `pwsecret`) and `scramuser` (SCRAM-SHA-256, password `scramsecret`). Every statement is logged, so a test can see what the
//! server ran.

use std::fs;
use std::os::unix::fs::chown;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::unistd::User;

use super::PATIENCE;

const HBA: &str = "\
local all all trust
host all md5user 127.0.0.1/32 md5
host all pwuser 127.0.0.1/32 password
host all scramuser 127.0.0.1/32 scram-sha-256
host all all 127.0.0.1/32 trust
";

/// Installs are serialised: apt takes a lock anyway, and a second test should wait for the first install.
static INSTALL: Mutex<()> = Mutex::new(());

pub(crate) struct Postgres {
    child: Child,
    pub port: u16,
    folder: tempfile::TempDir,
}

impl Postgres {
    pub(crate) fn start() -> Postgres {
        let bin = installed_bin_dir();
        let user = User::from_name("postgres").ok().flatten().expect("the postgres package creates a postgres user");
        let folder = tempfile::Builder::new().prefix("wasmcorn-pg-").tempdir().expect("a temporary folder");
        chown(folder.path(), Some(user.uid.as_raw()), Some(user.gid.as_raw())).expect("give the folder to postgres");
        let data = folder.path().join("data");
        let initdb = as_postgres(&user, bin.join("initdb"))
            .args(["--auth=trust", "--username=postgres", "--no-sync", "--no-locale", "--encoding=UTF8", "-D"])
            .arg(&data)
            .output()
            .expect("run initdb");
        assert!(initdb.status.success(), "initdb failed: {}", String::from_utf8_lossy(&initdb.stderr));
        fs::write(data.join("pg_hba.conf"), HBA).expect("write pg_hba.conf");
        let port = free_port();
        let log = folder.path().join("server.log");
        let log_file = fs::File::create(&log).expect("create the server log");
        chown(&log, Some(user.uid.as_raw()), Some(user.gid.as_raw())).expect("give the log to postgres");
        let child = as_postgres(&user, bin.join("postgres"))
            .arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string(), "-k"])
            .arg(folder.path())
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "log_statement=all"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("start postgres");
        let mut server = Postgres { child, port, folder };
        server.wait_until_ready();
        server.psql(&bin, "SET password_encryption = 'md5'; CREATE ROLE md5user LOGIN PASSWORD 'md5secret';");
        server.psql(&bin, "CREATE ROLE pwuser LOGIN PASSWORD 'pwsecret';");
        server.psql(&bin, "CREATE ROLE scramuser LOGIN PASSWORD 'scramsecret';");
        server
    }

    /// What the server logged so far (every statement it ran, and every refused login).
    pub(crate) fn log(&self) -> String {
        fs::read_to_string(self.folder.path().join("server.log")).unwrap_or_default()
    }

    fn wait_until_ready(&mut self) {
        let deadline = Instant::now() + PATIENCE;
        while !self.log().contains("database system is ready to accept connections") {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("postgres exited ({status}):\n{}", self.log());
            }
            assert!(Instant::now() < deadline, "postgres did not start:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn psql(&self, bin: &Path, sql: &str) {
        let output = Command::new(bin.join("psql"))
            .args(["-X", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-p"])
            .arg(self.port.to_string())
            .args(["-c", sql])
            .output()
            .expect("run psql");
        assert!(output.status.success(), "psql {sql:?} failed: {}", String::from_utf8_lossy(&output.stderr));
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // SIGINT is PostgreSQL's fast shutdown: it ends the sessions and stops cleanly.
        super::stop_child(&mut self.child, Signal::SIGINT);
        if std::thread::panicking() {
            eprintln!("--- postgres log ---\n{}\n--- end of postgres log ---", self.log());
        }
    }
}

/// Runs the command as the `postgres` user, which PostgreSQL requires when the tests run as root.
fn as_postgres(user: &User, program: PathBuf) -> Command {
    let mut command = Command::new(program);
    if nix::unistd::geteuid().is_root() {
        command.uid(user.uid.as_raw()).gid(user.gid.as_raw());
    }
    command.env("LC_ALL", "C");
    command
}

/// The folder holding initdb and postgres, installing the `postgresql` package first when there is none.
fn installed_bin_dir() -> PathBuf {
    let _installing = INSTALL.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(bin) = find_bin_dir() {
        return bin;
    }
    if !apt_install() {
        let update = Command::new("apt-get").args(["update"]).status().expect("run apt-get update");
        assert!(update.success(), "apt-get update failed ({update})");
        assert!(apt_install(), "apt-get install -y postgresql failed");
    }
    find_bin_dir().expect("the postgresql package installs /usr/lib/postgresql/VERSION/bin")
}

fn apt_install() -> bool {
    Command::new("apt-get")
        .args(["install", "-y", "--no-install-recommends", "postgresql"])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .is_ok_and(|status| status.success())
}

/// The newest `/usr/lib/postgresql/VERSION/bin` that holds initdb.
fn find_bin_dir() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| Some((entry.file_name().to_str()?.parse().ok()?, entry.path().join("bin"))))
        .filter(|(_, bin): &(u32, PathBuf)| bin.join("initdb").is_file())
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("its address").port()
}
