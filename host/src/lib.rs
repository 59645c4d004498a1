//! wasmcorn: a pre-fork application server for sandboxed WebAssembly guests.
//!
//! The arbiter binds the sockets and supervises worker processes; each worker serves one request at a time: it
//! parses the HTTP/1.1 request, hands it to a fresh instance of the guest component, writes the response, and
//! keeps the connection for the next request when the response allows it (keep-alive).
//! Imports go one way: `arbiter -> {config, worker}`, `worker -> {http, guest}`; `site`, `routing` and `settings`
//! sit below `arbiter`, `config` and `worker` (`site` holds each app's `guest::Guest`, `settings` imports
//! nothing); `http` knows bytes and no processes, `guest` knows wasmtime and the WIT contract and nothing of
//! sockets.

// The binary needs `run` alone; the benchmarks (`bench/`) also reach into `guest` and `http`, which export only
// what they measure. Everything else is private, so the compiler reports what nothing uses.
mod arbiter;
mod build;
mod cli;
mod clock;
mod config;
pub mod guest;
pub mod http;
mod listener;
mod log;
mod planted;
mod process;
mod regular_file;
mod routing;
mod settings;
mod site;
mod worker;

use std::ffi::OsString;
use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;

use config::Invocation;

/// The one line a failed run prints: `Error: ` and the error's chain, every line break or other control character
/// in it (from a path or a name the operator gave, or a compiler's message) written as an escape, as guest text in
/// the log is.
pub fn error_line(err: &anyhow::Error) -> String {
    format!("Error: {}", log::escape(&format!("{err:#}")))
}

/// Parses the command line and runs the chosen command. `Ok` carries the process's exit code.
pub fn run() -> anyhow::Result<ExitCode> {
    let argv: Vec<OsString> = std::env::args_os().collect();
    let cli = match cli::Cli::try_parse_from(&argv) {
        Ok(cli) => cli,
        // --help and --version: print and succeed.
        Err(err) if !err.use_stderr() => {
            err.print()?;
            return Ok(ExitCode::SUCCESS);
        }
        // A usage error: its first line says what is wrong; the usage text that follows is for --help.
        Err(err) => anyhow::bail!("{} (see --help)", config::one_line(&err.render())),
    };
    match cli.command {
        cli::Command::Serve(_) => {
            // The subcommand is the first argument: what follows it is resolved with the other layers.
            let serve_args = argv.get(2..).unwrap_or_default().to_vec();
            match config::load(&serve_args)? {
                Invocation::PrintConfig(text) => {
                    // A closed pipe or a full disk is an error to report, not a panic of `print!`.
                    let mut stdout = std::io::stdout().lock();
                    stdout
                        .write_all(text.as_bytes())
                        .and_then(|()| stdout.flush())
                        .context("cannot write the configuration to stdout")?;
                    Ok(ExitCode::SUCCESS)
                }
                Invocation::CheckConfig(config) => {
                    arbiter::check(&config)?;
                    Ok(ExitCode::SUCCESS)
                }
                Invocation::Serve(config) => arbiter::run(*config, serve_args),
            }
        }
        cli::Command::Build(args) => match args.kind {
            cli::BuildKind::Python(args) => {
                build::python(&args)?;
                Ok(ExitCode::SUCCESS)
            }
        },
    }
}
