//! What a worker does with a request whose head has arrived: the router picks the app; an app this worker runs
//! serves it here, an app with a pool of its own gets the connection handed over (503 at once when that pool's
//! queue is full), and a request no app takes is answered 404 by the host.

use std::collections::BTreeMap;

use percent_encoding::percent_decode_str;

use super::answers;
use super::exchange::HttpExchange;
use super::handoff::{self, Channel, SendError};
use super::heads::Arrived;
use super::heartbeat::Slot;
use super::serve::{self, Target};
use crate::guest::Runtime;
use crate::http::Connection;
use crate::log;
use crate::settings::HttpSettings;
use crate::site::Site;

/// A worker's view of the site: which apps it runs (and where they are in its runtime) and where the others go.
pub struct Dispatch<'a> {
    site: &'a Site,
    /// For each app of the site, its index in this worker's runtime, if this worker runs it.
    local: Vec<Option<usize>>,
    channels: &'a BTreeMap<String, Channel>,
    /// Requests served here, per app of the site, for the apps' `max_requests`.
    served: Vec<u64>,
}

/// What became of a request.
pub enum Handled {
    /// Served here by app `app` (the site's index).
    Served { app: usize },
    /// Handed over to another pool, or answered by the host.
    Elsewhere,
}

impl<'a> Dispatch<'a> {
    /// `runs` lists the site's apps this worker runs, in the order of its runtime.
    pub fn new(site: &'a Site, runs: &[usize], channels: &'a BTreeMap<String, Channel>) -> Self {
        let mut local = vec![None; site.tenants.len()];
        for (position, app) in runs.iter().enumerate() {
            local[*app] = Some(position);
        }
        Dispatch { site, local, channels, served: vec![0; site.tenants.len()] }
    }

    pub fn handle(
        &mut self,
        runtime: &Runtime<HttpExchange>,
        settings: &HttpSettings,
        arrived: Arrived,
        slot: &'static Slot,
    ) -> Handled {
        let (app, script_name) = match &arrived.script_name {
            // Handed over: the shared pool routed it to this worker's pool, which runs one app.
            Some(script_name) => match self.local.iter().position(Option::is_some) {
                Some(app) => (app, script_name.clone()),
                None => {
                    arrived.answer(503, "-");
                    return Handled::Elsewhere;
                }
            },
            None => {
                let host = arrived.request.authority.as_deref().or_else(|| arrived.request.header("host"));
                let path = percent_decode_str(&arrived.request.path).decode_utf8_lossy();
                match self.site.router.route(host, &path) {
                    Some(routed) => (routed.app, routed.script_name),
                    None => {
                        arrived.answer(404, "-");
                        return Handled::Elsewhere;
                    }
                }
            }
        };
        let tenant = &self.site.tenants[app];
        match self.local[app] {
            Some(index) => {
                let target =
                    Target { index, name: &tenant.app.name, script_name: &script_name, body_limit: tenant.body_limit };
                serve::request(runtime, &target, settings, arrived, slot);
                self.served[app] += 1;
                Handled::Served { app }
            }
            None => {
                self.hand_over(app, &script_name, arrived);
                Handled::Elsewhere
            }
        }
    }

    /// Passes the connection to the pool of app `app`, or answers for it when that cannot be done.
    fn hand_over(&self, app: usize, script_name: &str, arrived: Arrived) {
        let name = &self.site.tenants[app].app.name;
        let Some(channel) = self.channels.get(name) else {
            log::error(format_args!("No channel to the pool of app {name}: 503"));
            return arrived.answer(503, name);
        };
        let Arrived { conn, request, peer, .. } = arrived;
        let (stream, bytes) = conn.into_parts();
        match handoff::send(channel.sender(), &stream, script_name, &bytes) {
            // Our copy of the socket closes here; the pool's worker has its own.
            Ok(()) => {}
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
                let conn = Connection::with_bytes(stream, Vec::new());
                answers::answer(conn, &request, peer, status, name);
            }
        }
    }

    /// Whether an app this worker serves has reached its own `max_requests`.
    pub fn app_limit_reached(&self, app: usize) -> bool {
        let limit = self.site.tenants[app].max_requests;
        limit > 0 && self.served[app] >= limit
    }
}
