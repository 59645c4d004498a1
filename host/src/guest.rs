//! The guest side: wasmtime, the WIT contract and the app a worker runs. Nothing here knows about sockets or
//! processes; a worker hands each request to `Runtime::handle` with an `Exchange` that moves its bytes.

mod artefact;
mod bindings;
mod bounded_io;
mod capabilities;
mod deadline;
mod name_lookup;
mod output;
mod runtime;
mod samples;
mod state;
mod trace;
mod trust;

use std::path::PathBuf;
use std::time::Duration;

pub use artefact::{Artefact, prepare, read_source};
pub use capabilities::{Capabilities, DirGrant, NetGrant};
pub use deadline::Deadline;
pub use output::GuestLine;
pub use runtime::{Outcome, Runtime};
pub use samples::SAMPLES;
pub use trust::{Refusal, own_uid, prepare_folder};

/// One guest app: the component and the settings it runs with. Workers are given this value; nothing about the
/// app is global.
#[derive(Debug, Clone, PartialEq)]
pub struct App {
    /// The app's name in a manifest, which logs show; empty for the one app of a server without a manifest.
    pub name: String,
    pub source: AppSource,
    /// The guest's whole WASI environment.
    pub env: Vec<(String, String)>,
    /// The folders and addresses the guest may reach; nothing else.
    pub capabilities: Capabilities,
    pub limits: Limits,
}

/// Where the component comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum AppSource {
    /// A sample embedded in the binary, by name.
    Sample(&'static str),
    /// A component file.
    File(PathBuf),
}

impl AppSource {
    /// Reads `sample:NAME` or a path.
    pub fn parse(text: &str) -> anyhow::Result<AppSource> {
        match text.strip_prefix("sample:") {
            Some(name) => samples::find(name).map(|sample| AppSource::Sample(sample.name)).ok_or_else(|| {
                let names: Vec<String> = SAMPLES.iter().map(|sample| format!("sample:{}", sample.name)).collect();
                anyhow::anyhow!("unknown sample {text:?}: the samples are {}", names.join(", "))
            }),
            None => Ok(AppSource::File(PathBuf::from(text))),
        }
    }

    /// How the app is named in logs and errors.
    pub fn describe(&self) -> String {
        match self {
            AppSource::Sample(name) => format!("sample:{name}"),
            AppSource::File(path) => path.display().to_string(),
        }
    }
}

/// The bounds every instance of the app runs within.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// How long one request's guest may run: compute, and wait in host calls (sleeps, polls, sockets, the request
    /// body). Time the host spends moving bytes the client sends or takes is given back to it.
    pub guest_timeout: Duration,
    /// The most linear memory one instance may have.
    pub max_memory_bytes: usize,
}

/// What a request's guest instance uses to read the request body and answer. The worker implements it over
/// the client's connection; benchmarks implement it in memory.
pub trait Exchange: Send + 'static {
    /// The guest starts, with `Some(deadline)`, or has finished (`None`). While it runs, a wait for the client
    /// should end at the deadline, and the time spent moving the client's bytes should be given back to it
    /// (`Deadline::extend`). A read or write cut short by the deadline makes the guest's call a guest timeout.
    fn guest_deadline(&mut self, _deadline: Option<Deadline>) {}
    /// Up to `max` bytes of the request body; empty at its end.
    fn read_body(&mut self, max: usize) -> Result<Vec<u8>, String>;
    /// The guest's `start-response`.
    fn start_response(&mut self, status: &str, headers: Vec<(String, String)>) -> Result<(), String>;
    /// The guest's `write-body`.
    fn write_body(&mut self, chunk: &[u8]) -> Result<(), String>;
}
