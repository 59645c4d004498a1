//! The recipes of `deploy/`, run as they are written, each module one recipe: `systemd` (the units pass
//! `systemd-analyze verify`; the service's own command serves through an activated socket, tells
//! `NOTIFY_SOCKET` it is ready, and loses no connection across a restart), `nginx` (Debian's nginx with
//! `deploy/nginx/wasmcorn.conf` in front of wasmcorn's unix sockets: the client's address and scheme, a 10 MiB
//! upload, a rolling restart of two servers under load with no failed request), and `container` (the image's
//! command as the image's user with the cache on a fresh volume; the Kubernetes manifests' timeouts and probes).

mod container;
mod nginx;
mod systemd;

use std::path::Path;

/// A file of `deploy/`.
fn recipe(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy").join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|err| panic!("read {}: {err}", full.display()))
}

/// `text` with `from` replaced by `to`; `from` must be there, so that a recipe that drifts fails the test.
fn replaced(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "the recipe no longer contains {from:?}: update the test with it");
    text.replace(from, to)
}
