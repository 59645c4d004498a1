//! The `wasmcorn` binary: runs the command line and maps failure to a one-line error and a non-zero exit.

use std::process::ExitCode;

fn main() -> ExitCode {
    match wasmcorn::run() {
        Ok(code) => code,
        Err(err) => {
            eprintln!("Error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
