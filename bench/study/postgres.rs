//! A private PostgreSQL cluster for the IO part of the workload (`SELECT pg_sleep(x)`), as in the original study:
//! `initdb` in a temporary folder, trust authentication, the server on 127.0.0.1 at a free port, run as the
//! `postgres` user when the study runs as root (PostgreSQL refuses root), stopped by pid at the end.

use std::fs::{self, File};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use nix::sys::signal::Signal;

use crate::process::{Spawned, check_interrupt};

/// How long the server may take to accept connections.
const START_LIMIT: Duration = Duration::from_secs(60);

/// A running private cluster. Dropping it stops the server and removes its folder.
pub(crate) struct Postgres {
    pub port: u16,
    server: Spawned,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Postgres {
    /// Creates the cluster and starts its server. `bin` holds `initdb` and `postgres`.
    pub(crate) fn start(bin: &Path) -> anyhow::Result<Postgres> {
        let dir = tempfile::Builder::new().prefix("wasmcorn-study-pg-").tempdir().context("cannot make a temp dir")?;
        let owner = server_user()?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))
                .with_context(|| format!("cannot hand {} to the postgres user", dir.path().display()))?;
        }
        let data = dir.path().join("data");
        let init_log = dir.path().join("initdb.log");
        let mut initdb = as_user(Command::new(bin.join("initdb")), owner, dir.path());
        initdb
            .args(["--auth=trust", "--username=postgres", "--encoding=UTF8", "--no-sync", "--pgdata"])
            .arg(&data)
            .stdout(File::create(&init_log).context("cannot create the initdb log")?)
            .stderr(Stdio::inherit());
        let mut init = Spawned::start(initdb, "initdb", Signal::SIGTERM, Duration::from_secs(5))?;
        if !init.wait_bounded(Duration::from_secs(120))? {
            bail!("initdb failed (its output: {})", init_log.display());
        }

        let port = free_port()?;
        let log = dir.path().join("postgres.log");
        let log_file = File::create(&log).context("cannot create the PostgreSQL log")?;
        let mut command = as_user(Command::new(bin.join("postgres")), owner, dir.path());
        command
            .arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string(), "-k"])
            .arg(dir.path())
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "log_connections=on", "-c", "fsync=off"])
            .stdout(log_file.try_clone().context("cannot share the PostgreSQL log")?)
            .stderr(log_file);
        // SIGINT is PostgreSQL's fast shutdown.
        let mut server = Spawned::start(command, "postgres", Signal::SIGINT, Duration::from_secs(15))?;
        let deadline = Instant::now() + START_LIMIT;
        loop {
            if let Some(status) = server.exited() {
                bail!(
                    "PostgreSQL exited during start-up ({status}):\n{}",
                    fs::read_to_string(&log).unwrap_or_default()
                );
            }
            if fs::read_to_string(&log).is_ok_and(|text| text.contains("ready to accept connections")) {
                break;
            }
            if Instant::now() > deadline {
                bail!("PostgreSQL did not accept connections within {START_LIMIT:?} (log: {})", log.display());
            }
            check_interrupt()?;
            sleep(Duration::from_millis(100));
        }
        Ok(Postgres { port, server, log, _dir: dir })
    }

    /// The URL both apps connect with.
    pub(crate) fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// How many connections the server has received so far (it logs each one).
    pub(crate) fn connections_received(&self) -> usize {
        fs::read_to_string(&self.log).map_or(0, |text| text.matches("connection received").count())
    }

    pub(crate) fn pid(&self) -> i32 {
        self.server.pid()
    }
}

/// `Some((uid, gid))` of the `postgres` user when the study runs as root; `None` to run as ourselves.
fn server_user() -> anyhow::Result<Option<(u32, u32)>> {
    let me = fs::metadata("/proc/self").context("cannot read /proc/self")?.uid();
    if me != 0 {
        return Ok(None);
    }
    let passwd = fs::read_to_string("/etc/passwd").context("cannot read /etc/passwd")?;
    let entry = passwd
        .lines()
        .find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            match fields.as_slice() {
                ["postgres", _, uid, gid, ..] => Some((uid.parse().ok()?, gid.parse().ok()?)),
                _ => None,
            }
        })
        .context("no postgres user in /etc/passwd (Debian's postgresql package creates it)")?;
    Ok(Some(entry))
}

fn as_user(mut command: Command, owner: Option<(u32, u32)>, cwd: &Path) -> Command {
    if let Some((uid, gid)) = owner {
        command.uid(uid).gid(gid).env("HOME", cwd);
    }
    command.current_dir(cwd).stdin(Stdio::null());
    command
}

/// A port on 127.0.0.1 that nothing listens on right now.
pub(crate) fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("cannot find a free port")?;
    Ok(listener.local_addr().context("cannot read the free port")?.port())
}
