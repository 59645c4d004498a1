//! Reading a file the operator names (a component, the config file, the app manifest, a pid file): only a regular
//! file is read. Anything else is refused before it is read: a device such as /dev/zero would be read until memory
//! runs out, and opening a FIFO would wait for a writer, which would hang a start or wedge the arbiter in a reload.
//! The file is opened non-blocking, which changes nothing for a regular file.

use std::fs::OpenOptions;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::bail;
use nix::fcntl::OFlag;

/// The bytes of the regular file at `path`.
pub(crate) fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    let mut file =
        OpenOptions::new().read(true).custom_flags((OFlag::O_NONBLOCK | OFlag::O_CLOEXEC).bits()).open(path)?;
    if !file.metadata()?.is_file() {
        bail!("it is not a regular file");
    }
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// The text of the regular file at `path`, which must be UTF-8.
pub(crate) fn read_text(path: &Path) -> anyhow::Result<String> {
    String::from_utf8(read(path)?).map_err(|_| anyhow::anyhow!("it is not UTF-8 text"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_regular_file_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, "text").unwrap();
        assert_eq!(read_text(&file).unwrap(), "text");
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        for path in [fifo.as_path(), dir.path(), Path::new("/dev/zero")] {
            let refused = read(path).map(|_| ()).unwrap_err().to_string();
            assert!(refused == "it is not a regular file" || refused.contains("directory"), "{path:?}: {refused}");
        }
        std::fs::write(&file, [0xff, 0xfe]).unwrap();
        assert_eq!(read_text(&file).unwrap_err().to_string(), "it is not UTF-8 text");
    }
}
