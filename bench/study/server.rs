//! Starts one server under test (the real `wasmcorn serve sample:workload` binary, or Gunicorn's sync workers
//! with the study's Python app) on `127.0.0.1:0`, reads its port and worker pids from its log (both log
//! `Listening at: http://HOST:PORT (PID)` and `Booting worker with pid: N`), and stops it by pid.

use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use nix::sys::signal::Signal;
use serde::Serialize;

use crate::process::{Spawned, check_interrupt, reap_orphan};

/// How long a server may take to listen and boot all its workers (the first wasmcorn start compiles the guest).
const START_LIMIT: Duration = Duration::from_secs(120);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum ServerKind {
    Wasmcorn,
    Gunicorn,
}

impl fmt::Display for ServerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ServerKind::Wasmcorn => "wasmcorn",
            ServerKind::Gunicorn => "gunicorn",
        })
    }
}

/// Everything needed to start either server.
#[derive(Debug, Clone)]
pub(crate) struct Launchers {
    pub wasmcorn: PathBuf,
    /// The app wasmcorn serves: `sample:workload`, or the Python component (`--guest python`).
    pub wasmcorn_app: String,
    /// The `gunicorn` of the study's venv, when Gunicorn takes part.
    pub gunicorn: Option<PathBuf>,
    pub gunicorn_control_socket: bool,
    /// The folder holding the study's Python apps (`bench/gunicorn`).
    pub python_apps: PathBuf,
    /// wasmcorn's compile cache for this study.
    pub cache_dir: PathBuf,
    /// Where server logs go.
    pub log_dir: PathBuf,
}

/// One server configuration to start.
#[derive(Debug, Clone)]
pub(crate) struct ServerSpec {
    pub kind: ServerKind,
    pub workers: usize,
    /// The app's environment (IO_BOUND, CPU_BOUND, ...).
    pub env: Vec<(String, String)>,
    /// Extra wasmcorn flags (`--allow-net HOST:PORT`).
    pub extra_args: Vec<String>,
    /// The longest a request is expected to take, to size timeouts.
    pub request_seconds: f64,
    /// Names the log file.
    pub label: String,
}

/// A running server; dropping it stops the arbiter by pid and then any worker that outlived it.
pub(crate) struct Server {
    pub kind: ServerKind,
    pub port: u16,
    arbiter: Spawned,
    log: PathBuf,
    seen_workers: Vec<i32>,
}

impl Server {
    pub(crate) fn start(spec: &ServerSpec, launchers: &Launchers) -> anyhow::Result<Server> {
        fs::create_dir_all(&launchers.log_dir)
            .with_context(|| format!("cannot create {}", launchers.log_dir.display()))?;
        let log = launchers.log_dir.join(format!("{}-{}.log", spec.kind, spec.label));
        let log_file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(&log)
            .with_context(|| format!("cannot create {}", log.display()))?;
        let mut command = command_for(spec, launchers)?;
        command
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().context("cannot share the log file")?)
            .stderr(log_file);
        // SIGINT is a quick stop for both servers: nothing is in flight when the study stops one.
        let arbiter = Spawned::start(command, &spec.kind.to_string(), Signal::SIGINT, Duration::from_secs(15))?;
        let mut server = Server { kind: spec.kind, port: 0, arbiter, log, seen_workers: Vec::new() };
        server.wait_until_ready(spec.workers)?;
        Ok(server)
    }

    fn wait_until_ready(&mut self, workers: usize) -> anyhow::Result<()> {
        let deadline = Instant::now() + START_LIMIT;
        loop {
            if let Some(status) = self.arbiter.exited() {
                bail!("{} exited during start-up ({status}); its log:\n{}", self.kind, self.log_text());
            }
            let text = self.log_text();
            if self.port == 0 {
                self.port = listening_port(&text).unwrap_or(0);
            }
            if self.port != 0 && self.workers().len() >= workers {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "{} did not listen with {workers} workers within {START_LIMIT:?} (log: {})",
                    self.kind,
                    self.log.display()
                );
            }
            check_interrupt()?;
            sleep(Duration::from_millis(50));
        }
    }

    pub(crate) fn arbiter_pid(&self) -> i32 {
        self.arbiter.pid()
    }

    /// The live workers: pids announced as booted that are still children of the arbiter.
    pub(crate) fn workers(&mut self) -> Vec<i32> {
        let arbiter = self.arbiter.pid();
        let booted = booted_workers(&self.log_text());
        for pid in &booted {
            if !self.seen_workers.contains(pid) {
                self.seen_workers.push(*pid);
            }
        }
        booted.into_iter().filter(|pid| parent_of(*pid) == Some(arbiter)).collect()
    }

    pub(crate) fn url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }

    pub(crate) fn log_path(&self) -> &Path {
        &self.log
    }

    fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Stops the arbiter, then any worker still there.
    pub(crate) fn stop(mut self) {
        self.stop_all();
    }

    fn stop_all(&mut self) {
        self.workers();
        self.arbiter.stop();
        for pid in std::mem::take(&mut self.seen_workers) {
            reap_orphan(pid, Duration::from_secs(5));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop_all();
    }
}

