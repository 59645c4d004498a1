//! The arbiter: compiles the app, binds the sockets, forks the workers and keeps the right number of them
//! alive. It reacts to signals (TERM graceful stop, INT/QUIT quick stop, HUP reload, TTIN/TTOU one worker more
//! or less, USR1 reopen the logs, USR2 binary upgrade), kills workers silent past `--timeout`, says truthfully
//! why each worker left, and stops the server when workers cannot boot instead of respawning them in a storm.

mod pidfile;
mod signals;
mod spawn;
mod systemd;
mod upgrade;
mod workers;

use std::ffi::OsString;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use nix::sys::signal::Signal;
use nix::unistd::Pid;

use crate::config::{self, Config, Invocation};
use crate::guest::Artefact;
use crate::listener::{BindOptions, Listener};
use crate::worker::heartbeat::Heartbeats;
use crate::{listener, log, process};
use pidfile::Pidfile;
use signals::{Signals, short_name};
use workers::Workers;

/// How often the arbiter looks at its workers when no signal comes.
const LOOP_WAIT: Duration = Duration::from_millis(500);
/// A worker serving a request is not killed before its guest's deadline plus this margin.
const GUEST_DEADLINE_MARGIN: Duration = Duration::from_secs(2);

/// How long the main loop, and an idle worker, sleep when nothing happens.
const IDLE_WAIT: Duration = Duration::from_millis(1000);

/// `--check-config`: the configuration is valid (it was parsed) and the app compiles and is a wasmcorn app.
pub fn check(config: &Config) -> anyhow::Result<()> {
    apply_process_settings(config)?;
    spawn::compile(&config.app, &config.cache_dir)?;
    Ok(())
}

/// Runs the server until it is stopped. `serve_args` are the command-line arguments of `serve`, re-read with
/// the config file on reload. Returns the process's exit code.
pub fn run(config: Config, serve_args: Vec<OsString>) -> anyhow::Result<ExitCode> {
    apply_process_settings(&config)?;
    log::init(&config.logging)?;
    let artefact = spawn::compile(&config.app, &config.cache_dir)?;
    let listeners = match listener::inherited()? {
        Some(inherited) => inherited,
        None => bind_all(&config)?,
    };
    if config.daemon {
        process::daemonize()?;
    }
    let result = Arbiter::start(config, serve_args, artefact, listeners).and_then(|mut arbiter| arbiter.run());
    if let Err(err) = &result {
        log::critical(format_args!("{err:#}"));
    }
    result
}

fn apply_process_settings(config: &Config) -> anyhow::Result<()> {
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(config.umask));
    if let Some(dir) = &config.chdir {
        std::env::set_current_dir(dir).with_context(|| format!("--chdir: cannot change to {}", dir.display()))?;
    }
    Ok(())
}

fn bind_all(config: &Config) -> anyhow::Result<Vec<Listener>> {
    let options = BindOptions { backlog: config.backlog, reuse_port: config.reuse_port };
    config.binds.iter().map(|spec| Listener::bind(spec, options)).collect()
}

/// A stop in progress.
struct Stop {
    graceful: bool,
    deadline: Instant,
    exit_code: u8,
}

/// The generation a reload replaces, kept until the new one is ready (or restored if it fails to boot).
struct Previous {
    config: Config,
    artefact: Artefact,
    generation: u64,
}

struct Arbiter {
    serve_args: Vec<OsString>,
    config: Config,
    artefact: Artefact,
    listeners: Vec<Listener>,
    signals: Signals,
    heartbeats: Heartbeats,
    workers: Workers,
    /// How many workers of the current generation to keep alive.
    target: u32,
    generation: u64,
    previous: Option<Previous>,
    stop: Option<Stop>,
    pidfile: Option<Pidfile>,
    /// The new arbiter started by SIGUSR2, while it runs.
    successor: Option<Pid>,
    /// The old arbiter this one replaces (started by its SIGUSR2), while it runs.
    predecessor: Option<Pid>,
    told_ready: bool,
}

impl Arbiter {
    fn start(
        config: Config,
        serve_args: Vec<OsString>,
        artefact: Artefact,
        listeners: Vec<Listener>,
    ) -> anyhow::Result<Arbiter> {
        let title =
            config.name.as_ref().map_or("wasmcorn: arbiter".to_string(), |name| format!("wasmcorn: arbiter [{name}]"));
        process::set_title(&title);
        let predecessor = upgrade::predecessor();
        let pidfile = match &config.pidfile {
            Some(path) if predecessor.is_some() => Some(Pidfile::create(&Pidfile::upgrade_path(path))?),
            Some(path) => Some(Pidfile::create(path)?),
            None => None,
        };
        let pid = std::process::id();
        log::info(format_args!("Starting wasmcorn {}", env!("CARGO_PKG_VERSION")));
        for listener in &listeners {
            log::info(format_args!("Listening at: {} ({pid})", listener.url()));
        }
        log::info("Using worker: sync");
        let signals = Signals::install()?;
        let heartbeats = Heartbeats::new()?;
        let target = config.workers;
        Ok(Arbiter {
            serve_args,
            config,
            artefact,
            listeners,
            signals,
            heartbeats,
            workers: Workers::default(),
            target,
            generation: 0,
            previous: None,
            stop: None,
            pidfile,
            successor: None,
            predecessor,
            told_ready: false,
        })
    }

