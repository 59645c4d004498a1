//! The arbiter's pools: for each (the shared pool, and one per app with `workers`), the generation of workers
//! that serves it, how many to keep alive, and the spec of everything its workers were started with. A reload
//! compares specs, so that it replaces only the pools whose apps (or, for the shared pool, whose routes) changed;
//! the channels of the dedicated pools outlive their generations.

use std::collections::BTreeMap;
use std::os::fd::AsRawFd;
use std::time::Duration;

use nix::unistd::{Gid, Uid};

use crate::config::Config;
use crate::guest::{Artefact, Guest};
use crate::listener::Listener;
use crate::log;
use crate::routing::Router;
use crate::settings::HttpSettings;
use crate::site::{PoolKey, Site};
use crate::worker::Channel;

/// One pool's current generation.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct PoolRun {
    pub generation: u64,
    /// How many workers to keep alive.
    pub target: u32,
    /// What its workers were started with.
    pub spec: PoolSpec,
    /// The pool's app is stopped: its workers failed to boot. One stand-in worker that loads nothing answers its
    /// requests `503` until a reload starts the pool again.
    pub stopped: bool,
}

/// Every pool's current generation.
pub(super) type Pools = BTreeMap<PoolKey, PoolRun>;

/// Everything a worker of one pool is started with, except the pool's size (which changes without replacing
/// anyone): the server's settings, the pool's apps and their artefacts; for the shared pool, which routes every
/// request, also the routes and which apps have pools of their own.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct PoolSpec {
    server: ServerSpec,
    apps: Vec<AppSpec>,
    /// The shared pool's routes, and the names of the apps it hands over; `None` for a dedicated pool.
    routing: Option<(Router, Vec<String>)>,
}

/// The server's settings that every worker is started with.
#[derive(Debug, Clone, PartialEq)]
struct ServerSpec {
    hosted: bool,
    http: HttpSettings,
    logging: log::Settings,
    timeout: Option<Duration>,
    max_requests: u64,
    max_requests_jitter: u64,
    max_worker_memory: Option<u64>,
    user: Option<Uid>,
    group: Option<Gid>,
    name: Option<String>,
}

/// One app a pool runs, as its workers are given it.
#[derive(Debug, Clone, PartialEq)]
struct AppSpec {
    guest: Guest,
    artefact: Option<Artefact>,
    body_limit: Option<u64>,
    max_requests: u64,
    /// A dedicated pool's own user and group.
    credentials: Option<(Option<Uid>, Option<Gid>)>,
}

impl PoolSpec {
    /// The spec of `pool` in `config`, whose apps were compiled into `artefacts`.
    fn of(config: &Config, artefacts: &[Artefact], pool: &PoolKey) -> PoolSpec {
        let site = &config.site;
        let server = ServerSpec {
            hosted: site.hosted,
            http: config.http.clone(),
            logging: config.logging.clone(),
            timeout: config.timeout,
            max_requests: config.max_requests,
            max_requests_jitter: config.max_requests_jitter,
            max_worker_memory: config.max_worker_memory,
            user: config.user,
            group: config.group,
            name: config.name.clone(),
        };
        let apps = site
            .apps_of(pool)
            .into_iter()
            .map(|id| {
                let app = site.app(id);
                AppSpec {
                    guest: app.guest.clone(),
                    artefact: artefacts.get(id.index()).cloned(),
                    body_limit: app.body_limit,
                    max_requests: app.max_requests,
                    credentials: app.pool.map(|pool| (pool.user, pool.group)),
                }
            })
            .collect();
        let routing = match pool {
            PoolKey::Shared => {
                let handed_over = site.apps.iter().filter(|app| app.pool.is_some()).map(|app| app.guest.name.clone());
                Some((site.router.clone(), handed_over.collect()))
            }
            PoolKey::Dedicated(_) => None,
        };
        PoolSpec { server, apps, routing }
    }
}

