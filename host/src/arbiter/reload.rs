//! Reloading (SIGHUP): re-read the configuration and the apps, start new generations for the pools that changed,
//! retire the ones they replace once the new workers are ready, and go back to the previous generations if a new
//! one cannot boot. Outside a reload, a dedicated pool that cannot boot stops its app alone; the shared pool
//! stops the server.

use std::ffi::OsString;
use std::path::Path;

use anyhow::Context;
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

use crate::config::{self, Config, Invocation};
use crate::log;
use crate::site::PoolKey;

use super::pools;
use super::spawn::compile_apps;
use super::state::{Arbiter, Previous};

impl Arbiter {
    /// A worker could not load its apps: if a reload started its generation, go back to the previous
    /// generations; otherwise stop what cannot boot (a respawn storm would not help): a dedicated pool's app
    /// alone, or the whole server when it is the shared pool (or a stopped app's stand-in, which loads nothing).
    pub(super) fn handle_boot_failure(&mut self, generation: u64) {
        match self.previous.take() {
            Some(previous) if previous.fresh.contains(&generation) => {
                log::error("A new generation of workers failed to boot: the previous ones keep serving");
                for fresh in &previous.fresh {
                    self.workers.retire_generation(*fresh, self.config.graceful_timeout, &self.heartbeats);
                }
                self.config = previous.config;
                self.artefacts = previous.artefacts;
                self.pools = previous.pools;
                // Workers forked for the kept pools during the reload were given its site, not this one.
                self.mark_kept_pools_routes_stale(&previous.fresh);
                self.orphan_unused_channels();
                self.reload_if_asked_again();
            }
            previous => {
                self.previous = previous;
                let failed = self.pools.iter().find(|(_, run)| run.generation == generation);
                match failed.map(|(key, run)| (key.clone(), run.stopped)) {
                    Some((PoolKey::Dedicated(name), false)) => self.stop_app(&name, generation),
                    Some(_) => {
                        log::critical("Worker failed to boot: shutting down");
                        self.begin_stop(false, crate::worker::BOOT_ERROR as u8);
                    }
                    // A generation already replaced (the rest of a stopped pool, a retired one): nothing to do.
                    None => {}
                }
            }
        }
    }

    /// Stops app `name`, whose dedicated pool's `generation` cannot boot: its other workers are retired and one
    /// stand-in worker answers the requests handed to the pool with `503` (the shared workers keep the pool's
    /// channel), until a reload starts the app again.
    fn stop_app(&mut self, name: &str, generation: u64) {
        log::error(format_args!(
            "App {name} stopped: its pool's workers fail to boot; its requests get 503 until a reload (SIGHUP)"
        ));
        self.workers.retire_generation(generation, self.config.graceful_timeout, &self.heartbeats);
        let stand_in = self.next_generation;
        self.next_generation += 1;
        if let Some(run) = self.pools.get_mut(&PoolKey::Dedicated(name.to_string())) {
            run.generation = stand_in;
            run.target = 1;
            run.stopped = true;
        }
    }

