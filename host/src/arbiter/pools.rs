//! The arbiter's pools: for each (the shared pool, and one per app with `workers`), the generation of workers
//! that serves it, how many to keep alive, and a fingerprint of everything its workers were started with. A
//! reload compares fingerprints, so that it replaces only the pools whose apps (or, for the shared pool, whose
//! routes) changed; the channels of the dedicated pools outlive their generations.

use std::collections::BTreeMap;

use crate::config::Config;
use crate::guest::Artefact;
use crate::site::{PoolKey, Site};
use crate::worker::Channel;

/// One pool's current generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolRun {
    pub generation: u64,
    /// How many workers to keep alive.
    pub target: u32,
    /// What its workers were started with (see `fingerprint`).
    pub fingerprint: String,
}

/// Every pool's current generation.
pub type Pools = BTreeMap<PoolKey, PoolRun>;

/// The pools of `config`, reusing the generations of `current` whose fingerprint is unchanged (unless
/// `replace_all`) and numbering the others from `next_generation` on. Returns them and the generations that are
/// new.
pub fn plan(
    config: &Config,
    artefacts: &[Artefact],
    current: &Pools,
    replace_all: bool,
    next_generation: &mut u64,
) -> (Pools, Vec<u64>) {
    let mut pools = Pools::new();
    let mut fresh = Vec::new();
    for key in config.site.pool_keys() {
        let fingerprint = fingerprint(config, artefacts, &key);
        let target = target(config, &key);
        let generation = match current.get(&key) {
            Some(run) if run.fingerprint == fingerprint && !replace_all => run.generation,
            _ => {
                let generation = *next_generation;
                *next_generation += 1;
                fresh.push(generation);
                generation
            }
        };
        pools.insert(key, PoolRun { generation, target, fingerprint });
    }
    (pools, fresh)
}

/// How many workers `pool` should have.
fn target(config: &Config, pool: &PoolKey) -> u32 {
    match pool {
        PoolKey::Shared => config.workers,
        PoolKey::Dedicated(name) => {
            config.site.find(name).and_then(|index| config.site.tenants[index].pool).map_or(1, |pool| pool.workers)
        }
    }
}

/// Everything a worker of `pool` is started with, except the pool's size (which changes without replacing
/// anyone): the server's settings, the pool's apps and their artefacts; for the shared pool, which routes every
/// request, also the routes and which apps have pools of their own.
fn fingerprint(config: &Config, artefacts: &[Artefact], pool: &PoolKey) -> String {
    let mut common = config.clone();
    common.site = Site { tenants: Vec::new(), router: Default::default(), hosted: config.site.hosted };
    common.workers = 0;
    let site = &config.site;
    let mut text = format!("{common:?}");
    match pool {
        PoolKey::Shared => {
            text.push_str(&format!("{:?}", site.router));
            for (index, tenant) in site.tenants.iter().enumerate() {
                match tenant.pool {
                    None => text.push_str(&format!("{tenant:?}{:?}", artefacts.get(index))),
                    Some(_) => text.push_str(&format!("dedicated {:?}", tenant.app.name)),
                }
            }
        }
        PoolKey::Dedicated(name) => {
            if let Some(index) = site.find(name) {
                let mut tenant = site.tenants[index].clone();
                if let Some(pool) = tenant.pool.as_mut() {
                    pool.workers = 0;
                }
                text.push_str(&format!("{tenant:?}{:?}", artefacts.get(index)));
            }
        }
    }
    text
}

/// Makes sure every dedicated pool of `site` has a channel (keeping the existing ones).
pub fn open_channels(site: &Site, channels: &mut BTreeMap<String, Channel>) -> anyhow::Result<()> {
    for key in site.pool_keys() {
        if let PoolKey::Dedicated(name) = key
            && !channels.contains_key(&name)
        {
            channels.insert(name, Channel::new()?);
        }
    }
    Ok(())
}

/// Closes the arbiter's ends of the channels `site` no longer uses (workers still running keep their own).
pub fn close_unused_channels(site: &Site, channels: &mut BTreeMap<String, Channel>) {
    let keys = site.pool_keys();
    channels.retain(|name, _| keys.contains(&PoolKey::Dedicated(name.clone())));
}

/// The descriptors a worker of `pool` must close after the fork: the channel ends it does not use.
pub fn unused_in(pool: &PoolKey, channels: &BTreeMap<String, Channel>) -> Vec<std::os::fd::RawFd> {
    let mut unused = Vec::new();
    for (name, channel) in channels {
        let [sender, receiver] = channel.raw_fds();
        match pool {
            PoolKey::Shared => unused.push(receiver),
            PoolKey::Dedicated(own) if own == name => unused.push(sender),
            PoolKey::Dedicated(_) => unused.extend([sender, receiver]),
        }
    }
    unused
}
