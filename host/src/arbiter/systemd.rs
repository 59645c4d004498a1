//! Tells systemd (or any service manager speaking its protocol) that the server is ready: one `READY=1`
//! datagram to `$NOTIFY_SOCKET` once the first workers have loaded the app.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// Sends `state` to `$NOTIFY_SOCKET`, if it is set. Returns whether a message was sent.
pub(super) fn notify(state: &str) -> bool {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else { return false };
    let path = path.to_string_lossy().into_owned();
    let address = match path.strip_prefix('@') {
        Some(name) => SocketAddr::from_abstract_name(name.as_bytes()),
        None => SocketAddr::from_pathname(&path),
    };
    let sent = address.and_then(|address| UnixDatagram::unbound()?.send_to_addr(state.as_bytes(), &address));
    sent.is_ok()
}
