//! A worker refused its compiled artefact (see `guest::trust`): someone changed or removed a file of the cache
//! behind the compile step's back. The arbiter compiles the apps again, distrusting the cache, and the main
//! loop starts the missing workers with the new artefacts. It stops the server (as for a worker that cannot
//! boot) only if that compile fails, or if workers keep refusing what was just compiled.

use std::time::Instant;

use crate::log;

use super::spawn::compile_apps;
use super::state::Arbiter;
use super::workers::WorkerRecord;

/// How many times in a row the apps are compiled again before the arbiter gives up.
const MAX_RECOMPILES: u32 = 3;

impl Arbiter {
    /// A worker of `record` exited because it refused an artefact.
    pub(super) fn handle_refused_artefact(&mut self, record: &WorkerRecord) {
        // A worker started before the last compile was given the old digests: its replacement gets the new ones.
        if self.recompiles.last.is_some_and(|last| record.started() < last) {
            return;
        }
        // Only current generations are respawned: a retiring one's refusal needs no compile.
        if !self.pools.values().any(|run| run.generation == record.generation) {
            return;
        }
        self.recompiles.count += 1;
        if self.recompiles.count > MAX_RECOMPILES {
            log::critical(format_args!("Workers refused the apps compiled again {MAX_RECOMPILES} times"));
            self.handle_boot_failure(record.generation);
            return;
        }
        match compile_apps(&self.config, true) {
            Ok(artefacts)
                if artefacts.iter().map(|artefact| &artefact.path).eq(self.artefacts.iter().map(|a| &a.path)) =>
            {
                log::warning("Compiled the apps again and rewrote their cached artefacts: a worker refused one");
                self.artefacts = artefacts;
                self.recompiles.last = Some(Instant::now());
            }
            Ok(_) => {
                log::error("Cannot compile the apps again: their components changed since they were loaded");
                self.handle_boot_failure(record.generation);
            }
            Err(err) => {
                log::error(format_args!("Cannot compile the apps again after a worker refused one: {err:#}"));
                self.handle_boot_failure(record.generation);
            }
        }
    }

    /// Once every pool has all its workers ready, refusals count from zero again.
    pub(super) fn forget_recompiles_once_ready(&mut self) {
        if self.recompiles.count == 0 {
            return;
        }
        let all_ready = self
            .pools
            .values()
            .all(|run| self.workers.generation_ready(run.generation, run.target as usize, &self.heartbeats));
        if all_ready {
            self.recompiles.count = 0;
        }
    }
}
