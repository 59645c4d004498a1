//! The logging settings (`--error-logfile`, `--access-logfile`, `--access-logformat`, `--log-level`), read and
//! checked once by the configuration and applied by `log::init`.

use std::path::PathBuf;

use anyhow::bail;

use super::access::{self, AccessFormat};

/// How serious an error-log line is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Level {
    Debug = 0,
    Info = 1,
    Warning = 2,
    Error = 3,
    Critical = 4,
}

impl Level {
    pub(super) fn name(self) -> &'static str {
        match self {
            Level::Debug => "DEBUG",
            Level::Info => "INFO",
            Level::Warning => "WARNING",
            Level::Error => "ERROR",
            Level::Critical => "CRITICAL",
        }
    }

    fn parse(text: &str) -> anyhow::Result<Level> {
        Ok(match text.to_ascii_lowercase().as_str() {
            "debug" => Level::Debug,
            "info" => Level::Info,
            "warning" | "warn" => Level::Warning,
            "error" => Level::Error,
            "critical" => Level::Critical,
            _ => bail!("--log-level takes debug, info, warning, error or critical, not {text:?}"),
        })
    }
}

/// Where a log goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    Stderr,
    File(PathBuf),
}

impl Target {
    fn parse(flag: &str, text: &str) -> anyhow::Result<Target> {
        match text {
            "-" => Ok(Target::Stderr),
            "" => bail!("{flag} takes a file, or - for stderr, not an empty name"),
            _ => Ok(Target::File(PathBuf::from(text))),
        }
    }
}

/// The logging settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Settings {
    pub error: Target,
    pub access: Target,
    pub access_format: AccessFormat,
    pub level: Level,
}

impl Settings {
    /// The error log is a file (not stderr, where `main` prints a failure anyway).
    pub(crate) fn errors_to_file(&self) -> bool {
        matches!(self.error, Target::File(_))
    }

    pub(crate) fn parse(
        access: Option<&str>,
        access_format: Option<&str>,
        error: &str,
        level: &str,
        hosted: bool,
    ) -> anyhow::Result<Settings> {
        let default_format = if hosted { access::HOSTED_DEFAULT } else { access::GUNICORN_DEFAULT };
        Ok(Settings {
            error: Target::parse("--error-logfile", error)?,
            access: access.map_or(Ok(Target::Stderr), |access| Target::parse("--access-logfile", access))?,
            access_format: AccessFormat::parse(access_format.unwrap_or(default_format))?,
            level: Level::parse(level)?,
        })
    }
}
