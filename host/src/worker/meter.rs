//! A worker's metrics: what it counts into its block of the shared metrics table (requests by app, method and
//! status with their duration; guest outcomes; the time to create an instance), why it leaves when it leaves by
//! itself, and the statsd lines it pushes when `--statsd-host` is set. Set once after the fork (`install`), then
//! reached from the few places that know a request's fate: counting is plain memory, no system call. Without
//! `--metrics-bind` and `--statsd-host` nothing is set, and each of those places costs one check.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Duration;

use crate::guest::{InstanceReport, Outcome};
use crate::settings::StatsdSettings;

use super::counters::labels::{app_label, method_index, status_field};
use super::counters::series::{INSTANCE_BOUNDS, Key, Kind, REQUEST_BOUNDS};
use super::counters::{Block, Counters, ExitReason};
use super::statsd::Statsd;

/// What the arbiter gives a worker for its metrics.
#[derive(Clone)]
pub(crate) struct MeterSetup {
    pub counters: Counters,
    /// The worker's heartbeat slot, which is also its block's index.
    pub slot: usize,
    pub statsd: Option<StatsdSettings>,
    /// Something reads the counts (`--metrics-bind`) or statsd is on: otherwise nothing is counted.
    pub enabled: bool,
}

struct Meter {
    counters: Counters,
    slot: usize,
    block: &'static Block,
    /// Each app label's id in the table's names.
    ids: HashMap<String, u32>,
    statsd: Option<Statsd>,
}

static METER: OnceLock<Meter> = OnceLock::new();

/// In the worker, after the fork: counts go to its block from now on (when metrics are on at all).
pub(super) fn install(setup: &MeterSetup) {
    if !setup.enabled {
        return;
    }
    let meter = Meter {
        counters: setup.counters,
        slot: setup.slot,
        block: setup.counters.block(setup.slot),
        ids: setup.counters.names().all(),
        statsd: setup.statsd.as_ref().and_then(Statsd::connect),
    };
    let _ = METER.set(meter);
}

impl Meter {
    fn app_id(&self, app: &str) -> u32 {
        // An app the arbiter did not name (it names every app before forking) counts as `_OTHER`.
        self.ids.get(app_label(app)).copied().unwrap_or(1)
    }

    fn counted(&self, done: bool) {
        if !done {
            self.counters.dropped();
        }
    }
}

/// A request answered with `status` for `app` (as the access log names it) after `duration`.
pub(super) fn request_done(app: &str, method: &str, status: u16, duration: Duration) {
    let Some(meter) = METER.get() else { return };
    let field = method_index(method) * 1000 + status_field(status);
    let key = Key::new(Kind::Request, meter.app_id(app), field).raw();
    meter.counted(meter.block.observe(key, &REQUEST_BOUNDS, duration.as_secs_f64()));
    if let Some(statsd) = &meter.statsd {
        statsd.request(status, duration);
    }
}

/// What became of a request in the guest of `app`, and what its instance cost.
pub(super) fn guest_done(app: &str, outcome: &Outcome, report: Option<InstanceReport>) {
    let Some(meter) = METER.get() else { return };
    let over_memory = report.is_some_and(|report| report.memory_refused);
    let index = match outcome {
        Outcome::Completed => 0,
        Outcome::Refused(_) => 1,
        Outcome::TimedOut(_) => 2,
        Outcome::Failed(_) if over_memory => 4,
        Outcome::Failed(_) => 3,
    };
    let app = meter.app_id(app);
    meter.counted(meter.block.count(Key::new(Kind::Outcome, app, index).raw()));
    if let Some(created_in) = report.and_then(|report| report.created_in) {
        let key = Key::new(Kind::Instance, app, 0).raw();
        meter.counted(meter.block.observe(key, &INSTANCE_BOUNDS, created_in.as_secs_f64()));
    }
}

/// The worker leaves by itself, for `reason` (the arbiter reads it when it reaps the worker).
pub(super) fn leaving(reason: ExitReason) {
    if let Some(meter) = METER.get() {
        meter.counters.mark_leaving(meter.slot, reason);
    }
}
