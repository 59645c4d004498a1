//! The arbiter's state, which its loop (`arbiter`), its reloads (`reload`) and its answer to refused artefacts
//! (`refusal`) each act on through their own `impl Arbiter`: what it serves, the workers and pools it keeps,
//! and the reload, recompiles and stop in progress.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Instant;

use nix::unistd::Pid;

use super::metrics::Metrics;
use super::orphans::Orphan;
use super::pidfile::Pidfile;
use super::pools::Pools;
use super::retry::Retry;
use super::signals::Signals;
use super::workers::Workers;
use crate::config::Config;
use crate::guest::Artefact;
use crate::listener::Listener;
use crate::site::PoolKey;
use crate::worker::Channel;
use crate::worker::heartbeat::Heartbeats;

/// A stop in progress.
pub(super) struct Stop {
    pub(super) graceful: bool,
    pub(super) deadline: Instant,
    pub(super) exit_code: u8,
    /// The dedicated pools' workers were told to stop: in a graceful stop, once the shared pool has left.
    pub(super) pools_told: bool,
}

/// The arbiter's state: its configuration, sockets, workers and pools, and what it is in the middle of.
pub(super) struct Arbiter {
    pub(super) binary: PathBuf,
    pub(super) serve_args: Vec<OsString>,
    /// The folder the server was started in, when `--chdir` left it: relative paths in `serve_args` (the config
    /// file, the manifest) name files there, for a reload and for an upgrade's new arbiter as at start.
    pub(super) start_folder: Option<PathBuf>,
    pub(super) config: Config,
    /// Each app's artefact, in the order of `config.site.apps`.
    pub(super) artefacts: Vec<Artefact>,
    pub(super) listeners: Vec<Listener>,
    pub(super) signals: Signals,
    pub(super) heartbeats: Heartbeats,
    pub(super) workers: Workers,
    /// Each pool's current generation and size.
    pub(super) pools: Pools,
    /// The pools' channels.
    pub(super) channels: BTreeMap<PoolKey, Channel>,
    /// The channels of pools gone, watched until their workers are.
    pub(super) orphans: Vec<Orphan>,
    pub(super) next_generation: u64,
    pub(super) previous: Option<Previous>,
    /// A SIGHUP came while a reload was under way: reload again once it ends.
    pub(super) reload_again: bool,
    /// The compiles done because workers refused an artefact.
    pub(super) recompiles: Recompiles,
    pub(super) stop: Option<Stop>,
    pub(super) pidfile: Option<Pidfile>,
    /// The new arbiter started by SIGUSR2, while it runs.
    pub(super) successor: Option<Pid>,
    /// The old arbiter this one replaces (started by its SIGUSR2), while it runs.
    pub(super) predecessor: Option<Pid>,
    pub(super) told_ready: bool,
    /// When to try again to start the workers a failed fork left missing.
    pub(super) spawn_retry: Retry,
    /// The metrics table, the metrics process and the statsd gauge.
    pub(super) metrics: Metrics,
}

/// What a reload replaces, kept until the new generations are ready (or restored if one fails to boot).
pub(super) struct Previous {
    pub(super) config: Config,
    pub(super) artefacts: Vec<Artefact>,
    pub(super) pools: Pools,
    /// The generations the reload started.
    pub(super) fresh: Vec<u64>,
}

/// The compiles done because of refusals, since every pool last had all its workers ready.
#[derive(Debug, Default)]
pub(super) struct Recompiles {
    pub(super) count: u32,
    pub(super) last: Option<Instant>,
}
