//! The guest side: wasmtime, the WIT contract, the standard `wasi:http` proxy world, and the app a worker runs. Nothing here knows about sockets or
//! processes; a worker hands each request to `Runtime::handle` with an `Exchange` that moves its bytes.

mod app;
mod artefact;
mod asked_environ;
mod bindings;
mod bounded_io;
mod bounded_random;
mod capabilities;
mod deadline;
mod engine;
mod exchange;
mod instance;
mod kind;
mod limits;
mod name_lookup;
mod output;
mod pool_fit;
mod proxy;
mod runtime;
mod samples;
mod state;
mod timer;
mod trace;
mod trust;

pub use app::{AppSource, Guest, Limits};
pub use artefact::{Artefact, prepare, read_source};
pub(crate) use bounded_io::start_ambient_runtime;
pub use capabilities::{Capabilities, DirGrant, HttpAuthority, HttpGrant, NetGrant};
pub(crate) use deadline::Deadline;
pub use exchange::{Exchange, InstanceReport, ProxyHead, ResponseHeaders};
pub use kind::Kind;
pub use output::GuestLine;
pub use runtime::{Outcome, Runtime};
pub(crate) use trust::Refusal;
pub use trust::prepare_folder;
