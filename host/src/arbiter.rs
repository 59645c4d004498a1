//! The arbiter: compiles the app, binds the sockets, forks the workers and keeps the right number of them
//! alive. It reacts to signals (TERM graceful stop, INT/QUIT quick stop, HUP reload, TTIN/TTOU one worker more
//! or less, USR1 reopen the logs, USR2 binary upgrade), kills workers silent past `--timeout`, says truthfully
//! why each worker left, compiles the apps again when a worker refuses a compiled artefact, and stops the server
//! when workers cannot boot instead of respawning them in a storm (a dedicated pool that cannot boot stops its
//! app alone). A failed `fork` is logged and tried again later.

mod exposition;
mod metrics;
mod metrics_http;
mod orphans;
mod pidfile;
mod pools;
mod procfs;
mod refusal;
mod reload;
mod retry;
mod signals;
mod sock_diag;
mod spawn;
mod state;
mod systemd;
mod upgrade;
mod workers;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use nix::sys::signal::Signal;
use nix::unistd::Pid;

use crate::config::Config;
use crate::guest::Artefact;
use crate::listener::{BindOptions, Listener};
use crate::site::PoolKey;
use crate::worker::Channel;
use crate::worker::heartbeat::Heartbeats;
use crate::{listener, log, process};
use pidfile::Pidfile;
use pools::Pools;
use reload::log_apps;
use retry::Retry;
use signals::{Signals, short_name};
use state::{Arbiter, Recompiles, Stop};
use workers::{Exit, Workers};

/// How often the arbiter looks at its workers when no signal comes.
const LOOP_WAIT: Duration = Duration::from_millis(500);
/// A worker serving a request is not killed before its guest's deadline plus this margin.
const GUEST_DEADLINE_MARGIN: Duration = Duration::from_secs(2);

/// How long the main loop, and an idle worker, sleep when nothing happens.
const IDLE_WAIT: Duration = Duration::from_millis(1000);

/// `--check-config`: the configuration is valid (it was parsed), the addresses to bind are addresses, the app
/// compiles and is a wasmcorn app, and a dedicated pool's workers can read their apps with the pool's credentials.
pub(crate) fn check(config: &Config) -> anyhow::Result<()> {
    apply_process_settings(config)?;
    for spec in &config.binds {
        listener::check_spec(spec)?;
    }
    if let Some(spec) = &config.metrics_bind {
        listener::check_spec(spec).with_context(|| format!("--metrics-bind {spec}"))?;
    }
    let artefacts = spawn::compile_apps(config, false)?;
    spawn::check_pool_credentials(config, &artefacts)?;
    Ok(())
}

