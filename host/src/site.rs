//! What one server hosts: its apps (tenants), the router that sends each request to one of them, and the pools
//! of workers that run them. Without a manifest the site is one app on the shared pool, taking every request.
//! With `--apps`, every app has a name, routes and its own settings; an app with `workers` gets a dedicated pool
//! of processes of its own, and the shared pool (which also accepts every connection and routes it) runs the
//! others.

use nix::unistd::{Gid, Uid};

use crate::guest::App;
use crate::routing::Router;

/// One hosted app and the settings that are its own.
#[derive(Debug, Clone, PartialEq)]
pub struct Tenant {
    /// The component, its environment, capabilities and limits, and its name (empty without a manifest).
    pub app: App,
    /// The largest request body this app accepts, if limited.
    pub body_limit: Option<u64>,
    /// A worker is replaced after serving this many of this app's requests; 0 means never.
    pub max_requests: u64,
    /// A dedicated pool for this app alone.
    pub pool: Option<DedicatedPool>,
}

/// The size and the credentials of an app's own pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DedicatedPool {
    pub workers: u32,
    pub user: Option<Uid>,
    pub group: Option<Gid>,
}

/// Every hosted app and how requests find them.
#[derive(Debug, Clone, PartialEq)]
pub struct Site {
    pub tenants: Vec<Tenant>,
    pub router: Router,
    /// The apps come from a manifest (`--apps`): logs name each request's app.
    pub hosted: bool,
}

/// Which pool a worker belongs to: the shared one, or the dedicated pool of the app of that name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PoolKey {
    Shared,
    Dedicated(String),
}

impl std::fmt::Display for PoolKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PoolKey::Shared => write!(f, "the shared pool"),
            PoolKey::Dedicated(name) => write!(f, "the pool of app {name}"),
        }
    }
}

impl Site {
    /// The apps (by index) that `pool`'s workers run.
    pub fn apps_of(&self, pool: &PoolKey) -> Vec<usize> {
        (0..self.tenants.len()).filter(|index| &self.pool_of(*index) == pool).collect()
    }

    /// The pool that runs app `index`.
    pub fn pool_of(&self, index: usize) -> PoolKey {
        match &self.tenants[index].pool {
            Some(_) => PoolKey::Dedicated(self.tenants[index].app.name.clone()),
            None => PoolKey::Shared,
        }
    }

    /// Every pool: the shared one first, then one per app that has its own.
    pub fn pool_keys(&self) -> Vec<PoolKey> {
        let dedicated = self.tenants.iter().filter(|tenant| tenant.pool.is_some());
        std::iter::once(PoolKey::Shared)
            .chain(dedicated.map(|tenant| PoolKey::Dedicated(tenant.app.name.clone())))
            .collect()
    }

    pub fn find(&self, name: &str) -> Option<usize> {
        self.tenants.iter().position(|tenant| tenant.app.name == name)
    }

    /// The most linear memory any app of `pool` may use: the pool's engine is sized for it.
    pub fn max_memory_of(&self, pool: &PoolKey) -> usize {
        self.apps_of(pool).iter().map(|index| self.tenants[*index].app.limits.max_memory_bytes).max().unwrap_or(1 << 20)
    }

    /// The longest guest timeout of any app: a busy worker is never killed by the heartbeat before it.
    pub fn longest_guest_timeout(&self) -> std::time::Duration {
        self.tenants.iter().map(|tenant| tenant.app.limits.guest_timeout).max().unwrap_or_default()
    }
}
