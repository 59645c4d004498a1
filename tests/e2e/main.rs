//! End-to-end tests: each starts the real `wasmcorn` binary on 127.0.0.1:0, reads the bound port from its
//! startup line, talks HTTP over real TCP sockets to real guest components built from `guest-apps/`, and
//! stops every process it started, by pid.

mod support;

mod arbiter;
mod bounds;
mod cache;
mod cli;
mod clients;
mod config;
mod corpus;
mod deploy;
mod guests;
mod http;
mod isolation;
mod keepalive;
mod logs;
mod metrics;
mod process;
mod proxy;
mod python;
mod retire;
mod reuse;
mod rfc9112;
mod sandbox;
mod signals;
mod sockets;
mod tenants;
mod watchdog;
mod workers;
