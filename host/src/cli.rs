//! The command line as clap sees it: raw flags, no logic. Doc comments here are the `--help` text.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// A pre-fork server for sandboxed WebAssembly apps, in the manner of Gunicorn's sync workers.
#[derive(Debug, Parser)]
#[command(name = "wasmcorn", version, about, long_about = None)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant, reason = "parsed once per process; boxing would only add noise")]
pub(crate) enum Command {
    /// Serve a guest app over HTTP/1.1 with pre-forked sync workers.
    Serve(ServeArgs),
    /// Package an app written in another language as a wasmcorn guest component.
    Build(BuildArgs),
}

#[derive(Debug, Args)]
pub(crate) struct BuildArgs {
    #[command(subcommand)]
    pub kind: BuildKind,
}

#[derive(Debug, Subcommand)]
pub(crate) enum BuildKind {
    /// Package a Python WSGI app (any PEP 3333 callable) and its pure-Python requirements as a component that
    /// `wasmcorn serve` runs, with a fresh pre-initialised interpreter per request. See docs/python.md.
    Python(PythonBuildArgs),
}

#[derive(Debug, Args)]
pub(crate) struct PythonBuildArgs {
    /// The WSGI callable, as MODULE:CALLABLE (`app:app`, `myproject.wsgi:application`); CALLABLE defaults to
    /// `application`.
    #[arg(value_name = "MODULE:CALLABLE")]
    pub target: String,

    /// The folder the app's modules are imported from.
    #[arg(long = "src", value_name = "DIR", default_value = ".")]
    pub src: PathBuf,

    /// A pip requirements file: its packages (pure Python only) are installed into a cached folder and packaged.
    #[arg(long = "requirements", value_name = "FILE")]
    pub requirements: Option<PathBuf>,

    /// A path (`/`, `/items?page=1`) requested with GET at build time, so that what the app imports and caches
    /// while answering it is in the snapshot each request starts from. Repeat for several. An answer of 500 or
    /// more, or an exception, fails the build.
    #[arg(long = "warmup", value_name = "PATH")]
    pub warmup: Vec<String>,

    /// Run the app module's own code at the first request of each fresh instance instead of at build time (it is
    /// still compiled, and what it imports is imported, at build time): for apps that read their settings from
    /// the environment when imported, such as the study's workload.py. Costs that code on every fresh instance.
    #[arg(long = "defer-import")]
    pub defer_import: bool,

    /// Where to write the component.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: PathBuf,

    /// The Python interpreter that creates the build's virtual environment (3.10 or later, with venv).
    #[arg(long = "python", value_name = "PATH", env = "WASMCORN_PYTHON", default_value = "python3")]
    pub python: PathBuf,

    /// Where the build's virtual environment and installed requirements are cached. Defaults to
    /// $WASMCORN_CACHE_DIR, then $XDG_CACHE_HOME/wasmcorn, then ~/.cache/wasmcorn.
    #[arg(long = "cache-dir", value_name = "DIR", env = "WASMCORN_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub(crate) struct ServeArgs {
    /// The guest app: a path to a WebAssembly component (`.wasm`) exporting the wasmcorn handler, or
    /// `sample:NAME` for a sample embedded in this binary (`sample:hello`, `sample:echo`,
    /// `sample:workload`).
    /// Defaults to `sample:hello`; not with `--apps`.
    #[arg(value_name = "APP")]
    pub app: Option<String>,

    /// Host many apps: a TOML manifest of `[[app]]` tables, each with a name, a component, its routes (`hosts`,
    /// `prefix`), its environment, grants and limits, and optionally a pool of its own (`workers`). See "Hosting
    /// many apps" in docs/hosting.md. `[[app]]` tables in the `--config` file do the same.
    #[arg(long = "apps", value_name = "FILE")]
    pub apps: Option<PathBuf>,

    /// The socket to bind, as HOST:PORT (`[::1]:8000` for IPv6), `unix:PATH` or `fd://N` (a socket inherited
    /// as descriptor N). Repeat the flag to listen on several addresses. Port 0 picks a free port; the startup
    /// line `Listening at: http://HOST:PORT` names it.
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

