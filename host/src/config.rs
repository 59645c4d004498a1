//! Resolves the command line, `$WASMCORN_CMD_ARGS` and the config file into one validated `Config`. Every bad
//! value is a one-line error naming the flag (or the config key).

mod accounts;
mod grants;
mod layers;
mod manifest;
mod metrics;
mod seconds;

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use nix::unistd::{Gid, Uid};

use crate::cli::ServeArgs;
use crate::guest::{AppSource, Capabilities, Guest, Limits};
use crate::log;
use crate::routing::Router;
use crate::settings::{HeadLimits, HttpSettings, StatsdSettings, TrustedProxies};
use crate::site::{App, Site};
use accounts::{parse_group, parse_user};
use seconds::Zero;

pub(crate) use layers::one_line;

/// What the command line asks for.
pub(crate) enum Invocation {
    Serve(Box<Config>),
    /// `--check-config`: validate, compile the app, exit.
    CheckConfig(Box<Config>),
    /// `--print-config`: the resolved settings as TOML.
    PrintConfig(String),
}

/// Everything `wasmcorn serve` needs, validated.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    /// The apps this server hosts and how requests reach them.
    pub site: Site,
    /// The addresses to listen on, as given (`HOST:PORT`, `unix:PATH`, `fd://N`).
    pub binds: Vec<String>,
    /// How many workers the arbiter keeps alive in the shared pool.
    pub workers: u32,
    /// Where compiled guests are cached.
    pub cache_dir: PathBuf,
    /// A worker silent for longer is killed; `None` turns the check off.
    pub timeout: Option<Duration>,
    pub graceful_timeout: Duration,
    pub max_requests: u64,
    pub max_requests_jitter: u64,
    /// Resident memory in bytes past which a worker is recycled.
    pub max_worker_memory: Option<u64>,
    pub pidfile: Option<PathBuf>,
    pub daemon: bool,
    pub user: Option<Uid>,
    pub group: Option<Gid>,
    pub chdir: Option<PathBuf>,
    pub name: Option<String>,
    pub umask: u32,
    pub backlog: i32,
    pub reuse_port: bool,
    pub logging: log::Settings,
    /// How workers read requests.
    pub http: HttpSettings,
    /// `--metrics-bind`: where metrics and health checks are served.
    pub metrics_bind: Option<String>,
    /// `--statsd-host` and its naming flags.
    pub statsd: Option<StatsdSettings>,
}

/// Reads the `serve` arguments (what follows `serve` on the command line) and the other layers.
pub(crate) fn load(serve_args: &[OsString]) -> anyhow::Result<Invocation> {
    let (args, merged) = layers::resolve(serve_args)?;
    if args.print_config {
        return Ok(Invocation::PrintConfig(layers::render(&merged)?));
    }
    let check = args.check_config;
    let config = Box::new(Config::from_args(args)?);
    Ok(if check { Invocation::CheckConfig(config) } else { Invocation::Serve(config) })
}

/// The most bytes a config file or an app manifest may hold (thousands of apps fit): a larger file is refused
/// before it is read, at start and in a reload, rather than read whole into the arbiter's memory.
const SETTINGS_FILE_MOST: u64 = 4 << 20;

/// The text of the config file or app manifest at `path`, at most `SETTINGS_FILE_MOST` bytes.
fn read_settings_file(path: &std::path::Path) -> anyhow::Result<String> {
    crate::regular_file::read_text_at_most(path, SETTINGS_FILE_MOST)
}

/// The most workers of all pools together: half the arbiter's table, which a reload fills with two generations.
pub(crate) const MAX_WORKERS: u64 = crate::worker::heartbeat::CAPACITY as u64 / 2;

