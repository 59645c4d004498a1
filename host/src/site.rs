//! What one server hosts: its apps, the router that sends each request to one of them, and the pools of workers
//! that run them. Without a manifest the site is one app on the shared pool, taking every request. With `--apps`,
//! every app has a name, routes and its own settings; an app with `workers` gets a dedicated pool of processes
//! of its own, and the shared pool (which also accepts every connection and routes it) runs the others.
//!
//! Two nouns, two things: an `App` is a hosted app as the site sees it (its guest, plus what the site decides for
//! it: body limit, `max_requests`, pool); a `guest::Guest` is what a worker runs for it (the component, its
//! name, environment, capabilities and limits). An `AppId` is an app's place in `Site::apps`.

use nix::unistd::{Gid, Uid};

use crate::guest::Guest;
use crate::routing::{AppId, Router};

/// One hosted app and the settings the site gives it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct App {
    /// What its workers run: the component, its environment, capabilities and limits, and its name (empty
    /// without a manifest).
    pub guest: Guest,
    /// The largest request body this app accepts, if limited.
    pub body_limit: Option<u64>,
    /// A worker is replaced after serving this many of this app's requests; 0 means never.
    pub max_requests: u64,
    /// A dedicated pool for this app alone.
    pub pool: Option<DedicatedPool>,
}

/// The size and the credentials of an app's own pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DedicatedPool {
    pub workers: u32,
    pub user: Option<Uid>,
    pub group: Option<Gid>,
}

/// Every hosted app and how requests find them.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Site {
    /// The apps, each at the index its `AppId` holds.
    pub apps: Vec<App>,
    pub router: Router,
    /// The apps come from a manifest (`--apps`): logs name each request's app.
    pub hosted: bool,
}

/// Which pool a worker belongs to: the shared one, or the dedicated pool of the app of that name. A pool is
/// named by its app's name, not its `AppId`: pools and their channels outlive a configuration, and a reload may
/// give the app another place in the manifest.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum PoolKey {
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
    /// The app `id` names.
    pub(crate) fn app(&self, id: AppId) -> &App {
        &self.apps[id.index()]
    }

    /// Every app with its id, in order.
    pub(crate) fn ids(&self) -> impl Iterator<Item = (AppId, &App)> {
        self.apps.iter().enumerate().map(|(index, app)| (AppId(index), app))
    }

    /// The apps that `pool`'s workers run.
    pub(crate) fn apps_of(&self, pool: &PoolKey) -> Vec<AppId> {
        self.ids().filter(|(id, _)| &self.pool_of(*id) == pool).map(|(id, _)| id).collect()
    }

    /// The pool that runs app `id`.
    pub(crate) fn pool_of(&self, id: AppId) -> PoolKey {
        let app = self.app(id);
        match &app.pool {
            Some(_) => PoolKey::Dedicated(app.guest.name.clone()),
            None => PoolKey::Shared,
        }
    }

    /// Every pool: the shared one first, then one per app that has its own.
    pub(crate) fn pool_keys(&self) -> Vec<PoolKey> {
        let dedicated = self.apps.iter().filter(|app| app.pool.is_some());
        std::iter::once(PoolKey::Shared)
            .chain(dedicated.map(|app| PoolKey::Dedicated(app.guest.name.clone())))
            .collect()
    }

    /// The app whose dedicated pool `pool` is, if it is one of this site's.
    pub(crate) fn owner_of(&self, pool: &PoolKey) -> Option<(AppId, &App)> {
        match pool {
            PoolKey::Shared => None,
            PoolKey::Dedicated(name) => self.ids().find(|(_, app)| &app.guest.name == name && app.pool.is_some()),
        }
    }

    /// The most linear memory any app of `pool` may use: the pool's engine is sized for it.
    pub(crate) fn max_memory_of(&self, pool: &PoolKey) -> usize {
        self.apps_of(pool).iter().map(|id| self.app(*id).guest.limits.max_memory_bytes).max().unwrap_or(1 << 20)
    }

    /// The longest guest timeout of any app: a busy worker is never killed by the heartbeat before it.
    pub(crate) fn longest_guest_timeout(&self) -> std::time::Duration {
        self.apps.iter().map(|app| app.guest.limits.guest_timeout).max().unwrap_or_default()
    }
}
