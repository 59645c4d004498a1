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

    /// Where compiled guests are cached (content-addressed, so one folder serves every app and version).
    /// Defaults to $WASMCORN_CACHE_DIR, then $XDG_CACHE_HOME/wasmcorn, then ~/.cache/wasmcorn.
    #[arg(long = "cache-dir", value_name = "DIR", env = "WASMCORN_CACHE_DIR")]
    pub cache_dir: Option<std::path::PathBuf>,

    /// The longest request line accepted, in bytes, from 0 to 8190; 0 means no limit. A longer request line
    /// is answered with `414 URI Too Long`.
    #[arg(long = "limit-request-line", value_name = "INT", default_value_t = 4094)]
    pub limit_request_line: usize,

    /// The most header fields accepted in a request, up to 32768. A request with more is answered with
    /// `431 Request Header Fields Too Large`.
    #[arg(long = "limit-request-fields", value_name = "INT", default_value_t = 100)]
    pub limit_request_fields: usize,

    /// The longest header field accepted (name, colon, value and CRLF), in bytes; 0 means no limit. A longer field
    /// is answered with `431 Request Header Fields Too Large`. The spelling with an underscore is Gunicorn's;
    /// `--limit-request-field-size` is accepted too.
    #[arg(
        long = "limit-request-field_size",
        alias = "limit-request-field-size",
        value_name = "INT",
        default_value_t = 8190
    )]
    pub limit_request_field_size: usize,

    /// The largest request body accepted, in bytes; 0 means no limit. A Content-Length over it is answered
    /// with `413 Content Too Large` before the guest runs; a chunked body that grows past it fails the guest's
    /// read, and the client gets the same 413.
    #[arg(long = "limit-request-body", value_name = "BYTES", default_value_t = 0)]
    pub limit_request_body: u64,

    /// How long a worker waits for a client, in seconds (fractions allowed): the whole request head must arrive
    /// within it, and so must each read of the body and each write of the response. A client too slow for it
    /// gets `408 Request Timeout`, or a closed connection once the response has started.
    #[arg(long = "client-timeout", value_name = "SECONDS", default_value_t = 30.0, allow_negative_numbers = true)]
    pub client_timeout: f64,

    /// The proxies whose `X-Forwarded-For` and `X-Forwarded-Proto` (also `X-Forwarded-Protocol: ssl` and
    /// `X-Forwarded-Ssl: on`) are believed, as a comma-separated list of IP addresses and networks, or `*`
    /// for every peer. From these peers, the last address of `X-Forwarded-For` becomes REMOTE_ADDR and the
    /// scheme headers set `wsgi.url_scheme`. Defaults to $FORWARDED_ALLOW_IPS when it is set, as in Gunicorn.
    #[arg(
        long = "forwarded-allow-ips",
        value_name = "LIST",
        env = "FORWARDED_ALLOW_IPS",
        default_value = "127.0.0.1,::1"
    )]
    pub forwarded_allow_ips: String,

    /// The path the app is mounted at, such as `/app`: the guest gets it as SCRIPT_NAME, and a request path
    /// that starts with it has it removed from PATH_INFO. Defaults to the SCRIPT_NAME given with `--env`, as
    /// Gunicorn takes it from its environment, and to none.
    #[arg(long = "script-name", value_name = "PATH")]
    pub script_name: Option<String>,
}