/// Runs the server until it is stopped. `serve_args` are the command-line arguments of `serve`, re-read with
/// the config file on reload. Returns the process's exit code.
pub(crate) fn run(config: Config, serve_args: Vec<OsString>) -> anyhow::Result<ExitCode> {
    let binary = upgrade::started_binary()?;
    let start_folder = if config.chdir.is_some() { std::env::current_dir().ok() } else { None };
    apply_process_settings(&config)?;
    log::init(&config.logging)?;
    let artefacts = spawn::compile_apps(&config, false)?;
    // Sockets handed over (by an old arbiter, by systemd) and their files are another process's too.
    let (listeners, bound_here) = match listener::inherited()? {
        Some(inherited) => (inherited, false),
        None => (bind_all(&config)?, true),
    };
    // What a daemon's launcher waits for, and exits with.
    let start_report = if !config.daemon {
        None
    } else if upgrade::predecessor().is_some() {
        // The successor of an upgrade detaches where it is: forking again would give it a new pid and another
        // parent, so that it would not know the arbiter it succeeds, and the old arbiter would take the child it
        // started, exiting at once, for a failed upgrade.
        process::detach_in_place()?;
        None
    } else {
        Some(process::daemonize()?)
    };
    let errors_to_file = config.logging.errors_to_file();
    let socket_files: Vec<PathBuf> = if bound_here {
        listeners.iter().filter_map(Listener::own_file).map(Path::to_path_buf).collect()
    } else {
        Vec::new()
    };
    let result = match Arbiter::start(config, StartedAs { binary, serve_args, start_folder }, artefacts, listeners) {
        Ok(mut arbiter) => {
            // Before any fork: no worker keeps the launcher waiting.
            if let Some(report) = start_report {
                report.started();
            }
            arbiter.run()
        }
        Err(err) => {
            // A start that failed (a pid file naming a live server, an address in use for the metrics) leaves
            // no socket file of its own behind.
            socket_files.iter().for_each(|path| drop(std::fs::remove_file(path)));
            if let Some(report) = start_report {
                report.failed(&crate::error_line(&err));
            }
            Err(err)
        }
    };
    // `main` prints the failure on stderr as one line: the error log has it too only when it is a file.
    if let (Err(err), true) = (&result, errors_to_file) {
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

/// Binds every address; when one cannot be bound, the unix socket files of those bound before are removed.
fn bind_all(config: &Config) -> anyhow::Result<Vec<Listener>> {
    let options = BindOptions { backlog: config.backlog, reuse_port: config.reuse_port };
    let mut bound = Vec::new();
    for spec in &config.binds {
        match Listener::bind(spec, options) {
            Ok(listener) => bound.push(listener),
            Err(err) => {
                bound.iter().for_each(Listener::remove_file);
                return Err(err);
            }
        }
    }
    Ok(bound)
}

/// How this server was started, which an upgrade repeats and a reload re-reads.
struct StartedAs {
    /// The binary, by the absolute path it was started with.
    binary: PathBuf,
    /// The command-line arguments of `serve`.
    serve_args: Vec<OsString>,
    /// The folder it was started in, when `--chdir` left it.
    start_folder: Option<PathBuf>,
}

impl Arbiter {
    fn start(
        config: Config,
        started_as: StartedAs,
        artefacts: Vec<Artefact>,
        listeners: Vec<Listener>,
    ) -> anyhow::Result<Arbiter> {
        let title =
            config.name.as_ref().map_or("wasmcorn: arbiter".to_string(), |name| format!("wasmcorn: arbiter [{name}]"));
        process::set_title(&title);
        let predecessor = upgrade::predecessor();
        // Bound first: an address in use is an error before the server says it listens.
        let metrics = metrics::Metrics::new(&config, &listeners, predecessor.is_some())?;
        let pidfile = match &config.pidfile {
            Some(path) if predecessor.is_some() => Some(Pidfile::create(&Pidfile::upgrade_path(path), predecessor)?),
            Some(path) => Some(Pidfile::create(path, None)?),
            None => None,
        };
        let pid = std::process::id();
        log::info(format_args!("Starting wasmcorn {}", env!("CARGO_PKG_VERSION")));
        for listener in &listeners {
            log::info(format_args!("Listening at: {} ({pid})", listener.url()));
        }
        metrics.log_address();
        log::info("Using worker: sync");
        log_apps(&config);
        let signals = Signals::install()?;
        let heartbeats = Heartbeats::new()?;
        let mut channels = BTreeMap::new();
        pools::open_channels(&config.site, &mut channels)?;
        let mut next_generation = 0;
        let (pools, _) = pools::plan(&config, &artefacts, &Pools::new(), false, &mut next_generation);
        Ok(Arbiter {
            binary: started_as.binary,
            serve_args: started_as.serve_args,
            start_folder: started_as.start_folder,
            config,
            artefacts,
            listeners,
            signals,
            heartbeats,
            workers: Workers::default(),
            pools,
            channels,
            orphans: Vec::new(),
            next_generation,
            previous: None,
            reload_again: false,
            recompiles: Recompiles::default(),
            stop: None,
            pidfile,
            successor: None,
            predecessor,
            told_ready: false,
            spawn_retry: Retry::default(),
            metrics,
        })
    }

    fn run(&mut self) -> anyhow::Result<ExitCode> {
        loop {
            self.reap();
            self.forward_orphaned();
            self.supervise_metrics();
            match &self.stop {
                None => {
                    self.spawn_missing();
                    self.finish_reload();
                    self.forget_recompiles_once_ready();
                    self.tell_ready();
                    self.watch_predecessor();
                }
                Some(stop) if self.workers.is_empty() => {
                    let code = stop.exit_code;
                    self.shut_down();
                    return Ok(ExitCode::from(code));
                }
                // The shared pool hands requests over to the dedicated pools until its last worker leaves.
                Some(stop) if stop.graceful && !stop.pools_told && !self.workers.any_front_door() => {
                    self.workers.stop_all(false, stop.deadline);
                    self.stop = Some(Stop { pools_told: true, ..*stop });
                }
                // A graceful stop's overdue workers get SIGABRT, then SIGKILL, from `abort_overdue`.
                Some(stop) if !stop.graceful && Instant::now() >= stop.deadline => {
                    self.workers.kill_all(Signal::SIGKILL)
                }
                Some(_) => {}
            }
            if let Some(timeout) = self.config.timeout {
                let busy_minimum = self.config.site.longest_guest_timeout() + GUEST_DEADLINE_MARGIN;
                self.workers.murder_silent(&self.heartbeats, timeout, busy_minimum);
            }
            self.workers.abort_overdue();
            self.workers.kill_aborted();
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
            Signal::SIGTTIN => self.resize_shared_pool(1),
            Signal::SIGTTOU => self.resize_shared_pool(-1),
            Signal::SIGUSR1 => {
                // Before the workers: one that cannot reopen them leaves, and its replacement inherits these.
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
        // socket file stays while the other arbiter of an upgrade uses it: our successor, or our predecessor when
        // the upgrade is rolled back (this one stopped while the old one runs).
        if self.successor.is_none() && !self.predecessor_runs() {
            self.listeners.iter().for_each(Listener::remove_file);
        }
        self.listeners.clear();
        self.metrics.set_stopping();
        let deadline = Instant::now() + self.config.graceful_timeout;
        self.stop = Some(Stop { graceful, deadline, exit_code, pools_told: false });
        self.mark_workers_stopping();
        if graceful {
            // The shared pool first: what its workers took from the listeners may be for a dedicated pool, whose
            // workers stay to serve it (told to stop once the shared pool has left, within the same deadline).
            self.workers.stop_all(true, deadline);
        } else {
            self.workers.kill_all(Signal::SIGINT);
        }
    }

    /// Marks every worker's slot with the stop, and whether the successor of a `USR2` upgrade shares the
    /// listeners: its workers then serve what waits there. Not the predecessor of this arbiter: an upgrade ends by
    /// stopping it, and were both to stop, nobody would.
    fn mark_workers_stopping(&self) {
        self.workers.mark_server_stopping(&self.heartbeats, self.successor.is_some());
    }

    fn shut_down(&mut self) {
        self.metrics.stop();
        if let Some(pidfile) = &self.pidfile {
            pidfile.remove();
        }
        // Connections a busy worker relayed to its pool, which no worker took before the end: answered, not lost.
        self.forward_orphaned();
        let answered: usize = self.channels.values().map(Channel::answer_waiting).sum();
        if answered > 0 {
            log::info(format_args!("Answered the {answered} connections left in the pools' channels 503"));
        }
        log::info("Shutting down: wasmcorn");
    }

    /// TTIN and TTOU: one worker more or less in the shared pool (never fewer than one, never more than all pools
    /// may run together: past it, a reload would find no room in the table for its new generation).
    fn resize_shared_pool(&mut self, change: i32) {
        let Some(target) = pools::resized_shared_target(&self.pools, change, crate::config::MAX_WORKERS) else {
            if change > 0 && self.pools.contains_key(&PoolKey::Shared) {
                log::warning(format_args!(
                    "TTIN ignored: the pools run the most workers there may be ({})",
                    crate::config::MAX_WORKERS
                ));
            }
            return;
        };
        let Some(run) = self.pools.get_mut(&PoolKey::Shared) else { return };
        run.target = target;
        log::info(format_args!("Number of workers: {target}"));
        let generation = run.generation;
        self.workers.retire_oldest(generation, target as usize, self.config.graceful_timeout, &self.heartbeats);
    }

    /// Starts the workers each pool lacks. A fork that fails (too many processes, no memory) is logged and tried
    /// again on a later turn of the loop, after a growing wait: it never ends the arbiter.
    fn spawn_missing(&mut self) {
        if !self.spawn_retry.may_try(Instant::now()) {
            return;
        }
        let pools: Vec<(PoolKey, u64, u32)> =
            self.pools.iter().map(|(key, run)| (key.clone(), run.generation, run.target)).collect();
        for (pool, generation, target) in pools {
            while self.workers.count_current(generation) < target as usize {
                let Some(slot) = self.workers.free_slot() else {
                    log::error("Cannot start more workers: the heartbeat table is full");
                    return;
                };
                if let Err(err) = self.spawn(&pool, generation, slot) {
                    let wait = self.spawn_retry.failed(Instant::now());
                    log::error(format_args!(
                        "Cannot start a worker for {pool} (trying again in {:.1} s): {err:#}",
                        wait.as_secs_f64()
                    ));
                    return;
                }
                self.spawn_retry.succeeded();
            }
        }
    }

    fn spawn(&mut self, pool: &PoolKey, generation: u64, slot: usize) -> anyhow::Result<()> {
        self.heartbeats.slot(slot).reset();
        let dedicated = self.config.site.owner_of(pool).map(|(_, app)| app);
        let max_requests = match dedicated {
            Some(app) if app.max_requests > 0 => app.max_requests,
            _ => self.config.max_requests,
        };
        let jitter =
            if self.config.max_requests_jitter > 0 { fastrand::u64(0..=self.config.max_requests_jitter) } else { 0 };
        // A stopped app's stand-in worker loads nothing and runs with the server's own credentials.
        let stopped = self.pools.get(pool).is_some_and(|run| run.stopped);
        let (user, group) =
            spawn::worker_credentials(&self.config, dedicated.filter(|_| !stopped).and_then(|app| app.pool));
        let setup = crate::worker::Setup {
            site: &self.config.site,
            pool,
            stopped,
            artefacts: &self.artefacts,
            // Only the shared pool accepts; a dedicated pool's workers get their connections from its channel.
            listeners: if dedicated.is_some() { &[] } else { &self.listeners },
            channels: &self.channels,
            arbiter: Pid::this(),
            slot: self.heartbeats.slot(slot),
            heartbeat_interval: self.config.timeout.map_or(IDLE_WAIT, |timeout| (timeout / 2).min(IDLE_WAIT)),
            // Saturating: a count past u64::MAX is as good as none.
            max_requests: if max_requests > 0 { max_requests.saturating_add(jitter) } else { 0 },
            max_memory: self.config.max_worker_memory,
            user,
            group,
            name: self.config.name.as_deref(),
            http: &self.config.http,
            meter: self.metrics.meter_setup(slot, &self.config.site),
        };
        let mut close_in_child = pools::unused_in(pool, &self.listeners, &self.channels);
        close_in_child.extend(self.orphaned_fds());
        close_in_child.push(self.signals.raw_fd());
        close_in_child.extend(self.metrics.own_fds());
        let pid = spawn::worker(setup, &close_in_child)?;
        self.workers.add(pid, slot, generation, dedicated.is_none());
        self.metrics.worker_started(slot, pid, pool);
        Ok(())
    }

    /// Collects every exited child and logs why it left.
    fn reap(&mut self) {
        for (pid, status) in workers::reap_children() {
            if Some(pid) == self.successor {
                let how = spawn::describe_status(Ok(status));
                log::error(format_args!("The new arbiter (pid:{pid}) of the upgrade exited: {how}"));
                self.successor = None;
                if self.stop.is_some() {
                    // What waits in the listen queues is left to nobody now.
                    self.mark_workers_stopping();
                }
                continue;
            }
            if self.metrics.reaped(pid, status) {
                continue;
            }
            let Some(record) = self.workers.remove(pid) else { continue };
            let current = self.pools.values().any(|run| run.generation == record.generation);
            self.metrics.worker_left(&record, status, self.stop.is_some(), current);
            let answered = self.heartbeats.slot(record.slot).answered_at_death();
            match workers::report_exit(pid, status, &record, answered, self.stop.is_some()) {
                Exit::BootFailed if self.stop.is_none() => self.handle_boot_failure(record.generation),
                Exit::RefusedArtefact if self.stop.is_none() => self.handle_refused_artefact(&record),
                _ => {}
            }
        }
    }

    /// Tells the service manager once that the server is ready.
    fn tell_ready(&mut self) {
        let all_ready = self
            .pools
            .values()
            .all(|run| self.workers.generation_ready(run.generation, run.target as usize, &self.heartbeats));
        if !self.told_ready && all_ready {
            self.told_ready = true;
            if systemd::notify(&format!("READY=1\nMAINPID={}", std::process::id())) {
                log::info("Told the service manager: READY=1");
            }
        }
        // Ready after the first full boot while some worker accepts: a recycled worker or a reload in progress
        // does not take the server out of a load balancer's rotation.
        self.metrics.set_ready(self.told_ready && self.workers.any_accepting(&self.heartbeats));
    }

    /// SIGUSR2: start a successor arbiter from the current binary, handing it the sockets.
    fn upgrade(&mut self) {
        if self.stop.is_some() {
            // The listeners are closed already: the new arbiter would listen on nothing.
            log::warning("The server is stopping: this SIGUSR2 is ignored");
            return;
        }
        if self.successor.is_some() || self.predecessor.is_some() {
            log::warning("An upgrade is already in progress: this SIGUSR2 is ignored");
            return;
        }
        match upgrade::start_successor(&self.binary, &self.listeners, &self.serve_args, self.start_folder.as_deref()) {
            Ok(pid) => {
                log::info(format_args!(
                    "Started a new arbiter (pid:{pid}); send TERM to this one to complete the upgrade"
                ));
                self.successor = Some(pid);
            }
            Err(err) => log::error(format_args!("Upgrade failed: {err:#}")),
        }
    }

    /// In a successor: whether the old arbiter, its parent, still runs (once it has gone, this one is adopted).
    fn predecessor_runs(&self) -> bool {
        self.predecessor.is_some_and(|old| nix::unistd::getppid() == old)
    }

    /// In a successor: once the old arbiter has gone, take the pid file's main name over.
    fn watch_predecessor(&mut self) {
        let Some(old) = self.predecessor else { return };
        if self.predecessor_runs() {
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
