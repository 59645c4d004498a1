//! wasmcorn: a pre-fork application server for sandboxed WebAssembly guests.
//!
//! The arbiter binds the sockets and supervises worker processes; each worker accepts one connection at a time,
//! parses the HTTP/1.1 request, hands it to a fresh instance of the guest component and writes the response.
//! Imports go one way: `arbiter -> worker -> {http, guest}`; `http` knows bytes and no processes, `guest` knows
//! wasmtime and the WIT contract and nothing of sockets.

pub mod arbiter;
pub mod cli;
pub mod config;
pub mod guest;
pub mod http;
pub mod listener;
pub mod log;
pub mod worker;

use std::process::ExitCode;

use clap::Parser;

/// Parses the command line and runs the chosen command. `Ok` carries the process's exit code.
pub fn run() -> anyhow::Result<ExitCode> {
    let cli = cli::Cli::parse();
    match cli.command {
        cli::Command::Serve(args) => {
            let config = config::Config::from_args(args)?;
            arbiter::run(config)
        }
    }
}