fn command_for(spec: &ServerSpec, launchers: &Launchers) -> anyhow::Result<Command> {
    let timeout = (spec.request_seconds * 10.0).max(30.0).ceil();
    match spec.kind {
        ServerKind::Wasmcorn => {
            let mut command = Command::new(&launchers.wasmcorn);
            command
                .args([
                    "serve",
                    &launchers.wasmcorn_app,
                    "--bind",
                    "127.0.0.1:0",
                    "--workers",
                    &spec.workers.to_string(),
                ])
                .args(["--guest-timeout", &timeout.to_string(), "--cache-dir"])
                .arg(&launchers.cache_dir);
            for (name, value) in &spec.env {
                command.arg("--env").arg(format!("{name}={value}"));
            }
            command.args(&spec.extra_args);
            Ok(command)
        }
        ServerKind::Gunicorn => {
            let gunicorn = launchers.gunicorn.as_ref().context("Gunicorn is not set up")?;
            let mut command = Command::new(gunicorn);
            command
                .arg("--chdir")
                .arg(&launchers.python_apps)
                .args(["--bind", "127.0.0.1:0", "--workers", &spec.workers.to_string(), "--worker-class", "sync"])
                .args(["--timeout", &timeout.to_string()]);
            if launchers.gunicorn_control_socket {
                command.arg("--no-control-socket");
            }
            command.arg("workload:application").envs(spec.env.iter().map(|(name, value)| (name, value)));
            Ok(command)
        }
    }
}

fn listening_port(log: &str) -> Option<u16> {
    let line = log.lines().find(|line| line.contains("Listening at: http://127.0.0.1:"))?;
    let rest = line.split("Listening at: http://127.0.0.1:").nth(1)?;
    rest.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

fn booted_workers(log: &str) -> Vec<i32> {
    log.lines()
        .filter_map(|line| line.split("Booting worker with pid: ").nth(1))
        .filter_map(|rest| rest.trim().split(|c: char| !c.is_ascii_digit()).next()?.parse().ok())
        .collect()
}

/// The parent pid of a live process, from `/proc/PID/stat`.
fn parent_of(pid: i32) -> Option<i32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: the fields after the last ')' are fixed.
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(1)?.parse().ok()
}

/// One request on a fresh connection, as the load generator sends it: the status code and how long it took.
pub(crate) fn timed_request(port: u16, limit: Duration) -> anyhow::Result<(u16, Duration)> {
    let start = Instant::now();
    let mut stream =
        TcpStream::connect(("127.0.0.1", port)).with_context(|| format!("cannot connect to 127.0.0.1:{port}"))?;
    stream.set_read_timeout(Some(limit)).context("cannot set a read timeout")?;
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .context("cannot send the request")?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).context("no complete response")?;
    let elapsed = start.elapsed();
    let head = String::from_utf8_lossy(&response[..response.len().min(64)]).to_string();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("not an HTTP response: {head:?}"))?;
    Ok((status, elapsed))
}
