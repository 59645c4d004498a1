//! Where log lines are written: stderr or an append-mode file, one `write` per line of at most 4096 bytes (a
//! longer one is cut, and says so), so that lines from the arbiter and every worker never interleave, even on a
//! shared pipe; files are reopened on demand (SIGUSR1) so that log rotation works; an access log that is the null
//! device (`--access-logfile /dev/null`) takes no line at all, not even its rendering. A log file the server creates
//! is its user's alone, whatever the umask. In a folder others may change (such as /tmp, or another user's), a
//! name that is a symlink or a file of another user is refused: someone else may have planted it there, to make
//! the server write into another file or into one they can read.

use std::borrow::Cow;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::sync::Mutex;

use anyhow::{Context, bail};
use nix::fcntl::OFlag;

use super::access::AccessFormat;
use super::settings::{Settings, Target};
use crate::planted;

struct Sinks {
    error: Sink,
    access: Sink,
    access_format: AccessFormat,
}

struct Sink {
    target: Target,
    file: Option<File>,
    /// The file is the null device (`--access-logfile /dev/null`, the way to turn the access log off): nothing
    /// written there is kept, so nothing is rendered or written.
    discards: bool,
}

impl Sink {
    fn open(target: &Target) -> anyhow::Result<Sink> {
        let file = match target {
            Target::Stderr => None,
            Target::File(path) => Some(open_append(path)?),
        };
        let discards = file.as_ref().is_some_and(is_null_device);
        Ok(Sink { target: target.clone(), file, discards })
    }

    fn write(&mut self, record: &str) {
        match &mut self.file {
            // Nothing sensible can be done when the log itself fails; the server keeps serving.
            Some(file) => {
                let _ = file.write_all(fit(record).as_bytes());
            }
            None => write_stderr(record),
        }
    }
}

/// The longest record written: what one `write` to a pipe delivers in one piece (`PIPE_BUF`), so that no other
/// process's record lands inside it when every worker writes to the same pipe (stderr under systemd or docker).
pub(crate) const RECORD_MAX: usize = 4096;

/// `record` (a line, or a block of lines, ending with a newline) cut to `RECORD_MAX` bytes at a character boundary
/// when longer, with how many bytes were cut at its end.
fn fit(record: &str) -> Cow<'_, str> {
    if record.len() <= RECORD_MAX {
        return Cow::Borrowed(record);
    }
    // Room for the note: " [", 20 digits at most, " bytes cut]\n".
    let kept = super::prefix(record, RECORD_MAX - 34);
    let text_length = record.strip_suffix('\n').unwrap_or(record).len();
    Cow::Owned(format!("{kept} [{} bytes cut]\n", text_length - kept.len()))
}

static SINKS: Mutex<Option<Sinks>> = Mutex::new(None);

/// Linux's null device, `/dev/null` (character device 1:3), under whatever name it was opened.
fn is_null_device(file: &File) -> bool {
    file.metadata()
        .is_ok_and(|metadata| metadata.file_type().is_char_device() && metadata.rdev() == nix::sys::stat::makedev(1, 3))
}

