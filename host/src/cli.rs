//! The command line as clap sees it: raw flags, no logic. Doc comments here are the `--help` text.

use clap::{Args, Parser, Subcommand};

/// A pre-fork server for sandboxed WebAssembly apps, in the manner of Gunicorn's sync workers.
#[derive(Debug, Parser)]
#[command(name = "wasmcorn", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve a guest app over HTTP/1.1 with pre-forked sync workers.
    Serve(ServeArgs),
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The guest app: a path to a WebAssembly component (`.wasm`) exporting the wasmcorn handler, or
    /// `sample:NAME` for a sample embedded in this binary (`sample:hello`, `sample:echo`,
    /// `sample:workload`).
    #[arg(value_name = "APP", default_value = "sample:hello")]
    pub app: String,

    /// The socket to bind, as HOST:PORT (`[::1]:8000` for IPv6). Repeat the flag to listen on several
    /// addresses. Port 0 picks a free port; the startup line `Listening at: http://HOST:PORT` names it.
    #[arg(short = 'b', long = "bind", value_name = "ADDRESS", default_value = "127.0.0.1:8000")]
    pub bind: Vec<String>,

    /// The number of worker processes. Each serves one request at a time, so this is the number of requests
    /// served at once. Defaults to $WEB_CONCURRENCY when it is set, as in Gunicorn, and to 1 otherwise.
    #[arg(short = 'w', long = "workers", value_name = "INT", env = "WEB_CONCURRENCY", default_value_t = 1)]
    pub workers: u32,

    /// An environment variable for the guest, as KEY=VALUE. Repeat the flag for several. The guest sees these
    /// and nothing of the server's own environment.
    #[arg(short = 'e', long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,

    /// How long one request may run inside the guest, in seconds (fractions allowed). A guest still
    /// computing after that is interrupted and the client gets `503 Service Unavailable`; the worker goes on
    /// serving.
    #[arg(long = "guest-timeout", value_name = "SECONDS", default_value_t = 30.0, allow_negative_numbers = true)]
    pub guest_timeout: f64,

    /// The most linear memory one guest instance may use, in MiB. Growing beyond it fails inside the guest.
    #[arg(long = "max-memory", value_name = "MIB", default_value_t = 128)]
    pub max_memory: u32,

    /// A host folder the guest may use, as HOST[::GUEST][:ro]: HOST appears in the guest as GUEST (by default
    /// the same path); with `:ro` the guest may read but not change anything. Repeat for several. Without it the
    /// guest sees no files at all.
    #[arg(long = "dir", value_name = "HOST[::GUEST][:ro]")]
    pub dir: Vec<String>,

    /// An address the guest may open TCP connections to, as HOST:PORT. A host name is resolved when the server
    /// starts, and the guest may look up that name (and no other). Repeat for several. Without it the guest has
    /// no network at all.
    #[arg(long = "allow-net", value_name = "HOST:PORT")]
    pub allow_net: Vec<String>,

    /// Where compiled guests are cached (content-addressed, so one folder serves every app and version).
    /// Defaults to $WASMCORN_CACHE_DIR, then $XDG_CACHE_HOME/wasmcorn, then ~/.cache/wasmcorn.
    #[arg(long = "cache-dir", value_name = "DIR", env = "WASMCORN_CACHE_DIR")]
    pub cache_dir: Option<std::path::PathBuf>,
}
