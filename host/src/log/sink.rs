//! Where log lines are written: stderr or an append-mode file, one `write` per line; files are reopened on
//! demand (SIGUSR1) so that log rotation works. A log file the server creates is its user's alone, whatever the
//! umask, and in a folder others may write (such as /tmp) a name that is a symlink is refused: someone else may
//! have planted it there to make the server write into another file.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::sync::Mutex;

use anyhow::Context;

use super::access::AccessFormat;
use super::settings::{Settings, Target};

struct Sinks {
    error: Sink,
    access: Sink,
    access_format: AccessFormat,
}

struct Sink {
    target: Target,
    file: Option<File>,
}

impl Sink {
    fn open(target: &Target) -> anyhow::Result<Sink> {
        let file = match target {
            Target::Stderr => None,
            Target::File(path) => Some(open_append(path)?),
        };
        Ok(Sink { target: target.clone(), file })
    }

    fn write(&mut self, bytes: &[u8]) {
        match &mut self.file {
            // Nothing sensible can be done when the log itself fails; the server keeps serving.
            Some(file) => {
                let _ = file.write_all(bytes);
            }
            None => write_stderr(bytes),
        }
    }
}

static SINKS: Mutex<Option<Sinks>> = Mutex::new(None);

fn open_append(path: &Path) -> anyhow::Result<File> {
    let mut options = OpenOptions::new();
    options.create(true).append(true).mode(0o600);
    if in_shared_folder(path) {
        options.custom_flags(nix::libc::O_NOFOLLOW);
    }
    options.open(path).with_context(|| match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_symlink() => {
            format!("cannot open the log file {}: a symlink in a folder others may write", path.display())
        }
        _ => format!("cannot open the log file {}", path.display()),
    })
}

/// Whether the folder of `path` may be written by users other than its owner.
fn in_shared_folder(path: &Path) -> bool {
    let folder = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    std::fs::metadata(folder).is_ok_and(|meta| meta.mode() & 0o022 != 0)
}

pub(super) fn init(settings: &Settings) -> anyhow::Result<()> {
    let sinks = Sinks {
        error: Sink::open(&settings.error)?,
        access: Sink::open(&settings.access)?,
        access_format: settings.access_format.clone(),
    };
    if let Ok(mut slot) = SINKS.lock() {
        *slot = Some(sinks);
    }
    Ok(())
}

pub(super) fn reopen() -> anyhow::Result<()> {
    let Ok(mut slot) = SINKS.lock() else { return Ok(()) };
    if let Some(sinks) = slot.as_mut() {
        sinks.error = Sink::open(&sinks.error.target)?;
        sinks.access = Sink::open(&sinks.access.target)?;
    }
    Ok(())
}

pub(super) fn write_error(bytes: &[u8]) {
    match SINKS.lock().as_deref_mut() {
        Ok(Some(sinks)) => sinks.error.write(bytes),
        _ => write_stderr(bytes),
    }
}

/// Renders an access-log line with the configured format (Gunicorn's default before `init`) and writes it, under
/// one lock.
pub(super) fn write_access(render: impl FnOnce(&AccessFormat) -> String) {
    match SINKS.lock().as_deref_mut() {
        Ok(Some(sinks)) => {
            let line = render(&sinks.access_format);
            sinks.access.write(line.as_bytes());
        }
        _ => write_stderr(render(&AccessFormat::default()).as_bytes()),
    }
}

fn write_stderr(bytes: &[u8]) {
    // Nothing sensible can be done when stderr itself fails; the server keeps serving.
    let _ = std::io::stderr().write_all(bytes);
}