    /// How many requests one guest instance may serve before it is dropped. 1 (the default) gives every request
    /// a fresh instance. With N > 1 an instance serves up to N requests of its app, one after the other, keeping
    /// its module state (globals, linear memory) between them as a Gunicorn worker keeps its Python modules; it
    /// is dropped at once after a trap, a timeout, a refused or failed request. --max-memory bounds its memory
    /// over all its requests. With --apps, the default of the apps that do not set `instance_reuse`.
    #[arg(long = "instance-reuse", value_name = "N", default_value_t = 1)]
    pub instance_reuse: u32,

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

    /// An authority a standard `wasi:http` guest may send outgoing HTTP requests to, as HOST[:PORT] (port 80 by
    /// default). A host name is resolved when the server starts, and requests to it go to the addresses found. Every
    /// request the guest sends is checked; any other authority fails inside the guest with `HTTP-request-denied`.
    /// Plain HTTP only. Repeat for several.
    #[arg(long = "allow-http", value_name = "HOST[:PORT]")]
    pub allow_http: Vec<String>,

    /// Where compiled guests are cached (content-addressed, so one folder serves every app and version).
    /// Defaults to $WASMCORN_CACHE_DIR, then $XDG_CACHE_HOME/wasmcorn, then ~/.cache/wasmcorn.
    #[arg(long = "cache-dir", value_name = "DIR", env = "WASMCORN_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,

    /// A TOML configuration file whose keys are the long flags (`workers = 4`, `bind = ["127.0.0.1:8000"]`,
    /// `app = "sample:echo"`; `_` and `-` are interchangeable). The command line overrides
    /// $WASMCORN_CMD_ARGS, which overrides the file, which overrides the defaults.
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Check the configuration and the app (it is compiled and its contract verified), then exit: 0 when all
    /// is well, otherwise 1 with one line naming the problem.
    #[arg(long = "check-config")]
    pub check_config: bool,

    /// Print the resolved settings, one `key = value` line each (TOML), then exit.
    #[arg(long = "print-config")]
    pub print_config: bool,

    /// A worker silent for longer than this many seconds (stuck in a request, or hung) is killed with SIGABRT,
    /// then SIGKILL a second later, and replaced. 0 turns the check off.
    #[arg(short = 't', long = "timeout", value_name = "SECONDS", default_value_t = 30)]
    pub timeout: u64,

    /// On SIGTERM (and when a reload retires a generation), how many seconds workers get to finish their
    /// requests before they are killed.
    #[arg(long = "graceful-timeout", value_name = "SECONDS", default_value_t = 30)]
    pub graceful_timeout: u64,

    /// A worker is replaced after serving this many requests (0: never), to bound slow leaks.
    #[arg(long = "max-requests", value_name = "INT", default_value_t = 0)]
    pub max_requests: u64,

    /// A random number from 0 to this is added to --max-requests for each worker, so that workers do not all
    /// restart at once.
    #[arg(long = "max-requests-jitter", value_name = "INT", default_value_t = 0)]
    pub max_requests_jitter: u64,

    /// A worker whose resident memory exceeds this many MiB is replaced (0: never): at once after a request whose
    /// connection closed, otherwise after its next request, whose response says Connection: close.
    #[arg(long = "max-worker-memory", value_name = "MIB", default_value_t = 0)]
    pub max_worker_memory: u64,

    /// Write the arbiter's pid to this file at start and remove it at exit. During a SIGUSR2 upgrade the new
    /// arbiter writes FILE.2 until the old one has exited.
    #[arg(short = 'p', long = "pid", value_name = "FILE")]
    pub pid: Option<PathBuf>,

    /// Detach from the terminal and run in the background (stdio goes to /dev/null: use --error-logfile and
    /// --access-logfile to keep the logs).
    #[arg(short = 'D', long = "daemon")]
    pub daemon: bool,

    /// Run the workers as this user (a name or a numeric id), after the sockets are bound.
    #[arg(short = 'u', long = "user", value_name = "USER")]
    pub user: Option<String>,

    /// Run the workers as this group (a name or a numeric id), after the sockets are bound.
    #[arg(short = 'g', long = "group", value_name = "GROUP")]
    pub group: Option<String>,

    /// Change to this folder before loading the app.
    #[arg(long = "chdir", value_name = "DIR")]
    pub chdir: Option<PathBuf>,

    /// A name for this server, shown in process titles (`wasmcorn: arbiter [NAME]`, `wasmcorn: worker [NAME]`).
    #[arg(short = 'n', long = "name", value_name = "NAME")]
    pub name: Option<String>,