    /// SIGHUP: re-read the configuration, the manifest and the apps; start a new generation for each pool whose
    /// workers would be started differently, and retire the old ones once the new ones are ready. Pools that did
    /// not change keep their workers. If anything fails, the current workers keep serving.
    pub(super) fn reload(&mut self) {
        if self.stop.is_some() {
            log::warning("The server is stopping: this SIGHUP is ignored");
            return;
        }
        if self.previous.is_some() {
            // The files may have changed again since this reload read them: read them once more when it ends.
            if !self.reload_again {
                log::info("A reload is in progress: this SIGHUP reloads again once it ends");
            }
            self.reload_again = true;
            return;
        }
        let mut config = match load_as_at_start(self.start_folder.as_deref(), &self.serve_args) {
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
        // The statsd flags as given: a name may resolve to another of its addresses each time.
        let statsd_flags =
            |config: &Config| config.statsd.as_ref().map(|s| (s.host.clone(), s.prefix.clone(), s.tags.clone()));
        if config.metrics_bind != self.config.metrics_bind || statsd_flags(&config) != statsd_flags(&self.config) {
            log::warning(
                "The metrics settings changed (--metrics-bind, --statsd-host, --statsd-prefix, --dogstatsd-tags): that \
                 needs a restart or a SIGUSR2 upgrade; the metrics go where they went",
            );
        }
        let process_settings = |config: &Config| {
            (config.pidfile.clone(), config.umask, config.chdir.clone(), config.name.clone(), config.daemon)
        };
        if process_settings(&config) != process_settings(&self.config) {
            log::warning(
                "The process settings changed (--pid, --umask, --chdir, --name, --daemon): that needs a restart or a \
                 SIGUSR2 upgrade; they stay as they are",
            );
        }
        // What only a restart changes stays as it is in the configuration kept, so that the next reload compares
        // with what is in force (changed back, it says nothing; left changed, it says so again), and so that an
        // upgrade's pid file is the one this arbiter wrote.
        config.pidfile.clone_from(&self.config.pidfile);
        (config.umask, config.daemon) = (self.config.umask, self.config.daemon);
        config.chdir.clone_from(&self.config.chdir);
        config.name.clone_from(&self.config.name);
        config.binds.clone_from(&self.config.binds);
        config.metrics_bind.clone_from(&self.config.metrics_bind);
        config.statsd.clone_from(&self.config.statsd);
        let artefacts = match compile_apps(&config, false) {
            Ok(artefacts) => artefacts,
            Err(err) => {
                log::error(format_args!("Reload failed, the current workers keep serving: {err:#}"));
                return;
            }
        };
        if let Err(err) = pools::open_channels(&config.site, &mut self.channels) {
            log::error(format_args!("Reload failed, the current workers keep serving: {err:#}"));
            return;
        }
        if let Err(err) = log::init(&config.logging) {
            log::error(format_args!("Reload: cannot open the new log files, keeping the old ones: {err:#}"));
        }
        let (mut pools, mut fresh) = pools::plan(&config, &artefacts, &self.pools, false, &mut self.next_generation);
        let removed: Vec<String> =
            self.pools.keys().filter(|key| !pools.contains_key(*key)).map(ToString::to_string).collect();
        let resized = pools.iter().any(|(key, run)| self.pools.get(key).is_some_and(|old| old.target != run.target));
        if fresh.is_empty() && removed.is_empty() && !resized {
            // Nothing changed: as in Gunicorn, a HUP still replaces every worker (fresh processes, same settings).
            (pools, fresh) = pools::plan(&config, &artefacts, &self.pools, true, &mut self.next_generation);
        }
        // Pools that only changed size: retire their extra workers now (new ones are started by the main loop).
        for (key, run) in &pools {
            if !fresh.contains(&run.generation) && self.pools.get(key).is_some_and(|old| old.target > run.target) {
                let graceful = config.graceful_timeout;
                self.workers.retire_oldest(run.generation, run.target as usize, graceful, &self.heartbeats);
            }
        }
        let changed: Vec<String> =
            pools.iter().filter(|(_, run)| fresh.contains(&run.generation)).map(|(key, _)| key.to_string()).collect();
        let old_config = std::mem::replace(&mut self.config, config);
        let old_artefacts = std::mem::replace(&mut self.artefacts, artefacts);
        let old_pools = std::mem::replace(&mut self.pools, pools);
        log_apps(&self.config);
        let mut what = Vec::new();
        if !changed.is_empty() {
            what.push(format!("new workers for {}", changed.join(", ")));
        }
        if !removed.is_empty() {
            what.push(format!("retiring {}", removed.join(", ")));
        }
        if resized {
            what.push("resizing pools".to_string());
        }
        log::info(format_args!("Reloading: {}", what.join("; ")));
        self.previous = Some(Previous { config: old_config, artefacts: old_artefacts, pools: old_pools, fresh });
    }

    /// Retires the generations a reload replaced once every new one has loaded its apps.
    pub(super) fn finish_reload(&mut self) {
        let Some(previous) = &self.previous else { return };
        let ready = self
            .pools
            .values()
            .filter(|run| previous.fresh.contains(&run.generation))
            .all(|run| self.workers.generation_ready(run.generation, run.target as usize, &self.heartbeats));
        if !ready {
            return;
        }
        let current: Vec<u64> = self.pools.values().map(|run| run.generation).collect();
        for run in previous.pools.values().filter(|run| !current.contains(&run.generation)) {
            self.workers.retire_generation(run.generation, self.config.graceful_timeout, &self.heartbeats);
        }
        // The routes changed when the shared pool, which routes, was replaced.
        if self.pools.get(&PoolKey::Shared).is_some_and(|run| previous.fresh.contains(&run.generation)) {
            self.mark_kept_pools_routes_stale(&previous.fresh);
        }
        self.previous = None;
        self.orphan_unused_channels();
        log::info("Reload complete: the new workers serve");
        self.reload_if_asked_again();
    }

    /// Marks the workers of the dedicated pools a reload kept (their generation is not among `fresh`) as routing
    /// with a site other than the current one: what they cannot serve then goes to the shared pool, which routes
    /// it with the current one.
    fn mark_kept_pools_routes_stale(&self, fresh: &[u64]) {
        for (key, run) in &self.pools {
            if matches!(key, PoolKey::Dedicated(_)) && !fresh.contains(&run.generation) {
                self.workers.mark_routes_stale(run.generation, &self.heartbeats);
            }
        }
    }

    /// Runs the reload a SIGHUP asked for while the last one was under way.
    fn reload_if_asked_again(&mut self) {
        if std::mem::take(&mut self.reload_again) {
            self.reload();
        }
    }
}

/// Logs the apps of a manifest: name, routes, pool.
pub(super) fn log_apps(config: &Config) {
    let site = &config.site;
    if !site.hosted {
        return;
    }
    for (id, app) in site.ids() {
        let routes: Vec<String> =
            site.router.routes().iter().filter(|route| route.app == id).map(ToString::to_string).collect();
        let pool = match app.pool {
            Some(pool) => format!("its own pool of {}", pool.workers),
            None => "the shared pool".to_string(),
        };
        log::info(format_args!(
            "App {}: {} at {} on {pool}",
            app.guest.name,
            app.guest.source.describe(),
            if routes.is_empty() { "no route".to_string() } else { routes.join(" ") }
        ));
    }
    match site.router.fallback() {
        Some(id) => log::info(format_args!("Requests no route matches go to app {}", site.app(id).guest.name)),
        None => log::info("Requests no route matches get 404"),
    }
}

/// Reads the configuration as at start: a relative config file or manifest path names a file in the folder the
/// server was started in (`start_folder`, when `--chdir` left it), not in `--chdir`'s. The arbiter has no other
/// thread, so it can step back there for the read.
fn load_as_at_start(start_folder: Option<&Path>, serve_args: &[OsString]) -> anyhow::Result<Invocation> {
    let Some(folder) = start_folder else { return config::load(serve_args) };
    // Held by a path descriptor: a folder the arbiter may enter but not list is one it can come back to.
    let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    let here = nix::fcntl::open(".", flags, Mode::empty()).context("cannot hold the working folder")?;
    std::env::set_current_dir(folder)
        .with_context(|| format!("cannot read the configuration from {}", folder.display()))?;
    let loaded = config::load(serve_args);
    if let Err(err) = nix::unistd::fchdir(&here) {
        // Cannot happen to a folder held open; said all the same, since relative paths now name other files.
        log::critical(format_args!("Cannot change back to the --chdir folder after reading the configuration: {err}"));
    }
    loaded
}