    fn run(&mut self) -> anyhow::Result<ExitCode> {
        loop {
            self.reap();
            match &self.stop {
                None => {
                    self.spawn_missing()?;
                    self.finish_reload();
                    self.tell_ready();
                    self.watch_predecessor();
                }
                Some(stop) if self.workers.is_empty() => {
                    let code = stop.exit_code;
                    self.shut_down();
                    return Ok(ExitCode::from(code));
                }
                Some(stop) if Instant::now() >= stop.deadline => self.workers.kill_all(Signal::SIGKILL),
                Some(_) => {}
            }
            if let Some(timeout) = self.config.timeout {
                let busy_minimum = self.config.app.limits.guest_timeout + GUEST_DEADLINE_MARGIN;
                self.workers.murder_silent(&self.heartbeats, timeout, busy_minimum);
            }
            self.workers.kill_overdue_retirees();
            for signal in self.signals.wait(LOOP_WAIT) {
                self.handle(signal);
            }
        }
    }

    fn handle(&mut self, signal: Signal) {
        if signal != Signal::SIGCHLD {
            log::info(format_args!("Handling signal: {}", short_name(signal)));
        }
        match signal {
            Signal::SIGCHLD => {}
            Signal::SIGTERM => self.begin_stop(true, 0),
            Signal::SIGINT | Signal::SIGQUIT => self.begin_stop(false, 0),
            Signal::SIGHUP => self.reload(),
            Signal::SIGTTIN => {
                self.target += 1;
                log::info(format_args!("Number of workers: {}", self.target));
            }
            Signal::SIGTTOU if self.target > 1 => {
                self.target -= 1;
                log::info(format_args!("Number of workers: {}", self.target));
                self.workers.retire_oldest(self.generation, self.target as usize, self.config.graceful_timeout);
            }
            Signal::SIGUSR1 => {
                log::reopen();
                self.workers.kill_all(Signal::SIGUSR1);
            }
            Signal::SIGUSR2 => self.upgrade(),
            _ => {}
        }
    }

    /// Starts a stop: a graceful one lets every worker finish its request, a quick one ends them at once.
    fn begin_stop(&mut self, graceful: bool, exit_code: u8) {
        if self.stop.as_ref().is_some_and(|stop| !stop.graceful || graceful) {
            return;
        }
        // Close our copy of the listeners: once the workers close theirs, new connections are refused. A unix
        // socket file stays if a successor arbiter uses it.
        if self.successor.is_none() {
            self.listeners.iter().for_each(Listener::remove_file);
        }
        self.listeners.clear();
        self.stop = Some(Stop { graceful, deadline: Instant::now() + self.config.graceful_timeout, exit_code });
        self.workers.kill_all(if graceful { Signal::SIGTERM } else { Signal::SIGINT });
    }

    fn shut_down(&mut self) {
        if let Some(pidfile) = &self.pidfile {
            pidfile.remove();
        }
        log::info("Shutting down: wasmcorn");
    }

    fn spawn_missing(&mut self) -> anyhow::Result<()> {
        while self.workers.count_current(self.generation) < self.target as usize {
            let Some(slot) = self.workers.free_slot() else {
                log::error("Cannot start more workers: the heartbeat table is full");
                return Ok(());
            };
            self.heartbeats.slot(slot).reset();
            let jitter = if self.config.max_requests_jitter > 0 {
                fastrand::u64(0..=self.config.max_requests_jitter)
            } else {
                0
            };
            let setup = crate::worker::Setup {
                app: &self.config.app,
                artefact: &self.artefact,
                listeners: &self.listeners,
                arbiter: Pid::this(),
                slot: self.heartbeats.slot(slot),
                heartbeat_interval: self.config.timeout.map_or(IDLE_WAIT, |timeout| (timeout / 2).min(IDLE_WAIT)),
                max_requests: if self.config.max_requests > 0 { self.config.max_requests + jitter } else { 0 },
                max_memory: self.config.max_worker_memory,
                user: self.config.user,
                group: self.config.group,
                name: self.config.name.as_deref(),
                http: &self.config.http,
            };
            let pid = spawn::worker(setup, &[self.signals.raw_fd()]).context("cannot start a worker")?;
            self.workers.add(pid, slot, self.generation);
        }
        Ok(())
    }