    /// The umask (octal, like 0o022 or 022) applied to the files wasmcorn creates, unix sockets included.
    #[arg(short = 'm', long = "umask", value_name = "MASK", default_value = "0")]
    pub umask: String,

    /// The length of the listen queue: connections waiting for a free worker.
    #[arg(long = "backlog", value_name = "INT", default_value_t = 2048)]
    pub backlog: i32,

    /// Set SO_REUSEPORT on the listening sockets, so that another server can bind the same address.
    #[arg(long = "reuse-port")]
    pub reuse_port: bool,

    /// Where the access log goes: a file, or `-` for stderr. Without this flag it goes to stderr.
    #[arg(long = "access-logfile", value_name = "FILE")]
    pub access_logfile: Option<String>,

    /// The access-log line, with Gunicorn's atoms (`%(h)s`, `%(r)s`, `%(s)s`, `%(b)s`, `%(f)s`, `%(a)s`,
    /// `%(t)s`, `%(m)s`, `%(U)s`, `%(q)s`, `%(H)s`, `%(B)s`, `%(D)s`, `%(T)s`, `%(M)s`, `%(L)s`, `%(p)s`,
    /// `%({header}i)s`, `%({header}o)s`...), or `json` for one JSON object per request.
    #[arg(long = "access-logformat", value_name = "FORMAT")]
    pub access_logformat: Option<String>,

    /// Where the error log goes: a file, or `-` for stderr (the default).
    #[arg(long = "error-logfile", alias = "log-file", value_name = "FILE", default_value = "-")]
    pub error_logfile: String,

    /// The least serious error-log level shown: debug, info, warning, error or critical.
    #[arg(long = "log-level", value_name = "LEVEL", default_value = "info")]
    pub log_level: String,

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

    /// The most bytes of memory one worker gives to request heads still arriving, all connections together
    /// (at least 65536). Past it, the largest pending head is answered with `431 Request Header Fields Too Large`
    /// and closed, so that clients sending big heads slowly cannot grow a worker or keep it from others.
    #[arg(long = "limit-pending-heads", value_name = "BYTES", default_value_t = 16 << 20)]
    pub limit_pending_heads: usize,

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

    /// How long an idle connection is kept open for the client's next request, in seconds (fractions allowed), as
    /// in Gunicorn; 0 closes every connection after its response. An idle connection pins no worker: it waits
    /// beside the others, and its next request goes to whichever worker of its pool is free.
    #[arg(long = "keep-alive", value_name = "SECONDS", default_value_t = 2.0, allow_negative_numbers = true)]
    pub keep_alive: f64,

    /// The most idle keep-alive connections one worker holds. A response that would leave one more says
    /// `Connection: close` and closes after it, so a client past the limit is answered, then closed cleanly.
    #[arg(long = "max-idle-connections", value_name = "INT", default_value_t = 128)]
    pub max_idle_connections: usize,

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

    /// Serve Prometheus metrics at `/metrics`, and health checks at `/healthz` (200 while the arbiter runs) and
    /// `/readyz` (200 once every pool has its workers booted, 503 before and while stopping), on this address:
    /// HOST:PORT, or `unix:PATH` (a socket file only the server's user may use). Off by default. See
    /// docs/metrics.md.
    #[arg(long = "metrics-bind", value_name = "ADDRESS")]
    pub metrics_bind: Option<String>,

    /// Send statsd metrics over UDP to HOST:PORT, with Gunicorn's names (`wasmcorn.requests`,
    /// `wasmcorn.request.duration`, `wasmcorn.request.status.CODE`, `wasmcorn.workers`). A datagram that cannot
    /// be sent at once is dropped: a worker never waits for it.
    #[arg(long = "statsd-host", value_name = "HOST:PORT")]
    pub statsd_host: Option<String>,

    /// A prefix for the statsd metric names, joined with a dot: `--statsd-prefix service.app` sends
    /// `service.app.wasmcorn.requests`.
    #[arg(long = "statsd-prefix", value_name = "PREFIX", default_value = "")]
    pub statsd_prefix: String,

    /// Datadog tags added to every statsd line, as a comma-separated list (`env:prod,team:web`), sent as
    /// `|#TAGS` (the dogstatsd extension).
    #[arg(long = "dogstatsd-tags", value_name = "TAGS", default_value = "")]
    pub dogstatsd_tags: String,
}