impl Config {
    pub(crate) fn from_args(args: ServeArgs) -> anyhow::Result<Config> {
        if args.workers == 0 {
            bail!("--workers must be at least 1");
        }
        let guest_timeout = seconds::fractional("--guest-timeout", args.guest_timeout, Zero::Refused)?;
        if args.max_memory == 0 {
            bail!("--max-memory must be at least 1 MiB");
        }
        if args.instance_reuse == 0 {
            bail!("--instance-reuse must be at least 1 (1: a fresh instance for every request)");
        }
        if args.bind.is_empty() {
            bail!("--bind needs at least one address");
        }
        if args.backlog < 1 {
            bail!("--backlog must be at least 1, not {}", args.backlog);
        }
        let env = args.env.iter().map(|pair| parse_env_pair(pair)).collect::<anyhow::Result<Vec<_>>>()?;
        let http = http_settings(&args)?;
        let script_name = script_name(&args, &env)?;
        let body_limit = (args.limit_request_body > 0).then_some(args.limit_request_body);
        let cache_dir = match args.cache_dir {
            Some(ref dir) => dir.clone(),
            None => default_cache_dir().context("cannot find a cache folder: set --cache-dir or $HOME")?,
        };
        // A relative pid file is written in the --chdir folder: it is checked there.
        let written_at =
            |pid: &std::path::Path| args.chdir.as_deref().map_or_else(|| pid.to_path_buf(), |dir| dir.join(pid));
        if let Some(pid) = args.pid.as_deref().filter(|pid| pid.as_os_str().is_empty() || written_at(pid).is_dir()) {
            bail!("--pid {:?} names a folder, or nothing: name the pid file to write", pid.display().to_string());
        }
        let logging = log::Settings::parse(
            args.access_logfile.as_deref(),
            args.access_logformat.as_deref(),
            &args.error_logfile,
            &args.log_level,
            args.apps.is_some(),
        )?;
        let limits = Limits {
            guest_timeout,
            max_memory_bytes: usize::try_from(args.max_memory)?.saturating_mul(1 << 20),
            instance_reuse: args.instance_reuse,
        };
        let site = match &args.apps {
            Some(path) => hosted_site(&args, path, limits, body_limit)?,
            None => single_site(&args, env, limits, body_limit, &script_name)?,
        };
        let dedicated: u64 = site.apps.iter().filter_map(|app| app.pool).map(|pool| u64::from(pool.workers)).sum();
        let total = u64::from(args.workers) + dedicated;
        if total > MAX_WORKERS {
            let manifest = args.apps.as_ref().map_or(String::new(), |path| format!("{}: ", path.display()));
            bail!(
                "{manifest}--workers and the apps' own \"workers\" come to {total} workers: at most {MAX_WORKERS} \
                 (the arbiter follows {} workers, and a reload runs two generations of a pool at once)",
                crate::worker::heartbeat::CAPACITY
            );
        }
        crate::listener::refuse_repeated(&args.bind)?;
        let user = args.user.as_deref().map(parse_user).transpose()?;
        let group = args.group.as_deref().map(parse_group).transpose()?;
        if let (Some(user), None) = (user, group) {
            crate::process::account_of(user).context("--user")?;
        }
        Ok(Config {
            site,
            binds: args.bind,
            workers: args.workers,
            cache_dir,
            timeout: Some(seconds::whole("--timeout", args.timeout, Zero::Allowed)?).filter(|time| !time.is_zero()),
            graceful_timeout: seconds::whole("--graceful-timeout", args.graceful_timeout, Zero::Allowed)?,
            max_requests: args.max_requests,
            max_requests_jitter: args.max_requests_jitter,
            max_worker_memory: (args.max_worker_memory > 0).then(|| args.max_worker_memory.saturating_mul(1 << 20)),
            pidfile: args.pid,
            daemon: args.daemon,
            user,
            group,
            chdir: args.chdir,
            name: args.name,
            umask: parse_umask(&args.umask)?,
            backlog: args.backlog,
            reuse_port: args.reuse_port,
            logging,
            http,
            metrics_bind: metrics::bind(args.metrics_bind.as_deref())?,
            statsd: metrics::statsd(args.statsd_host.as_deref(), &args.statsd_prefix, &args.dogstatsd_tags)?,
        })
    }
}

/// The site of `--apps FILE`. The app-specific flags belong to each app in the manifest; the limits are the
/// defaults of the apps that do not set them.
fn hosted_site(
    args: &ServeArgs,
    path: &std::path::Path,
    limits: Limits,
    body_limit: Option<u64>,
) -> anyhow::Result<Site> {
    for (given, flag) in [
        (args.app.is_some(), "APP"),
        (!args.env.is_empty(), "--env"),
        (!args.dir.is_empty(), "--dir"),
        (!args.allow_net.is_empty(), "--allow-net"),
        (!args.allow_http.is_empty(), "--allow-http"),
        (args.script_name.is_some(), "--script-name"),
    ] {
        if given {
            bail!("{flag} cannot be used with --apps: each app in the manifest has its own");
        }
    }
    let defaults = manifest::Defaults {
        guest_timeout: limits.guest_timeout,
        max_memory_bytes: limits.max_memory_bytes,
        instance_reuse: limits.instance_reuse,
        body_limit,
    };
    let in_config = args.config.as_deref() == Some(path);
    manifest::load(path, in_config, &defaults)
}

/// One app on the shared pool, for every request: the server without a manifest.
fn single_site(
    args: &ServeArgs,
    env: Vec<(String, String)>,
    limits: Limits,
    body_limit: Option<u64>,
    script_name: &str,
) -> anyhow::Result<Site> {
    let guest = Guest {
        name: String::new(),
        source: AppSource::parse(args.app.as_deref().unwrap_or("sample:hello"))?,
        env,
        capabilities: Capabilities {
            // A relative folder is taken from --chdir, as the app's path is: the workers open it there.
            dirs: match &args.chdir {
                Some(chdir) => grants::dirs_under(&args.dir, &std::path::absolute(chdir)?)?,
                None => grants::dirs(&args.dir)?,
            },
            net: grants::net(&args.allow_net)?,
            http: grants::http(&args.allow_http)?,
        },
        limits,
    };
    let app = App { guest, body_limit, max_requests: 0, pool: None };
    Ok(Site { apps: vec![app], router: Router::single(script_name), hosted: false })
}