/// The pools of `config`, reusing the generations of `current` whose spec is unchanged (unless `replace_all`)
/// and numbering the others from `next_generation` on. Returns them and the generations that are new.
pub(super) fn plan(
    config: &Config,
    artefacts: &[Artefact],
    current: &Pools,
    replace_all: bool,
    next_generation: &mut u64,
) -> (Pools, Vec<u64>) {
    let mut pools = Pools::new();
    let mut fresh = Vec::new();
    for key in config.site.pool_keys() {
        let spec = PoolSpec::of(config, artefacts, &key);
        let target = target(config, &key);
        let generation = match current.get(&key) {
            // A stopped pool gets a new generation from every reload: the reload tries its app again.
            Some(run) if run.spec == spec && !replace_all && !run.stopped => run.generation,
            _ => {
                let generation = *next_generation;
                *next_generation += 1;
                fresh.push(generation);
                generation
            }
        };
        pools.insert(key, PoolRun { generation, target, spec, stopped: false });
    }
    (pools, fresh)
}

/// How many workers `pool` should have.
fn target(config: &Config, pool: &PoolKey) -> u32 {
    match pool {
        PoolKey::Shared => config.workers,
        PoolKey::Dedicated(_) => {
            config.site.owner_of(pool).and_then(|(_, app)| app.pool).map_or(1, |pool| pool.workers)
        }
    }
}

/// Makes sure every pool of `site` has a channel (keeping the existing ones): the shared pool's carries the
/// connections its workers relay to each other, a dedicated pool's also the requests handed to it.
pub(super) fn open_channels(site: &Site, channels: &mut BTreeMap<PoolKey, Channel>) -> anyhow::Result<()> {
    for key in site.pool_keys() {
        if let std::collections::btree_map::Entry::Vacant(vacant) = channels.entry(key) {
            vacant.insert(Channel::new()?);
        }
    }
    Ok(())
}

/// Takes out the channels `site` no longer uses (workers still running keep their own ends), and returns them:
/// what waits in them must not be lost with them (see `Arbiter::forward_orphaned`).
pub(super) fn take_unused_channels(site: &Site, channels: &mut BTreeMap<PoolKey, Channel>) -> Vec<(PoolKey, Channel)> {
    let keys = site.pool_keys();
    let unused: Vec<PoolKey> = channels.keys().filter(|key| !keys.contains(key)).cloned().collect();
    unused.into_iter().filter_map(|key| channels.remove_entry(&key)).collect()
}

/// The descriptors a worker of `pool` must close after the fork: the receiving ends of the other pools' channels
/// (it may hand a request or a connection to any pool, and takes from its own), and for a dedicated pool, whose
/// connections come through its channel, the listening sockets.
pub(super) fn unused_in(
    pool: &PoolKey,
    listeners: &[Listener],
    channels: &BTreeMap<PoolKey, Channel>,
) -> Vec<std::os::fd::RawFd> {
    let mut unused = Vec::new();
    if let PoolKey::Dedicated(_) = pool {
        unused.extend(listeners.iter().map(|listener| listener.fd().as_raw_fd()));
    }
    for (key, channel) in channels {
        let [_, receiver] = channel.raw_fds();
        if key != pool {
            unused.push(receiver);
        }
    }
    unused
}

