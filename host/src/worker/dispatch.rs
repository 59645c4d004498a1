//! What a worker does with a request whose head has arrived: the router picks the app; an app this worker runs
//! serves it here, an app of another pool gets the connection handed over (503 at once when that pool's queue is
//! full), and a request no app takes is answered 404 by the host. Every request of a kept-alive connection is
//! routed afresh, so a dedicated pool's worker hands a request for another app back (to the shared pool, which
//! routes it, or to that app's pool; to the shared pool whenever a reload has changed the site since the worker
//! started).

use std::collections::BTreeMap;

use nix::sys::epoll::Epoll;

use super::answers;
use super::environ;
use super::exchange::HttpExchange;
use super::handoff::{self, Channel, SendError, Stage};
use super::heads::{self, Arrived, Origin};
use super::heartbeat::Slot;
use super::serve::{self, KeptAlive, Target};
use crate::guest::Runtime;
use crate::http::Connection;
use crate::log;
use crate::routing::AppId;
use crate::settings::HttpSettings;
use crate::site::{PoolKey, Site};

/// A worker's view of the site: which apps it runs (and where they are in its runtime) and where the others go.
pub(super) struct Dispatch<'a> {
    site: &'a Site,
    /// For each app of the site, its index in this worker's runtime, if this worker runs it.
    local: Vec<Option<usize>>,
    channels: &'a BTreeMap<PoolKey, Channel>,
    /// This worker's pool.
    own: &'a PoolKey,
    /// Requests served here, per app of the site, for the apps' `max_requests`.
    served: Vec<u64>,
}

/// What became of a request.
pub(super) enum Handled {
    /// An app this worker runs served it; its connection comes back when the response kept it alive.
    Served { app: AppId, kept: Option<KeptAlive> },
    /// Handed over to the dedicated pool of its app.
    HandedOver,
    /// Answered by the host itself: no app takes it (404), or its app could not take it (its pool is full or
    /// unreachable, its app is stopped: 503; its head too large to hand over: 431).
    Answered,
}

impl<'a> Dispatch<'a> {
    /// `runs` lists the site's apps this worker runs, in the order of its runtime.
    pub(super) fn new(
        site: &'a Site,
        runs: &[AppId],
        channels: &'a BTreeMap<PoolKey, Channel>,
        own: &'a PoolKey,
    ) -> Self {
        let mut local = vec![None; site.apps.len()];
        for (position, app) in runs.iter().enumerate() {
            local[app.index()] = Some(position);
        }
        Dispatch { site, local, channels, own, served: vec![0; site.apps.len()] }
    }

    /// Routes and serves (or hands over, or answers) the request; `keep_alive` says whether this worker can keep
    /// its connection open after the response.
    pub(super) fn handle(
        &mut self,
        runtime: &Runtime<HttpExchange>,
        settings: &HttpSettings,
        epoll: &Epoll,
        arrived: Arrived,
        slot: &'static Slot,
        keep_alive: bool,
    ) -> Handled {
        // Decoded once: routing reads it, and the environ's PATH_INFO is taken from it.
        let path = environ::decode_path(&arrived.request.path);
        let (app, script_name) = match &arrived.origin {
            // Handed over: the shared pool routed it to this worker's pool, which runs one app.
            Origin::HandedOver { script_name } => match self.local.iter().position(Option::is_some) {
                Some(index) => (AppId(index), script_name.clone()),
                None => {
                    arrived.answer(503, "-");
                    return Handled::Answered;
                }
            },
            Origin::Accepted => match route(self.site, &arrived, &path) {
                Some(routed) => routed,
                None => {
                    arrived.answer(404, "-");
                    return Handled::Answered;
                }
            },
        };
        let hosted = self.site.app(app);
        match self.local[app.index()] {
            Some(index) => {
                let target = Target {
                    index,
                    name: &hosted.guest.name,
                    script_name: &script_name,
                    path: &path,
                    body_limit: hosted.body_limit,
                };
                // The request that reaches a shared app's own `max_requests` is this worker's last: it closes.
                let last = *self.own == PoolKey::Shared
                    && hosted.max_requests > 0
                    && self.served[app.index()] + 1 >= hosted.max_requests;
                let kept = serve::request(runtime, &target, settings, arrived, slot, keep_alive && !last);
                self.served[app.index()] += 1;
                Handled::Served { app, kept }
            }
            None => self.hand_over(epoll, app, &script_name, arrived, slot),
        }
    }