/// The least `--limit-pending-heads`: a few connections' read buffers.
const MIN_PENDING_HEADS: usize = 64 * 1024;

/// The HTTP flags the workers read, checked against Gunicorn's ranges.
fn http_settings(args: &ServeArgs) -> anyhow::Result<HttpSettings> {
    if args.limit_request_line > 8190 {
        bail!("--limit-request-line must be from 0 (no limit) to 8190, not {}", args.limit_request_line);
    }
    if !(1..=32768).contains(&args.limit_request_fields) {
        bail!("--limit-request-fields must be from 1 to 32768, not {}", args.limit_request_fields);
    }
    if args.limit_pending_heads < MIN_PENDING_HEADS {
        bail!("--limit-pending-heads must be at least {MIN_PENDING_HEADS} bytes, not {}", args.limit_pending_heads);
    }
    // A dying worker answers (or closes cleanly) the idle connections its registry holds, and no more.
    if args.max_idle_connections > crate::worker::FAREWELL_CAPACITY {
        bail!(
            "--max-idle-connections must be at most {}, not {}",
            crate::worker::FAREWELL_CAPACITY,
            args.max_idle_connections
        );
    }
    let client_timeout = seconds::fractional("--client-timeout", args.client_timeout, Zero::Refused)?;
    let keep_alive = seconds::fractional("--keep-alive", args.keep_alive, Zero::Allowed)?;
    let trusted_proxies: TrustedProxies =
        args.forwarded_allow_ips.parse().map_err(|err| anyhow::anyhow!("--forwarded-allow-ips: {err}"))?;
    Ok(HttpSettings {
        head_limits: HeadLimits {
            request_line: args.limit_request_line,
            fields: args.limit_request_fields,
            field_size: args.limit_request_field_size,
        },
        pending_heads_limit: args.limit_pending_heads,
        client_timeout,
        trusted_proxies,
        keep_alive,
        max_idle_connections: args.max_idle_connections,
    })
}

/// The single app's mount point: from `--script-name`, else from a SCRIPT_NAME given with `--env`; empty, or
/// `/path` without a final `/`.
fn script_name(args: &ServeArgs, env: &[(String, String)]) -> anyhow::Result<String> {
    let from_env = env.iter().rev().find(|(key, _)| key == "SCRIPT_NAME").map(|(_, value)| value.as_str());
    Ok(match args.script_name.as_deref().or(from_env) {
        None | Some("") | Some("/") => String::new(),
        Some(path) if path.starts_with('/') && !path.bytes().any(|byte| byte.is_ascii_control()) => {
            path.trim_end_matches('/').to_string()
        }
        Some(path) => {
            bail!("--script-name (or SCRIPT_NAME given with --env) must be a path starting with '/', not {path:?}")
        }
    })
}

/// Splits `KEY=VALUE` (the value may hold `=`; the key may not be empty).
fn parse_env_pair(pair: &str) -> anyhow::Result<(String, String)> {
    match pair.split_once('=') {
        Some((key, value)) if !key.is_empty() && !key.contains('\0') && !value.contains('\0') => {
            Ok((key.to_string(), value.to_string()))
        }
        _ => bail!("--env takes KEY=VALUE with a non-empty KEY, not {pair:?}"),
    }
}

/// `0o022`, `022` or `0`: an octal umask.
fn parse_umask(text: &str) -> anyhow::Result<u32> {
    let digits = text.strip_prefix("0o").unwrap_or(text);
    // `from_str_radix` takes a sign: `+22` is not a mask.
    match u32::from_str_radix(digits, 8).ok().filter(|_| digits.bytes().all(|byte| byte.is_ascii_digit())) {
        Some(mask) if mask <= 0o777 => Ok(mask),
        _ => bail!("--umask takes an octal mask such as 022, not {text:?}"),
    }
}