/// The shared pool's size after `TTIN` (`change` 1) or `TTOU` (-1): one more or one less, never below one, and never
/// so many that all pools together (`pools`) would run more than `most` workers (the arbiter's table holds twice
/// that, so that a reload can run a new generation beside the old one). None when it stays as it is.
pub(super) fn resized_shared_target(pools: &Pools, change: i32, most: u64) -> Option<u32> {
    let current = pools.get(&PoolKey::Shared)?.target;
    let others: u64 =
        pools.iter().filter(|(key, _)| **key != PoolKey::Shared).map(|(_, run)| u64::from(run.target)).sum();
    let room = u32::try_from(most.saturating_sub(others)).unwrap_or(u32::MAX);
    let target = current.saturating_add_signed(change).max(1).min(room.max(current));
    (target != current).then_some(target)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    const APPS: &str = r#"
[[app]]
name = "hello"
component = "sample:hello"
hosts = "a.test"
[[app]]
name = "echo"
component = "sample:echo"
prefix = "/echo"
env = { VALUE = "ECHO" }
[[app]]
name = "evil"
component = "sample:hello"
hosts = "evil.test"
workers = 1
env = { VALUE = "EVIL" }
"#;

    /// The pools of a manifest, planned against `current`; returns them and which pools are new.
    fn plan_for(text: &str, current: &Pools, next: &mut u64) -> (Pools, Vec<PoolKey>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("apps.toml");
        std::fs::write(&path, text).unwrap();
        let argv = ["wasmcorn", "serve", "--apps", path.to_str().unwrap(), "--cache-dir", "/nonexistent"];
        let crate::cli::Command::Serve(args) = crate::cli::Cli::try_parse_from(argv).unwrap().command else {
            panic!("`serve` parses as the serve command")
        };
        let config = Config::from_args(args).unwrap();
        let artefacts: Vec<Artefact> = config
            .site
            .apps
            .iter()
            .map(|app| Artefact {
                path: format!("{}.cwasm", app.guest.source.describe()).into(),
                digest: String::new(),
                owner: 0,
                kind: crate::guest::Kind::App,
                initial_memory: 17 << 16,
            })
            .collect();
        let (pools, fresh) = plan(&config, &artefacts, current, false, next);
        let fresh_keys = pools.iter().filter(|(_, run)| fresh.contains(&run.generation)).map(|(key, _)| key.clone());
        (pools.clone(), fresh_keys.collect())
    }

    #[test]
    fn ttin_and_ttou_resize_the_shared_pool_within_the_most_workers() {
        let (mut pools, _) = plan_for(APPS, &Pools::new(), &mut 0);
        let set_shared = |pools: &mut Pools, target| pools.get_mut(&PoolKey::Shared).unwrap().target = target;
        set_shared(&mut pools, 2);
        assert_eq!(resized_shared_target(&pools, 1, 512), Some(3));
        assert_eq!(resized_shared_target(&pools, -1, 512), Some(1));
        set_shared(&mut pools, 1);
        assert_eq!(resized_shared_target(&pools, -1, 512), None, "never below one");
        // evil's own worker counts: the shared pool may grow to 511 of 512.
        set_shared(&mut pools, 510);
        assert_eq!(resized_shared_target(&pools, 1, 512), Some(511));
        set_shared(&mut pools, 511);
        assert_eq!(resized_shared_target(&pools, 1, 512), None, "no room left for one more");
        assert_eq!(resized_shared_target(&pools, -1, 512), Some(510));
        // A pool already past the most (a dedicated pool grew on a reload) is not shrunk by TTIN.
        set_shared(&mut pools, 600);
        assert_eq!(resized_shared_target(&pools, 1, 512), None);
        assert_eq!(resized_shared_target(&pools, -1, 512), Some(599));
    }

    #[test]
    fn a_reload_replaces_only_the_pools_that_changed() {
        let mut next = 0;
        let evil = PoolKey::Dedicated("evil".into());
        let (start, fresh) = plan_for(APPS, &Pools::new(), &mut next);
        assert_eq!(fresh, vec![PoolKey::Shared, evil.clone()]);
        assert_eq!(start[&evil].target, 1);

        let (same, fresh) = plan_for(APPS, &start, &mut next);
        assert!(fresh.is_empty());
        assert_eq!(same, start);

        let (_, fresh) = plan_for(&APPS.replace("\"EVIL\"", "\"EVIL2\""), &start, &mut next);
        assert_eq!(fresh, vec![evil.clone()], "an edit to evil replaces only evil's pool");

        let (_, fresh) = plan_for(&APPS.replace("\"ECHO\"", "\"ECHO2\""), &start, &mut next);
        assert_eq!(fresh, vec![PoolKey::Shared], "an edit to a shared app replaces only the shared pool");

        let (resized, fresh) = plan_for(&APPS.replace("workers = 1", "workers = 3"), &start, &mut next);
        assert!(fresh.is_empty(), "a new size keeps the workers");
        assert_eq!(resized[&evil].target, 3);

        let added =
            format!("{APPS}[[app]]\nname = \"new\"\ncomponent = \"sample:echo\"\nhosts = \"new.test\"\nworkers = 2\n");
        let (_, fresh) = plan_for(&added, &start, &mut next);
        assert_eq!(fresh, vec![PoolKey::Shared, PoolKey::Dedicated("new".into())], "new routes: the shared pool too");
    }
}
