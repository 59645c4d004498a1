//! Reading a file the operator names (a component, the config file, the app manifest, a pid file): only a regular
//! file is read. Anything else is refused before it is read: a device such as /dev/zero would be read until memory
//! runs out, and opening a FIFO would wait for a writer, which would hang a start or wedge the arbiter in a reload.
//! The file is opened non-blocking, which changes nothing for a regular file, and never as a controlling terminal.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

use anyhow::bail;
use nix::fcntl::OFlag;

/// The bytes of the regular file at `path`.
pub(crate) fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    read_at_most(path, u64::MAX)
}

/// The bytes of the regular file at `path`, refused when it holds more than `most`: a file someone else may have
/// put at the name (a pid file in /tmp) is never read whole, however large (a sparse file of terabytes).
pub(crate) fn read_at_most(path: &Path, most: u64) -> anyhow::Result<Vec<u8>> {
    read_file_at_most(open_to_read(path)?, most)
}

/// The bytes of the regular file at `path` when they begin with `magic`, refused as `read_at_most` refuses when
/// they are more than `most`; none when they do not begin so, which is found from those first bytes alone (a large
/// file of another kind, named by mistake, is never read whole).
pub(crate) fn read_with_magic(path: &Path, magic: &[u8], most: u64) -> anyhow::Result<Option<Vec<u8>>> {
    let file = open_to_read(path)?;
    if !file.metadata()?.is_file() {
        bail!("it is not a regular file");
    }
    let mut head = vec![0; magic.len()];
    // Read in place, leaving the file's offset at its start for the whole read.
    match file.read_exact_at(&mut head, 0) {
        Ok(()) if head == magic => read_file_at_most(file, most).map(Some),
        Ok(()) => Ok(None),
        Err(err) if err.kind() == std::io::ErrorKind::UnexpectedEof => Ok(None),
        Err(err) => Err(err.into()),
    }
}

/// Opens `path` to read it without blocking (a FIFO is not waited on) and without making it the controlling
/// terminal.
fn open_to_read(path: &Path) -> std::io::Result<File> {
    let flags = OFlag::O_NONBLOCK | OFlag::O_NOCTTY | OFlag::O_CLOEXEC;
    OpenOptions::new().read(true).custom_flags(flags.bits()).open(path)
}

/// `read_at_most` of a file already opened (non-blocking, for the reasons above).
fn read_file_at_most(file: File, most: u64) -> anyhow::Result<Vec<u8>> {
    let meta = file.metadata()?;
    if !meta.is_file() {
        bail!("it is not a regular file");
    }
    if meta.len() > most {
        bail!("it holds {} bytes, more than {most}", meta.len());
    }
    // The file may grow meanwhile: one byte past the limit is enough to tell.
    let mut bytes = Vec::new();
    file.take(most.saturating_add(1)).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > most {
        bail!("it holds more than {most} bytes");
    }
    Ok(bytes)
}

/// `read_at_most`, for UTF-8 text.
pub(crate) fn read_text_at_most(path: &Path, most: u64) -> anyhow::Result<String> {
    text(read_at_most(path, most)?)
}

/// `read_text_at_most` of a file already opened non-blocking.
pub(crate) fn read_text_of(file: File, most: u64) -> anyhow::Result<String> {
    text(read_file_at_most(file, most)?)
}

fn text(bytes: Vec<u8>) -> anyhow::Result<String> {
    String::from_utf8(bytes).map_err(|_| anyhow::anyhow!("it is not UTF-8 text"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_regular_file_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, "text").unwrap();
        assert_eq!(read_text_at_most(&file, 4).unwrap(), "text");
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        for path in [fifo.as_path(), dir.path(), Path::new("/dev/zero")] {
            let refused = read(path).map(|_| ()).unwrap_err().to_string();
            assert!(refused == "it is not a regular file" || refused.contains("directory"), "{path:?}: {refused}");
        }
        std::fs::write(&file, [0xff, 0xfe]).unwrap();
        assert_eq!(read_text_at_most(&file, 4).unwrap_err().to_string(), "it is not UTF-8 text");
    }

    #[test]
    fn a_file_past_the_limit_is_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, "12345\n").unwrap();
        assert_eq!(read_text_at_most(&file, 6).unwrap(), "12345\n");
        assert_eq!(read_text_at_most(&file, 5).unwrap_err().to_string(), "it holds 6 bytes, more than 5");
        // A sparse file of a terabyte: refused without reading it.
        std::fs::File::create(&file).unwrap().set_len(1 << 40).unwrap();
        assert!(read_at_most(&file, 64).unwrap_err().to_string().starts_with("it holds 1099511627776 bytes"));
    }

    #[test]
    fn a_file_is_read_only_when_it_begins_with_the_magic() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, b"\0asm rest").unwrap();
        assert_eq!(read_with_magic(&file, b"\0asm", 64).unwrap().as_deref(), Some(&b"\0asm rest"[..]));
        assert!(read_with_magic(&file, b"\0asm", 5).unwrap_err().to_string().starts_with("it holds 9 bytes"));
        for other in [&b"\0as"[..], b"", b"text that is no wasm"] {
            std::fs::write(&file, other).unwrap();
            assert_eq!(read_with_magic(&file, b"\0asm", 64).unwrap(), None, "{other:?}");
        }
        // A terabyte of something else is told from its first bytes, whatever the limit.
        std::fs::File::create(&file).unwrap().set_len(1 << 40).unwrap();
        assert_eq!(read_with_magic(&file, b"\0asm", u64::MAX).unwrap(), None);
        assert_eq!(
            read_with_magic(Path::new("/dev/zero"), b"\0asm", 64).unwrap_err().to_string(),
            "it is not a regular file"
        );
    }
}
