//! Resolves the command line into one validated `Config`. Every bad value is a one-line error naming the flag.

mod grants;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};

use crate::cli::ServeArgs;
use crate::guest::{App, AppSource, Capabilities, Limits};

/// Everything `wasmcorn serve` needs, validated.
#[derive(Debug, Clone)]
pub struct Config {
    /// The guest app every worker serves.
    pub app: App,
    /// The addresses to listen on, as given (`HOST:PORT`).
    pub binds: Vec<String>,
    /// How many workers the arbiter keeps alive.
    pub workers: u32,
    /// Where compiled guests are cached.
    pub cache_dir: PathBuf,
}

impl Config {
    pub fn from_args(args: ServeArgs) -> anyhow::Result<Config> {
        if args.workers == 0 {
            bail!("--workers must be at least 1");
        }
        if !(args.guest_timeout.is_finite() && args.guest_timeout > 0.0) {
            bail!("--guest-timeout must be a positive number of seconds, not {}", args.guest_timeout);
        }
        if args.max_memory == 0 {
            bail!("--max-memory must be at least 1 MiB");
        }
        let env = args.env.iter().map(|pair| parse_env_pair(pair)).collect::<anyhow::Result<Vec<_>>>()?;
        let cache_dir = match args.cache_dir {
            Some(dir) => dir,
            None => default_cache_dir().context("cannot find a cache folder: set --cache-dir or $HOME")?,
        };
        Ok(Config {
            app: App {
                source: AppSource::parse(&args.app)?,
                env,
                capabilities: Capabilities { dirs: grants::dirs(&args.dir)?, net: grants::net(&args.allow_net)? },
                limits: Limits {
                    guest_timeout: Duration::from_secs_f64(args.guest_timeout),
                    max_memory_bytes: usize::try_from(args.max_memory)?.saturating_mul(1 << 20),
                },
            },
            binds: args.bind,
            workers: args.workers,
            cache_dir,
        })
    }
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

fn default_cache_dir() -> Option<PathBuf> {
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

    #[test]
    fn env_pair_without_key_or_equals_is_refused() {
        assert!(parse_env_pair("=value").is_err());
        assert!(parse_env_pair("NOVALUE").is_err());
    }
}
