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
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        // --help and --version: print and succeed.
        Err(err) if !err.use_stderr() => {
            err.print()?;
            return Ok(ExitCode::SUCCESS);
        }
        // A usage error: its first line says what is wrong; the usage text that follows is for --help.
        Err(err) => {
            let rendered = err.render().to_string();
            let first = rendered.lines().next().unwrap_or("invalid command line");
            anyhow::bail!("{} (see --help)", first.trim_start_matches("error: "));
        }
    };
    match cli.command {
        cli::Command::Serve(args) => {
            let config = config::Config::from_args(args)?;
            arbiter::run(config)
        }
    }
}
