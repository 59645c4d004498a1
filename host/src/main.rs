//! The `wasmcorn` binary: runs the command line and maps failure to a one-line error and a non-zero exit.

use std::io::Write;
use std::process::ExitCode;

fn main() -> ExitCode {
    match wasmcorn::run() {
        Ok(code) => code,
        Err(err) => {
            // A stderr that cannot take the line (closed, a full disk) loses it: the exit status still says it.
            let _ = writeln!(std::io::stderr(), "{}", wasmcorn::error_line(&err));
            ExitCode::FAILURE
        }
    }
}