fn open_append(path: &Path) -> anyhow::Result<File> {
    // The file is opened in the folder the check reached, through its descriptor.
    let (folder, name) = planted::Folder::holding(path, "the log file")
        .map_err(|unreachable| unreachable.context(format!("cannot open the log file {}", path.display())))?;
    let others_control_folder = folder.others_control();
    // Non-blocking while it opens: a FIFO at the name (one without a reader: a planted one) is then an error
    // instead of a wait that would hang the start or the arbiter's USR1; a pipe with a reader (`/dev/stdout`
    // under a supervisor) opens, and is made blocking again below.
    // Never a controlling terminal: a terminal at the name would otherwise become the arbiter's (when it has none).
    let mut flags = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_APPEND | OFlag::O_NONBLOCK | OFlag::O_NOCTTY;
    if others_control_folder {
        flags |= OFlag::O_NOFOLLOW;
    }
    let file = folder.open_file(name, flags, 0o600).map_err(|err| {
        // O_NOFOLLOW refuses a symlink with ELOOP; any other failure is said as it is (`/dev/stdout` is a symlink,
        // in a folder of root's, and may name a socket, which cannot be opened).
        let planted_link = others_control_folder && err.raw_os_error() == Some(nix::libc::ELOOP);
        let what = match err.raw_os_error() {
            _ if planted_link => ": a symlink in a folder others may change",
            // What a non-blocking open for writing says of a FIFO that no process reads.
            Some(nix::libc::ENXIO) => ": a FIFO with no reader",
            _ => "",
        };
        anyhow::Error::from(err).context(format!("cannot open the log file {}{what}", path.display()))
    })?;
    let blocking = nix::fcntl::fcntl(&file, nix::fcntl::FcntlArg::F_GETFL)
        .map(|flags| nix::fcntl::OFlag::from_bits_truncate(flags) - nix::fcntl::OFlag::O_NONBLOCK)
        .and_then(|flags| nix::fcntl::fcntl(&file, nix::fcntl::FcntlArg::F_SETFL(flags)));
    blocking.with_context(|| format!("cannot set up the log file {}", path.display()))?;
    let owner = file.metadata().with_context(|| format!("cannot check the log file {}", path.display()))?.uid();
    if others_control_folder && owner != planted::own_uid() {
        bail!(
            "cannot use the log file {}: it belongs to uid {owner}, in a folder others may change (remove it, or \
             log elsewhere)",
            path.display()
        );
    }
    Ok(file)
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

pub(super) fn write_error(record: &str) {
    match SINKS.lock().as_deref_mut() {
        Ok(Some(sinks)) => sinks.error.write(record),
        _ => write_stderr(record),
    }
}

/// Renders an access-log line with the configured format (Gunicorn's default before `init`) and writes it, under
/// one lock.
pub(super) fn write_access(render: impl FnOnce(&AccessFormat) -> String) {
    match SINKS.lock().as_deref_mut() {
        Ok(Some(sinks)) if sinks.access.discards => {}
        Ok(Some(sinks)) => {
            let line = render(&sinks.access_format);
            sinks.access.write(&line);
        }
        _ => write_stderr(&render(&AccessFormat::default())),
    }
}

fn write_stderr(record: &str) {
    // Nothing sensible can be done when stderr itself fails; the server keeps serving.
    let _ = std::io::stderr().write_all(fit(record).as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_longer_than_a_pipe_write_is_cut_and_says_so() {
        assert!(matches!(fit("short\n"), Cow::Borrowed("short\n")));
        let exact = format!("{}\n", "x".repeat(RECORD_MAX - 1));
        assert!(matches!(fit(&exact), Cow::Borrowed(_)));
        let long = format!("{}\n", "é".repeat(10_000));
        let cut = fit(&long);
        assert!(cut.len() <= RECORD_MAX, "{}", cut.len());
        assert!(cut.ends_with(" bytes cut]\n"), "{cut}");
        let kept = cut.split(" [").next().unwrap();
        let noted: usize = cut.rsplit(" [").next().unwrap().split(' ').next().unwrap().parse().unwrap();
        assert_eq!(kept.len() + noted, 20_000, "every byte of the text is kept or counted");
        assert_eq!(cut.matches('\n').count(), 1);
    }

    #[test]
    fn only_the_null_device_discards() {
        let null = Sink::open(&Target::File("/dev/null".into())).expect("/dev/null opens");
        assert!(null.discards);
        let folder = tempfile::tempdir().unwrap();
        let file = Sink::open(&Target::File(folder.path().join("access.log"))).expect("a file opens");
        assert!(!file.discards);
        assert!(!Sink::open(&Target::Stderr).expect("stderr").discards);
        // /dev/zero is a character device too, but not the null device.
        assert!(!Sink::open(&Target::File("/dev/zero".into())).expect("/dev/zero opens").discards);
    }
}