pub(crate) fn default_cache_dir() -> Option<PathBuf> {
    let base = match std::env::var_os("XDG_CACHE_HOME") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => PathBuf::from(std::env::var_os("HOME")?).join(".cache"),
    };
    Some(base.join("wasmcorn"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_pair_keeps_equals_signs_in_the_value() {
        assert_eq!(parse_env_pair("A=b=c").unwrap(), ("A".to_string(), "b=c".to_string()));
        assert_eq!(parse_env_pair("EMPTY=").unwrap(), ("EMPTY".to_string(), String::new()));
    }

    /// What `Config` makes of the HTTP flags: the workers' settings, and the single app's body limit and mount
    /// point.
    struct HttpFlags {
        settings: HttpSettings,
        body_limit: Option<u64>,
        script_name: String,
    }

    fn serve_args(extra: &[&str]) -> anyhow::Result<HttpFlags> {
        use clap::Parser;
        let mut argv = vec!["wasmcorn", "serve"];
        argv.extend_from_slice(extra);
        let crate::cli::Command::Serve(args) = crate::cli::Cli::try_parse_from(argv)?.command else {
            anyhow::bail!("`serve` parses as the serve command")
        };
        let env = args.env.iter().map(|pair| parse_env_pair(pair)).collect::<anyhow::Result<Vec<_>>>()?;
        let settings = http_settings(&args)?;
        let script_name = script_name(&args, &env)?;
        Ok(HttpFlags {
            settings,
            body_limit: (args.limit_request_body > 0).then_some(args.limit_request_body),
            script_name,
        })
    }

    #[test]
    fn http_flags_default_to_gunicorn_values() {
        let HttpFlags { settings, body_limit, script_name } = serve_args(&[]).unwrap();
        assert_eq!(settings.head_limits, HeadLimits { request_line: 4094, fields: 100, field_size: 8190 });
        assert_eq!(body_limit, None);
        assert_eq!(settings.pending_heads_limit, 16 << 20);
        assert_eq!(settings.client_timeout, Duration::from_secs(30));
        assert_eq!(settings.keep_alive, Duration::from_secs(2), "Gunicorn's --keep-alive");
        assert_eq!(settings.max_idle_connections, 128);
        assert!(settings.trusted_proxies.trusts("::1".parse().unwrap()));
        assert!(!settings.trusted_proxies.trusts("10.0.0.1".parse().unwrap()));
        assert_eq!(script_name, "");
    }

    #[test]
    fn field_size_flag_takes_both_spellings() {
        for flag in ["--limit-request-field_size", "--limit-request-field-size"] {
            assert_eq!(serve_args(&[flag, "10"]).unwrap().settings.head_limits.field_size, 10, "{flag}");
        }
    }

    #[test]
    fn http_flags_out_of_range_are_refused() {
        assert!(serve_args(&["--limit-request-line", "8191"]).is_err());
        assert!(serve_args(&["--limit-request-fields", "32769"]).is_err());
        assert!(serve_args(&["--limit-request-fields", "0"]).is_err());
        assert!(serve_args(&["--client-timeout", "0"]).is_err());
        assert!(serve_args(&["--limit-pending-heads", "65535"]).is_err());
        assert_eq!(serve_args(&["--limit-pending-heads", "65536"]).unwrap().settings.pending_heads_limit, 65536);
        assert!(serve_args(&["--client-timeout", "-1"]).is_err());
        assert!(serve_args(&["--keep-alive", "-1"]).is_err());
        assert!(serve_args(&["--keep-alive", "inf"]).is_err());
        assert_eq!(serve_args(&["--keep-alive", "0"]).unwrap().settings.keep_alive, Duration::ZERO);
        assert!(serve_args(&["--forwarded-allow-ips", "not-an-ip"]).is_err());
        assert!(serve_args(&["--script-name", "app"]).is_err());
    }

    #[test]
    fn script_name_comes_from_the_flag_or_the_guest_env() {
        assert_eq!(serve_args(&["--script-name", "/app/"]).unwrap().script_name, "/app");
        assert_eq!(serve_args(&["-e", "SCRIPT_NAME=/mounted"]).unwrap().script_name, "/mounted");
        assert_eq!(serve_args(&["-e", "SCRIPT_NAME=/env", "--script-name", "/flag"]).unwrap().script_name, "/flag");
        assert_eq!(serve_args(&["--limit-request-body", "5"]).unwrap().body_limit, Some(5));
        assert_eq!(
            serve_args(&["--client-timeout", "0.25"]).unwrap().settings.client_timeout,
            Duration::from_millis(250)
        );
    }

    #[test]
    fn env_pair_without_key_or_equals_is_refused() {
        assert!(parse_env_pair("=value").is_err());
        assert!(parse_env_pair("NOVALUE").is_err());
    }

    #[test]
    fn umask_is_octal() {
        assert_eq!(parse_umask("022").unwrap(), 0o22);
        assert_eq!(parse_umask("0o077").unwrap(), 0o77);
        assert_eq!(parse_umask("0").unwrap(), 0);
        assert!(parse_umask("9").is_err());
        for empty in ["", "0o", "0o0o22", "+22"] {
            assert!(parse_umask(empty).is_err(), "{empty:?}");
        }
        assert!(parse_umask("01777").is_err());
    }
}