    fn hand_over(&self, epoll: &Epoll, app: AppId, script_name: &str, arrived: Arrived, slot: &Slot) -> Handled {
        // A dedicated pool's worker that a reload kept routes with the site it was started with, and the pool it
        // would pick may be gone (its channel then reaches nobody): what it cannot serve goes to the shared pool,
        // which routes it with the current site. Not while the server stops: the shared pool then takes no more,
        // and no reload comes.
        let stale = *self.own != PoolKey::Shared && slot.routes_stale() && !slot.is_server_stopping();
        let to = if stale { PoolKey::Shared } else { self.site.pool_of(app) };
        hand_over_to(self.site, self.channels, self.own, epoll, (app, script_name, to), arrived)
    }

    /// Whether an app this worker serves has reached its own `max_requests`.
    pub(super) fn app_limit_reached(&self, app: AppId) -> bool {
        let limit = self.site.app(app).max_requests;
        limit > 0 && self.served[app.index()] >= limit
    }
}

/// The app a request accepted from a listener goes to, and its mount point (`path` is its decoded path).
pub(super) fn route(site: &Site, arrived: &Arrived, path: &str) -> Option<(AppId, String)> {
    let host = arrived.request.authority.as_deref().or_else(|| arrived.request.header("host"));
    site.router.route(host, path).map(|routed| (routed.app, routed.script_name))
}

/// Passes the connection to the pool of app `app` (mounted at `script_name`), or answers for it when that cannot
/// be done: a worker of pool `own` hands a request for another pool's app. The shared pool routes what it gets; a
/// dedicated pool gets the request routed.
pub(super) fn hand_over(
    site: &Site,
    channels: &BTreeMap<PoolKey, Channel>,
    own: &PoolKey,
    epoll: &Epoll,
    (app, script_name): (AppId, &str),
    arrived: Arrived,
) -> Handled {
    hand_over_to(site, channels, own, epoll, (app, script_name, site.pool_of(app)), arrived)
}

/// `hand_over`, to pool `pool`: the app's own, or the shared pool, which routes what it gets.
fn hand_over_to(
    site: &Site,
    channels: &BTreeMap<PoolKey, Channel>,
    own: &PoolKey,
    epoll: &Epoll,
    (app, script_name, pool): (AppId, &str, PoolKey),
    arrived: Arrived,
) -> Handled {
    let name = &site.app(app).guest.name;
    let channel = channels.get(&pool).filter(|_| pool != *own);
    let Some(channel) = channel else {
        // Its own pool: an app this worker does not run (it is stopped).
        log::error(format_args!("No channel to {pool} for app {name}: 503"));
        arrived.answer(503, name);
        return Handled::Answered;
    };
    let stage = match pool {
        PoolKey::Shared => Stage::Unrouted,
        PoolKey::Dedicated(_) => Stage::Routed { script_name: script_name.to_string() },
    };
    let Arrived { conn, request, peer, .. } = arrived;
    let (stream, bytes) = heads::leave(epoll, conn);
    match handoff::send(channel.sender(), &stream, &stage, &bytes) {
        // Our copy of the socket closes here; the pool's worker has its own.
        Ok(()) => Handled::HandedOver,
        Err(err) => {
            let status = match &err {
                SendError::Busy(cause) => {
                    log::warning(format_args!(
                        "The pool of app {name} is full ({cause}): 503 for {}",
                        request.request_line()
                    ));
                    503
                }
                SendError::TooLarge => 431,
            };
            answers::answer(Connection::with_bytes(stream, Vec::new()), &request, peer, status, name);
            Handled::Answered
        }
    }
}
