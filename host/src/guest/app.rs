//! What a guest is: its component (a sample or a file), its name, environment, capabilities and limits. This is
//! the guest's own description, what a worker runs; the hosted app as the site sees it (with its body limit,
//! `max_requests` and pool) is `site::App`, which holds one.

use std::path::PathBuf;
use std::time::Duration;

use super::capabilities::Capabilities;
use super::samples::{self, SAMPLES};

/// One guest: the component and the settings it runs with. Workers are given this value; nothing about the
/// app is global.
#[derive(Debug, Clone, PartialEq)]
pub struct Guest {
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
            None if text.is_empty() => anyhow::bail!("the app is an empty name: give a component file or sample:NAME"),
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
    /// The most linear memory one instance may have (over all the requests it serves).
    pub max_memory_bytes: usize,
    /// How many requests one instance may serve before it is dropped: 1 (the default) is a fresh instance per
    /// request. An instance is dropped at once after a request that did not complete.
    pub instance_reuse: u32,
}