    /// Collects every exited child and logs why it left.
    fn reap(&mut self) {
        for (pid, status) in workers::reap_children() {
            if Some(pid) == self.successor {
                log::error(format_args!("The new arbiter (pid:{pid}) of the upgrade exited: {status:?}"));
                self.successor = None;
                continue;
            }
            let Some(record) = self.workers.remove(pid) else { continue };
            let boot_failed = workers::report_exit(pid, status, &record, self.stop.is_some());
            if boot_failed && self.stop.is_none() {
                self.handle_boot_failure(record.generation);
            }
        }
    }

    /// A worker could not load the app: during a reload, go back to the previous generation; otherwise stop the
    /// server (a respawn storm would not help).
    fn handle_boot_failure(&mut self, generation: u64) {
        match self.previous.take() {
            Some(previous) if generation == self.generation => {
                log::error("The new generation of workers failed to boot: the previous one keeps serving");
                self.workers.retire_generation(self.generation, self.config.graceful_timeout);
                self.config = previous.config;
                self.artefact = previous.artefact;
                self.generation = previous.generation;
                self.target = self.config.workers;
            }
            Some(previous) => self.previous = Some(previous),
            None => {
                log::critical("Worker failed to boot: shutting down");
                self.begin_stop(false, crate::worker::BOOT_ERROR as u8);
            }
        }
    }

    /// SIGHUP: re-read the configuration and the app, start a new generation of workers; the old one is retired
    /// once the new one is ready. If anything fails, the current workers keep serving.
    fn reload(&mut self) {
        if self.stop.is_some() || self.previous.is_some() {
            log::warning("A reload or a stop is already in progress: this SIGHUP is ignored");
            return;
        }
        let config = match config::load(&self.serve_args) {
            Ok(Invocation::Serve(config)) => *config,
            Ok(_) => return,
            Err(err) => {
                log::error(format_args!("Reload failed, the current workers keep serving: {err:#}"));
                return;
            }
        };
        if config.binds != self.config.binds {
            log::warning(
                "The --bind addresses changed: that needs a restart or a SIGUSR2 upgrade; the sockets stay as they are",
            );
        }
        let artefact = match spawn::compile(&config.app, &config.cache_dir) {
            Ok(artefact) => artefact,
            Err(err) => {
                log::error(format_args!("Reload failed, the current workers keep serving: {err:#}"));
                return;
            }
        };
        if let Err(err) = log::init(&config.logging) {
            log::error(format_args!("Reload: cannot open the new log files, keeping the old ones: {err:#}"));
        }
        let old_config = std::mem::replace(&mut self.config, config);
        let old_artefact = std::mem::replace(&mut self.artefact, artefact);
        self.previous = Some(Previous { config: old_config, artefact: old_artefact, generation: self.generation });
        self.generation += 1;
        self.target = self.config.workers;
        log::info(format_args!("Reloading: starting generation {} of {} workers", self.generation, self.target));
    }

    /// Retires the previous generation once every worker of the new one has loaded the app.
    fn finish_reload(&mut self) {
        if self.previous.is_none()
            || !self.workers.generation_ready(self.generation, self.target as usize, &self.heartbeats)
        {
            return;
        }
        self.previous = None;
        for generation in 0..self.generation {
            self.workers.retire_generation(generation, self.config.graceful_timeout);
        }
        log::info(format_args!("Reload complete: generation {} serves", self.generation));
    }

    /// Tells the service manager once that the server is ready.
    fn tell_ready(&mut self) {
        if !self.told_ready && self.workers.generation_ready(self.generation, self.target as usize, &self.heartbeats) {
            self.told_ready = true;
            if systemd::notify(&format!("READY=1\nMAINPID={}", std::process::id())) {
                log::info("Told the service manager: READY=1");
            }
        }
    }

    /// SIGUSR2: start a successor arbiter from the current binary, handing it the sockets.
    fn upgrade(&mut self) {
        if self.successor.is_some() || self.predecessor.is_some() {
            log::warning("An upgrade is already in progress: this SIGUSR2 is ignored");
            return;
        }
        match upgrade::start_successor(&self.listeners, &self.serve_args) {
            Ok(pid) => {
                log::info(format_args!(
                    "Started a new arbiter (pid:{pid}); send TERM to this one to complete the upgrade"
                ));
                self.successor = Some(pid);
            }
            Err(err) => log::error(format_args!("Upgrade failed: {err:#}")),
        }
    }

    /// In a successor: once the old arbiter has gone, take the pid file's main name over.
    fn watch_predecessor(&mut self) {
        let Some(old) = self.predecessor else { return };
        if nix::unistd::getppid() == old {
            return;
        }
        self.predecessor = None;
        log::info(format_args!("The old arbiter (pid:{old}) has exited: the upgrade is complete"));
        if let (Some(pidfile), Some(path)) = (self.pidfile.as_mut(), self.config.pidfile.as_ref())
            && let Err(err) = pidfile.move_to(path)
        {
            log::error(format_args!("{err:#}"));
        }
    }
}
